"""The ``georet`` command: a thin shell over the library (parse options, call, render).

Every user mistake surfaces as ``Error: <one line>`` on stderr with exit code 1;
set ``GEORET_DEBUG=1`` to see tracebacks of unexpected failures.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import warnings
from pathlib import Path

import click

from georet import __version__
from georet.errors import DISK_FULL, GeoretError, disk_full

OUTPUT_SUFFIXES = {".geojson": "GeoJSON", ".json": "GeoJSON", ".gpkg": "GPKG", ".parquet": "parquet"}


class _GeoretGroup(click.Group):
    """Turns library errors into one-line CLI errors instead of tracebacks."""

    def invoke(self, ctx: click.Context):
        command_line = list(ctx.args)  # the subcommand's own arguments, before click consumes them
        try:
            return super().invoke(ctx)
        except GeoretError as exc:  # the library names its parameters; a CLI user typed flags
            raise click.ClickException(exc.render(_flag)) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (see _stop_on_sigterm)
            stopped = click.ClickException(f"interrupted ({exc.args[0] if exc.args else 'Ctrl-C'}); what was "
                                           "committed is kept, and running the command again resumes")
            stopped.exit_code = 130
            raise stopped from None
        except ModuleNotFoundError as exc:  # the plain install: what needs torch says which extra brings it
            from georet.models.light import TORCH_EXTRA

            missing = (exc.name or "").split(".")[0]
            if missing not in ("torch", "torchvision", "open_clip", "timm") or os.environ.get("GEORET_DEBUG"):
                raise
            raise click.ClickException(f"`georet {ctx.invoked_subcommand}` needs {missing}, which this install does "
                                       f"not have: {TORCH_EXTRA}") from None
        except Exception as exc:
            if os.environ.get("GEORET_DEBUG"):
                raise
            if _lost_data_file(exc):
                db = _db_argument(command_line)
                raise click.ClickException(f"the index is damaged: a data file of its table is missing; run "
                                           f"`georet doctor --db {db} --repair`") from None
            if disk_full(exc):
                raise click.ClickException(f"{DISK_FULL} while `georet {ctx.invoked_subcommand}` wrote; what "
                                           "was committed before is kept") from None
            first_line = (str(exc).strip().splitlines() or [""])[0]
            raise click.ClickException(
                f"unexpected {type(exc).__name__}: {first_line} (set GEORET_DEBUG=1 for a traceback)") from None


def _db_argument(args: list[str]) -> str:
    """The ``--db`` a command line names (``DB`` if none), for advice that names the index."""
    for i, arg in enumerate(args):
        if arg == "--db" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--db="):
            return arg[len("--db="):]
    return "DB"


def _lost_data_file(exc: Exception) -> bool:
    """Whether Lance failed because a data file of a table is gone (it says "Not found: …/x.lance")."""
    text = str(exc)
    return "Not found:" in text and ".lance" in text


def _flag(param: str) -> str:
    """The command-line spelling of a library parameter: ``bbox_crs`` → ``--bbox-crs``."""
    return {"k": "-k", "text": "TEXT", "overrides": "--set", "arch": "--model", "db": "--db", "from_date": "--from",
            "to_date": "--to"}.get(
        param, "--" + param.replace("_", "-"))


@click.group(cls=_GeoretGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="georet")
def main() -> None:
    """Search satellite and aerial imagery with words."""
    _quiet_libraries()
    _stop_on_sigterm()


def _stop_on_sigterm() -> None:
    """SIGTERM (a service manager, ``kill``) stops a command as Ctrl-C does: the raster being indexed is
    marked incomplete and the command ends in one line, instead of dying between two writes. Set by the
    command line for its own process; ``serve`` replaces it with uvicorn's own graceful shutdown."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)


def _raise_interrupt(signum: int, _frame) -> None:
    import signal

    raise KeyboardInterrupt(signal.Signals(signum).name)


def _quiet_libraries() -> None:
    """Keep the libraries' own chatter off stderr, where the CLI prints one line per outcome.

    Set by the command line for its own process (a library import changes no global state): Lance's
    Rust logger prints WARN lines (retried commits) and Ray Data each execution and its progress;
    Ray starts its workers with fork+exec, which Lance's fork warnings cannot tell from a bare fork. GDAL's
    warnings (each HTTP retry of a remote raster) reach Python's logging through rasterio; a read that
    fails after its retries still ends in one ``Error:`` line naming the URL. Setting the variables
    yourself shows their output again.
    """
    os.environ.setdefault("LANCEDB_LOG", "error")
    os.environ.setdefault("LANCE_LOG", "error")
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")
    logging.getLogger("ray").setLevel(logging.ERROR)
    logging.getLogger("rasterio._err").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*(lance is not fork-safe|lancedb fork support)")


