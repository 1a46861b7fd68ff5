"""Issue 16's bounds on every built-in scenario: no policy beats its bound on the same run.

The runs are the ones `test_scenarios.py` makes (each scenario once per session, `large`
shortened to a day), so the bounds add their LPs, not more simulation. A policy that beats a
bound means the bound is wrong: fix the bound, not these tests.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from climatik.sim.result import SimResult
from climatik.sim.scenario import builtin_names, load_scenario
from climatik.sim.scenario_bounds import PLACEMENT_POWER_STEPS, ScenarioBounds, compute_bounds
from climatik.sim.shares import SHARE_KEYS, Comparison, compare, keeps_cap
from tests.sim.test_scenarios import SHORTENED_H, run, run_carbon_pair

pytestmark = pytest.mark.timeout(900)

ENUMERATED_ROOM = 8
"""Servers up to which every built-in scenario's placements are few enough to enumerate."""
RELATIVE = 1e-9
"""Solver tolerance on the bound's side of a comparison."""

_bounds: dict[str, ScenarioBounds] = {}


def bounds_of(name: str, hours: float | None) -> ScenarioBounds:
    key = f"{name}@{hours}"
    if key not in _bounds:
        _bounds[key] = compute_bounds(load_scenario(name), hours)
    return _bounds[key]


def compared(name: str) -> tuple[SimResult, Comparison]:
    result = run(name)
    return result, compare(result, bounds_of(name, SHORTENED_H.get(name)))


@pytest.mark.parametrize("name", builtin_names())
def test_every_bound_is_solved_to_optimality(name: str) -> None:
    bounds = bounds_of(name, SHORTENED_H.get(name))
    assert bounds.throughput.status == "tokens: Optimal; slo: Optimal"
    assert set(bounds.rise_curve.statuses) == {"Optimal"}
    assert bounds.peak_to_average.status == "Optimal"
    for bound in (bounds.throughput, bounds.cooling, bounds.carbon, bounds.peak_to_average):
        assert bound.mip_gap == 0.0
        assert bound.relaxations


@pytest.mark.parametrize("name", builtin_names())
def test_no_policy_beats_its_bound(name: str) -> None:
    result, comparison = compared(name)
    bound = comparison.bound_row
    demand = comparison.bounds.throughput.values["demand_tokens"]
    assert isinstance(demand, float)
    assert bound["tokens"] <= demand * (1 + RELATIVE)
    for policy, figures in result.policies.items():
        # Nobody serves more than arrived.
        assert figures["tokens"] <= demand * (1 + RELATIVE), policy
        if keeps_cap(result, policy):
            # Under the cap: no more tokens and no better SLO than the bound.
            assert figures["tokens"] <= bound["tokens"] * (1 + RELATIVE), policy
            assert figures["slo_attainment"] <= bound["slo_attainment"] + RELATIVE, policy
        # No placement needs less cooling than the floor of its own IT power.
        assert figures["cooling_kwh"] >= comparison.cooling_floor_kwh[policy] * (1 - RELATIVE), (
            policy
        )
        assert figures["peak_to_average"] >= bound["peak_to_average"] - RELATIVE, policy


@pytest.mark.parametrize("name", builtin_names())
def test_shares_of_bound_are_at_most_one_and_the_bound_has_all_of_it(name: str) -> None:
    result, comparison = compared(name)
    for policy, shares in comparison.shares.items():
        for key in SHARE_KEYS:
            share = shares[key]
            if share is None:
                continue
            assert not math.isnan(share)
            assert share <= 1 + 1e-6, (policy, key, share)
            if policy == "bound":
                assert share == pytest.approx(1.0)
            if policy == comparison.baselines[key]:
                assert share == pytest.approx(0.0)
    # Tokens and SLO are shared against static; a policy that breaks the cap gets no share.
    assert comparison.baselines["tokens"] == "static"
    for policy in result.policies:
        if not keeps_cap(result, policy):
            assert comparison.shares[policy]["tokens"] is None
            assert comparison.shares[policy]["slo_attainment"] is None


