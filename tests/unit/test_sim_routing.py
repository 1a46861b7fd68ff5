"""The routing twin's invariants: every request once, even round robin, no gain from nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from climatik.cli import main
from climatik.sim import physics
from climatik.sim.routing import (
    METRIC_KEYS,
    PolicyRun,
    Workload,
    generate_workload,
    run_policy,
    run_routing,
)
from climatik.sim.routing_replica import prefill_seconds, replica_physics
from climatik.sim.routing_scenario import (
    ROUTING_POLICIES,
    RoutingScenario,
    load_routing_scenario,
    parse_routing_scenario,
)
from climatik.sim.scenario import ScenarioError

TWO_KINDS = {
    "name": "two-kinds",
    "duration_h": 0.25,
    "start_hour": 12,
    "replicas": [
        {"name": "h100", "count": 2, "gpu_model": "H100"},
        {"name": "a100", "count": 2, "gpu_model": "A100"},
    ],
    "traffic": {"peak_rps": 6, "bursts_per_day": 0, "noise_fraction": 0},
}


def _scenario(**changes: object) -> RoutingScenario:
    return parse_routing_scenario({**TWO_KINDS, **changes})


def _assert_conserved(run: PolicyRun) -> None:
    """Every request served or given up, exactly once, in order, and nothing left open."""
    req = run.requests
    served = np.asarray(req.served)
    timed_out = np.asarray(req.timed_out)
    assert not np.any(served & timed_out)
    assert np.all(served | timed_out)
    arrival, first, finish = (np.asarray(x) for x in (req.arrival, req.first_token, req.finish))
    assert np.all(first[served] >= arrival[served])
    assert np.all(finish[served] >= first[served])
    assert np.all(np.isinf(first[timed_out]))
    assert sum(r.sent for r in run.replicas) == len(req.arrival)
    for replica in run.replicas:
        assert replica.open_requests == 0
        assert replica.running == 0
        assert not replica.waiting
    generated = sum(r.tokens for r in run.replicas)
    output = np.asarray(req.output)[served].sum()
    assert generated == pytest.approx(output, rel=1e-9)
    # Energy never falls below every server's idle draw for the whole run.
    idle_w = sum(r.srv_dec_w[0] for r in run.replicas)
    assert sum(r.srv_j for r in run.replicas) >= idle_w * run.end_s * (1 - 1e-9)


@pytest.mark.parametrize("policy", ROUTING_POLICIES)
def test_every_request_is_served_or_given_up_once(policy: str) -> None:
    scenario = _scenario()
    run = run_policy(scenario, generate_workload(scenario, 0.25, 3), policy, 0.25)
    _assert_conserved(run)
    assert all(run.requests.served)


def test_an_overloaded_service_gives_requests_up_and_still_accounts_for_each() -> None:
    scenario = _scenario(
        traffic={"peak_rps": 40, "bursts_per_day": 0, "noise_fraction": 0}, queue_timeout_s=20
    )
    run = run_policy(scenario, generate_workload(scenario, 0.1, 3), "round-robin", 0.1)
    _assert_conserved(run)
    assert any(run.requests.timed_out)


def test_round_robin_sends_every_replica_the_same_number_of_requests() -> None:
    scenario = _scenario()
    run = run_policy(scenario, generate_workload(scenario, 0.25, 5), "round-robin", 0.25)
    sent = [r.sent for r in run.replicas]
    assert max(sent) - min(sent) <= 1


def test_least_loaded_sends_the_slower_replicas_less() -> None:
    scenario = _scenario()
    run = run_policy(scenario, generate_workload(scenario, 0.25, 5), "least-loaded", 0.25)
    sent = {r.name: r.sent for r in run.replicas}
    assert sent["a100-0"] + sent["a100-1"] < sent["h100-0"] + sent["h100-1"]


IDENTICAL = {
    **TWO_KINDS,
    "duration_h": 0.5,
    "replicas": [{"name": "h100", "count": 4, "gpu_model": "H100"}],
    "traffic": {"peak_rps": 8, "bursts_per_day": 0, "noise_fraction": 0},
}


def test_identical_replicas_with_energy_per_token_fixed_give_routing_nothing_to_gain() -> None:
    """Where a token costs the same on every replica at any batch, no router can save energy:
    tokens-per-watt may pack requests, but its tokens per joule match least-loaded's."""
    scenario = parse_routing_scenario({**IDENTICAL, "decode_power": "per-token"})
    result = run_routing(scenario, ["least-loaded", "tokens-per-watt"], seed=11)
    packed = result.policies["tokens-per-watt"]["tokens_per_joule"]
    spread = result.policies["least-loaded"]["tokens_per_joule"]
    assert packed == pytest.approx(spread, rel=0.01)


