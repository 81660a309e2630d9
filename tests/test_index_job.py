"""One indexing run, validated once: IndexJob's rules name their parameter, a misspelt setting is an error, and
the same job object drives the library and the CLI."""

from __future__ import annotations

import pytest
from conftest import invoke_cli

from georet import IndexJob, TilingParams, index_raster
from georet.errors import InputError


@pytest.mark.parametrize("settings, param, problem", [
    ({"batch_size": 0}, "batch_size", "must be positive, got 0"),
    ({"write_every": -1}, "write_every", "must be positive, got -1"),
    ({"classes": "legend.txt", "landcover": "lc.gpkg"}, "classes", "not both"),
    ({"landcover_field": "class"}, "landcover_field", "needs landcover"),
    ({"engine": "dask"}, "engine", "must be one of local, ray; got 'dask'"),
    ({"ray_address": "head:6379"}, "ray_address", "needs engine ray"),
    ({"acquired": "yesterday"}, "acquired", "not a date: 'yesterday'"),
    ({"threads": 0}, "threads", "must be positive, got 0"),
    ({"threads": 2, "engine": "ray"}, "threads", "applies to the local engine"),
    ({"threads": 1, "image_runtime": "torch"}, "threads", "not image_runtime torch"),
])
def test_every_rule_names_the_parameter(settings, param, problem):
    with pytest.raises(InputError) as err:
        IndexJob(**settings)
    assert err.value.param == param and problem in str(err.value)


def test_a_job_is_typed_strict_and_whole(tmp_path, rasters, tiny_model):
    job = IndexJob(tiling=TilingParams(tile_size=64), acquired="2021-06-03T10:00:00Z", progress=False)
    assert job.acquired == "2021-06-03" and not job.show_progress
    with pytest.raises(TypeError):  # keyword-only: never passed by position
        IndexJob(TilingParams(tile_size=64))
    with pytest.raises(TypeError, match="tile_szie"):  # a misspelt setting is an error, never ignored
        index_raster(rasters["utm"], tmp_path / "a.db", job, model=tiny_model, tile_szie=64)
    # keywords replace the job's settings: the same rows as the job spelt out in full
    a = index_raster(rasters["utm"], tmp_path / "a.db", job, model=tiny_model, batch_size=7)
    b = index_raster(rasters["utm"], tmp_path / "b.db", model=tiny_model, tiling=TilingParams(tile_size=64),
                     acquired="2021-06-03", progress=False, batch_size=7)
    assert a.indexed == b.indexed > 0


def test_a_loaded_model_keeps_its_runtime(tmp_path, rasters, tiny_model):
    """image_runtime picks how index_raster loads a model; for one loaded already it would be silently moot."""
    with pytest.raises(InputError, match="image_runtime: applies to a model loaded by index_raster"):
        index_raster(rasters["utm"], tmp_path / "x.db", model=tiny_model, image_runtime="openvino")
    with pytest.raises(InputError, match="threads: applies to a model loaded by index_raster"):
        index_raster(rasters["utm"], tmp_path / "x.db", model=tiny_model, threads=1)
    assert not (tmp_path / "x.db").exists()


def test_the_cli_builds_the_same_job_and_names_its_flags(tmp_path, rasters):
    bad = invoke_cli("index", str(rasters["utm"]), "--db", str(tmp_path / "c.db"), "--batch-size", "0")
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1] == "Error: --batch-size: must be positive, got 0"
    few = invoke_cli("index", str(rasters["utm"]), "--db", str(tmp_path / "c.db"), "--threads", "0")
    assert few.returncode != 0 and few.stderr.strip().splitlines()[-1] == "Error: --threads: must be positive, got 0"
    assert not (tmp_path / "c.db").exists()
