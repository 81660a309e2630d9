"""Screenshot of the georet web map (``georet serve``) in headless Chromium, for the README.

    python docs/webmap_screenshot.py --query "airport near river" -k 5 --out docs/webmap.png
    python docs/webmap_screenshot.py --db naip.db --query "lakes where there used to be farmland" -k 4 \
        --imagery 2009-08-18 --out docs/webmap_change.png

Indexes the bundled demo mosaic with the default model into a temporary folder
(or serves ``--db``, e.g. the NAIP series of ``docs/change_pictures.py``),
starts ``georet serve`` on a free loopback port, opens ``/?q=...`` in Chromium
(the page runs the search from its URL; ``--imagery`` picks the date of the
imagery under the hits) and saves the window.
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
    parser.add_argument("--db", type=Path, help="serve this index instead of indexing the demo mosaic")
    parser.add_argument("--imagery", help="the acquisition date of the imagery shown [default: the latest]")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "demo.db"
        if args.db is None:
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
            query = {"q": args.query, "k": args.k, **({"imagery": args.imagery} if args.imagery else {})}
            page = f"{url}/?{urllib.parse.urlencode(query)}"
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            f"--user-data-dir={tmp}/chromium", "--window-size=1280,800", "--virtual-time-budget=20000",
                            f"--screenshot={args.out.resolve()}", page], check=True, capture_output=True)
        finally:
            server.terminate()
            server.wait()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