device_option = click.option("--device", default="auto", show_default=True,
                             type=click.Choice(["auto", "cpu", "cuda", "mps"], case_sensitive=False),
                             help="Where the model runs.")
db_option = click.option("--db", required=True, help="Index: a folder, or an object-store URL (s3://bucket/prefix).")


@main.command()
@click.argument("rasters", nargs=-1)
@db_option
@click.option("--bbox", help="Index only tiles touching minx,miny,maxx,maxy (lon/lat unless --bbox-crs).")
@click.option("--bbox-crs", help="CRS of --bbox [default: EPSG:4326].")
@click.option("--within", type=click.Path(path_type=str), help="Index only tiles touching the polygons of a vector file.")
@click.option("--asset", help="STAC asset to tile: a name, or three band assets red,green,blue [default: visual, else the red/green/blue band assets].")
@click.option("--stac", "stac_api", metavar="API_URL", help="Search this STAC API for the rasters (with --collection).")
@click.option("--collection", help="STAC collection id to search (with --stac).")
@click.option("--datetime", "stac_datetime", help="STAC search time range, e.g. 2024-06-01/2024-08-31 (with --stac).")
@click.option("--max-items", type=int, help="At most this many STAC items (with --stac).")
@click.option("--engine", default="local", show_default=True, type=click.Choice(["local", "ray"]),
              help="Where tiles are read and embedded: this process, or a Ray cluster (writes Lance fragments from the workers).")
@click.option("--ray-address", metavar="ADDR", help="Ray cluster to join (ray://host:10001, or 'auto') [default: start Ray on this machine].")
@click.option("--tile-size", default="auto", show_default=True,
              help="Tile size: auto (the model's ground scale from each raster's pixel size, see docs/search.md), "
                   "pixels (256) or ground distance (200m, 1.5km); several, comma-separated (auto,1.2km), index "
                   "every raster at each scale, and a search returns each place at its best one.")
@click.option("--stride", help="Step between tiles: pixels (200) or a fraction of the tile (2/3) [default: the tile, no overlap].")
@click.option("--bands", help="Bands to use, 1-based: 4,3,2 (three) or 1 (grey). [default: RGB colour bands, else 1,2,3]")
@click.option("--stretch", default="auto", show_default=True, type=click.Choice(["auto", "always", "never"]),
              help="Per-raster 2-98 % band stretch of uint8 rasters: auto stretches hazy or flat ones (other dtypes are always stretched).")
@click.option("--min-valid", default=0.5, show_default=True, type=float, help="Skip tiles with a smaller valid-pixel fraction.")
@click.option("--assume-crs", help="CRS for rasters that have none, e.g. EPSG:32631.")
@click.option("--model", "arch", help="Model: georet-base, georet-small or an open_clip architecture [default: georet-base with its bundled weights, offline].")
@click.option("--pretrained", help="'bundled', a remote-sensing CLIP name (remoteclip, georsclip...: see `georet models`), an open_clip tag, a local weights file, or 'none' (random init).")
@click.option("--checkpoint", type=click.Path(path_type=str), help="georet training checkpoint to apply.")
@device_option
@click.option("--batch-size", default=32, show_default=True, type=int, help="Tiles per model batch.")
@click.option("--image-runtime", default="auto", show_default=True,
              metavar="auto|openvino|openvino-bf16|onnxruntime|torch",
              help="What runs the model's image side: auto = the fastest installed (OpenVINO in bfloat16 where the "
                   "CPU has it, else float32; ONNX Runtime on a CUDA GPU); openvino = float32, torch's own vectors.")
@click.option("--threads", type=int, help="Cores the image side may use [default: all]: leave some to a `georet serve` "
                                          "of the same machine.")
@click.option("--classes", type=click.Path(path_type=str), help="Scene-class vocabulary for zero-shot land cover.")
@click.option("--landcover", type=click.Path(path_type=str), help="Land-cover layer: vector polygons or a classified raster.")
@click.option("--landcover-field", help="Class field of a vector land-cover layer.")
@click.option("--acquired", metavar="DATE", help="Acquisition date of the RASTERS (2016-05-01, 2016-05, 2016) [default: the STAC datetime, the raster's date tags, else a date in its file name].")
@click.option("--reindex", is_flag=True, help="Recompute tiles already in the index (default: skip them).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--progress-json", is_flag=True,
              help='Progress as JSON lines on stderr ({"source", "done", "total"}), for GUIs such as the QGIS plugin.')
