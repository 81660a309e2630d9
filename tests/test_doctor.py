"""``georet doctor``: report contents, index-folder states, Markdown redaction."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import torch
from conftest import run_cli

from georet.doctor import markdown, report


def test_doctor_json_via_cli(built_index):
    info = json.loads(run_cli("doctor", "--json", "--db", built_index, check=True).stdout)
    assert info["packages"]["torch"] == importlib.metadata.version("torch")
    assert info["packages"]["lancedb"] == importlib.metadata.version("lancedb")
    for key in ("georet", "python", "gdal", "proj", "device", "why", "default_model", "caches"):
        assert info[key], key
    assert info["device"] in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        assert info["device"] in {"cpu", "mps"} and ("CPU-only" in info["why"] or "no GPU" in info["why"]
                                                      or info["device"] == "mps")
    model = info["default_model"]
    assert model["name"] == "georet-base/bundled"
    assert model["available_offline"] and Path(model["weights"]).is_file() and model["hint"] is None
    assert info["db"] == {"path": str(built_index), "state": "georet index", "writable": True,
                          "health": {"manifest": "ok", "table": "ok", "missing_files": []}}


def test_db_states(tmp_path):
    assert report(tmp_path / "new")["db"]["state"] == "does not exist yet"
    (tmp_path / "empty").mkdir()
    assert report(tmp_path / "empty")["db"]["state"] == "empty folder"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    assert report(tmp_path / "other")["db"]["state"] == "exists and is not a georet index"


def test_markdown_block_shortens_home_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    db = tmp_path / "indexes" / "city.db"
    text = markdown(report(db))
    assert text.startswith("```text\n") and text.endswith("\n```")
    assert "~/indexes/city.db" in text and str(tmp_path) not in text
    human = run_cli("doctor", check=True).stdout
    assert human.startswith("```text") and "device:" in human and "default model:" in human
    assert "~/.cache" in human and str(tmp_path) not in human  # the subprocess inherits HOME


def test_repair_names_what_it_cannot_mend(tmp_path):
    from conftest import invoke_cli

    remote = invoke_cli("doctor", "--db", "s3://bucket/tiles", "--repair")
    assert remote.returncode == 1 and remote.stderr.strip().startswith(
        "Error: s3://bucket/tiles: --repair mends indexes in local folders")
    missing = invoke_cli("doctor", "--repair")
    assert missing.returncode == 2 and "--repair mends the index --db names" in missing.stderr
