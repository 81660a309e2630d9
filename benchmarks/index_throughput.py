"""End-to-end ``index`` throughput against model-forward-only throughput on the same tiles.

The ratio shows how well reading, preprocessing, scene labelling and writing
hide behind the model: 1.0 means the pipeline costs nothing beyond the forward
pass. Default model: a ViT-B-32-sized model (random init; same compute as the
pretrained one).

    python benchmarks/index_throughput.py [--arch ViT-B-32] [--tiles 256] [--image-runtime torch openvino openvino-bf16 onnxruntime] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import lancedb  # noqa: F401  imported up front: library start-up is not indexing work
import numpy as np
import torch

from georet import TilingParams, index_raster  # noqa: E402
from georet.geo import RasterSource  # noqa: E402
from georet.models import ModelSpec, load_model  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--tiles", type=int, default=400, help="approximate number of tiles")
    parser.add_argument("--tile-px", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-runtime", nargs="+", default=["torch"], choices=["torch", "openvino", "openvino-bf16", "onnxruntime"],
                        help="runtimes to measure in this one run (openvino, onnxruntime: tower models on a CPU)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--out", type=Path, help="write the results file (with provenance) here")
    args = parser.parse_args()

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        side = int(math.sqrt(args.tiles)) * args.tile_px
        raster = write_raster(Path(tmp) / "bench.tif", "utm", (side, side), seed=1)
        for runtime in args.image_runtime:
            model = load_model(ModelSpec(args.arch, None), device="auto", image_runtime=runtime)
            runs[runtime] = measure(model, raster, TilingParams(tile_size=args.tile_px), args.batch_size,
                                    Path(tmp) / f"{runtime}.db")
    result = {"arch": args.arch, "device": str(model.device), "torch_threads": torch.get_num_threads(),
              "tile_px": args.tile_px, "batch_size": args.batch_size, "runtimes": runs}
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
            print(f"  {runtime:5s} model forward only : {run['forward_only_tiles_per_s']:8.1f} tiles/s; "
                  f"georet index e2e : {run['end_to_end_tiles_per_s']:8.1f} tiles/s (ratio {run['ratio']:.2f})")


if __name__ == "__main__":
    main()