WHOLE_CHECKED = ("default", "heatwave", "over-demand")
"""Enumerated (8 servers) and searched (18 servers, 20 with three services). `large` (128) is
left to `climatik simulate`: its search takes a minute over a day's blocks."""


@pytest.mark.parametrize("name", WHOLE_CHECKED)
def test_every_policy_gets_a_whole_replica_placement(name: str) -> None:
    result = run(name)
    bounds = bounds_of(name, SHORTENED_H.get(name))
    comparison = compare(result, bounds, whole_replica=True)
    assert set(comparison.whole_replica) == set(result.policies)
    enumerable = load_scenario(name).racks.servers <= ENUMERATED_ROOM
    for policy, whole in comparison.whole_replica.items():
        if enumerable:  # every block's placement proven by enumeration
            assert whole.mip_gap == 0.0, (policy, whole.statuses)
        else:  # searched: the gap to the fractional floor is measured, whatever it is
            assert 0.0 <= whole.mip_gap < 1.0, (policy, whole.statuses)
        # Whole replicas keep the room at or above the floor's cooling, block means aside.
        floor = comparison.cooling_floor_kwh[policy]
        assert whole.cooling_kwh >= floor * (1 - 1e-3), policy
    assert "cooling_whole_kwh" in comparison.bound_row
    assert comparison.shares["bound"]["cooling_whole_kwh"] == pytest.approx(1.0)


def test_the_searched_placements_are_within_a_percent_of_the_mip() -> None:
    # heatwave's 18 servers are past enumeration: the greedy search places every block, and a
    # sample of its blocks solved exactly shows how far the search is from the optimum.
    result = run("heatwave")
    placer = bounds_of("heatwave", None).whole
    compare(result, bounds_of("heatwave", None), whole_replica=True)
    searched = list(placer._cache.items())
    assert searched
    exact = dataclasses.replace(placer, exact=True, _cache={}, _every={})
    quantum = placer.dynamic_w / PLACEMENT_POWER_STEPS
    for (counts, levels), found in searched[:: max(1, len(searched) // 6)][:6]:
        solved = exact.placement(np.array(counts), np.array(levels, dtype=np.float64) * quantum)
        assert solved.mip_gap <= 0.01, solved.status
        assert solved.rise_c - 1e-9 <= found.rise_c <= solved.rise_c * 1.01


def test_the_carbon_bound_is_not_beaten_by_the_carbon_aware_policy() -> None:
    result = run_carbon_pair()
    bounds = bounds_of("carbon-swing", None)
    comparison = compare(result, bounds)
    saving = bounds.carbon.values["saving_g"]
    assert isinstance(saving, float)
    assert bounds.carbon.status == "Optimal"
    assert saving > 0
    assert comparison.baselines["carbon_g_per_1k_tokens"] == "climatik-no-carbon"
    bound = comparison.bound_row["carbon_g_per_1k_tokens"]
    assert result.policies["climatik"]["carbon_g_per_1k_tokens"] >= bound
    share = comparison.shares["climatik"]["carbon_g_per_1k_tokens"]
    assert share is not None
    assert share <= 1.0
    assert comparison.shares["bound"]["carbon_g_per_1k_tokens"] == pytest.approx(1.0)
    # The yardstick of a ceiling controller: the summariser's minimum replica serves what
    # waits, in dirty slots too. Tighter than the free bound, and still not beaten.
    with_min = bounds.carbon.values["saving_with_min_replicas_g"]
    assert isinstance(with_min, float)
    assert 0 < with_min < saving
    share_with_min = comparison.carbon_with_min_replicas["climatik"]
    assert share_with_min is not None
    assert 0 < share_with_min <= 1.0


def test_scenarios_without_deferrable_work_have_no_carbon_share() -> None:
    result, comparison = compared("default")
    assert comparison.bounds.carbon.values["saving_g"] == 0.0
    assert all(shares["carbon_g_per_1k_tokens"] is None for shares in comparison.shares.values())
    assert "carbon_g_per_1k_tokens" not in comparison.bound_row
    assert result.policies
