"""Generated input for every parser a user reaches, with what each must do with it: return a valid value or
raise a :class:`~georet.errors.GeoretError` whose message is one line. Anything else (another exception, a
NaN, a reversed range) is a defect.

``tests/test_fuzz.py`` runs each property with a small number of cases; ``benchmarks/fuzz.py`` runs the
same properties with many more and records how many were tried. Strategies mix arbitrary text with text
shaped like the real grammar, so the cases reach past the first check.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from georet.errors import GeoretError

_NUMBER = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-10**6, 10**6).map(str),
                    st.from_regex(r"-?\d{0,400}\.?\d{0,5}(e-?\d{1,4})?", fullmatch=True))
_DATE = st.from_regex(r"-?\d{0,5}([-:/]?\d{0,3}([-:/]?\d{0,3})?)?([T ][\d:]{0,8}Z?)?", fullmatch=True)
_PHRASE_WORDS = ["near", "next to", "beside", "close to", "within", "of", "500m", "2 km", "0m", "1e999m", "north of",
                 "that became", "turned into", "which became", "replaced by", "from", "to", "new", "lost", "a river",
                 "an airport", "farmland", "houses", "forest", "", "  ", "?", "/", "..", "near near", "x" * 300]


def _text_or(*grammars: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.text(max_size=80), *grammars)


@dataclass(frozen=True)
class Property:
    """One parser: the strategy of its input, the call, and the check of a value it returns."""

    name: str
    cases: st.SearchStrategy
    call: Callable[[Any, Path], Any]
    valid: Callable[[Any], bool]
    #: whether some generated cases must be refused, and some accepted (the strategy reaches both)
    refuses: bool = True
    accepts: bool = True


def _bbox(text: str, _work: Path):
    from georet.geo.areas import parse_bbox

    return parse_bbox(text)


def _when(text: str, _work: Path):
    from georet.geo.dates import parse_when

    return parse_when(text)


def _tile_size(text: str, _work: Path):
    from georet.geo.grid import parse_tile_size, parse_tile_sizes

    sizes = parse_tile_sizes(text)
    return [parse_tile_size(size) for size in (sizes if isinstance(sizes, tuple) else (sizes,))]


def _stride(text: str, _work: Path):
    from georet.geo.grid import parse_stride

    return parse_stride(text)


def _bands(text: str, _work: Path):
    from georet.geo.grid import parse_bands

    return parse_bands(text)


def _phrase(text: str, _work: Path):
    from georet.search.relations import parse_query

    return parse_query(text)


def _distance(text: str, _work: Path):
    from georet.search.relations import parse_distance

    return parse_distance(text)


def _legend(text: str, work: Path):
    from georet.geo.scenes import read_classes

    path = work / "legend.txt"
    path.write_text(text, encoding="utf-8")
    return read_classes(path)


def _label_set(name: str, work: Path):
    from georet.index.labels import read_labels, save_labels

    save_labels(work, name, positive=["t1"])
    return read_labels(work, name)


def _stac(doc: Any, work: Path):
    from georet.geo.stac import read_stac, stac_rasters

    path = work / "item.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc, encoding="utf-8")
    return stac_rasters(read_stac(str(path)))


def _phrase_valid(found) -> bool:
    """A relation names both its sides; a change at least one, and what it names is not blank."""
    if found is None:
        return True
    sides = (found.subject, found.partner) if hasattr(found, "subject") else (found.before, found.after)
    named = [side for side in sides if side is not None]
    return bool(named) and all(side.strip() for side in named) and \
        (not hasattr(found, "subject") or len(named) == 2) and \
        (getattr(found, "distance_m", None) is None or (_finite([found.distance_m]) and found.distance_m > 0))


def _finite(values) -> bool:
    return all(math.isfinite(v) for v in values)


_JSON = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                     max_leaves=12)
_ASSET = st.fixed_dictionaries({}, optional={"href": st.one_of(st.text(max_size=30), _JSON,
                                                                st.sampled_from(["a.tif", "../../etc/passwd", "/dev/null", "a\\x00.tif",
                                                                                 "stac://x", "\n"])),
                                             "roles": _JSON, "type": st.text(max_size=20),
                                             "eo:bands": st.one_of(_JSON, st.lists(st.fixed_dictionaries(
                                                 {}, optional={"common_name": st.one_of(
                                                     st.sampled_from(["red", "green", "blue"]), _JSON)}),
                                                 max_size=2))})
_ITEM = st.fixed_dictionaries({"type": st.just("Feature")}, optional={
    "id": st.one_of(st.text(max_size=20), _JSON), "properties": st.one_of(_JSON, st.fixed_dictionaries(
        {}, optional={"datetime": st.one_of(_DATE, _JSON)})),
    "assets": st.one_of(_JSON, st.dictionaries(st.sampled_from(["visual", "red", "green", "blue", "B04", "x"]),
                                               _ASSET, max_size=4))})
_STAC = st.one_of(_JSON, st.text(max_size=40), _ITEM,
                  st.fixed_dictionaries({"type": st.just("FeatureCollection"),
                                         "features": st.one_of(_JSON, st.lists(_ITEM, max_size=3))}))

PROPERTIES = {p.name: p for p in [
    Property("bbox", _text_or(st.lists(_NUMBER, min_size=0, max_size=6).map(",".join),
                              st.lists(st.floats(-200, 200).map(repr), min_size=4, max_size=4).map(",".join)), _bbox,
             lambda b: _finite(b) and b[0] < b[2] and b[1] < b[3]),
    Property("when and dates", _text_or(_DATE, st.tuples(_DATE, _DATE).map("/".join),
                                        st.sampled_from(["../2010", "2015/..", "../..", "/"])), _when,
             lambda r: r.start <= r.end),
    Property("tile sizes", _text_or(st.lists(st.tuples(_NUMBER, st.sampled_from(["", "px", "m", "km", "auto", " m"]))
                                             .map("".join), min_size=1, max_size=3).map(",".join)), _tile_size,
             lambda sizes: all(_finite([v]) and v > 0 for v, _unit in sizes)),
    Property("strides", _text_or(st.tuples(_NUMBER, st.sampled_from(["", "px", "m", "%", "auto"])).map("".join)),
             _stride, lambda s: _finite([s[0]]) and s[0] > 0),
    Property("bands", _text_or(st.lists(_NUMBER, max_size=5).map(",".join)), _bands,
             lambda b: b is None or (len(b) > 0 and all(isinstance(v, int) and v >= 1 for v in b))),
    Property("relational and change phrases", _text_or(st.lists(st.sampled_from(_PHRASE_WORDS), max_size=8)
                                                       .map(" ".join)), _phrase,
             _phrase_valid, refuses=False),
    Property("distances", _text_or(st.tuples(_NUMBER, st.sampled_from(["m", "km", " m", "KM", ""])).map("".join)),
             _distance, lambda d: _finite([d]) and d > 0),
    Property("--classes legends", _text_or(st.lists(st.tuples(st.text(max_size=12), st.sampled_from([":", "", "#"]),
                                                              st.text(max_size=12)).map("".join), max_size=6)
                                           .map("\n".join)), _legend,
             lambda classes: len(classes) >= 2 and all(c.label for c in classes)),
    Property("label-set names", _text_or(st.sampled_from(["..", ".", "../x", "/etc/passwd", "a" * 65, "CON", "x.json",
                                                          "a/b", "default", "-", "_"])), _label_set,
             lambda labels: labels.positives == ["t1"], accepts=False),
    Property("STAC JSON", _STAC, _stac, lambda rasters: len(rasters) > 0, accepts=False),
]}


def run(prop: Property, examples: int, seed: int | None = None) -> dict[str, int]:
    """Try ``examples`` generated cases of ``prop``; raises on the first defect (hypothesis shrinks it first).
    Returns how many cases were tried, how many gave a value and how many a clean error."""
    counts = {"tried": 0, "valid": 0, "refused": 0}

    with tempfile.TemporaryDirectory(prefix="georet-fuzz-") as folder:
        work = Path(folder)

        @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
                  suppress_health_check=list(HealthCheck))
        @given(prop.cases)
        def check(case):
            counts["tried"] += 1
            try:
                value = prop.call(case, work)
            except GeoretError as exc:
                message = str(exc)
                assert message and "\n" not in message, f"{prop.name}: a multi-line error for {case!r}: {message!r}"
                counts["refused"] += 1
                return
            assert prop.valid(value), f"{prop.name}: {case!r} gave an invalid value {value!r}"
            counts["valid"] += 1

        if seed is not None:
            from hypothesis import seed as fixed_seed

            check = fixed_seed(seed)(check)
        check()
    return counts


def run_api(app: Any, examples: int, headers: dict[str, str] | None = None) -> dict[str, dict[str, int]]:
    """Schemathesis over ``app``'s own OpenAPI schema, ``examples`` cases per operation: no answer is a 5xx,
    and every 4xx is one line of JSON (``{"error": ...}``). Returns answers per operation and status.
    Run it inside the app's lifespan (a ``TestClient`` context), so the index is loaded."""
    import schemathesis

    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=headers)
    answers: dict[str, dict[str, int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        _fuzz_operation(operation, examples, headers, answers.setdefault(f"{operation.method.upper()} "
                                                                          f"{operation.path}", {}))
    return answers


def _fuzz_operation(operation: Any, examples: int, headers: dict[str, str] | None, counts: dict[str, int]) -> None:
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy())
    def check(case):
        response = case.call(headers=headers)
        counts[str(response.status_code)] = counts.get(str(response.status_code), 0) + 1
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code}"
        if response.status_code >= 400:
            error = response.json().get("error")
            assert isinstance(error, str) and "\n" not in error, f"{case.method} {case.path}: {response.text}"

    check()
