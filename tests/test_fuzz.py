"""Every parser a user reaches, fed generated input (``georet.testing.fuzz``): a valid value or a one-line
:class:`~georet.errors.GeoretError`, never a traceback. ``benchmarks/fuzz.py`` runs the same properties
with many more cases."""

from __future__ import annotations

import pytest

from georet.testing.fuzz import PROPERTIES, run

#: per parser here; the benchmark tries thousands
EXAMPLES = 150


@pytest.mark.parametrize("name", PROPERTIES)
def test_a_parser_returns_a_valid_value_or_a_one_line_error(name):
    counts = run(PROPERTIES[name], EXAMPLES)
    assert counts["tried"] >= EXAMPLES * 0.9, counts  # hypothesis stops early only when it runs out of cases
    prop = PROPERTIES[name]
    assert counts["refused"] > 0 or not prop.refuses, counts  # the strategy reaches the parser's errors ...
    assert counts["valid"] > 0 or not prop.accepts, counts  # ... and its valid values
