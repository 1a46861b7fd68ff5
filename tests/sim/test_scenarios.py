"""Scenario regressions: issue 7's "done when" targets on every built-in scenario.

Each scenario runs once per session with the policies the targets compare (the large one
shortened to a day here; `benchmarks/bench_sim.py` runs it in full). The figures themselves are
what the twin computes; the tests only hold them to the targets.
"""

from __future__ import annotations

import numpy as np
import pytest

from climatik.sim.clocks import tuned_clock_ratios
from climatik.sim.engine import Twin
from climatik.sim.result import SimResult
from climatik.sim.scenario import Scenario, builtin_names, load_scenario

COMPARED = ["uncapped", "static", "seed-threshold", "climatik"]
SHORTENED_H = {"large": 24.0}
DEMAND_EXCEEDS_NAMEPLATE = ("default", "oversubscribed")

_results: dict[str, SimResult] = {}


def run(name: str) -> SimResult:
    if name not in _results:
        scenario = load_scenario(name)
        _results[name] = Twin(scenario, COMPARED, hours=SHORTENED_H.get(name)).run()
    return _results[name]


CARBON_PAIR = ["climatik", "climatik-no-carbon"]
CHAT_SEEDS = (101, 202)
"""Other noise streams for what carbon input costs chat (one run cannot tell, see below)."""


def run_carbon_pair() -> SimResult:
    """carbon-swing with and without carbon input (shared with the bounds' tests)."""
    if "carbon-pair" not in _results:
        _results["carbon-pair"] = Twin(load_scenario("carbon-swing"), CARBON_PAIR).run()
    return _results["carbon-pair"]


pytestmark = pytest.mark.timeout(900)


@pytest.mark.parametrize("name", builtin_names())
def test_climatik_cap_violation_is_a_tenth_of_seed_thresholds_or_negligible(name: str) -> None:
    result = run(name)
    climatik = result.policies["climatik"]["cap_violation_ws"]
    seed = result.policies["seed-threshold"]["cap_violation_ws"]
    negligible = 0.001 * result.site_cap_w * result.duration_s
    assert climatik <= 0.1 * seed or climatik < negligible, (climatik, seed, negligible)


@pytest.mark.parametrize("name", builtin_names())
def test_climatik_overshoot_of_10s_power_stays_under_2_percent(name: str) -> None:
    assert run(name).policies["climatik"]["max_overshoot_pct"] < 2.0


@pytest.mark.parametrize("name", DEMAND_EXCEEDS_NAMEPLATE)
def test_demand_really_exceeds_the_cap(name: str) -> None:
    # Without control the room breaks its cap: the comparison below is not a quiet day.
    assert run(name).policies["uncapped"]["cap_violation_ws"] > 0


@pytest.mark.parametrize("name", DEMAND_EXCEEDS_NAMEPLATE)
def test_climatik_serves_a_quarter_more_tokens_than_static_without_hurting_slos(
    name: str,
) -> None:
    result = run(name)
    climatik, static = result.policies["climatik"], result.policies["static"]
    assert climatik["tokens"] >= 1.25 * static["tokens"]
    assert climatik["slo_attainment"] >= static["slo_attainment"] - 0.01


@pytest.mark.parametrize("name", builtin_names())
def test_climatik_never_serves_fewer_tokens_nor_fewer_per_joule_than_static(name: str) -> None:
    result = run(name)
    climatik, static = result.policies["climatik"], result.policies["static"]
    assert climatik["tokens"] >= static["tokens"]
    assert climatik["tokens_per_joule"] >= static["tokens_per_joule"]