def test_identical_replicas_with_flat_decode_power_reward_packing() -> None:
    """Where decode draws the same at any batch (Splitwise), fuller batches are cheaper per
    token even on identical hardware: the picker packs and gains."""
    scenario = parse_routing_scenario({**IDENTICAL, "decode_power": "flat"})
    result = run_routing(scenario, ["least-loaded", "tokens-per-watt"], seed=11)
    packed = result.policies["tokens-per-watt"]["tokens_per_joule"]
    spread = result.policies["least-loaded"]["tokens_per_joule"]
    assert packed > 1.1 * spread


def test_readings_that_are_always_stale_make_tokens_per_watt_least_loaded() -> None:
    """Readings older than the picker accepts leave only the router's own counts: the picker
    falls back to the fewest open requests, ties by name, exactly as least-loaded routes."""
    scenario = _scenario(scrape={"interval_s": 30}, router={"max_reading_age_s": 1e-9})
    workload = generate_workload(scenario, 0.25, 5)
    picker = run_policy(scenario, workload, "tokens-per-watt", 0.25)
    counted = run_policy(scenario, workload, "least-loaded", 0.25)
    assert [r.sent for r in picker.replicas] == [r.sent for r in counted.replicas]
    # Scrapes split the energy integral where least-loaded's run does not: float rounding only.
    assert picker.requests.finish == pytest.approx(counted.requests.finish, rel=1e-12)


def test_every_policy_sees_the_same_requests() -> None:
    scenario = _scenario()
    first = generate_workload(scenario, 0.25, 5)
    assert generate_workload(scenario, 0.25, 5) == first
    assert generate_workload(scenario, 0.25, 6) != first
    assert min(first.prompt_tokens) >= 1
    assert max(first.output_tokens) <= 8 * scenario.requests.output_tokens


def test_the_a100s_are_slower_and_hungrier_per_token_than_the_h100s_at_full_batch() -> None:
    scenario = _scenario()
    h100, a100 = scenario.replicas
    h_step, h_gpu, *_ = replica_physics(h100, scenario)
    a_step, a_gpu, *_ = replica_physics(a100, scenario)
    full = scenario.model_class.max_batch
    assert a_step[full] > h_step[full]
    assert full / a_step[full] / a_gpu[full] < full / h_step[full] / h_gpu[full]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    groups=st.lists(
        st.tuples(
            st.integers(1, 3),
            st.sampled_from(["H100", "A100", "H200"]),
            st.floats(0.5, 1.0),
        ),
        min_size=1,
        max_size=3,
    ),
    peak_rps=st.floats(0.5, 30.0),
    timeout_s=st.floats(5.0, 120.0),
    sigma=st.floats(0.0, 1.2),
    decode_power=st.sampled_from(["flat", "per-token"]),
    policy=st.sampled_from(ROUTING_POLICIES),
    seed=st.integers(0, 1000),
)
def test_conservation_holds_for_any_fleet_load_and_policy(
    groups: list[tuple[int, str, float]],
    peak_rps: float,
    timeout_s: float,
    sigma: float,
    decode_power: str,
    policy: str,
    seed: int,
) -> None:
    max_clock = {"H100": 1980.0, "H200": 1980.0, "A100": 1410.0}
    scenario = _scenario(
        replicas=[
            {"name": f"g{i}", "count": n, "gpu_model": gpu, "clock_mhz": max_clock[gpu] * ratio}
            for i, (n, gpu, ratio) in enumerate(groups)
        ],
        traffic={"peak_rps": peak_rps, "bursts_per_day": 0},
        queue_timeout_s=timeout_s,
        requests={"length_sigma": sigma},
        decode_power=decode_power,
        scrape={"interval_s": 5, "rate_window_s": 20},
    )
    hours = 0.03
    _assert_conserved(run_policy(scenario, generate_workload(scenario, hours, seed), policy, hours))


