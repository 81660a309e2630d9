"""The training benchmarks run end to end (few steps, tiny data) and report what the README quotes.

Their speed and quality are not judged here — that is the benchmarks' job — but their
plumbing is: the figures they print must be the ones they measured, and a benchmark that
breaks silently publishes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from make_captions import write_dataset

#: real subprocesses, servers, browsers, QGIS, Ray or virtualenvs: outside the fast tier (-m 'not slow')
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, *args: str) -> dict:
    """Run ``benchmarks/SCRIPT`` (or a path under the repository) with ``--json``; its report."""
    path = ROOT / script if "/" in script else ROOT / "benchmarks" / script
    proc = subprocess.run([sys.executable, str(path), *args, "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_train_efficiency_measures_every_method():
    report = run_benchmark("train_efficiency.py", "--arch", "georet-tiny", "--batch-size", "4", "--steps", "1",
                           "--device", "cpu")
    methods = report["methods"]
    assert set(methods) == {"full", "mrs", "mrs_infonce", "focus"}
    assert all(figures["samples_per_s"] > 0 for figures in methods.values())
    # trainable parameters are those of the real methods on this architecture
    from georet.models import AdaptedCLIP, AdapterConfig, open_clip_module

    for name, method in (("full", "full"), ("mrs", "mrs"), ("focus", "focus")):
        model = AdaptedCLIP(open_clip_module().create_model("georet-tiny"), AdapterConfig(method))
        assert methods[name]["trainable_params"] == model.count_trainable()
    assert (methods["focus"]["queue"], methods["mrs"]["loss"]) == (4096, "hmmc")
    # the printed ratios are those of the printed figures
    ratios = report["ratios"]
    assert ratios["focus_mem_vs_full"] == round(methods["focus"]["peak_mem_mb"] / methods["full"]["peak_mem_mb"], 3)
    assert ratios["focus_throughput_vs_mrs"] == round(methods["focus"]["samples_per_s"] / methods["mrs"]["samples_per_s"], 2)


def test_cmer_transfer_study_reports_every_variant_and_resumes(tmp_path):
    data = write_dataset(tmp_path / "captions")
    args = ("--data", str(data), "--seeds", "0", "--pretrain-steps", "2", "--steps", "2",
            "--batch-size", "4", "--workdir", str(tmp_path / "work"))
    report = run_benchmark("experiments/cmer_transfer/run.py", *args)
    protocol = report["protocol"]
    assert protocol["source_classes"] and protocol["target_classes"]
    assert not set(protocol["source_classes"]) & set(protocol["target_classes"])
    assert set(report["results"]) == {
        "zero-shot", "full FT", "full FT + scene prior", "MRS-Adapter (HMMC)", "CMER", "CMER - scene prior",
        "CMER - focus layer", "CMER - queue", "CMER - scene aug"}
    for entry in report["results"].values():
        assert [run["seed"] for run in entry["runs"]] == [0]
        # with one seed the mean is that run's figure and the spread is zero
        assert entry["mR"] == {"mean": round(entry["runs"][0]["mR"], 2), "std": 0.0}

    # a second call finds every run finished in the kept workdir: nothing retrains, the figures stay
    checkpoints = sorted((tmp_path / "work").glob("*/best.pt"))
    stamps = [p.stat().st_mtime_ns for p in checkpoints]
    again = run_benchmark("experiments/cmer_transfer/run.py", *args)
    assert [p.stat().st_mtime_ns for p in checkpoints] == stamps
    assert again["results"] == report["results"]


def test_cmer_towers_study_trains_every_variant_through_the_one_trainer(tmp_path):
    data = write_dataset(tmp_path / "captions")
    out = tmp_path / "study.json"
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "cmer_towers" / "run.py"), "--data", str(data),
                           "--seeds", "0", "--steps", "2", "--batch-size", "8", "--device", "cpu",
                           "--variants", "LiT heads;CMER;MRS-Adapter + HMMC;full FT", "--workdir", str(tmp_path / "runs"),
                           "--cache-dir", str(tmp_path / "cache"), "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["provenance"]["command"].startswith("python ") and report["provenance"]["versions"]["torch"]
    assert set(report["results"]) == {"LiT heads", "CMER", "MRS-Adapter + HMMC", "full FT"}
    for name, entry in report["results"].items():
        run = entry["runs"][0]
        assert 0 <= run["mR"] <= 100 and entry["mR"] == {"mean": round(run["mR"], 2), "std": 0.0}, name
        summary = json.loads((tmp_path / "runs" / f"{name.replace(' ', '_')}-0" / "summary.json").read_text())
        assert summary["best_val"]["mR"] == run["val_mR"]
    # full fine-tuning got as many samples as CMER: 2 steps of 8 are 2 steps of its own batch of 8
    assert json.loads((tmp_path / "runs" / "full_FT-0" / "summary.json").read_text())["steps"] == 2
