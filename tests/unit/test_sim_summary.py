"""The terminal summary fits 100 columns, says which way is better and reads without exponents."""

from __future__ import annotations

import re

import numpy as np
import pytest

from climatik.sim.engine import Twin
from climatik.sim.policy_specs import POLICY_NAMES
from climatik.sim.result import METRIC_KEYS, History, SimResult
from climatik.sim.scenario import builtin_names, load_scenario
from climatik.sim.scenario_bounds import compute_bounds
from climatik.sim.shares import compare
from climatik.sim.summary import BY_KEY, COLUMNS, TABLES, WIDTH, format_column, summary_table


def _widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


@pytest.mark.parametrize("name", builtin_names())
def test_every_builtin_scenario_table_fits_the_width(name: str) -> None:
    scenario = load_scenario(name)
    result = Twin(scenario, hours=0.25).run()
    bounds = compute_bounds(scenario, hours=0.25)
    text = summary_table(result, compare(result, bounds, whole_replica=True))
    assert "cool (whole)" in text
    assert _widest(text) <= WIDTH
    assert "share of bound" in text
    assert not re.search(r"\de[+-]\d", text), "no exponent notation"


def _result(policies: dict[str, dict[str, float]]) -> SimResult:
    return SimResult(
        scenario="synthetic",
        duration_s=31 * 24 * 3600.0,
        policies=policies,
        details={},
        history=History(),
        service_names=["chat"],
        site_cap_w=5e6,
        redline_c=27.0,
        step_s=10.0,
        site_w_per_step=np.zeros((1, len(policies))),
        knowledge="exact",
    )


def test_every_policy_with_extreme_figures_still_fits() -> None:
    # The longest policy names at once, a month of a room of thousands of GPUs whose cap is
    # far too low: the widest a table can get.
    huge = {
        "cap_violation_ws": 9.99e13,
        "max_overshoot_pct": 99_999.9,
        "peak_to_average": 99.999,
        "cooling_kwh": 9.99e7,
        "peak_inlet_c": 199.99,
        "time_above_redline_s": 31 * 24 * 3600.0,
        "tokens": 9.99e13,
        "tokens_per_s": 9_999_999.0,
        "slo_attainment": 1.0,
        "energy_kwh": 9.99e8,
        "tokens_per_joule": 999.9,
        "carbon_g": 9.99e11,
        "carbon_g_per_1k_tokens": 9_999.0,
    }
    tiny = dict.fromkeys(METRIC_KEYS, 1.234e-5)
    policies = {name: (huge if i % 2 else tiny) for i, name in enumerate(POLICY_NAMES)}
    text = summary_table(_result(policies))
    assert _widest(text) <= WIDTH
    assert "EXACT KNOWLEDGE" in text


def test_every_column_header_says_which_way_is_better() -> None:
    text = summary_table(_result({"climatik": dict.fromkeys(METRIC_KEYS, 1.0)}))
    for column in COLUMNS:
        assert f"{column.header} {column.arrow}" in text
    assert {column.key for column in COLUMNS} == set(METRIC_KEYS)
    assert {key for _, keys in TABLES for key in keys} == set(METRIC_KEYS)
    assert BY_KEY["tokens"].arrow == "↑"
    assert BY_KEY["cap_violation_ws"].arrow == "↓"
    assert "↑ higher is better, ↓ lower is better" in text


def test_violation_reads_in_watt_hours_with_a_prefix_not_an_exponent() -> None:
    # The issue's `W*s 5.64e+07`: 56.4 MW·s is 15.67 kWh.
    violation = format_column(BY_KEY["cap_violation_ws"], [5.64e7, 0.0, 5.63e7, None])
    assert violation.unit == "kWh"
    assert violation.cells == ["15.67", "0", "15.64", ""]
    assert format_column(BY_KEY["cap_violation_ws"], [1.6e6]).cells == ["444.4"]
    assert format_column(BY_KEY["cap_violation_ws"], [1.6e6]).unit == "Wh"


def test_one_unit_per_column_from_its_largest_value() -> None:
    tokens = format_column(BY_KEY["tokens"], [5.538e8, 3.842e8])
    assert (tokens.unit, tokens.cells) == ("million", ["553.8", "384.2"])
    energy = format_column(BY_KEY["energy_kwh"], [1043.2, 877.4])
    assert (energy.unit, energy.cells) == ("kWh", ["1,043", "877"])
    energy = format_column(BY_KEY["energy_kwh"], [23408.8, 877.4])
    assert (energy.unit, energy.cells) == ("MWh", ["23.41", "0.88"])
    carbon = format_column(BY_KEY["carbon_g"], [380700.0])
    assert (carbon.unit, carbon.cells) == ("kg", ["380.7"])
    above = format_column(BY_KEY["time_above_redline_s"], [7200.0, 30.0])
    assert (above.unit, above.cells) == ("min", ["120.0", "0.5"])
    slo = format_column(BY_KEY["slo_attainment"], [0.905, 1.0])
    assert (slo.unit, slo.cells) == ("%", ["90.5", "100.0"])
    assert format_column(BY_KEY["tokens_per_joule"], [0.14751]).cells == ["0.1475"]
    assert format_column(BY_KEY["tokens_per_s"], [6410.4]).cells == ["6,410"]
    assert format_column(BY_KEY["peak_inlet_c"], [float("nan")]).cells == ["n/a"]
