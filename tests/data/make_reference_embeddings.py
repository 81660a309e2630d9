"""Write ``reference_embeddings.json``: what each bundled model must answer for fixed inputs.

Like open_clip's inference regression tests: if a refactor, a dependency update or
a change of preprocessing moves these vectors, the test says so. Re-run this script
only when the change is intended (new weights, new preprocessing), and say why in
the commit.

    python tests/data/make_reference_embeddings.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

OUT = Path(__file__).with_name("reference_embeddings.json")
TEXTS = ["an airport with runways", "a river crossing farmland", "dense residential area", "storage tanks"]
#: pixel windows (col, row, size) of the demo raster: real AID chips shipped inside the package
CHIPS = [(0, 0, 150), (150, 150, 150), (750, 750, 150)]


def reference_inputs() -> tuple[list[str], np.ndarray]:
    """The fixed texts and image pixels (N, H, W, 3) uint8."""
    from georet.demo import DEMO_RASTER

    with rasterio.open(DEMO_RASTER) as src:
        chips = [src.read([1, 2, 3], window=Window(c, r, s, s)).transpose(1, 2, 0) for c, r, s in CHIPS]
    return TEXTS, np.stack(chips)


def embed(model) -> dict[str, list[list[float]]]:
    texts, pixels = reference_inputs()
    return {"text": model.encode_text(texts).round(6).tolist(),
            "image": model.encode_images(model.preprocess.apply(pixels)).round(6).tolist()}


#: every bundled model: indexes built with any of them must keep opening and answering the same
BUNDLED = ("georet-base", "georet-small")


def main() -> None:
    from georet.models import ModelSpec, load_model

    out = {"texts": TEXTS, "chips": CHIPS}
    for arch in BUNDLED:
        model = load_model(ModelSpec(arch, "bundled"), device="cpu", image_runtime="openvino")  # float32
        out[arch] = {"identity": model.identity, **embed(model)}
    OUT.write_text(json.dumps(out) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
