"""Screenshot of the georet web map (``georet serve``) in headless Chromium, for the README.

    python docs/webmap_screenshot.py --query "airport near river" -k 5 --out docs/webmap.png

Indexes the bundled demo mosaic with the default model into a temporary folder,
starts ``georet serve`` on a free loopback port, opens ``/?q=...`` in Chromium
(the page runs the search from its URL) and saves the window.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GEORET = str(Path(sys.executable).parent / "georet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--query", default="airport near river")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "webmap.png")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "demo.db"
        subprocess.run([GEORET, "index", str(ROOT / "georet" / "data" / "demo_mosaic.tif"), "--db", str(db),
                        "--tile-size", "150", "--quiet"], check=True)
        server = subprocess.Popen([GEORET, "serve", "--db", str(db), "--port", "0"], stdout=subprocess.PIPE, text=True)
        try:
            url = server.stdout.readline().strip()
            for _ in range(300):
                try:
                    urllib.request.urlopen(url + "/health", timeout=5)
                    break
                except OSError:
                    time.sleep(0.2)
            page = f"{url}/?{urllib.parse.urlencode({'q': args.query, 'k': args.k})}"
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            f"--user-data-dir={tmp}/chromium", "--window-size=1280,800", "--virtual-time-budget=20000",
                            f"--screenshot={args.out.resolve()}", page], check=True, capture_output=True)
        finally:
            server.terminate()
            server.wait()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