def index(rasters, db, bbox, bbox_crs, within, asset, stac_api, collection, stac_datetime, max_items, engine,
          ray_address, tile_size, stride,
          bands, stretch, min_valid, assume_crs, arch, pretrained, checkpoint, device, batch_size, classes, landcover,
          landcover_field, acquired, reindex, quiet, progress_json, image_runtime, threads) -> None:
    """Tile RASTERS, embed the tiles and store them in --db.

    RASTERS are files, directories, VRTs, http(s):// and s3:// URLs of
    (cloud-optimised) GeoTIFFs, and STAC Item/ItemCollection JSON (files or
    URLs); or search a STAC API with --stac URL --collection ID.
    """
    from georet.geo import TilingParams, parse_bands, parse_tile_sizes, search_area
    from georet.index import IndexJob, index_raster
    from georet.models import ModelSpec

    tiling = TilingParams(tile_size=parse_tile_sizes(tile_size),
                          stride=int(stride) if stride and stride.isdecimal() else stride,
                          bands=parse_bands(bands), min_valid=min_valid, assume_crs=assume_crs, stretch=stretch)
    area = search_area(bbox, bbox_crs, within) if bbox or bbox_crs or within else None
    inputs = list(rasters) + _stac_search(stac_api, collection, stac_datetime, max_items, area, asset)
    if not inputs:
        raise click.UsageError("give RASTERS to index, or --stac API_URL --collection ID")
    job = IndexJob(tiling=tiling, area=area, asset=asset, engine=engine, ray_address=ray_address,
                   batch_size=batch_size, classes=classes, landcover=landcover, landcover_field=landcover_field,
                   reindex=reindex, acquired=acquired, image_runtime=image_runtime, threads=threads,
                   progress=False if quiet or progress_json else None)
    report = index_raster(inputs, db, job, model=ModelSpec.from_options(arch, pretrained, checkpoint), device=device,
                          on_progress=_print_progress_json if progress_json else None)
    click.echo(report.summary(), err=True)


def _stac_search(api: str | None, collection: str | None, datetime: str | None, max_items: int | None,
                 area, asset: str | None) -> list:
    """The rasters of a STAC API search (an empty list without --stac); options that need --stac checked."""
    if not api:
        used = [name for name, value in (("--collection", collection), ("--datetime", datetime),
                                         ("--max-items", max_items)) if value is not None]
        if used:
            raise click.UsageError(f"{used[0]} needs --stac API_URL")
        return []
    if not collection:
        raise click.UsageError("--stac needs --collection ID")
    if max_items is not None and max_items < 1:
        raise click.UsageError(f"--max-items must be positive, got {max_items}")
    from georet.geo.stac import search_stac_api, stac_rasters

    bbox = tuple(area.bounds) if area is not None else None
    return stac_rasters(search_stac_api(api, collection, bbox, datetime, max_items), asset)


def _print_progress_json(source: str, done: int, total: int) -> None:
    click.echo(json.dumps({"source": source, "done": done, "total": total}), err=True)


@main.command()
@click.argument("text", required=False)
@db_option
@click.option("-k", "k", default=10, show_default=True, type=int, help="Number of tiles to return.")
@click.option("--bbox", help="Search area minx,miny,maxx,maxy (lon/lat unless --bbox-crs).")
@click.option("--bbox-crs", help="CRS of --bbox [default: EPSG:4326].")
@click.option("--within", type=click.Path(path_type=str), help="Search inside the polygons of a vector file.")
@click.option("--scene", help="Only tiles of this scene class (see `georet info`).")
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "json", "geojson"]), help="Output on stdout.")
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Write hits to .geojson, .gpkg or .parquet.")
@click.option("--near", help="Distance that counts as 'near' in relational queries (500m, 2km) [default: half a tile side, i.e. neighbouring tiles].")
@click.option("--plain", is_flag=True, help="Embed TEXT as one sentence even if it reads like 'A near B'.")
@click.option("--explain", is_flag=True, help="Print how the query was parsed and each hit scored (stderr with json/geojson).")
@click.option("--like", multiple=True, metavar="TILE_ID|IMAGE", help="More like this: a tile id or an image chip (repeatable).")
@click.option("--unlike", multiple=True, metavar="TILE_ID|IMAGE", help="Not this: a tile id or an image chip (repeatable).")
@click.option("--labels", "label_set", metavar="NAME", help="Search with a saved label set (see `georet label`).")
@click.option("--scorer", default="auto", show_default=True, type=click.Choice(["auto", "rocchio", "probe"]),
              help="How examples are used: Rocchio query vector, or a linear probe once there are 3+ of each kind.")
