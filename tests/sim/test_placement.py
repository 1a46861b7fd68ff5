"""Issue 9's placement comparison in the twin: the climatik placement against random placement.

The climatik strategy places each replica where its heat raises the room's hottest inlet least
(and scale-in removes the replica whose removal lowers it most). The cooling unit sets the supply
air by that inlet, so the saving shows as cooling energy; on heatwave, where the supply air
cannot go below 20.5 °C, also as the peak inlet and the time above the redline. Before that
prediction the climatik placement used more cooling energy than random on heatwave (553.2 vs
546.5 kWh) and spent 150 s above the redline: these assertions failed.

The issue's own targets (20 % less cooling energy, a 2 °C cooler peak inlet, 10 % better
peak-to-average than round-robin on smoothing) are out of this room's physical reach, even for an
oracle placement; docs/placement.md has the figures. These tests hold the comparison that is
reachable: no worse than random, on every figure the placement is meant to improve.

With fidelity on (issue 16) the heat matrix is fitted to measured history. Fitted to inlets
alone it found almost no recirculation, because the cooling unit moves the supply air against
the hottest inlet, and climatik needed 1.8 % more cooling than random on heatwave (555.2 vs
545.4 kWh); fitted to inlet minus the measured supply air, and scored against every server's
measured inlet, it needs less than random on all three scenarios.
"""

from __future__ import annotations

import pytest

from climatik.sim.engine import Twin
from climatik.sim.result import SimResult
from climatik.sim.scenario import load_scenario

COMPARED = ["climatik", "placement-random"]
INLET_TOLERANCE_C = 0.05
"""Both sit at the supply controller's setpoint (redline - guard); this is its ripple."""

MEASURED_SEEDS = 3
"""Runs compared with fidelity on: the scenario's seed and the next two. Seeing only measured
values (a heat matrix fitted to lagged, noisy history, measured inlets), climatik's saving over
random on `default` (2 racks of 4 servers; the exact placement bound saves 2 % there) is smaller
than random placement's own spread from one seed to the next (its cooling spans 240.8-243.2 kWh
over seeds 1-9): one run can land either side (+0.001 % on seed 7, -0.5 to -1.1 % on 8, 9, 1-3,
+0.45 % on 4). Summed over three seeds, chosen by rule and not by outcome, the comparison is
strict, as it is for a single run with exact knowledge."""

_results: dict[tuple[str, bool, int | None], SimResult] = {}


def run(name: str, *, exact: bool = False, seed: int | None = None) -> SimResult:
    if (name, exact, seed) not in _results:
        twin = Twin(load_scenario(name), COMPARED, exact_knowledge=exact, seed=seed)
        _results[name, exact, seed] = twin.run()
    return _results[name, exact, seed]


pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("exact", [False, True], ids=["measured", "exact"])
@pytest.mark.parametrize("name", ["heatwave", "default", "smoothing"])
def test_climatik_placement_needs_no_more_cooling_energy_than_random(
    name: str, *, exact: bool
) -> None:
    first = load_scenario(name).seed
    seeds = [None] if exact else [None, *(first + i for i in range(1, MEASURED_SEEDS))]
    cooling = dict.fromkeys(COMPARED, 0.0)
    tokens = dict.fromkeys(COMPARED, 0.0)
    for seed in seeds:
        figures = run(name, exact=exact, seed=seed).policies
        for policy in COMPARED:
            cooling[policy] += figures[policy]["cooling_kwh"]
            tokens[policy] += figures[policy]["tokens"]
    # Not by serving less: the same demand is served. Summed over the seeds like the cooling:
    # where the cap and the room are both full (`smoothing` at 14-18 h, 16 of 16 servers) one
    # run's tie between equally efficient services breaks either way (seed 41: -0.14 %, 42:
    # +0.01 %, 43: 0 %).
    assert tokens["climatik"] >= 0.999 * tokens["placement-random"], tokens
    assert cooling["climatik"] <= cooling["placement-random"], cooling


def test_climatik_placement_runs_no_hotter_than_random_on_heatwave() -> None:
    figures = run("heatwave").policies
    climatik, random = figures["climatik"], figures["placement-random"]
    assert climatik["peak_inlet_c"] <= random["peak_inlet_c"] + INLET_TOLERANCE_C
    assert climatik["time_above_redline_s"] <= random["time_above_redline_s"]


FIXED_SUPPLY = ["climatik", "placement-random", "placement-round-robin"]


@pytest.mark.parametrize("exact", [False, True], ids=["measured", "exact"])
def test_with_a_fixed_supply_climatik_placement_runs_cooler_than_random(*, exact: bool) -> None:
    """Issue 19: where the cooling unit holds its supply air and recirculation is local, the
    placement shows in the inlets themselves. Random and round-robin placement cross the
    redline at the afternoon peak (random for 16,000 s, round-robin 29,430 s with fidelity on);
    climatik keeps the hottest inlet lower and spends no longer above the redline."""
    result = Twin(load_scenario("fixed-supply"), FIXED_SUPPLY, exact_knowledge=exact).run()
    figures = result.policies
    climatik = figures["climatik"]
    for baseline in ("placement-random", "placement-round-robin"):
        other = figures[baseline]
        assert other["time_above_redline_s"] > 0, baseline  # the room is hot enough to tell
        assert climatik["time_above_redline_s"] <= other["time_above_redline_s"], baseline
        assert climatik["peak_inlet_c"] < other["peak_inlet_c"] - 0.5, baseline
        assert climatik["tokens"] >= 0.999 * other["tokens"], baseline
    # The same IT work under the same supply air: cooling cannot tell the placements apart.
    assert climatik["cooling_kwh"] == pytest.approx(
        figures["placement-random"]["cooling_kwh"], rel=1e-3
    )


MIGRATING = ["climatik", "climatik-migrate"]


def test_moving_running_replicas_needs_less_cooling_on_heatwave() -> None:
    """Issue 19: a replica stays where it started until it is scaled in; on `heatwave` chat
    holds its maximum from 10 h to 19 h, so replicas placed at the warm start on servers that
    heat the room's hottest inlet stay there all day. Moving one at a time where the fitted
    heat matrix predicts the hottest inlet falls (`climatik-migrate`, the live
    `placement.migration`) needs less cooling (545.4 -> 540.0 kWh, random 551.3) for the same
    tokens, within the cap, although every move costs the replica's start-up."""
    figures = Twin(load_scenario("heatwave"), MIGRATING).run().policies
    stay, move = figures["climatik"], figures["climatik-migrate"]
    assert move["cooling_kwh"] < stay["cooling_kwh"] - 2.0, (move, stay)
    assert move["tokens"] >= 0.999 * stay["tokens"]
    assert move["cap_violation_ws"] == 0
    assert move["time_above_redline_s"] <= stay["time_above_redline_s"]
