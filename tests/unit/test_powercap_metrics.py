"""The power-cap reconciler's decision metric: labelled by codes, per config, never by prose.

`climatik_decisions_total{config,action,reason}` takes its `reason` from the policy's
`CeilingReason` (a closed set), so dashboards can filter and alert on it and no wording change
in a reason sentence moves a series. Power comes from the loopback Prometheus of
`test_powercap_hostile_measurements` (100 W per pod, two pods, a 1000 W cap).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from climatik.domain.capping import CeilingAction, CeilingReason
from climatik.reconcilers.metrics import CappingMetrics
from tests.unit.helpers.capping_world import (
    NS,
    FakePrometheus,
    prometheus,
    reconcile,
)

__all__ = ["prometheus"]  # the fixture, used by name

KEY = f"{NS}/cap"


def decisions(registry: CollectorRegistry) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["config"], s.labels["action"], s.labels["reason"]): s.value
        for family in registry.collect()
        if family.name == "climatik_decisions"
        for s in family.samples
        if s.name == "climatik_decisions_total"
    }


async def test_a_decision_is_counted_by_its_config_action_and_reason_code(
    prometheus: FakePrometheus,
) -> None:
    registry = CollectorRegistry()
    await reconcile(prometheus, capping_metrics=CappingMetrics(registry))
    # 200 W under a 1000 W cap: the user's maximum fits, the ceiling stays where it is.
    assert decisions(registry) == {(KEY, "hold", "fits_under_cap"): 1.0}

    prometheus.cpu_watts = "-50"  # implausible: no data, the ceiling holds
    registry = CollectorRegistry()
    await reconcile(prometheus, capping_metrics=CappingMetrics(registry))
    assert decisions(registry) == {(KEY, "hold", "no_power_data"): 1.0}


def test_a_deleted_configs_decision_series_go() -> None:
    registry = CollectorRegistry()
    metrics = CappingMetrics(registry)
    metrics.count_decision(KEY, CeilingAction.LOWER, CeilingReason.OVER_BUDGET)
    metrics.count_decision("other/cap", CeilingAction.HOLD, CeilingReason.WITHIN_HYSTERESIS)
    metrics.forget(KEY)
    assert decisions(registry) == {("other/cap", "hold", "within_hysteresis"): 1.0}