@click.option("--min-score", type=float, help="Drop hits scoring below this (the output says what the score means).")
@click.option("--dissolve", is_flag=True, help="Merge touching hits into regions (best/mean score, tile count).")
@click.option("--when", metavar="DATES", help="Only tiles acquired then: 2016, 2016-05, 2015/2020, 2016-05-01/2016-08-31, 2015/.. (see `georet info`).")
@click.option("--from", "from_date", metavar="DATES", help="Change queries: the earlier acquisition to compare [default: each place's earliest].")
@click.option("--to", "to_date", metavar="DATES", help="Change queries: the later acquisition to compare [default: each place's latest].")
@click.option("--pretrained", help="New location of the index's weights file, if it moved.")
@click.option("--checkpoint", type=click.Path(path_type=str), help="New location of the index's checkpoint, if it moved.")
@device_option
def query(text, db, k, bbox, bbox_crs, within, scene, fmt, output, near, plain, explain, like, unlike, label_set,
          scorer, min_score, dissolve, when, from_date, to_date, pretrained, checkpoint, device) -> None:
    """Find the tiles in --db that best match TEXT and/or example tiles.

    Relational queries ("airport near river", "school within 2 km of stadium",
    "forest north of lake", "port and industrial area", "houses not near
    river") rank subject tiles by their partners on the map; change queries
    ("farmland that became housing", "houses where forest used to be", "new
    industrial area", "forest that was cleared") compare each place's tiles of
    two dates (--from/--to); see --explain.
    With --like/--unlike/--labels the text (optional then) is combined with
    the examples, and the examples themselves are never returned.
    """
    from georet.models import cache_dir
    from georet.search import SearchRequest, open_index
    from georet.search import explain as explain_hits
    from georet.search.query_cache import QueryVectorCache

    if output is not None and output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise GeoretError(f"--output must end in {', '.join(OUTPUT_SUFFIXES)}; got {output.name}")
    if explain and (dissolve or like or unlike or label_set):
        raise GeoretError("--explain describes text and relational searches; leave out the examples and --dissolve")
    request = SearchRequest(text=text, k=k, bbox=bbox, bbox_crs=bbox_crs, within=within, scene=scene,
                            relational=not plain, near=near, like=like, unlike=unlike, labels=label_set,
                            min_score=min_score, dissolve=dissolve, scorer=scorer, when=when, from_date=from_date,
                            to_date=to_date)
    # a repeated query reads its vector from disk and never loads the text tower
    query_cache = QueryVectorCache(folder=cache_dir("queries"))
    index = open_index(db, device=device, pretrained=pretrained, checkpoint=checkpoint, query_cache=query_cache)
    hits = index.run(request)
    query_cache.save()
    text = text or "(examples)"
    if explain:
        click.echo(explain_hits(hits), err=fmt != "table" or output is not None)
    if output is not None:
        _write_hits(hits, output)
        click.echo(f"wrote {len(hits)} {'regions' if 'region' in hits.columns else 'hits'} to {output}", err=True)
        if fmt != "table":
            click.echo(_render(hits, fmt, text))
        return
    click.echo(_render(hits, fmt, text))


def _write_hits(hits, output: Path, layer_name: str = "georet_results") -> None:
    driver = OUTPUT_SUFFIXES[output.suffix.lower()]
    output.parent.mkdir(parents=True, exist_ok=True)
    if driver == "parquet":
        hits.to_parquet(output)
    else:
        if output.exists():
            output.unlink()
        hits.to_file(output, driver=driver, **({"layer": layer_name} if driver == "GPKG" else {}))


def _render(hits, fmt: str, text: str) -> str:
    from georet.search import to_geojson

    score_kind = hits.attrs.get("score_kind")
    if fmt == "geojson":
        return json.dumps(to_geojson(hits, text))
    if fmt == "json":
        records = json.loads(hits.drop(columns="geometry").to_json(orient="records"))
        for record, geom in zip(records, hits.geometry):
            record["bbox"] = list(geom.bounds)
        return json.dumps({"query": text, "score": score_kind, "results": records}, indent=2)
    return _table(hits) + (f"\nscore: {score_kind}" if score_kind and not hits.empty else "")


