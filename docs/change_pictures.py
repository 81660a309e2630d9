"""Change search on real time series: the pictures and hit lists in docs/search.md#time-dates-and-change.

Indexes the shared NAIP quarter-quad of North Dakota at three dates (2009 and 2015 dated by their
file names, 2020 given with --acquired) and the Landsat series around Pucallpa (1985-2020, dated by
file name), runs change queries with the default model, prints the hits and writes one picture per
query: each hit's earlier tile beside its later one.

    python docs/change_pictures.py [--data ../shared/data] [--out docs]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from georet import index_raster, open_index

ROOT = Path(__file__).resolve().parents[1]
QUERIES = {
    "naip": ["lakes where there used to be farmland", "new lakes", "farmland that disappeared"],
    "pucallpa": ["forest that was cleared", "new residential area", "forest that became farmland"],
}
THUMB = 96


def index_series(data: Path, work: Path) -> dict[str, Path]:
    """The two time series in one index each; the 2020 NAIP raster has no date in its name, so it is given."""
    naip, pucallpa = work / "naip", work / "pucallpa"
    series = data / "timeseries"
    index_raster(sorted(series.glob("naip_north_dakota_*.tif")), naip, progress=False)
    index_raster([data / "rasters" / "naip_north_dakota_4band_5m.tif"], naip, progress=False, acquired="2020-08-31")
    index_raster(sorted(series.glob("landsat_pucallpa_*.tif")), pucallpa, progress=False)
    return {"naip": naip, "pucallpa": pucallpa}


def picture(index, hits, out: Path) -> None:
    """Rows of (earlier tile, later tile) thumbnails with their dates."""
    sheet = Image.new("RGB", (2 * THUMB + 30, len(hits) * (THUMB + 18) + 4), "white")
    draw = ImageDraw.Draw(sheet)
    for row, hit in enumerate(hits.itertuples()):
        top = row * (THUMB + 18) + 2
        for column, (tile_id, when) in enumerate(((hit.before_tile_id, hit.before_acquired),
                                                  (hit.tile_id, hit.acquired))):
            left = 2 + column * (THUMB + 26)
            sheet.paste(index.thumbnail(tile_id).convert("RGB").resize((THUMB, THUMB)), (left, top))
            draw.text((left, top + THUMB + 2), f"#{hit.rank} {when}", fill="black")
        draw.text((THUMB + 8, top + THUMB // 2 - 6), "->", fill="black")
    sheet.save(out, quality=88)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="georet-change-") as tmp:
        for name, db in index_series(args.data, Path(tmp)).items():
            index = open_index(db)
            print(f"## {name}: dates {', '.join(index.info()['dates'])}")
            for number, query in enumerate(QUERIES[name]):
                hits = index.search(query, k=4)
                print(f"{query}:")
                for hit in hits.itertuples():
                    print(f"  #{hit.rank} {hit.score:+.2f} {hit.before_acquired} -> {hit.acquired} "
                          f"(scene now: {hit.scene}) {hit.tile_id}")
                if number == 0:
                    picture(index, hits, args.out / f"change_{name}.jpg")


if __name__ == "__main__":
    main()
