"""The wheels PyPI would take: each under its 100 MB limit, each holding the files it must."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from georet.errors import GeoretError
from georet.models import BUNDLED_WEIGHTS, ModelSpec, load_model

ROOT = Path(__file__).resolve().parents[1]
PYPI_LIMIT = 100 * 2**20


@pytest.mark.slow
def test_georet_and_georet_small_weights_are_wheels_under_pypi_s_limit(tmp_path):
    # built from clean copies (setuptools keeps files of earlier builds in a project's build/ folder), with the
    # setuptools of this environment (the dev extra pins one that reads PEP 639 licences): no download
    for project in (ROOT, ROOT / "packages" / "georet-small-weights"):
        source = tmp_path / "src" / project.name
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (project / name).is_file():
                source.mkdir(parents=True, exist_ok=True)
                shutil.copy(project / name, source / name)
        for package in project.glob("georet*/__init__.py"):
            shutil.copytree(package.parent, source / package.parent.name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(source)], check=True, capture_output=True)
    wheels = {path.name.split("-")[0]: path for path in tmp_path.glob("*.whl")}
    assert sorted(wheels) == ["georet", "georet_small_weights"]
    for path in wheels.values():
        assert path.stat().st_size < PYPI_LIMIT, f"{path.name}: {path.stat().st_size / 2**20:.1f} MiB"
    with zipfile.ZipFile(wheels["georet"]) as main:
        names = set(main.namelist())
    light = "georet/models/weights/georet-base-light/"
    assert {"georet/models/weights/georet-base.pt", f"{light}image.onnx", f"{light}text.onnx",
            f"{light}text.json", f"{light}text.tokenizer.json", f"{light}light.json"} <= names
    assert not [n for n in names if n.endswith("georet-small.pt") or "/minilm/" in n]
    with zipfile.ZipFile(wheels["georet_small_weights"]) as small:
        assert "georet_small_weights/georet-small.pt" in small.namelist()


def test_georet_small_without_its_weights_package_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setitem(BUNDLED_WEIGHTS, "georet-small", tmp_path / "georet-small.pt")
    with pytest.raises(GeoretError, match=r"bundled weights of georet-small are missing .*pip install "
                                          r"georet-small-weights$"):
        load_model(ModelSpec("georet-small", "bundled"), device="cpu")
