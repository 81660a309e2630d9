"""The image side of a tower model as an ONNX graph on OpenVINO or ONNX Runtime: torch's embeddings, faster.

Indexing spends its time in the image tower (georet-base: EfficientNet-Lite0
over five views of every tile, then the heads). OpenVINO runs that graph about
1.5 times as fast as torch on a CPU end to end in float32, 3 times in bfloat16
(ONNX Runtime as fast as torch: benchmarks/index_throughput.py); int8 was
slower than bfloat16 and cost 1.7 test mR (experiments/int8_image_side). The ONNX file is made from the model's own
weights by :func:`export_image_side` (torch, once) into georet's cache, named
by a digest of those weights, so a file can only ever serve the weights it was
exported from; :class:`OnnxImageSide` runs it without torch.

Why a cache and not a file in the package: the file is derived from the
installed backbone packages and georet's bundled heads (it is 44 MB in
float32, twice the heads file), and exporting takes a few seconds the first
time a model indexes. An install without torch cannot export: it runs the
bundled model's graph shipped in the package (:mod:`georet.models.light`).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from georet.errors import InputError
from georet.files import atomic_write

#: bumped when the exported graph changes for the same weights
ONNX_FORMAT = "georet-onnx-image/1"
OPSET = 17


def weights_digest(tensors: dict[str, Any], config: dict[str, Any]) -> str:
    """sha256 over a model's image-side tensors (name, shape, bytes) and config: what names its ONNX file."""
    digest = hashlib.sha256(f"{ONNX_FORMAT}|{sorted(config.items())!r}".encode())
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        digest.update(f"{name}|{array.dtype}|{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


#: engines that run the exported graph (benchmarks/index_throughput.py --image-runtime ...): OpenVINO in float32,
#: OpenVINO in the CPU's fastest precision (bfloat16 where the CPU has it), ONNX Runtime (on a CUDA GPU where
#: onnxruntime-gpu sees one)
ENGINES = ("openvino", "openvino-bf16", "onnxruntime")
#: what ``load_model(image_runtime=...)`` and ``--image-runtime`` take: an engine, the fastest installed, or torch
IMAGE_RUNTIMES = ("auto", *ENGINES, "torch")


def check_image_runtime(runtime: str) -> None:
    if runtime not in IMAGE_RUNTIMES:
        raise InputError("image_runtime", f"must be one of {', '.join(IMAGE_RUNTIMES)}; got {runtime!r}")


def _installed(engine: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(engine.removesuffix("-bf16")) is not None


def ort_providers() -> list[str]:
    """ONNX Runtime's execution providers for an image graph: CUDA first where this onnxruntime build has it."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def cpu_has_bfloat16() -> bool:
    """Whether OpenVINO computes in bfloat16 on this CPU (AVX-512 BF16 or AMX); elsewhere it would run float32."""
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def resolve_engine(runtime: str) -> str | None:
    """The engine that runs an image graph for ``runtime`` (``auto`` or one of :data:`ENGINES`), or None when
    ``auto`` finds none installed.

    ``auto`` takes the fastest at equal quality: ONNX Runtime where it has a
    CUDA GPU, else OpenVINO in bfloat16 where the CPU computes in it (3.1 times
    torch's tiles/s on 2 cores, rsicd_aid test mR 22.81 against float32's
    22.83, the demo's hits unchanged), else OpenVINO in float32 (1.5 times),
    else ONNX Runtime. bfloat16 vectors differ from float32's by rounding only
    (cosine about 0.9998), so indexes made on either kind of CPU mix freely.
    """
    check_image_runtime(runtime)
    if runtime != "auto":
        if not _installed(runtime):
            raise InputError("image_runtime", f"{runtime} is not installed: pip install {runtime.removesuffix('-bf16')}")
        return runtime
    if _installed("onnxruntime") and "CUDAExecutionProvider" in ort_providers():
        return "onnxruntime"
    if _installed("openvino"):
        return "openvino-bf16" if cpu_has_bfloat16() else "openvino"
    return "onnxruntime" if _installed("onnxruntime") else None


class OnnxImageSide:
    """Preprocessed images (N, 3, H, W) float32 → unit-length embeddings (N, dim), from the exported graph.

    ``engine``: OpenVINO in float32 (the embeddings stay torch's: cosine
    > 0.9999), OpenVINO in bfloat16 where the CPU has it (``openvino-bf16``:
    about twice as fast again, cosine ~0.9998 to torch's, rsicd_aid test mR
    22.81 against 22.83), or ONNX Runtime with every graph optimisation on (on
    a CUDA GPU where its build has one).
    ``threads``: how many cores it may use (None: all), as torch's thread count
    says for torch (a Ray worker sets its share).
    """

    def __init__(self, path: str | Path, engine: str = "openvino", threads: int | None = None):
        self.path, self.engine = Path(path), engine
        self._run = graph_runner(self.path, engine, threads)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self._run(np.ascontiguousarray(images, dtype=np.float32))[0], dtype=np.float32)


def graph_runner(path: Path, engine: str, threads: int | None = None, compiled_cache: Path | None = None,
                 providers: list[str] | None = None) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A function running the ONNX graph at ``path`` on one input and returning all its outputs, on ``engine``
    (one of :data:`ENGINES`): OpenVINO tuned for latency, in float32 or (``openvino-bf16``) the CPU's fastest
    precision, its compiled form kept in ``compiled_cache`` when given; or ONNX Runtime with every graph
    optimisation on ``providers`` (default :func:`ort_providers`). ``threads``: cores it may use (None: all)."""
    if engine.startswith("openvino"):
        import openvino

        hints: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            hints["INFERENCE_NUM_THREADS"] = threads
        if engine == "openvino":
            hints["INFERENCE_PRECISION_HINT"] = "f32"
        if compiled_cache is not None:
            hints["CACHE_DIR"] = str(compiled_cache)
        compiled = openvino.Core().compile_model(str(path), "CPU", hints)
        request = compiled.create_infer_request()

        def run_openvino(data: np.ndarray) -> list[np.ndarray]:
            outputs = request.infer({0: data})
            return [outputs[output] for output in compiled.outputs]
        return run_openvino
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=providers or ort_providers())
    name = session.get_inputs()[0].name
    return lambda data: session.run(None, {name: data})


class CachedOnnxImageSide:
    """The ONNX image side of one set of weights: exported into the cache on first use, then run.

    ``export(path)`` writes the file; it is called only when no file of this
    digest exists yet (another process may have written it meanwhile: the
    write is atomic, and either file is the same graph).
    """

    def __init__(self, path: Path, export, engine: str, threads: int | None = None):
        self.path, self._export, self.engine, self.threads = path, export, engine, threads
        self._side: OnnxImageSide | None = None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if self._side is None:
            if not self.path.is_file():
                self._export(self.path)
            self._side = OnnxImageSide(self.path, self.engine, self.threads)
        return self._side(images)


def export_image_side(model, path: str | Path, image_size: int) -> Path:
    """Write ``model``'s image side (a :class:`~georet.models.tower_clip.TowerCLIP` with its views, fused
    features, heads and the final normalisation) as an ONNX graph with a dynamic batch axis, atomically."""
    import torch
    import torch.nn.functional as F

    class ImageSide(torch.nn.Module):
        def __init__(self, tower):
            super().__init__()
            self.tower = tower

        def forward(self, images):
            return F.normalize(self.tower.encode_image(images), dim=-1)

    side = ImageSide(model).eval()
    example = torch.zeros(2, 3, image_size, image_size)

    with torch.inference_mode():
        side(example)  # builds a lazy image trunk first: not while the exporter traces

    def write(tmp: Path) -> None:
        # the fused transformer kernel of a side branch's encoder layer has no ONNX form: its plain ops do,
        # so the fast path is off while exporting (and restored after)
        fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            with torch.inference_mode(), warnings.catch_warnings():  # the lazy trunk holds inference tensors
                warnings.simplefilter("ignore")  # tracer notes on the fixed image size: this graph serves that size
                torch.onnx.export(side, (example,), str(tmp), input_names=["images"], output_names=["embeddings"],
                                  dynamic_axes={"images": {0: "n"}, "embeddings": {0: "n"}}, opset_version=OPSET,
                                  dynamo=False)
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)
    return path
