"""The torch-free georet-base (``georet.models.light``) and the main job in an install without torch."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import GEORET_EXE, SHARED_DATA
from PIL import Image

from georet.models import ModelSpec, load_model
from georet.models.light import LightModel, NumpyPreprocess
from georet.models.preprocess import tower_preprocess
from georet.models.shipped import light_manifest

#: real subprocesses, servers, browsers, QGIS, Ray or virtualenvs: outside the fast tier (-m 'not slow')
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
#: a virtualenv with ``pip install .`` and no torch (``.ci/run`` makes it)
LIGHT_VENV = os.environ.get("GEORET_LIGHT_VENV")


@pytest.fixture(scope="module")
def models():
    torch_model = load_model(ModelSpec(), device="cpu", image_runtime="torch")
    manifest = light_manifest()
    assert manifest is not None, "the shipped files were made from other weights: run training/export_light.py"
    return torch_model, LightModel(ModelSpec(), manifest, image_runtime="openvino")  # float32, as torch


def chips(size: int | None = None) -> np.ndarray:
    """Real chips where the shared data is, else generated imagery; ``size`` resizes them (tiles of other sizes)."""
    from georet.testing.rasters import pattern

    files = sorted((SHARED_DATA / "rsicd_aid" / "images").glob("*.jpg"))[::400][:16]
    images = [Image.open(f).convert("RGB") for f in files] or \
        [Image.fromarray(pattern(3, 150, 150, seed).transpose(1, 2, 0)) for seed in range(8)]
    return np.stack([np.asarray(image.resize((size, size)) if size else image) for image in images])


def test_the_light_model_is_the_torch_model(models):
    torch_model, light = models
    assert light.identity == torch_model.identity  # an index built by either install serves the other
    for size in (None, 300, 97):  # the model's own input size, and tiles resized to it
        pixels = chips(size)
        preprocessed = torch_model.preprocess.apply(pixels).numpy()
        assert np.abs(light.preprocess.apply(pixels) - preprocessed).max() < 1e-5
        # one contract: numpy in, numpy out, whichever install embeds
        cosines = (torch_model.encode_images(preprocessed) * light.encode_images(light.preprocess.apply(pixels))).sum(1)
        assert cosines.min() >= 0.9999, cosines.min()  # the graph's weights are stored in float16
    queries = ["airport near river", "dense residential area", "a beach with waves", "storage tanks"]
    assert (torch_model.encode_text(queries) * light.encode_text(queries)).sum(1).min() >= 0.9999
    assert light.logit_scale == pytest.approx(torch_model.logit_scale, rel=1e-5)


def test_numpy_preprocess_keeps_the_settings():
    settings = tower_preprocess(150)
    assert NumpyPreprocess(**settings.to_dict()).to_dict() == settings.to_dict()


def test_what_needs_torch_says_so_in_one_line():
    from georet.errors import GeoretError
    from georet.models.light import load_light_model

    for spec in (ModelSpec("georet-small", "bundled"), ModelSpec("ViT-B-32", None)):
        with pytest.raises(GeoretError, match=r"needs torch, which this install does not have: pip install 'georet\[torch\]'"):
            load_light_model(spec)


@pytest.fixture
def light_env(tmp_path) -> dict[str, str]:
    """The environment for the torch-free virtualenv's ``georet``: its own home, no proxy or network."""
    if LIGHT_VENV is None:
        if os.environ.get("CI"):
            pytest.fail("GEORET_LIGHT_VENV is not set; .ci/run makes a torch-free virtualenv")
        pytest.skip("set GEORET_LIGHT_VENV to a virtualenv with `pip install .[ray]` (no torch)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update({"HOME": str(tmp_path), "NO_PROXY": "*", "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"})
    return env


def light(*args) -> list[str]:
    return [str(Path(LIGHT_VENV) / "bin" / "georet"), *map(str, args)]


def test_the_main_job_in_an_install_without_torch(tmp_path, light_env):
    """``georet demo`` (index, five queries, pictures) in a virtualenv that has georet and no torch, offline."""
    python = Path(LIGHT_VENV) / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; print([m for m in ('torch', 'torchvision', "
                            "'timm', 'open_clip') if u.find_spec(m)])"], capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "[]", f"the light install has {probe.stdout.strip()}"
    demo = subprocess.run(light("demo", "--out", tmp_path / "demo", "--json"),
                          capture_output=True, text=True, env=light_env, timeout=600)
    assert demo.returncode == 0, demo.stderr[-3000:]
    light_counts = {q: found["right"] for q, found in json.loads(demo.stdout)["found"].items()}
    torch_demo = subprocess.run([GEORET_EXE, "demo", "--out", str(tmp_path / "torch-demo"), "--json"],
                                capture_output=True, text=True, timeout=600, check=True)
    assert light_counts == {q: found["right"] for q, found in json.loads(torch_demo.stdout)["found"].items()}
    other = subprocess.run(light("index", ROOT / "georet/data/demo_mosaic.tif", "--db", tmp_path / "x.db", "--model",
                                 "georet-small", "--pretrained", "bundled"), capture_output=True, text=True, env=light_env)
    assert other.returncode == 1 and "pip install 'georet[torch]'" in other.stderr.strip().splitlines()[-1]
    train = subprocess.run(light("train", "--config", ROOT / "training/configs/georet-base.yaml"),
                           capture_output=True, text=True, env=light_env)
    assert train.returncode == 1 and train.stderr.strip().splitlines() == [
        "Error: `georet train` needs torch, which this install does not have: pip install 'georet[torch]'"]


def test_ray_indexes_in_an_install_without_torch(tmp_path, light_env):
    """``georet index --engine ray`` on the plain install (with the ``ray`` extra): Ray workers embed with the
    shipped graph and write the tiles the torch install's local engine writes."""
    from georet.index import TileStore

    mosaic = ROOT / "georet/data/demo_mosaic.tif"
    ray = subprocess.run(light("index", mosaic, "--db", tmp_path / "ray.db", "--tile-size", "150", "--engine", "ray",
                               "-q"), capture_output=True, text=True, env=light_env, timeout=600)
    assert ray.returncode == 0, ray.stderr[-3000:]
    subprocess.run([GEORET_EXE, "index", str(mosaic), "--db", str(tmp_path / "local.db"), "--tile-size", "150", "-q"],
                   check=True, timeout=600)
    rows = {name: {row["tile_id"]: row for row in TileStore.open(tmp_path / f"{name}.db").table.to_arrow().to_pylist()}
            for name in ("ray", "local")}
    assert sorted(rows["ray"]) == sorted(rows["local"]) and len(rows["ray"]) >= 25
    for tile_id, row in rows["ray"].items():
        assert float(np.dot(row["vector"], rows["local"][tile_id]["vector"])) >= 0.999, tile_id
        assert row["geometry"] == rows["local"][tile_id]["geometry"]
