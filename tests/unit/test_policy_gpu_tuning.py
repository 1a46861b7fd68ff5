"""When to tune GPU clocks, what an applied result means, and how it rescales the learner."""

from __future__ import annotations

import pytest

from climatik.domain.capping import CappingState, TargetLearnerState
from climatik.policies.gpu_tuning import (
    TriggerInputs,
    clock_after,
    rescale_watts_per_replica,
    sweep_of,
    target_watts_scales,
    tuning_reason,
    watts_scale,
)


def inputs(**overrides: object) -> TriggerInputs:
    values: dict[str, object] = {
        "measured_w": 500.0,
        "cap_w": 1000.0,
        "rack_near_limit": False,
        "tokens_per_watt": 1.0,
        "tokens_per_watt_at_last_tuning": 1.0,
    }
    values.update(overrides)
    return TriggerInputs(**values)  # type: ignore[arg-type]


def test_tuning_triggers_of_the_design_document() -> None:
    assert tuning_reason(inputs()) is None
    assert tuning_reason(inputs(measured_w=800.0)) == "power at 80% of the cap"
    assert tuning_reason(inputs(rack_near_limit=True)) is not None
    assert "tokens per watt moved -20%" in (tuning_reason(inputs(tokens_per_watt=0.8)) or "")
    assert tuning_reason(inputs(measured_w=None, tokens_per_watt=None)) is None


def result(mode: str, before_w: float, after_w: float, applied: int | None) -> dict[str, object]:
    return {
        "mode": mode,
        "appliedClockMHz": applied,
        "choice": {"before": {"watts": before_w}, "after": {"watts": after_w}},
    }


def test_only_applied_results_rescale_power() -> None:
    assert watts_scale(result("apply", 800, 600, 1400)) == pytest.approx(0.75)
    assert watts_scale(result("recommend", 800, 600, None)) is None
    assert watts_scale({"mode": "apply", "error": {"reason": "NoPermission"}}) is None


def test_an_applied_clock_rescales_the_named_targets_learned_replicas_and_keeps_the_rest() -> None:
    state = CappingState(
        targets={
            "llm": TargetLearnerState(watts_per_replica=400.0, samples=5),
            "new": TargetLearnerState(watts_per_replica=None, samples=0),
            "elsewhere": TargetLearnerState(watts_per_replica=500.0, samples=5),
        },
        last_scope_data_s=12.0,
    )
    rescaled = rescale_watts_per_replica(state, {"llm": 0.75, "new": 0.75})
    assert rescaled.targets["llm"].watts_per_replica == pytest.approx(300.0)
    assert rescaled.targets["llm"].samples == 5
    # Nothing learned yet stays nothing: no data is never zero.
    assert rescaled.targets["new"].watts_per_replica is None
    # A target with no replica on a retuned node draws what it drew.
    assert rescaled.targets["elsewhere"].watts_per_replica == 500.0
    assert rescaled.last_scope_data_s == 12.0
    assert state.targets["llm"].watts_per_replica == 400.0


def test_a_nodes_result_scales_each_target_by_its_share_of_replicas_on_that_node() -> None:
    scales = target_watts_scales(
        {"n1": 0.8, "n2": 0.6},
        {
            "chat": ("n1", "n2", "n3", "n4"),  # half its replicas retuned
            "batch": ("n1", ""),  # the unscheduled replica draws nothing yet
            "other": ("n3",),
        },
    )
    assert scales == {"chat": pytest.approx((0.8 + 0.6 + 1 + 1) / 4), "batch": pytest.approx(0.8)}


SWEEP_RESULT = {
    "mode": "apply",
    "samples": [
        {"clockMHz": 1200, "watts": 3000.0, "tokensPerSecond": 900.0},
        {
            "clockMHz": 1980,
            "watts": 5000.0,
            "tokensPerSecond": 1000.0,
            "p99TokenLatencySeconds": 0.03,
        },
    ],
    "choice": {"clockMHz": 1200},
    "appliedClockMHz": 1200,
}


def test_a_sweep_result_gives_its_samples_fastest_first_and_its_pick() -> None:
    found = sweep_of(SWEEP_RESULT)
    assert found is not None
    samples, tuned = found
    assert [s.clock_mhz for s in samples] == [1980, 1200]
    assert samples[0].p99_token_latency_s == pytest.approx(0.03)
    assert samples[1].p99_token_latency_s is None
    assert tuned == 1200
    # A lock, a dry run, a pick outside the samples, or a malformed sample: no sweep.
    assert sweep_of({"mode": "lock", "samples": [], "appliedClockMHz": 1200}) is None
    assert sweep_of({**SWEEP_RESULT, "choice": {"clockMHz": 1500}}) is None
    assert sweep_of({**SWEEP_RESULT, "samples": [{"clockMHz": "fast"}]}) is None


def test_the_clock_a_node_runs_after_each_kind_of_result() -> None:
    assert clock_after(SWEEP_RESULT, None) == 1200
    assert clock_after({"mode": "lock", "appliedClockMHz": 1500}, 1200) == 1500
    # A failed lock leaves the clock; a recommendation or a failed sweep restores the default.
    assert clock_after({"mode": "lock", "appliedClockMHz": None}, 1200) == 1200
    assert clock_after({"mode": "dry-run"}, 1200) == 1200
    assert clock_after({"mode": "recommend", "appliedClockMHz": None}, 1200) is None
    assert clock_after({"mode": "apply", "appliedClockMHz": None}, 1200) is None
