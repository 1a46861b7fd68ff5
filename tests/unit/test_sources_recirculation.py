"""`parse_recirculation`: untrusted `racks.yaml` never raises, stays fast, names what it drops.

What the reconciler does with the result (Events, the condition, the estimate as fallback) is in
test_placement_reconciler.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from climatik.sources.recirculation import parse_recirculation
from tests.unit.helpers.yaml_bombs import ALIAS_BOMB

LOADERS = [yaml.SafeLoader, *([yaml.CSafeLoader] if hasattr(yaml, "CSafeLoader") else [])]


@pytest.mark.parametrize("loader", LOADERS)
def test_an_alias_bomb_is_reported_quickly(loader: type[Any]) -> None:
    text = ALIAS_BOMB + (
        "rack-a: {recirculationCPerKw: *i, zone: *i, inletRiseCPerKw: {rack-b: *i}}\nrack-b: *i\n"
    )
    assert len(text) < 600
    started = time.perf_counter()
    racks, problems = parse_recirculation(text, ["rack-a", "rack-b"], loader=loader)
    assert time.perf_counter() - started < 0.5
    assert (
        "rack rack-a: recirculationCPerKw a list of 9 items is not a finite number; ignored"
        in problems
    )
    assert "rack rack-a: zone is a list, not a string; ignored" in problems
    assert any(p.startswith("rack rack-a: inletRiseCPerKw.rack-b a list of 9") for p in problems)
    assert "rack rack-b: the entry is a list, not a mapping; ignored" in problems
    assert racks == {"rack-a": racks["rack-a"]}
    assert racks["rack-a"].factor_c_per_kw is None
    assert racks["rack-a"].zone is None
    assert all(len(p) < 300 for p in problems)


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("opening", ["[", "{a: "])
def test_deep_nesting_is_not_valid_yaml_and_raises_nothing(loader: type[Any], opening: str) -> None:
    closing = "]" if opening == "[" else "}"
    racks, problems = parse_recirculation(
        opening * 20_000 + closing * 20_000, ["rack-a"], loader=loader
    )
    assert racks == {}
    (problem,) = problems
    assert problem.startswith("not valid YAML (")
    assert problem.endswith("all of it is ignored")


def test_an_integer_yaml_cannot_build_is_not_valid_yaml() -> None:
    _, problems = parse_recirculation(
        "rack-a: {recirculationCPerKw: 1" + "0" * 5000 + "}", ["rack-a"]
    )
    (problem,) = problems
    assert problem.startswith("not valid YAML (")


def test_a_config_map_over_the_size_cap_is_ignored_whole() -> None:
    line = "rack-a: {recirculationCPerKw: 1.0}\n"
    cap = 256 * 1024
    at_cap = line + "#" + "x" * (cap - len(line) - 2) + "\n"
    assert len(at_cap) == cap
    racks, problems = parse_recirculation(at_cap, ["rack-a"])
    assert problems == []
    assert racks["rack-a"].factor_c_per_kw == 1.0
    # One byte more (a two-byte character for a one-byte one) and all of it is ignored.
    over = at_cap.replace("x", "é", 1)
    racks, problems = parse_recirculation(over, ["rack-a"])
    assert racks == {}
    assert problems == [f"is {cap + 1} bytes, more than the {cap} read; all of it is ignored"]


RACKS = ["rack-a", "rack-b"]


def _check_parsed(racks: dict[str, Any], problems: list[str]) -> None:
    assert set(racks) <= set(RACKS)
    assert all(isinstance(p, str) and len(p) < 1000 for p in problems)
    for entry in racks.values():
        assert entry.factor_c_per_kw is None or entry.factor_c_per_kw >= 0
        assert entry.zone is None or isinstance(entry.zone, str)
        assert all(inlet in RACKS and rise >= 0 for inlet, rise in entry.column)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_parse_recirculation_never_raises_on_any_text(text: str) -> None:
    _check_parsed(*parse_recirculation(text, RACKS))


JSON_LIKE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from([*RACKS, "recirculationCPerKw", "inletRiseCPerKw", "zone"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from([*RACKS, "recirculationCPerKw", "inletRiseCPerKw", "zone"])
            | st.text(max_size=8),
            children,
            max_size=4,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(JSON_LIKE)
def test_parse_recirculation_never_raises_on_any_nested_document(value: Any) -> None:
    text = yaml.safe_dump(value)
    _check_parsed(*parse_recirculation(text, RACKS))