def test_over_demand_keeps_the_premium_tier_and_fills_the_cap() -> None:
    result = run("over-demand")
    by_service = result.details["climatik"]["slo_attainment_by_service"]
    assert isinstance(by_service, dict)
    # The premium tier keeps its SLO while the cap binds; lower tiers yield first.
    assert by_service["premium"] >= 0.95
    assert by_service["premium"] >= by_service["standard"] >= by_service["bulk"]
    # During the hours the demand would break the cap, the site draws close to it: all but
    # the margin, the hysteresis and part of a replica (issue 17 asks for 95 %).
    site = np.array(result.history.site_w)  # (samples, policies)
    over = site[:, COMPARED.index("uncapped")] > result.site_cap_w
    assert over.mean() > 0.3
    drawn = site[over, COMPARED.index("climatik")].mean() / result.site_cap_w
    assert drawn >= 0.92


def test_over_demand_buys_tokens_with_slower_clocks_under_the_cap() -> None:
    # Issue 17: where the demand breaks the cap, one more replica at a lower clock serves more
    # tokens per watt than a faster clock; clocks and replicas together serve a quarter more
    # tokens than nameplate ceilings (the tuned clocks alone served 13 % more). Opt-in live
    # (`gpuTuning.clocksUnderCap`: a lock Job per node), so `climatik` leaves it off.
    result = Twin(load_scenario("over-demand"), ["static", "climatik-joint-clocks"]).run()
    climatik, static = result.policies["climatik-joint-clocks"], result.policies["static"]
    assert climatik["tokens"] >= 1.25 * static["tokens"]
    details = result.details["climatik-joint-clocks"]
    changes = details["gpu_clock_changes"]
    assert isinstance(changes, int)
    assert changes > 0
    mean_mhz = details["gpu_clock_mhz"]
    assert isinstance(mean_mhz, dict)
    scenario = load_scenario("over-demand")
    ratios, _ = tuned_clock_ratios(scenario)
    bulk = result.service_names.index("bulk")
    # The lowest tier spends the day below the clock the tuner picked for it.
    assert mean_mhz["bulk"] < ratios[bulk] * scenario.racks.gpu_curve.max_clock_mhz


def test_same_seed_same_figures() -> None:
    scenario = load_scenario("default")
    first = Twin(scenario, ["climatik"], hours=2.0).run().policies
    second = Twin(scenario, ["climatik"], hours=2.0).run().policies
    assert first == second
    other = Twin(scenario, ["climatik"], hours=2.0, seed=99).run().policies
    assert other != first


def test_placement_is_measured_in_the_heatwave() -> None:
    variants = ["placement-random", "placement-minhr", "placement-zone", "climatik"]
    result = Twin(load_scenario("heatwave"), variants, hours=18.0).run()
    cooling = {name: result.policies[name]["cooling_kwh"] for name in variants}
    # Same ceilings policy, different places: the room's heat, and so its cooling, differ.
    assert len({round(kwh, 1) for kwh in cooling.values()}) > 1
    negligible = 0.001 * result.site_cap_w * result.duration_s
    for name in variants:
        assert result.policies[name]["cap_violation_ws"] < negligible


def test_a_carbon_cap_delays_batch_work_without_failing_chat() -> None:
    compared = CARBON_PAIR
    result = run_carbon_pair()
    by_service = {name: result.details[name]["slo_attainment_by_service"] for name in compared}
    assert isinstance(by_service["climatik"], dict)
    assert isinstance(by_service["climatik-no-carbon"], dict)
    # Chat keeps the full site cap whatever the grid; the deferrable summariser waits for a
    # cleaner one and still meets its 6-hour deadline. Chat's own figure is no measure of what
    # carbon input costs it in one run: chat loses its objective at its daily peaks (13-14 h,
    # 39-40 h) where the site cap binds and a sixth replica fits or not by a few hundred watts
    # of measurement, both runs alike, so one noise stream moves chat by points either way
    # (with carbon input: 93.5 against 94.5 % on the scenario's seed, 95.8 against 91.7 %
    # with seed 101, 94.6 against 94.8 % with 202). Over the three, carbon input costs chat
    # nothing; a plan that took chat's power would show here.
    chat: dict[str, list[float]] = {name: [] for name in compared}
    for other in (
        result,
        *(Twin(load_scenario("carbon-swing"), compared, seed=seed).run() for seed in CHAT_SEEDS),
    ):
        for name in compared:
            by_seed = other.details[name]["slo_attainment_by_service"]
            assert isinstance(by_seed, dict)
            chat[name].append(by_seed["chat"])
    assert np.mean(chat["climatik"]) >= np.mean(chat["climatik-no-carbon"]) - 0.01
    assert by_service["climatik"]["summarise"] >= 0.98
    slo = {name: result.policies[name]["slo_attainment"] for name in compared}
    assert slo["climatik"] >= slo["climatik-no-carbon"] - 0.02
    # And the cap did hold the summariser back where the grid was dirtiest.
    replicas = np.array(result.history.replicas)  # (samples, policies, services)
    dirty = np.array(result.history.carbon_g_per_kwh) >= 300.0
    summarise = result.service_names.index("summarise")
    held, free = replicas[dirty, :, summarise].mean(axis=0)
    assert held < free