def _table(hits) -> str:
    if hits.empty and hits.attrs.get("acquisitions", 2) < 2:
        return (f"no change to find: the index holds {hits.attrs['acquisitions']} acquisition date(s); index the "
                "same place at another date (dates come from --acquired, STAC, the raster's tags or its file name)")
    if hits.empty:
        return "no matching tiles"
    if "region" in hits.columns:
        return _region_table(hits)
    relational = "partners" in hits.columns
    change = "before_tile_id" in hits.columns
    dated = not change and hits["acquired"].notna().any()  # a multi-date index: say which date each hit shows
    rows = [("rank", "score", "scene", "tile_id", "centre lon,lat")
            + (("partner", "distance") if relational else ()) + (("acquired",) if dated else ())
            + (("before", "before tile") if change else ())]
    for rec, geom in zip(hits.itertuples(), hits.geometry):
        centre = geom.centroid
        row = (str(rec.rank), f"{rec.score:.3f}", f"{rec.scene} ({rec.scene_score:.2f})" if rec.scene else "-",
               rec.tile_id, f"{centre.x:.5f},{centre.y:.5f}")
        if relational:
            row += ((rec.partners.split(",")[0], f"{rec.partner_distance_m:.0f} m") if rec.partners else ("-", "-"))
        if dated:
            row += (rec.acquired or "-",)
        if change:
            row += (f"{rec.before_acquired} -> {rec.acquired}", rec.before_tile_id)
        rows.append(row)
    return _columns(rows)


def _region_table(regions) -> str:
    rows = [("region", "best", "mean", "tiles", "centre lon,lat", "size (km)")]
    for rec, geom in zip(regions.itertuples(), regions.geometry):
        minx, miny, maxx, maxy = geom.bounds
        centre = geom.centroid
        km_x = (maxx - minx) * 111.32 * math.cos(math.radians(centre.y))
        rows.append((str(rec.region), f"{rec.best_score:.3f}", f"{rec.mean_score:.3f}", str(rec.tiles),
                     f"{centre.x:.5f},{centre.y:.5f}", f"{km_x:.2f} x {(maxy - miny) * 111.32:.2f}"))
    return _columns(rows)


