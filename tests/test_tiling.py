"""Tiling: grid, edge policy, footprints across CRSs, band handling, masks, bad rasters."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest
import rasterio
import rasterio.transform
import shapely
from rasterio.windows import Window

from georet.errors import GeoretError
from georet.geo import (
    DEFAULT_GROUND_SCALE,
    GroundScale,
    RasterSource,
    TilingParams,
    discover_rasters,
    grid_offsets,
    parse_stride,
    parse_tile_size,
)
from georet.geo.raster import MAX_READ_PX
from georet.testing.rasters import write_raster


def test_grid_offsets_cover_every_pixel_with_full_tiles():
    for length, tile, stride in [(256, 64, 64), (250, 64, 64), (300, 100, 60), (64, 64, 32), (1000, 256, 200)]:
        offsets = grid_offsets(length, tile, stride)
        covered = np.zeros(length, bool)
        for off in offsets:
            assert 0 <= off and off + tile <= length  # "shift": no tile hangs over the edge
            covered[off : off + tile] = True
        assert covered.all()
        assert offsets == sorted(set(offsets))


def test_grid_offsets_shift_last_tile_flush_with_edge():
    assert grid_offsets(250, 64, 64) == [0, 64, 128, 186]
    assert grid_offsets(40, 64, 64) == [0]


@pytest.mark.parametrize("text,expected", [("256", (256, "px")), ("128px", (128, "px")), ("200m", (200, "m")),
                                           ("1.5km", (1500, "m"))])
def test_parse_tile_size(text, expected):
    assert parse_tile_size(text) == expected


@pytest.mark.parametrize("bad", ["0", "-5", "abc", "12.5px", "10 miles"])
def test_parse_tile_size_rejects_nonsense(bad):
    with pytest.raises(GeoretError):
        parse_tile_size(bad)


def test_tile_grid_is_pure_geometry(tmp_path):
    """The grid needs no file: size, transform and CRS give windows, ids and footprints."""
    from affine import Affine
    from rasterio.crs import CRS

    from georet.geo import TileGrid

    grid = TileGrid(str(tmp_path / "never-written.tif"), width=300, height=200, transform=Affine(2, 0, 500000, 0, -2, 5800000),
                    crs=CRS.from_epsg(32631), tile_px=128, stride_px=128)
    windows = grid.windows()
    assert [(w.col_off, w.row_off) for w in windows] == [(0, 0), (128, 0), (172, 0), (0, 72), (128, 72), (172, 72)]
    assert grid.tile_id(windows[2]).startswith("never-written-") and grid.tile_id(windows[2]).endswith("-c172-r0-128x128")
    poly_src, poly = grid.footprint(windows[0])
    assert poly_src.bounds == (500000, 5800000 - 256, 500256, 5800000)
    assert 2.99 < poly.centroid.x < 3.01 and 52.3 < poly.centroid.y < 52.4


def test_gdal_options_are_scoped_to_each_read(rasters, monkeypatch):
    """georet caps GDAL's block cache for each read, in whichever thread reads, and holds no options
    between reads: rasterio keeps them per thread, and a server or a Ray worker reads an open raster from
    threads other than the one that opened it."""
    import threading

    import rasterio.env
    import rasterio.io

    from georet.geo.sources import GDAL_CACHE_BYTES

    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    before = rasterio.env.get_gdal_config("GDAL_CACHEMAX")
    seen = []
    real_read = rasterio.io.DatasetReader.read

    def reading(self, *args, **kwargs):
        seen.append((threading.current_thread().name, rasterio.env.get_gdal_config("GDAL_CACHEMAX")))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", reading)
    with RasterSource(rasters["utm"], TilingParams(tile_size=64)) as src:
        assert rasterio.env.get_gdal_config("GDAL_CACHEMAX") == before  # nothing held between reads
        next(src.iter_tiles())
        other = threading.Thread(target=src.read, args=(src.windows()[1],), name="other")
        other.start()
        other.join()
    assert {name for name, _ in seen} >= {"MainThread", "other"}
    assert all(int(value) == GDAL_CACHE_BYTES for _, value in seen)
    assert rasterio.env.get_gdal_config("GDAL_CACHEMAX") == before


def test_utm_tiles_are_deterministic_and_footprints_are_lonlat(rasters):
    with RasterSource(rasters["utm"], TilingParams(tile_size=64)) as src:
        windows = src.grid.windows()
        assert len(windows) == 16
        first = src.read(windows[0])
        ids = [src.grid.tile_id(w) for w in windows]
    with RasterSource(rasters["utm"], TilingParams(tile_size=64)) as again:
        assert [again.grid.tile_id(w) for w in again.grid.windows()] == ids
    assert len(set(ids)) == len(ids)
    assert first.pixels.shape == (64, 64, 3) and first.pixels.dtype == np.uint8
    # EPSG:32631, x=500000 is the central meridian 3°E; y=5.8e6 m is ~52.3°N.
    lon, lat = first.footprint.centroid.x, first.footprint.centroid.y
    assert 2.99 < lon < 3.02 and 52.3 < lat < 52.4
    # Footprint transformed back equals the source-CRS tile polygon.
    back = pyproj.Transformer.from_crs(4326, 32631, always_xy=True)
    xs, ys = back.transform(*np.array(first.footprint.exterior.coords).T)
    assert shapely.Polygon(np.column_stack([xs, ys])).symmetric_difference(first.footprint_src).area < 1.0
    assert len(first.footprint.exterior.coords) > 5  # densified


def test_lonlat_and_mercator_rasters(rasters):
    with RasterSource(rasters["lonlat"], TilingParams(tile_size=64)) as src:
        assert src.crs.is_geographic
        tile = src.read(src.grid.windows()[0])
        minx, miny, maxx, maxy = tile.footprint.bounds
        assert minx == pytest.approx(4.0) and maxy == pytest.approx(52.0)
        assert maxx - minx == pytest.approx(64 * 0.0001)
    with RasterSource(rasters["mercator"], TilingParams(tile_size=64)) as src:
        assert not src.crs.is_geographic
        lon, lat = src.read(src.grid.windows()[0]).footprint.centroid.coords[0]
        assert 5.0 < lon < 5.1 and 52.5 < lat < 52.6


def test_tile_size_in_metres(rasters):
    with RasterSource(rasters["utm"], TilingParams(tile_size="320m")) as src:  # 10 m pixels
        assert src.grid.tile_px == 32
    with RasterSource(rasters["lonlat"], TilingParams(tile_size="100m")) as src:  # ~6.8 m x 11 m pixels at 52°N
        assert 10 <= src.grid.tile_px <= 16


def test_stride_gives_overlapping_tiles(rasters):
    with RasterSource(rasters["utm"], TilingParams(tile_size=128, stride=64)) as src:
        assert [int(w.col_off) for w in src.grid.windows()[:3]] == [0, 64, 128]
        assert len(src.grid.windows()) == 9


@pytest.mark.parametrize("value,expected", [(200, (200, "px")), ("64", (64, "px")), ("2/3", (2 / 3, "tile")),
                                            ("0.5", (0.5, "tile")), (0.5, (0.5, "tile"))])
def test_parse_stride(value, expected):
    assert parse_stride(value) == pytest.approx(expected)


@pytest.mark.parametrize("bad", [0, "0", "-3", "3/2", "1.5", "2/0", "half"])
def test_parse_stride_rejects_nonsense(bad):
    with pytest.raises(GeoretError, match="stride: takes pixels"):
        TilingParams(stride=bad)


def test_stride_as_a_share_of_the_tile(rasters):
    with RasterSource(rasters["utm"], TilingParams(tile_size=96, stride="2/3")) as src:
        assert src.grid.stride_px == 64
        assert [int(w.col_off) for w in src.grid.windows()[:4]] == [0, 64, 128, 160]


@pytest.mark.parametrize("pixel_m,expected_px", [(0.25, 1200), (1.0, 300), (10.0, 150), (300.0, 150)])
def test_auto_tiles_cover_the_model_ground_or_its_input(tmp_path, pixel_m, expected_px):
    """Fine pixels: tiles of the model's ground (300 m), ⅔ of a tile apart; coarse ones: never fewer pixels
    than its input."""
    path = write_raster(tmp_path / "r.tif", size=(1200, 1200))
    with rasterio.open(path, "r+") as dst:
        dst.transform = rasterio.transform.from_origin(500_000, 5_800_000, pixel_m, pixel_m)
    with RasterSource(path, TilingParams()) as src:
        assert (src.grid.tile_px, src.grid.stride_px) == (expected_px, round(expected_px * 2 / 3))
        assert src.metres_per_pixel == pytest.approx(pixel_m)
    scale = GroundScale(metres=100.0, min_px=64, stride=1.0)
    with RasterSource(path, TilingParams(scale=scale)) as src:
        assert src.grid.tile_px == src.grid.stride_px == max(64, round(100 / pixel_m))
    with RasterSource(path, TilingParams(scale=scale, stride=32)) as src:  # an explicit stride wins
        assert src.grid.stride_px == 32


def test_auto_tiles_fit_a_small_raster_and_refuse_a_scale_with_fixed_sizes(rasters):
    with RasterSource(rasters["mercator"], TilingParams()) as src:  # 128 px raster: whole tiles, no padding
        assert src.grid.tile_px == 128
    with pytest.raises(GeoretError, match="tile_size: is 256: a ground scale applies to tile size auto"):
        TilingParams(tile_size=256, scale=DEFAULT_GROUND_SCALE)


def test_large_tiles_are_read_averaged_down(tmp_path):
    """A 1,200-px tile reaches the model as MAX_READ_PX a side, its mean colour and valid share kept."""
    data = np.zeros((3, 1200, 1200), np.uint8)
    data[:, :, 600:] = 200  # right half bright
    path = write_raster(tmp_path / "big.tif", size=(1200, 1200), data=data, nodata=0)
    with RasterSource(path, TilingParams(tile_size=1200, stretch="never")) as src:
        tile = src.read(src.grid.windows()[0])
    assert tile.pixels.shape == (MAX_READ_PX, MAX_READ_PX, 3)
    assert tile.valid_fraction == pytest.approx(0.5, abs=0.01)
    assert tile.pixels[:, MAX_READ_PX // 2 + 2:].min() == 200


def test_uint16_single_band_is_stretched_to_grey_rgb(rasters):
    with RasterSource(rasters["uint16_single"], TilingParams(tile_size=128)) as src:
        assert src.bands == (1,)
        tile = src.read(src.grid.windows()[0])
    assert tile.pixels.dtype == np.uint8
    assert np.array_equal(tile.pixels[..., 0], tile.pixels[..., 2])
    assert tile.pixels.min() <= 5 and tile.pixels.max() >= 250  # 2–98 % stretch uses the full range


def test_band_selection(rasters):
    with RasterSource(rasters["utm"], TilingParams(tile_size=64, bands=(3, 2, 1))) as rev, \
         RasterSource(rasters["utm"], TilingParams(tile_size=64)) as fwd:
        w = Window(0, 0, 64, 64)
        assert np.array_equal(rev.read(w).pixels, fwd.read(w).pixels[..., ::-1])
    with pytest.raises(GeoretError, match="has 3 band"):
        with RasterSource(rasters["utm"], TilingParams(tile_size=64, bands=(4, 3, 2))):
            pass


def test_nodata_and_alpha_give_valid_fraction(rasters):
    with RasterSource(rasters["nodata"], TilingParams(tile_size=256)) as src:
        assert src.read(src.grid.windows()[0]).valid_fraction == pytest.approx(0.5, abs=0.01)
    with RasterSource(rasters["alpha"], TilingParams(tile_size=128)) as src:
        assert src.bands == (1, 2, 3)  # alpha is a mask, not a colour
        assert src.read(src.grid.windows()[0]).valid_fraction == pytest.approx(0.5)


def test_raster_smaller_than_tile_is_padded_as_invalid(rasters):
    with RasterSource(rasters["mercator"], TilingParams(tile_size=256)) as src:  # 128x128 raster
        (window,) = src.grid.windows()
        tile = src.read(window)
    assert tile.pixels.shape == (256, 256, 3)
    assert tile.valid_fraction == pytest.approx(0.25)


def test_raster_without_crs_is_refused_unless_assumed(rasters):
    with pytest.raises(GeoretError, match="no CRS; pass assume_crs"):
        with RasterSource(rasters["no_crs"], TilingParams(tile_size=32)):
            pass
    with RasterSource(rasters["no_crs"], TilingParams(tile_size=32, assume_crs="EPSG:32631")) as src:
        assert src.crs.to_epsg() == 32631


def test_corrupt_and_missing_inputs(tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00 definitely not a tiff")
    with pytest.raises(GeoretError, match="not a readable raster"):
        with RasterSource(bad, TilingParams()):
            pass
    with pytest.raises(GeoretError, match="no such file"):
        discover_rasters([tmp_path / "missing.tif"])
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(GeoretError, match="no rasters"):
        discover_rasters([tmp_path / "empty_dir"])


def test_discover_directory_is_sorted_and_deduplicated(rasters):
    folder = rasters["utm"].parent
    names = [ref.name for ref in discover_rasters([folder, rasters["utm"]])]
    assert names == sorted(names) and len(names) == len(set(names))
    assert str(rasters["utm"].resolve()) in names


def test_hazy_uint8_rasters_are_stretched_and_well_exposed_ones_left_alone(tmp_path):
    from georet.errors import InputError
    from georet.testing.rasters import pattern, write_raster

    crisp = pattern(3, 256, 256, seed=3)  # spans 0-255
    hazy = (crisp * 0.5 + np.array([90, 100, 120])[:, None, None]).astype(np.uint8)  # lifted, bluish blacks
    paths = {name: write_raster(tmp_path / f"{name}.tif", data=data) for name, data in (("crisp", crisp),
                                                                                          ("hazy", hazy))}
    expected = {("crisp", "auto"): False, ("hazy", "auto"): True, ("crisp", "always"): True,
                ("hazy", "never"): False}
    for (name, mode), stretched in expected.items():
        with RasterSource(paths[name], TilingParams(tile_size=64, stretch=mode)) as source:
            assert source.stretched == stretched, (name, mode)
            pixels = source.read(source.windows()[0]).pixels
            if name == "hazy" and stretched:  # the stretch spreads the hazy colours over the range again
                assert pixels.min() < 40 and pixels.max() > 215
            if name == "hazy" and not stretched:
                assert pixels.min() >= 90
    with pytest.raises(InputError, match="stretch: 'sometimes' is not one of auto, always, never"):
        TilingParams(stretch="sometimes")


def test_a_raster_s_stretch_is_sampled_once_for_all_its_scales(tmp_path, tiny_model, monkeypatch):
    """Sampling the stretch reads pixels (ranges of a remote COG): an index at two tile sizes samples once,
    and a source handed a stretch reads its tiles with it, as it would have with its own."""
    from georet import index_raster
    from georet.testing.rasters import pattern, write_raster

    hazy = write_raster(tmp_path / "hazy.tif",
                        data=(pattern(3, 256, 256, seed=3) * 0.5 + np.array([90, 100, 120])[:, None, None]).astype(np.uint8))
    sampled = []
    percentiles = RasterSource._percentiles
    monkeypatch.setattr(RasterSource, "_percentiles", lambda self: sampled.append(self) or percentiles(self))
    report = index_raster(hazy, tmp_path / "db", tiling=TilingParams(tile_size=(64, 128)), model=tiny_model,
                          progress=False)
    assert report.indexed == 16 + 4 and len(sampled) == 1
    with RasterSource(hazy, TilingParams(tile_size=64)) as own:
        with RasterSource(hazy, TilingParams(tile_size=64), stretch=own.band_stretch) as given:
            assert given.stretched and len(sampled) == 2
            np.testing.assert_array_equal(given.read(given.windows()[5]).pixels, own.read(own.windows()[5]).pixels)
        with RasterSource(hazy, TilingParams(tile_size=64), stretch=None) as unstretched:
            assert not unstretched.stretched and unstretched.read(unstretched.windows()[5]).pixels.min() >= 90


def test_tiling_options_fail_as_the_parameter_they_name_and_as_python_s_own_kind():
    """Every tiling parser names its parameter (the CLI spells it as the flag) and raises a ValueError, as
    Python's own parsers do; a missing thing is a LookupError."""
    from georet.errors import InputError, NotFoundError
    from georet.geo import parse_bands, parse_stride, parse_tile_size

    for parse, value, param in ((parse_tile_size, "2 miles", "tile_size"), (parse_tile_size, "12.5", "tile_size"),
                                (parse_stride, "-1", "stride"), (parse_bands, "0,1,2", "bands"),
                                (parse_bands, "red", "bands")):
        with pytest.raises(InputError) as caught:
            parse(value)
        assert caught.value.param == param and isinstance(caught.value, ValueError)
        assert caught.value.render(lambda name: "--" + name.replace("_", "-")).startswith(f"--{param.replace('_', '-')}: ")
    assert issubclass(NotFoundError, LookupError)