def test_tuned_clocks_buy_tokens_per_joule_and_throughput_under_the_cap() -> None:
    compared = ["climatik", "climatik-max-clock"]
    result = Twin(load_scenario("default"), compared).run()
    tuned, untuned = (result.policies[name] for name in compared)
    # Site tokens per joule count the idle floor too. Since ceilings charge a replica what it
    # adds (issue 17) the max-clock ablation fills the cap as well (0.1335 -> 0.1454 tokens/J,
    # 52 -> 86 % SLO) while climatik's own rose (0.1622 -> 0.1632): the clocks' share of the gap
    # is 12 % where it was 21 %, no longer flattered by the ablation's idle capacity.
    assert tuned["tokens_per_joule"] >= 1.10 * untuned["tokens_per_joule"]
    # The service's throughput: what the room served under its cap.
    assert tuned["tokens"] >= 0.9 * untuned["tokens"]
    assert tuned["slo_attainment"] >= untuned["slo_attainment"]
    losses = result.details["climatik"]["gpu_clock_per_replica_loss"]
    assert isinstance(losses, dict)
    for loss in losses.values():
        assert 0.0 < loss["decode_tokens_per_s"] < 0.10


def test_a_backlog_does_not_starve_a_service_that_may_scale_to_zero() -> None:
    """`carbon-swing` with its summariser's minimum at 0 (KEDA scales it to zero at will):
    a chat burst at 13.7 h left a backlog, and charging the backlog as watts cut chat from 7
    replicas to 1, then held the summariser at 0-2 replicas with its queue growing, 433 kW·s
    over the cap by 20 h (`docs/simulate.md`, issue 17)."""
    result = Twin(carbon_swing_scaling_to_zero(), ["climatik-no-carbon"], hours=20.0).run()
    figures = result.policies["climatik-no-carbon"]
    by_service = result.details["climatik-no-carbon"]["slo_attainment_by_service"]
    assert isinstance(by_service, dict)
    assert figures["cap_violation_ws"] == 0.0
    assert by_service["summarise"] >= 0.99


def carbon_swing_scaling_to_zero() -> Scenario:
    """`carbon-swing` with the deferrable summariser's minimum at 0 (KEDA scales it to zero)."""
    scenario = load_scenario("carbon-swing")
    services = [
        s.model_copy(update={"min_replicas": 0}) if s.deferrable else s for s in scenario.services
    ]
    return scenario.model_copy(update={"services": services})


def test_deferrable_work_held_at_zero_meets_its_deadlines() -> None:
    """Held at zero replicas for hours, the summariser's queue grows to 200,000 requests:
    the tracker once counted its readings' noise as arrivals (the backlog looked hours
    younger), and the plan counted 4 replicas in slots where chat's peak left power for one;
    96.2 % of its deadlines were met (`docs/simulate.md`, issue 19)."""
    result = Twin(carbon_swing_scaling_to_zero(), ["climatik"]).run()
    by_service = result.details["climatik"]["slo_attainment_by_service"]
    assert isinstance(by_service, dict)
    assert by_service["summarise"] >= 0.99
