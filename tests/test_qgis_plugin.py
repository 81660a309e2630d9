"""Runs the QGIS plugin's tests in real QGIS (Debian python3-qgis, system Python).

The plugin lives in QGIS's Python, georet in its own environment; this test
builds a real index with the real georet CLI, then starts
``qgis_plugin/tests`` under the interpreter that has QGIS, pointing it at the
georet executable of this environment. Also checks the plugin zip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import GEORET_EXE, TINY, run_cli

#: real subprocesses, servers, browsers, QGIS, Ray or virtualenvs: outside the fast tier (-m 'not slow')
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
QGIS_PYTHON = os.environ.get("GEORET_QGIS_PYTHON", "/usr/bin/python3")


def _qgis_available() -> bool:
    try:
        probe = subprocess.run([QGIS_PYTHON, "-c", "import qgis.core, pytest"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def test_plugin_in_real_qgis(tmp_path, rasters):
    if not _qgis_available():
        if os.environ.get("CI"):
            pytest.fail(f"{QGIS_PYTHON} cannot import qgis.core and pytest; .ci/run installs python3-qgis")
        pytest.skip("QGIS (python3-qgis) is not installed for the system Python")
    from georet.testing.rasters import write_raster

    db = tmp_path / "qgis.db"  # the UTM place at two dates, for the date filter and change search
    run_cli("index", rasters["utm"], rasters["lonlat"], "--db", db, "--tile-size", "64", "--acquired", "2016-05-01",
            *TINY, check=True)
    later = write_raster(tmp_path / "utm_later.tif", grid="utm", seed=5)
    run_cli("index", later, "--db", db, "--tile-size", "64", "--acquired", "2021-06-15", *TINY, check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update({"GEORET_EXE": GEORET_EXE, "GEORET_TEST_DB": str(db), "GEORET_TEST_RASTER": str(rasters["utm"]),
                "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path)})  # fresh QGIS settings
    # -o addopts=: the repository's two workers need pytest-xdist, which QGIS's system Python lacks
    proc = subprocess.run([QGIS_PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "qgis_plugin/tests"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout


def test_plugin_zip(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "qgis_plugin" / "build_zip.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    (archive,) = tmp_path.glob("georet_qgis-*.zip")
    names = zipfile.ZipFile(archive).namelist()
    assert "georet_qgis/metadata.txt" in names and "georet_qgis/__init__.py" in names
    assert all(n.startswith("georet_qgis/") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") or "/tests/" in n for n in names)
