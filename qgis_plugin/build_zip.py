"""Build the installable plugin zip: ``python qgis_plugin/build_zip.py [--out dist]``.

The zip holds one top folder, ``georet_qgis/``, as QGIS's "Install from ZIP" expects.
"""

from __future__ import annotations

import argparse
import configparser
import zipfile
from pathlib import Path

PLUGIN = Path(__file__).resolve().parent / "georet_qgis"


def build(out_dir: Path) -> Path:
    meta = configparser.ConfigParser()
    meta.read(PLUGIN / "metadata.txt")
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / f"georet_qgis-{meta['general']['version']}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(PLUGIN.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                zf.write(path, Path("georet_qgis") / path.relative_to(PLUGIN))
    return archive


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("dist"))
    print(build(parser.parse_args().out))
