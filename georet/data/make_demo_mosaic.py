"""Build ``demo_mosaic.tif``, the real imagery behind ``georet demo``.

36 real aerial chips (AID images of the rsicd_aid *test* split, 150 px) laid
out on a 6×6 grid with a synthetic georeference (2 m pixels, UTM 31N), so the
demo runs offline on images the default model never trained on. The layout
reads like a small region: rivers with a bridge, one airport beside a river and
one far from it, a town, an industrial strip and a coast.

    python georet/data/make_demo_mosaic.py [--data ../shared/data/rsicd_aid/dataset_rsicd_aid.json]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from georet.geo.mosaic import write_mosaic

LAYOUT = [
    ["mountain", "forest", "forest", "river", "farmland", "farmland"],
    ["forest", "pond", "river", "airport", "farmland", "meadow"],
    ["denseresidential", "river", "bridge", "parking", "industrial", "airport"],
    ["denseresidential", "river", "church", "square", "industrial", "storagetanks"],
    ["beach", "port", "viaduct", "stadium", "school", "baseballfield"],
    ["beach", "beach", "port", "playground", "commercial", "park"],
]
HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[2] / "shared" / "data" / "rsicd_aid" / "dataset_rsicd_aid.json"


def test_chips(dataset: Path) -> dict[str, list[Path]]:
    """Test-split images per scene class, in file-name order (deterministic)."""
    images = json.loads(dataset.read_text())["images"]
    chips: dict[str, list[Path]] = defaultdict(list)
    for image in sorted(images, key=lambda i: i["filename"]):
        if image["split"] == "test":
            chips[image["scene"]].append(dataset.parent / "images" / image["filename"])
    return chips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=HERE / "demo_mosaic.tif")
    args = parser.parse_args()
    chips = test_chips(args.data)
    used: dict[str, int] = defaultdict(int)
    grid = []
    for row in LAYOUT:
        grid.append([])
        for scene in row:
            grid[-1].append(chips[scene][used[scene]])
            used[scene] += 1
    write_mosaic(grid, args.out, chip_size=150, pixel_size=2.0, crs="EPSG:32631", origin=(600_000.0, 5_760_000.0),
                 description="georet demo: 36 rsicd_aid test chips (AID images, research use) on a 6x6 grid")
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
