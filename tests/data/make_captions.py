"""A miniature remote-sensing caption dataset for training/eval tests.

Three scene classes drawn as simple textures (forest: green blobs, beach: sand
and sea, river: a blue band), five captions per image, written as
``images/<scene>_<n>.png`` with a Karpathy-style JSON and GaLR "precomp" files.
Run ``python tests/data/make_captions.py OUTDIR`` to look at it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SCENES = {
    "forest": ["dense green trees", "a forest with many trees", "green woodland", "trees cover the area",
               "a dark green forest"],
    "beach": ["a sandy beach next to the sea", "yellow sand and blue water", "waves on a beach",
              "a coast with sand", "the sea meets the beach"],
    "river": ["a river crosses the land", "a blue river between fields", "a winding river",
              "water flows through the area", "a river with green banks"],
}


def draw(scene: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    img = np.zeros((size, size, 3), np.float32)
    if scene == "forest":
        img[:] = (30, 90, 30)
        for _ in range(12):
            y, x = rng.integers(0, size, 2)
            img[max(0, y - 3):y + 3, max(0, x - 3):x + 3] = (20, 140 + rng.integers(0, 40), 20)
    elif scene == "beach":
        split = rng.integers(size // 3, 2 * size // 3)
        img[:, :split] = (220, 200, 140)
        img[:, split:] = (30, 80, 180)
    else:
        img[:] = (90, 140, 60)
        centre = rng.integers(size // 4, 3 * size // 4)
        img[:, centre - 3:centre + 3] = (40, 70, 200)
    return np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)


def write_dataset(out: Path, per_scene: int = 8, test_per_scene: int = 3, seed: int = 0) -> Path:
    """Returns the JSON path; precomp files sit beside it in ``precomp/``."""
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records, imgid = [], 0
    for scene, captions in SCENES.items():
        for n in range(per_scene):
            name = f"{scene}_{n}.png"
            Image.fromarray(draw(scene, rng)).save(out / "images" / name)
            records.append({"filename": name, "imgid": imgid, "split": "test" if n < test_per_scene else "train",
                            "scene": scene, "sentences": [{"raw": c, "sentid": imgid * 5 + k} for k, c in enumerate(captions)]})
            imgid += 1
    path = out / "captions.json"
    path.write_text(json.dumps({"dataset": "mini", "images": records}))
    precomp = out / "precomp"
    precomp.mkdir(exist_ok=True)
    for split in ("train", "test"):
        chosen = [r for r in records if r["split"] == split]
        (precomp / f"{split}_caps.txt").write_text("".join(s["raw"] + "\n" for r in chosen for s in r["sentences"]))
        repeat = 5 if split == "test" else 1  # GaLR repeats test file names per caption
        (precomp / f"{split}_filename.txt").write_text("".join((r["filename"] + "\n") * repeat for r in chosen))
    return path


if __name__ == "__main__":
    print(write_dataset(Path(sys.argv[1] if len(sys.argv) > 1 else "mini_captions")))
