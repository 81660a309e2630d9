"""End-to-end ``index`` throughput against model-forward-only throughput on the same tiles.

The ratio shows how well reading, preprocessing, scene labelling and writing
hide behind the model: 1.0 means the pipeline costs nothing beyond the forward
pass. Default model: a ViT-B-32-sized model (random init; same compute as the
pretrained one).

    python benchmarks/index_throughput.py [--arch ViT-B-32] [--tiles 256] [--image-runtime torch auto openvino openvino-bf16 onnxruntime] [--json]

Each runtime runs in a process of its own, so its peak RSS is its own; ``auto`` records the engine it chose.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import lancedb  # noqa: F401  imported up front: library start-up is not indexing work
import numpy as np
import torch

from georet import TilingParams, index_raster  # noqa: E402
from georet.geo import RasterSource  # noqa: E402
from georet.models import ModelSpec, load_model  # noqa: E402
from georet.models.onnx_image import IMAGE_RUNTIMES  # noqa: E402
from georet.provenance import write_results  # noqa: E402
from georet.testing.rasters import write_raster  # noqa: E402


def measure(model, raster: Path, tiling: TilingParams, batch_size: int, work: Path) -> dict:
    """Model-forward-only and end-to-end tiles/s of ``model`` on ``raster``."""
    # Model forward only: tiles read and preprocessed beforehand, then batches through the model.
    with RasterSource(raster, tiling) as src:
        pixels = np.stack([src.read(w).pixels for w in src.grid.windows()])
    images = model.preprocess.apply(pixels)
    model.encode_images(images[:batch_size])  # warm-up (ONNX: the one-off export into the cache)
    started = time.perf_counter()
    for i in range(0, len(images), batch_size):
        model.encode_images(images[i : i + batch_size])
    forward_tps = len(images) / (time.perf_counter() - started)
    # End to end, fixed per-run costs included (scene prompts, table creation, final compaction):
    # read + preprocess + embed + zero-shot scenes + thumbnails + LanceDB upserts.
    report = index_raster(raster, work, tiling=tiling, model=model, batch_size=batch_size, progress=False)
    e2e_tps = report.indexed / report.seconds
    return {"tiles": int(len(images)), "forward_only_tiles_per_s": round(forward_tps, 2),
            "end_to_end_tiles_per_s": round(e2e_tps, 2), "ratio": round(e2e_tps / forward_tps, 3)}


def measure_runtime(arch: str, runtime: str, raster: Path, tile_px: int, batch_size: int, work: Path) -> dict:
    """:func:`measure` for one image runtime, in this (child) process: its engine and peak RSS beside the pace."""
    model = load_model(ModelSpec(arch, None), device="auto", image_runtime=runtime)
    run = measure(model, raster, TilingParams(tile_size=tile_px), batch_size, work)
    engine = getattr(getattr(model, "onnx_image", None), "engine", None)
    return {**run, "engine": engine or "torch", "device": str(model.device),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--tiles", type=int, default=400, help="approximate number of tiles")
    parser.add_argument("--tile-px", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-runtime", nargs="+", default=["torch"], choices=IMAGE_RUNTIMES,
                        help="runtimes to measure in this one run (all but torch: tower models on a CPU)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--out", type=Path, help="write the results file (with provenance) here")
    args = parser.parse_args()

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        side = int(math.sqrt(args.tiles)) * args.tile_px
        raster = write_raster(Path(tmp) / "bench.tif", "utm", (side, side), seed=1)
        for runtime in args.image_runtime:
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
                runs[runtime] = child.submit(measure_runtime, args.arch, runtime, raster, args.tile_px,
                                             args.batch_size, Path(tmp) / f"{runtime}.db").result()
    result = {"arch": args.arch, "device": runs[args.image_runtime[0]].pop("device"),
              "torch_threads": torch.get_num_threads(), "tile_px": args.tile_px, "batch_size": args.batch_size,
              "runtimes": runs}
    for run in runs.values():
        run.pop("device", None)
    for runtime in set(runs) - {"torch"} if "torch" in runs else ():
        result[f"{runtime}_over_torch_end_to_end"] = round(runs[runtime]["end_to_end_tiles_per_s"]
                                                           / runs["torch"]["end_to_end_tiles_per_s"], 2)
    if args.out:
        write_results(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.arch} on {result['device']} ({result['torch_threads']} torch threads), tiles of {args.tile_px} px, "
              f"batch {args.batch_size}")
        for runtime, run in runs.items():
            print(f"  {runtime:13s} ({run['engine']}) model forward only : {run['forward_only_tiles_per_s']:8.1f} "
                  f"tiles/s; georet index e2e : {run['end_to_end_tiles_per_s']:8.1f} tiles/s (ratio {run['ratio']:.2f}), "
                  f"peak RSS {run['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
