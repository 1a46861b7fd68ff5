"""What the power-cap reconciler reports: conditions by name, the status a round desires, Events."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from climatik.api.status import (
    GPU_TUNING_CONDITION,
    GPU_TUNING_DISABLED_IN_CONTROLLER,
    GPU_TUNING_NOT_ALLOWED,
    ConditionUpdate,
)
from climatik.api.status_models import (
    Condition,
    ConditionStatus,
    ConditionType,
    EffectiveCapSource,
    PowerCappingConfigStatus,
)
from climatik.domain.capping import (
    CapObservation,
    CappingState,
    CeilingAction,
    CeilingDecision,
    CeilingPlan,
    CeilingReason,
)
from climatik.domain.config import PowerCappingConfig, TargetKind
from climatik.policies.observations import observe_target
from climatik.reconcilers.metrics import CappingMetrics
from climatik.reconcilers.powercap_measure import Measured
from climatik.reconcilers.powercap_report import (
    StatusRound,
    ceiling_event,
    record_metrics,
    round_conditions,
)
from climatik.reconcilers.targets import ResolvedTarget

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
CONFIG = PowerCappingConfig(namespace="llm", name="cap", generation=3, power_cap_w=1000)


def target(name: str, *, deferrable: bool = False) -> ResolvedTarget:
    return ResolvedTarget(
        kind=TargetKind.SCALED_OBJECT,
        name=name,
        namespace="llm",
        min_replicas=1,
        applied_max_replicas=8,
        user_max_replicas=8,
        current_replicas=6,
        pods=(),
        pod_nodes=(),
        obj={},
        deferrable=deferrable,
    )


def decision(name: str, previous: int, new: int, action: CeilingAction) -> CeilingDecision:
    return CeilingDecision(
        target=name,
        previous_max_replicas=previous,
        new_max_replicas=new,
        action=action,
        code=CeilingReason.OVER_BUDGET,
        reason="900 W over the cap",
    )


def observation(deferrable_cap_w: float | None = None) -> CapObservation:
    targets = tuple(
        observe_target(
            name=n,
            current_replicas=6,
            min_replicas=1,
            user_max_replicas=8,
            applied_max_replicas=8,
            watts=None,
            tokens_per_s=None,
            limited_by_ceiling=None,
            priority=0,
            deferrable=n == "batch",
        )
        for n in ("chat", "batch")
    )
    return CapObservation(
        scope="llm/cap",
        cap_w=1000.0,
        measured_w=950.0,
        targets=targets,
        deferrable_cap_w=deferrable_cap_w,
    )


def plan(*decisions: CeilingDecision) -> CeilingPlan:
    return CeilingPlan(scope="llm/cap", decisions=decisions, state=CappingState())


def by_type(conditions: list[ConditionUpdate]) -> dict[str, ConditionUpdate]:
    return {c.type: c for c in conditions}


def test_a_lowered_ceiling_with_a_batch_only_carbon_cap_and_a_gap_in_the_data() -> None:
    targets = [target("chat"), target("batch", deferrable=True)]
    measured = Measured({}, None, "llm/chat: no samples", "NoDataEmpty")
    conditions = by_type(
        round_conditions(
            CONFIG,
            plan(
                decision("chat", 8, 8, CeilingAction.HOLD),
                decision("batch", 8, 5, CeilingAction.LOWER),
            ),
            measured,
            (),
            targets,
            observation=observation(deferrable_cap_w=600.0),
        )
    )
    capping = conditions[ConditionType.CAPPING]
    assert (capping.status, capping.reason) == (ConditionStatus.TRUE, "CeilingsLowered")
    assert capping.message.startswith("batch at 5; carbon cap 600 W binds only deferrable")
    metrics = conditions[ConditionType.METRICS_AVAILABLE]
    assert (metrics.status, metrics.reason) == (ConditionStatus.FALSE, "NoDataEmpty")
    assert metrics.message == "llm/chat: no samples; holding the last ceilings"
    resolved = conditions[ConditionType.TARGETS_RESOLVED]
    assert (resolved.status, resolved.reason) == (ConditionStatus.TRUE, "Resolved")
    assert conditions[ConditionType.READY].status is ConditionStatus.TRUE


def test_a_missing_target_is_not_ready_and_says_which() -> None:
    measured = Measured({}, 0.0, None, "MetricsAvailable")
    conditions = by_type(
        round_conditions(
            CONFIG,
            plan(),
            measured,
            ["ScaledObject llm/gone not found"],
            [],
            observation=observation(),
        )
    )
    resolved = conditions[ConditionType.TARGETS_RESOLVED]
    assert (resolved.status, resolved.reason) == (ConditionStatus.FALSE, "TargetMissing")
    assert resolved.message == "ScaledObject llm/gone not found"
    ready = conditions[ConditionType.READY]
    assert (ready.status, ready.reason) == (ConditionStatus.FALSE, "TargetsNotReady")
    assert conditions[ConditionType.CAPPING].status is ConditionStatus.FALSE


def _condition(type_: str, reason: str) -> Condition:
    return Condition(
        type=type_,
        status=ConditionStatus.FALSE,
        reason=reason,
        message="",
        last_transition_time=NOW,
        observed_generation=1,
    )


def test_the_status_drops_only_its_own_tuning_note_and_stamps_the_generation() -> None:
    current = PowerCappingConfigStatus(
        conditions=[
            _condition(GPU_TUNING_CONDITION, GPU_TUNING_DISABLED_IN_CONTROLLER),
            _condition(ConditionType.GPU_POWER_MEASURED, "GpuPowerNotMeasured"),
        ]
    )
    ready = ConditionUpdate(ConditionType.READY, ConditionStatus.TRUE, "Reconciled", "ok")
    status = StatusRound([ready], generation=3, clear_gpu_tuning=True).desired(
        current, NOW, spec_has_carbon=False
    )
    assert [(c.type, c.observed_generation) for c in status.conditions or ()] == [
        (ConditionType.GPU_POWER_MEASURED, 1),
        (ConditionType.READY, 3),
    ]
    # The GPU-tuning reconciler's own reason for the same condition type is not ours to drop.
    theirs = PowerCappingConfigStatus(
        conditions=[_condition(GPU_TUNING_CONDITION, GPU_TUNING_NOT_ALLOWED)]
    )
    kept = StatusRound([], generation=3, clear_gpu_tuning=True, clear_gpu_power=True).desired(
        theirs, NOW, spec_has_carbon=False
    )
    assert [c.reason for c in kept.conditions or ()] == [GPU_TUNING_NOT_ALLOWED]


def test_the_static_cap_is_written_only_where_no_carbon_section_owns_it() -> None:
    report = StatusRound([], generation=3, cap=(1000.0, EffectiveCapSource.STATIC))
    mine = report.desired(None, NOW, spec_has_carbon=False)
    assert (mine.effective_cap_watts, mine.effective_cap_source) == (
        1000.0,
        EffectiveCapSource.STATIC,
    )
    assert report.desired(None, NOW, spec_has_carbon=True).effective_cap_watts is None
    carbon = StatusRound([], generation=3, cap=(600.0, EffectiveCapSource.CARBON))
    assert carbon.desired(None, NOW, spec_has_carbon=False).effective_cap_watts is None


def test_an_event_only_for_a_ceiling_that_moved() -> None:
    assert ceiling_event(target("chat"), decision("chat", 8, 8, CeilingAction.HOLD)) is None
    assert ceiling_event(target("chat"), decision("chat", 8, 8, CeilingAction.RESTORE)) is None
    assert ceiling_event(target("chat"), decision("chat", 8, 5, CeilingAction.LOWER)) == (
        "CeilingLowered",
        "ScaledObject chat: maxReplicas 8 -> 5: 900 W over the cap",
    )
    reason, _ = ceiling_event(target("chat"), decision("chat", 5, 3, CeilingAction.SAFE)) or (
        "",
        "",
    )
    assert reason == "FailSafeCeilingApplied"


def test_the_power_models_prediction_and_its_error_are_metrics_while_it_has_one() -> None:
    """Issue 17: the model's prediction error is a metric, and each target's predicted watts
    sit beside its measured watts; a round without a prediction drops them (a stale figure
    must not read as current)."""
    registry = CollectorRegistry()
    metrics = CappingMetrics(registry)
    predicted = replace(decision("chat", 6, 6, CeilingAction.HOLD), predicted_watts=610.0)
    with_model = replace(plan(predicted), predicted_w=930.0, prediction_error_w=-12.5)
    measured = Measured({}, 950.0, None, "MetricsAvailable")
    record_metrics(metrics, "llm/cap", observation(), with_model, measured)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"config": "llm/cap", **labels})

    assert value("climatik_predicted_power_watts") == 930.0
    assert value("climatik_prediction_error_watts") == -12.5
    assert value("climatik_target_predicted_power_watts", target="chat") == 610.0
    assert value("climatik_power_watts") == 950.0
    record_metrics(metrics, "llm/cap", observation(), plan(), measured)
    assert value("climatik_predicted_power_watts") is None
    assert value("climatik_prediction_error_watts") is None
    assert value("climatik_target_predicted_power_watts", target="chat") is None


def test_measured_power_is_written_in_whole_watts() -> None:
    """`kubectl get pcc` prints the status as written: a meter's decimals are noise there."""
    seen = replace(observation(), measured_w=950.4)
    report = StatusRound(
        [], generation=3, plan=plan(), observation=seen, measured=Measured({}, 950.4, None, "")
    )
    assert report.desired(None, NOW, spec_has_carbon=False).measured_power_watts == 950.0
