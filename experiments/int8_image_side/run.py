"""Is an int8 image side faster than float32/bfloat16 at equal quality? (issue 29, item 3)

Quantises georet-base's exported image graph with ONNX Runtime's static quantiser (QDQ, per-channel int8
weights, activations calibrated on rsicd_aid *train* chips), then measures, in one run on this machine:
tiles/s of the forward pass (batch 32, 150 px, 2 threads) and rsicd_aid test mR, for every engine.

    python experiments/int8_image_side/run.py --data ../shared/data/rsicd_aid/dataset_rsicd_aid.json
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from georet.models import BUNDLED_TAG, ModelSpec, load_model
from georet.models.onnx_image import OnnxImageSide
from georet.provenance import write_results
from georet.training import load_retrieval_data
from georet.training.evaluate import retrieval_scores

OUT = Path(__file__).with_name("results") / "int8.json"


def load_images(paths, preprocess) -> np.ndarray:
    from PIL import Image

    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    return np.ascontiguousarray(np.asarray(preprocess.apply(pixels)), dtype=np.float32)


def embed(run, images: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([run(images[i:i + batch]) for i in range(0, len(images), batch)])


def tiles_per_s(run, images: np.ndarray, batch: int = 32, repeats: int = 3) -> float:
    run(images[:batch])
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        embed(run, images, batch)
        best = max(best, len(images) / (time.perf_counter() - started))
    return best


def quantise(f32: Path, out: Path, calibration: np.ndarray, per_channel: bool, exclude_heads: bool) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"images": calibration[i:i + 16]} for i in range(0, len(calibration), 16)])

        def get_next(self):
            return next(self.batches, None)

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(f32), str(pre), skip_symbolic_shape=True)
    nodes = onnx.load(str(pre)).graph.node
    excluded = [n.name for n in nodes if n.op_type in ("MatMul", "Gemm")] if exclude_heads else []
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                    op_types_to_quantize=["Conv", "MatMul", "Gemm"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="rsicd_aid's Karpathy JSON")
    parser.add_argument("--calibration", type=int, default=256, help="train chips to calibrate on")
    parser.add_argument("--speed-tiles", type=int, default=512)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    model = load_model(ModelSpec("georet-base", BUNDLED_TAG), device="cpu", image_runtime="openvino")
    train = load_retrieval_data(args.data, "train")
    test = load_retrieval_data(args.data, "test")
    rng = random.Random(0)
    calibration = load_images(rng.sample(list(train.images), args.calibration), model.preprocess)
    test_images = load_images(test.images, model.preprocess)
    text_feats = model.encode_text([c for c in test.captions])
    model.onnx_image(test_images[:2])  # exports the float32 graph into the cache
    f32 = model.onnx_image.path
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        variants = {("float32", "openvino"): f32, ("float32", "openvino-bf16"): f32, ("float32", "onnxruntime"): f32}
        for name, per_channel, exclude in (("int8", True, False), ("int8-convs", True, True)):
            path = Path(tmp) / f"{name}.onnx"
            quantise(f32, path, calibration, per_channel, exclude)
            variants[(name, "openvino")] = path
            variants[(name, "onnxruntime")] = path
        for (graph, engine), path in variants.items():
            side = OnnxImageSide(path, engine, threads=2)
            feats = embed(side, test_images)
            scores = retrieval_scores(feats, text_feats, test)
            speed = tiles_per_s(side, test_images[:args.speed_tiles])
            results[f"{graph} on {engine}"] = {"tiles_per_s": round(speed, 1), "test_mR": round(scores["mR"], 2)}
            print(graph, engine, results[f"{graph} on {engine}"], flush=True)
    write_results(args.out, {"calibration_train_chips": args.calibration, "batch": 32, "threads": 2,
                             "tile_px": 150, "results": results})


if __name__ == "__main__":
    main()