def _columns(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@main.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(db, as_json) -> None:
    """Describe an index: tiles, model, sources, scenes."""
    from georet.search import open_index

    summary = open_index(db).info()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    model = summary["model"]
    click.echo(f"index    {summary['path']}")
    click.echo(f"tiles    {summary['tiles']}")
    click.echo(f"model    {model['arch']} ({model['pretrained']}), dim {model['dim']}"
               + (f", checkpoint {Path(model['checkpoint']).name}" if model.get("checkpoint") else ""))
    click.echo(f"updated  {summary['updated']}")
    for source, meta in summary["sources"].items():
        if "crs" in meta:
            grids = " and ".join(_grid_text(grid) for grid in meta.get("scales") or [meta])
            click.echo(f"source   {source}  [{meta['crs']}, {meta['tiles']} tile{'s' * (meta['tiles'] != 1)} of "
                       f"{grids}, scenes: {meta['scenes']}]")
        else:
            click.echo(f"source   {source}  [{meta['tiles']} tiles]")
        if meta.get("acquired") or "crs" in meta:
            click.echo(f"         acquired {meta.get('acquired') or 'unknown'}"
                       + (f" ({meta['acquired_from']})" if meta.get("acquired_from") else ""))
        if meta.get("stac"):
            click.echo(f"         STAC item {meta['stac']['stac_item']} ({meta['stac'].get('collection') or '-'}, "
                       f"{meta['stac'].get('datetime') or 'no datetime'})")
        if meta.get("area"):
            click.echo(f"         within {_bounds_text(meta['area'])}")
        if meta["state"] != "complete":
            click.echo(f"         {meta['state']}: {meta['reason']}")
    click.echo(f"scenes   {', '.join(summary['scenes']) or '-'}")


def _grid_text(grid: dict) -> str:
    """One scale of a source's grid: ``300 px (300 m), every 200 px``."""
    ground = f" ({_metres_text(grid['tile_m'])})" if grid.get("tile_m") else ""
    step = f", every {grid['stride_px']} px" if grid.get("stride_px", grid["tile_px"]) < grid["tile_px"] else ""
    return f"{grid['tile_px']} px{ground}{step}"


def _metres_text(metres: float) -> str:
    return f"{metres / 1000:.3g} km" if metres >= 1000 else f"{metres:.3g} m"


def _bounds_text(wkt: str) -> str:
    """The lon/lat bounds of an area the manifest keeps as WKT, for people."""
    import shapely

    return "bbox " + ",".join(f"{v:.5f}" for v in shapely.from_wkt(wkt).bounds)


@main.command()
@db_option
@click.argument("sets", nargs=-1)
@click.option("--mark", nargs=2, metavar="TILE_ID CLASS",
              help="This tile is a CLASS: add it to that class's examples, then relabel from every class with some.")
@click.option("--method", type=click.Choice(["prototype", "probe", "cache"]), default="prototype", show_default=True,
              help="prototype: each class moves towards its examples' mean; probe: a linear classifier fitted to "
                   "the examples, kept near the prototypes (better on scene collections, worse where one class "
                   "dominates); cache: Tip-Adapter's example cache.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: tiles per scene.")
def relabel(db, sets, mark, method, as_json) -> None:
    """Relabel every tile's scene from a few examples: each of SETS is a label set named after a class.

    Mark a handful of tiles per class first (georet label --db DB --set forest --positive TILE_ID ...),
    then run `georet relabel --db DB forest sea town`; or mark one at a time with --mark TILE_ID forest.
    A set naming a class the legend lacks adds it. Searches that name a class with examples
    (georet query "forest") are steered by them too.
    """
    from georet.search import open_index

    if bool(sets) == bool(mark):
        raise GeoretError("name the label sets to relabel from, or --mark TILE_ID CLASS (not both)")
    index = open_index(db)
    counts = index.mark_scene(*mark, method=method) if mark else index.relabel(sets, method=method)
    if as_json:
        click.echo(json.dumps(counts))
        return
    click.echo(_columns([("scene", "tiles"), *((scene, str(n)) for scene, n in counts.items())]))


@main.command()
@db_option
@click.argument("sources", nargs=-1, required=True)
def remove(db, sources) -> None:
    """Delete SOURCES (raster paths or file names, as `georet info` lists them) and their tiles from --db."""
    from georet.index import remove_sources

    for source, tiles in remove_sources(db, sources).items():
        click.echo(f"removed {source} ({tiles} tiles) from {db}", err=True)


@main.command()
@db_option
@click.option("--set", "set_name", default="default", show_default=True, help="Label set to change or show.")
@click.option("--positive", multiple=True, metavar="TILE_ID", help="Mark tiles right (repeat, or ID,ID,...).")
@click.option("--negative", multiple=True, metavar="TILE_ID", help="Mark tiles wrong (repeat, or ID,ID,...).")
@click.option("--clear", is_flag=True, help="Delete the label set.")
@click.option("--export", "export", nargs=2, type=(str, click.Path(path_type=Path)), metavar="NAME FILE",
              help="Write set NAME as a layer: footprints with mark, who and when (.gpkg, .geojson, .parquet).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def label(db, set_name, positive, negative, clear, export, as_json) -> None:
    """Mark tiles right or wrong for search by example, and keep the marks in the index.

    Without marks it lists the saved sets. Search with a set: georet query --labels NAME.
    """
    from georet.search import open_index

    index = open_index(db)
    if export:
        name, output = export
        if output.suffix.lower() not in OUTPUT_SUFFIXES:
            raise GeoretError(f"--export must end in {', '.join(OUTPUT_SUFFIXES)}; got {output.name}")
        layer = index.label_layer(name)
        _write_hits(layer, output, layer_name=f"georet_labels_{name}")
        click.echo(f"wrote {len(layer)} labelled tiles of set {name!r} to {output}", err=True)
        return
    if clear:
        index.clear_labels(set_name)
        click.echo(f"deleted label set {set_name!r}", err=True)
        return
    positive, negative = _split_ids(positive), _split_ids(negative)
    if positive or negative:
        saved = index.label(set_name, positive=positive, negative=negative)
        click.echo(f"{set_name}: {len(saved.positives)} right, {len(saved.negatives)} wrong", err=True)
    sets = index.label_sets()
    if as_json:
        click.echo(json.dumps({name: {"positive": s.positives, "negative": s.negatives} for name, s in sets.items()}))
    elif not (positive or negative):
        for name, saved in sets.items():
            click.echo(f"{name}  {len(saved.positives)} right, {len(saved.negatives)} wrong")
        if not sets:
            click.echo("no label sets yet (georet label --db DB --positive TILE_ID ...)")


@main.command()
@db_option
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--thumbnails", is_flag=True, help="Also write each tile's PNG thumbnail.")
def export(db, output, thumbnails) -> None:
    """Write the index as GeoParquet: footprints, ids, scenes, embeddings (geopandas, DuckDB, QGIS read it)."""
    from georet.index import export_geoparquet

    rows = export_geoparquet(db, output, thumbnails=thumbnails)
    click.echo(f"wrote {rows:,} tiles to {output}", err=True)


@main.command()
@db_option
def optimize(db) -> None:
    """Compact the index and build its approximate vector index (done by itself past 250,000 tiles)."""
    from georet.index import optimize_index

    result = optimize_index(db)
    index = result["vector_index"]
    click.echo(f"{result['tiles']:,} tiles; {index['type']} vector index over {index['indexed_rows']:,} of them")


@main.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (other than loopback needs --token).")
@click.option("--port", default=8765, show_default=True, type=int, help="Port (0 = any free port; the URL is printed).")
@click.option("--token", envvar="GEORET_TOKEN", help="Require 'Authorization: Bearer TOKEN' on every request [env GEORET_TOKEN].")
@click.option("--max-pending", type=click.IntRange(min=1),
              help="Requests in progress past which new ones get 503 with Retry-After [default: about a 1 s queue; "
                   "docs/reliability.md].")
@device_option
def serve(db, host, port, token, max_pending, device) -> None:
    """Keep the index, its model and vectors warm: HTTP API (docs at /docs) and a web map at /."""
    from georet.server import serve as run_server

    def announce(url: str) -> None:
        click.echo(f"georet serving {db} at {url}/ (API docs: {url}/docs; Ctrl-C stops)", err=True)
        click.echo(url)  # alone on stdout, for programs that start the server (the QGIS panel)
        sys.stdout.flush()

    import signal

    for stop in (signal.SIGTERM, signal.SIGINT):  # uvicorn shuts down gracefully, then raises the signal again:
        signal.signal(stop, _stopped)  # that is a clean stop, not an interrupted command
    run_server(db, host=host, port=port, token=token, device=device, max_pending=max_pending,
               on_listening=announce)


def _stopped(_signum: int, _frame) -> None:
    raise SystemExit(0)


def _split_ids(values: tuple[str, ...]) -> list[str]:
    """Tile ids from repeated options and/or comma-separated lists (tile ids never contain commas)."""
    return [part for value in values for part in value.split(",") if part.strip()]


@main.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Training config (YAML).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value, e.g. train.lr=1e-4.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
def train(config_path, overrides, as_json) -> None:
    """Adapt a model to image–caption data (CMER Focus-Adapter, MRS-Adapter, full fine-tuning)."""
    from georet.training import load_config
    from georet.training import train as run_training

    summary = run_training(load_config(config_path, overrides))
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    best = summary["best_val"]
    click.echo(f"{summary['method']}: {summary['steps']} steps in {summary['seconds']} s, "
               f"{summary['trainable_params']:,} trainable parameters")
    click.echo(f"best validation mR {best['mR']:.2f} at step {best['step']} -> {summary['best_checkpoint']}")


@main.command(name="eval")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Karpathy .json file or precomp folder.")
@click.option("--split", default="test", show_default=True)
@click.option("--image-root", type=click.Path(path_type=Path), help="Image folder [default: DATA's images/].")
@click.option("--checkpoint", type=click.Path(path_type=str), help="georet training checkpoint.")
@click.option("--model", "arch", help="open_clip architecture [default: the checkpoint's, else georet's default].")
@click.option("--pretrained", help="'bundled', a remote-sensing CLIP name, an open_clip tag, a weights file or 'none'.")
@click.option("--scene-prior", default=0.0, show_default=True, type=float,
              help="Weight of the query-time scene prior (0 = off; 0.02-0.05 best on validation for georet-base). "
                   "An image query's scene is predicted from its pixels, never read from its label.")
@device_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def evaluate_cmd(data, split, image_root, checkpoint, arch, pretrained, scene_prior, device, as_json) -> None:
    """Text–image retrieval R@1/5/10 (both directions) and mR on a dataset split."""
    from georet.models import ModelSpec, load_model, read_checkpoint
    from georet.training import evaluate, load_retrieval_data

    if checkpoint and not (arch or pretrained):  # the base model the checkpoint was trained from
        base = read_checkpoint(checkpoint)
        arch, pretrained = base.arch, base.pretrained or "none"
    split_data = load_retrieval_data(data, split, image_root)
    model = load_model(ModelSpec.from_options(arch, pretrained, checkpoint), device=device)
    metrics = evaluate(model, split_data, scene_prior=scene_prior, progress=not as_json)
    if as_json:
        click.echo(json.dumps({**{k: round(v, 2) for k, v in metrics.items()},
                               "images": len(split_data.images), "captions": len(split_data.captions)}))
        return
    click.echo(f"{len(split_data.images)} images, {len(split_data.captions)} captions ({split})")
    click.echo("i2t  R@1 {i2t_r1:6.2f}  R@5 {i2t_r5:6.2f}  R@10 {i2t_r10:6.2f}".format(**metrics))
    click.echo("t2i  R@1 {t2i_r1:6.2f}  R@5 {t2i_r5:6.2f}  R@10 {t2i_r10:6.2f}".format(**metrics))
    click.echo(f"mR   {metrics['mR']:.2f}")


@main.command()
@click.option("--db", help="Also check this index (a folder: exists, writable, its manifest and table intact; an "
                           "object-store URL: answers).")
@click.option("--repair", is_flag=True, help="Mend the index --db names: restore its manifest from its copy, its "
                                             "table from its newest intact version (docs/reliability.md).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor(db, repair, as_json) -> None:
    """Versions, device, offline model, caches: what georet sees here (paste it into bug reports)."""
    from georet.doctor import markdown, report

    if repair:
        from georet.index.repair import repair as repair_index

        if not db:
            raise click.UsageError("--repair mends the index --db names")
        done = repair_index(db)
        click.echo(json.dumps(done.__dict__, indent=2) if as_json else done.describe())
        return
    info = report(db)
    click.echo(json.dumps(info, indent=2) if as_json else markdown(info))


@main.command()
@click.option("--out", "out_dir", default="georet-demo", show_default=True, type=click.Path(path_type=Path),
              help="Folder for the index, hits.geojson, contact_sheet.png and map.png.")
@click.option("-k", default=5, show_default=True, type=int, help="Hits per query.")
@device_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
def demo(out_dir, k, device, quiet, as_json) -> None:
    """Index real demo imagery with the bundled model, search it, draw the hits (offline)."""
    from georet.demo import DEMO_RASTER, run_demo, summary_table

    report = run_demo(out_dir, k=k, device=device, progress=False if (quiet or as_json) else None)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(f"indexed {DEMO_RASTER.name} (real AID chips, synthetic georeference) into {report.index}\n")
    click.echo(summary_table(report))
    click.echo("\nwrote")
    for label, path in (("hits (GeoJSON)", report.hits_geojson), ("contact sheet", report.contact_sheet),
                        ("hit map", report.map_png)):
        click.echo(f"  {label:15s} {path}")
    click.echo(f"\nnext: georet query \"airport\" --db {report.index}")


@main.command()
@click.option("--all", "show_all", is_flag=True, help="Also list every open_clip architecture and its tags.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(show_all, as_json) -> None:
    """List georet's bundled models and the remote-sensing CLIPs it loads by name."""
    from georet.models import BUNDLED_WEIGHTS, DEFAULT_ARCH, list_architectures, pretrained_tags, zoo

    bundled = [{"arch": arch, "pretrained": "bundled", "default": arch == DEFAULT_ARCH} for arch in BUNDLED_WEIGHTS]
    entries = [{**entry.to_dict(), "source": entry.source, "cached": str(hit) if (hit := zoo.cached(entry)) else None}
               for entry in zoo.zoo_entries()]
    other = {arch: pretrained_tags(arch) for arch in list_architectures() if arch not in BUNDLED_WEIGHTS} \
        if show_all else None
    if as_json:
        click.echo(json.dumps({"bundled": bundled, "zoo": entries, **({"open_clip": other} if show_all else {})},
                              indent=2))
        return
    click.echo("Bundled (offline, no download):")
    for b in bundled:
        click.echo(f"  --model {b['arch']:<14} --pretrained bundled{'   (default)' if b['default'] else ''}")
    click.echo("\nRemote-sensing CLIPs (--model ARCH --pretrained NAME; downloaded once, or --pretrained FILE offline):")
    click.echo(f"  {'NAME':<16}{'ARCH':<14}{'RSITMD mR':>10}{'RSICD mR':>10}{'ZS scene':>10}  {'LICENCE':<24}CACHED")
    for e in entries:
        rep = e["reported"]
        cells = [f"{rep[k]:.2f}" if k in rep else "-" for k in ("rsitmd_mR", "rsicd_mR", "zero_shot_scene_top1")]
        licence = (e["licence"] or "unconfirmed").split(" (")[0]
        click.echo(f"  {e['family']:<16}{e['arch']:<14}{cells[0]:>10}{cells[1]:>10}{cells[2]:>10}  {licence:<24}"
                   f"{'yes' if e['cached'] else 'no'}")
    click.echo("\nFigures are the projects' own reports (sources and open questions: georet models --json).")
    if other is None:
        click.echo("Any open_clip architecture also works with its tags or a weights file: georet models --all")
        return
    for arch, tags in other.items():
        click.echo(f"  {arch}  {', '.join(tags) if tags else '(no tags: --pretrained FILE or none)'}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
