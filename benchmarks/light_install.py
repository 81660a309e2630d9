"""The plain install (``pip install .``, no torch): its size, install time, and the main job's cold start in it.

Makes a fresh virtualenv, installs this checkout into it from the package cache pip already has (the
"warm cache" of the target), then measures: seconds to install, megabytes on disk (the virtualenv), whether
torch, torchvision, timm or open_clip came along, ``georet demo`` (offline: proxies pointed nowhere) and its
right-hit counts, a cold ``georet query`` (median of three fresh processes) and ``georet serve`` until
``/health`` answers, on the demo index.

    python benchmarks/light_install.py [--out benchmarks/results/light_install.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from georet.provenance import write_results

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}


def megabytes(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20, 1)


def serve_ready(georet: Path, db: Path, env: dict) -> float:
    """Seconds from starting ``georet serve`` to its first 200 on /health."""
    started = time.perf_counter()
    server = subprocess.Popen([str(georet), "serve", "--db", str(db), "--port", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        url = server.stdout.readline().strip()
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as answer:
                    if answer.status == 200:
                        return round(time.perf_counter() - started, 2)
            except OSError:
                time.sleep(0.05)
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="georet-light-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        started = time.perf_counter()
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(ROOT)], check=True,
                       env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        install_s = round(time.perf_counter() - started, 1)
        found = subprocess.run([str(venv / "bin" / "python"), "-c", "import importlib.util as u; print(','.join(m for m "
                                "in ('torch', 'torchvision', 'timm', 'open_clip') if u.find_spec(m)))"],
                               capture_output=True, text=True, check=True).stdout.strip()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env.update(OFFLINE, HOME=tmp)
        georet = venv / "bin" / "georet"
        started = time.perf_counter()
        demo = subprocess.run([str(georet), "demo", "--out", f"{tmp}/demo", "--json"], capture_output=True, text=True,
                              env=env, check=True)
        demo_s = round(time.perf_counter() - started, 1)
        db = Path(tmp) / "demo" / "index"
        cold = []
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run([str(georet), "query", "airport near river", "--db", str(db), "-k", "5"], env=env,
                           capture_output=True, check=True)
            cold.append(time.perf_counter() - started)
        report = {
            "install_seconds_warm_cache": install_s, "venv_mb": megabytes(venv),
            "torch_family_installed": found or None,
            "demo_seconds_offline": demo_s,
            "demo_right": {q: f["right"] for q, f in json.loads(demo.stdout)["found"].items()},
            "cold_query_seconds_median": round(statistics.median(cold), 2),
            "serve_ready_seconds": serve_ready(georet, db, env),
        }
    if args.out:
        write_results(args.out, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
