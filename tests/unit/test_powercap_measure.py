"""What the power-cap reconciler observes: the cap in force, and a target as the policy sees it.

(Measuring within the budget against a silent or hostile Prometheus is exercised through the
reconciler in `test_powercap_silent_prometheus.py` and `test_powercap_hostile_measurements.py`.)
"""

from __future__ import annotations

from typing import Any

import pytest

from climatik.api.status_models import EffectiveCapSource
from climatik.domain.carbon import EmissionRateTarget
from climatik.domain.config import CarbonConfig, CarbonProvider, PowerCappingConfig, TargetKind
from climatik.policies.observations import BACKLOG_DRAIN_S, demand_tokens_per_s
from climatik.reconcilers.powercap_measure import effective_cap, target_observation
from climatik.reconcilers.targets import ResolvedTarget
from climatik.sources.power_readings import Reading, TargetMeasurement

CARBON = CarbonConfig(
    provider=CarbonProvider.UK_NATIONAL_GRID,
    target=EmissionRateTarget(grams_per_hour=100.0),
    floor_w=200.0,
)


def config(*, carbon: bool) -> PowerCappingConfig:
    return PowerCappingConfig(
        namespace="llm",
        name="cap",
        generation=1,
        power_cap_w=1000,
        carbon=CARBON if carbon else None,
    )


def with_status(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "cap", "namespace": "llm"}, "status": status}


def test_the_carbon_reconcilers_cap_binds_only_within_powercaplimit_and_with_a_carbon_section() -> (
    None
):
    carbon_status = with_status(effectiveCapWatts=600, effectiveCapSource="Carbon")
    carbon: tuple[float, EffectiveCapSource] = (600.0, EffectiveCapSource.CARBON)
    static: tuple[float, EffectiveCapSource] = (1000.0, EffectiveCapSource.STATIC)
    assert effective_cap(carbon_status, config(carbon=True)) == carbon
    # A carbon section removed since: the cap left in the status no longer binds.
    assert effective_cap(carbon_status, config(carbon=False)) == static
    assert effective_cap(with_status(), config(carbon=True)) == static
    # Above powerCapLimit, zero, what the schema refuses (negative, a word), or none at all.
    for bad in (1500, 0, -5, "six hundred", None):
        hostile = with_status(effectiveCapWatts=bad, effectiveCapSource="Carbon")
        assert effective_cap(hostile, config(carbon=True)) == static, bad
    unknown_source = with_status(effectiveCapWatts=600, effectiveCapSource="Guess")
    assert effective_cap(unknown_source, config(carbon=True)) == static
    written_by_us = with_status(effectiveCapWatts=600, effectiveCapSource="Static")
    assert effective_cap(written_by_us, config(carbon=True)) == static


def test_a_target_without_a_measurement_is_no_data_never_zero() -> None:
    target = ResolvedTarget(
        kind=TargetKind.SCALED_OBJECT,
        name="chat",
        namespace="llm",
        min_replicas=1,
        applied_max_replicas=6,
        user_max_replicas=8,
        current_replicas=4,
        pods=("chat-0",),
        pod_nodes=("n",),
        obj={},
        priority=2,
        deferrable=True,
    )
    held = target_observation(target, None)
    assert (held.watts, held.tokens_per_s) == (None, None)
    assert (held.applied_max_replicas, held.user_max_replicas, held.priority) == (6, 8, 2)
    assert held.deferrable
    measured = TargetMeasurement(target.key, Reading(800.0, 0.0, "q"), Reading(400.0, 0.0, "t"))
    seen = target_observation(target, measured)
    assert seen.watts == pytest.approx(800.0)
    assert seen.tokens_per_s == pytest.approx(400.0)
    assert seen.demand_tokens_per_s is None  # no backlog measured: the policy charges full load


def test_a_targets_demand_is_what_it_serves_plus_its_backlog_drained_as_in_the_twin() -> None:
    """The live reconciler gives the headroom policy the demand the twin gives it: tokens
    served plus waiting requests x tokens per request (generated tokens over finished
    requests), drained over `BACKLOG_DRAIN_S`."""
    target = ResolvedTarget(
        kind=TargetKind.SCALED_OBJECT,
        name="chat",
        namespace="llm",
        min_replicas=1,
        applied_max_replicas=6,
        user_max_replicas=8,
        current_replicas=4,
        pods=("chat-0",),
        pod_nodes=("n",),
        obj={},
    )
    measured = TargetMeasurement(
        target.key,
        Reading(800.0, 0.0, "q"),
        Reading(400.0, 0.0, "t"),
        waiting_requests=Reading(30.0, 0.0, "w"),
        finished_per_s=Reading(2.0, 0.0, "f"),
    )
    seen = target_observation(target, measured)
    expected = demand_tokens_per_s(400.0, 30.0, 200.0)
    assert seen.demand_tokens_per_s == pytest.approx(expected)
    assert expected == pytest.approx(400.0 + 30 * 200 / BACKLOG_DRAIN_S)
