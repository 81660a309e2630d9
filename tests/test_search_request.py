"""One search, validated once: every rule of a search's options in SearchRequest, named as each shell spells it."""

from __future__ import annotations

import pytest
from conftest import invoke_cli

from georet.errors import InputError
from georet.search import SearchRequest


@pytest.mark.parametrize("options, param, problem", [
    ({}, "text", "nothing to search for"),
    ({"text": "   "}, "text", "the query text is empty"),
    ({"text": "x", "k": 0}, "k", "must be a whole number of at least 1, got 0"),
    ({"text": "x", "k": 2.5}, "k", "must be a whole number of at least 1, got 2.5"),
    ({"text": "x", "scorer": "svm"}, "scorer", "'svm' is not one of auto, rocchio, probe"),
    ({"text": "x", "near": "far"}, "near", "not a distance: 'far'"),
    ({"text": "x", "near": -5.0}, "near", "a distance must be positive"),
    ({"text": "x", "scene_prior": -1.0}, "scene_prior", "must be 0 (off) or more"),
    ({"text": "x", "bbox": "1,2"}, "bbox", "must be four numbers"),
    ({"text": "x", "bbox": "5,5,1,1"}, "bbox", "must have minx < maxx and miny < maxy"),
    ({"text": "x", "bbox_crs": "EPSG:3857"}, "bbox_crs", "give the box too"),
    ({"text": "x", "bbox": "1,1,2,2", "bbox_crs": "EPSG:99999999"}, "bbox_crs", "not a CRS"),
])
def test_every_rule_names_the_parameter(options, param, problem):
    with pytest.raises(InputError) as err:
        SearchRequest(**options)
    assert err.value.param == param and problem in err.value.problem and str(err.value).startswith(f"{param}: ")


def test_a_request_holds_its_parsed_values():
    request = SearchRequest(text="  airport near river ", k=3, bbox="4,51,5,52", near="2km", like=["t1"])
    assert request.text == "airport near river" and request.near_m == 2000.0 and request.like == ("t1",)
    assert request.area.bounds == (4.0, 51.0, 5.0, 52.0) and request.has_examples
    assert SearchRequest(labels="good").text is None  # a label set alone is something to search with
    assert SearchRequest(text="x", near=750).near_m == 750.0
    with pytest.raises(TypeError):  # keyword-only: eighteen fields are never passed by position
        SearchRequest("x", 5)


def test_the_cli_names_flags_where_the_library_names_parameters(built_index):
    bad_k = invoke_cli("query", "x", "--db", built_index, "-k", "0")
    assert bad_k.returncode == 1 and bad_k.stderr.strip() == "Error: -k: must be a whole number of at least 1, got 0"
    bad_near = invoke_cli("query", "a near b", "--db", built_index, "--near", "far")
    assert bad_near.stderr.strip().startswith("Error: --near: not a distance: 'far'")


def test_errors_spell_options_for_each_shell_and_survive_a_process_boundary():
    import pickle

    from georet.errors import GeoretError

    error = InputError("ray_address", "needs {engine} ray", names=("engine",))
    assert str(error) == "ray_address: needs engine ray"
    assert error.render(lambda n: "--" + n.replace("_", "-")) == "--ray-address: needs --engine ray"
    hint = GeoretError("the area ({bbox}/{within}) touches no raster", names=("bbox", "within"))
    for original in (error, hint):  # Ray workers send errors back pickled
        copy = pickle.loads(pickle.dumps(original))
        assert type(copy) is type(original) and str(copy) == str(original)
        assert copy.render(str.upper) == original.render(str.upper)