def test_a_clock_outside_the_gpus_range_is_refused_at_its_field() -> None:
    with pytest.raises(ScenarioError, match=r"replicas\[1\]\.clock_mhz: 1980 MHz is outside"):
        _scenario(
            replicas=[
                {"name": "h100", "gpu_model": "H100"},
                {"name": "a100", "gpu_model": "A100", "clock_mhz": 1980},
            ]
        )


def test_repeated_group_names_and_unknown_policies_are_refused() -> None:
    with pytest.raises(ScenarioError, match=r"replicas\[1\]\.name: 'x' names two"):
        _scenario(replicas=[{"name": "x"}, {"name": "x"}])
    with pytest.raises(ScenarioError, match=r"policies\[0\]: unknown routing policy 'static'"):
        _scenario(policies=["static"])


def test_the_builtin_routing_scenario_loads_and_unknown_names_list_it() -> None:
    assert load_routing_scenario("hetero-routing").name == "hetero-routing"
    with pytest.raises(ScenarioError, match="built-in: hetero-routing"):
        load_routing_scenario("nope")


def test_cli_routing_mode_prints_a_row_per_policy_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "routing.json"
    argv = ["simulate", "--routing", "--hours", "0.05", "--json", str(path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for row in ("round-robin", "least-loaded", "tokens-per-watt", "oracle (exact)"):
        assert any(line.startswith(row) for line in printed.splitlines())
    assert all(len(line) <= 100 for line in printed.splitlines())
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["mode"] == "routing"
    assert set(document["policies"]) == set(ROUTING_POLICIES)
    assert all(set(row) == set(METRIC_KEYS) for row in document["policies"].values())
    assert document["policies"]["least-loaded"]["requests"] > 0


def test_cli_routing_mode_refuses_fleet_flags_and_unknown_policies(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["simulate", "--routing", "--exact-knowledge"]) == 2
    assert "--exact-knowledge is for the fleet twin" in capsys.readouterr().err
    assert main(["simulate", "--routing", "--policies", "static"]) == 2
    assert "unknown routing policy 'static'" in capsys.readouterr().err


@pytest.mark.parametrize("decode_power", ["flat", "per-token"])
def test_no_policy_beats_the_energy_bound(decode_power: str) -> None:
    result = run_routing(_scenario(decode_power=decode_power), seed=2)
    bound = result.bound_tokens_per_joule
    for policy, figures in result.policies.items():
        assert figures["tokens_per_joule"] <= bound, policy
    assert result.as_json()["bound"] == {"tokens_per_joule": bound}


def test_one_request_takes_its_prefill_then_a_batch_of_one_step_per_further_token() -> None:
    scenario = _scenario(replicas=[{"name": "h100", "gpu_model": "H100"}])
    workload = Workload([10.0], [1024], [256])
    run = run_policy(scenario, workload, "least-loaded", 0.01)
    model = scenario.model_class
    prefill = float(physics.prefill_s(model, 1024, 1.0))
    step = float(physics.decode_step_s(model, 1 / model.max_batch, 1.0))
    assert run.requests.first_token[0] == pytest.approx(10.0 + prefill)
    assert run.requests.finish[0] == pytest.approx(10.0 + prefill + 255 * step)
    (replica,) = run.replicas
    idle_w, decode_w = replica.srv_dec_w[0], replica.srv_dec_w[1]
    expected_j = idle_w * run.end_s + (replica.srv_pre_w - idle_w) * prefill
    expected_j += (decode_w - idle_w) * 255 * step
    assert replica.srv_j == pytest.approx(expected_j)
    assert replica.tokens == pytest.approx(256)


def test_an_a100_prefills_and_decodes_slower_by_its_datasheet_ratios() -> None:
    scenario = _scenario()
    h100, a100 = scenario.replicas
    assert prefill_seconds(a100, scenario, [1024])[0] == pytest.approx(
        prefill_seconds(h100, scenario, [1024])[0] * 989 / 312
    )
    assert replica_physics(a100, scenario)[0][1] == pytest.approx(
        replica_physics(h100, scenario)[0][1] * 3.35 / 2.039
    )
