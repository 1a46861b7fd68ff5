"""What the power-cap reconciler reports: conditions, the status it desires, Events, metrics.

Conditions are `ConditionUpdate`s built from a round's plan, measurements and targets; the status
a round desires is a pure function of the status in force (`StatusRound.desired`), which the
reconciler hands to `write_status`; Events go to the `EventSink` (one per moved ceiling, and the
warnings about GPU tuning and GPU power told once per generation or per distinct gap); metrics
are per-config series, replaced each round. No API client here: the reconciler writes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from climatik.api.status import (
    GPU_TUNING_CONDITION,
    GPU_TUNING_DISABLED_IN_CONTROLLER,
    ConditionUpdate,
    find_condition,
    set_condition,
    status_from_wire,
)
from climatik.api.status_models import (
    Condition,
    ConditionStatus,
    ConditionType,
    Decision,
    EffectiveCapSource,
    HeldTarget,
    PowerCappingConfigStatus,
    RackStatus,
    TargetKindName,
    TargetStatus,
)
from climatik.domain.capping import CapObservation, CeilingAction, CeilingDecision, CeilingPlan
from climatik.domain.config import GpuTuningMode, PowerCappingConfig, TargetKind
from climatik.kube.cache import EventSink
from climatik.kube.json import JsonObject
from climatik.reconcilers.metrics import CappingMetrics
from climatik.reconcilers.powercap_measure import Measured
from climatik.reconcilers.status_writer import with_fields
from climatik.reconcilers.targets import ResolvedTarget
from climatik.sources.power_readings import GpuCoverage, TargetMeasurement

log = structlog.get_logger(__name__)

Held = tuple[TargetKind, str]
"""An object a config holds a lowered ceiling on: its kind and name, in the config's namespace."""

GPU_POWER_NOT_MEASURED = "GpuPowerNotMeasured"
"""The reason (condition `GpuPowerMeasured` False, and Warning Event) when GPU pods have no GPU
power series under the preset."""

MAX_MESSAGE_CHARS = 4000
"""A condition message is cut to this."""

_EVENT_REASONS = {
    CeilingAction.LOWER: "CeilingLowered",
    CeilingAction.RAISE: "CeilingRaised",
    CeilingAction.RESTORE: "CeilingRestored",
    CeilingAction.SAFE: "FailSafeCeilingApplied",
}
_DECISION_ACTIONS = {
    CeilingAction.LOWER: "Cap",
    CeilingAction.RAISE: "Raise",
    CeilingAction.RESTORE: "Release",
    CeilingAction.SAFE: "FailSafe",
    CeilingAction.HOLD: "Hold",
}


@dataclass
class WarningMemory:
    """What a config was already warned about (lost on restart: the status then says it)."""

    tuning_warned_generation: int | None = None
    """The spec generation last warned about asking for GPU tuning the controller does not run."""
    tuning_event_refused_generation: int | None = None
    """The generation whose warning Event the API refused (to be sent again)."""
    gpu_power_warned: str | None = None
    """The unmeasured GPU power last warned about (an Event per distinct gap, not per round)."""


# -- conditions ------------------------------------------------------------------------------


def round_conditions(
    config: PowerCappingConfig,
    plan: CeilingPlan,
    measured: Measured,
    missing: Sequence[str],
    targets: Sequence[ResolvedTarget],
    *,
    observation: CapObservation,
) -> list[ConditionUpdate]:
    """TargetsResolved, MetricsAvailable, Capping and Ready after a decided round."""
    capping = [d for d in plan.decisions if d.new_max_replicas < _user_max(targets, d.target)]
    # A bad annotation does not stop capping (the default is used) but must not go unseen.
    ignored = [p for t in targets for p in t.annotation_problems]
    # Nor does a KServe that restarts the predictor's pods at each ceiling write.
    restarting = [t.copied_to_pods for t in targets if t.copied_to_pods is not None]
    if missing:
        resolved = list(missing)
    elif targets:
        resolved = [f"{len(targets)} target(s): " + ", ".join(t.name for t in targets)]
    else:
        resolved = ["no ScaledObject or InferenceService matches the spec"]
    if missing:
        resolved_reason = "TargetMissing"
    elif not targets:
        resolved_reason = "NoTargets"
    else:
        resolved_reason = (
            "CeilingRestartsPods" if restarting else "InvalidAnnotation" if ignored else "Resolved"
        )
    ready = not missing and bool(targets)
    return [
        ConditionUpdate(
            type=ConditionType.TARGETS_RESOLVED,
            status=ConditionStatus.FALSE if missing or not targets else ConditionStatus.TRUE,
            reason="TargetMissing"
            if missing
            else ("NoTargets" if not targets else resolved_reason),
            message="; ".join([*resolved, *restarting, *ignored])[:MAX_MESSAGE_CHARS],
        ),
        ConditionUpdate(
            type=ConditionType.METRICS_AVAILABLE,
            status=ConditionStatus.FALSE if measured.problem else ConditionStatus.TRUE,
            reason=measured.problem_reason if measured.problem else "MetricsAvailable",
            message=(measured.problem or "every power reading is fresh")[:MAX_MESSAGE_CHARS]
            + ("; holding the last ceilings" if measured.problem else ""),
        ),
        ConditionUpdate(
            type=ConditionType.CAPPING,
            status=ConditionStatus.TRUE if capping else ConditionStatus.FALSE,
            reason="CeilingsLowered" if capping else "WithinCap",
            message=(
                (
                    ", ".join(f"{d.target} at {d.new_max_replicas}" for d in capping)
                    if capping
                    else f"every target at its own maximum under {plan.reason or 'the cap'}"
                )
                + _binding_note(observation, targets)
            )[:MAX_MESSAGE_CHARS],
        ),
        ConditionUpdate(
            type=ConditionType.READY,
            status=ConditionStatus.TRUE if ready else ConditionStatus.FALSE,
            reason="Reconciled" if ready else "TargetsNotReady",
            message=f"policy {config.policy.type} acting on {len(targets)} target(s)",
        ),
    ]


def misconfigured_conditions(problem: str) -> list[ConditionUpdate]:
    """A config that cannot be measured (no Prometheus, a bad query template) is not ready."""
    return [
        ConditionUpdate(
            ConditionType.METRICS_AVAILABLE, ConditionStatus.FALSE, "Misconfigured", problem
        ),
        ConditionUpdate(ConditionType.READY, ConditionStatus.FALSE, "Misconfigured", problem),
    ]


def tuning_disabled_condition(
    config: PowerCappingConfig, *, gpu_tuning_enabled: bool
) -> ConditionUpdate | None:
    """The `GpuTuning` condition when the config asks for tuning this controller does not run
    (`CLIMATIK_GPU_TUNING__ENABLED=false`); None otherwise."""
    mode = config.gpu_tuning.mode
    if gpu_tuning_enabled or mode is GpuTuningMode.DISABLED:
        return None
    message = (
        f"spec.gpuTuning.mode is {mode}, but GPU tuning is disabled in the controller "
        "(CLIMATIK_GPU_TUNING__ENABLED=false): no tuning Job runs and watts per replica are "
        "learned from measurements only; power capping is not affected. Set "
        "spec.gpuTuning.mode to Disabled, or enable GPU tuning in the controller "
        "(with its namespace and Role: docs/gpu-tuning.md)"
    )
    return ConditionUpdate(
        GPU_TUNING_CONDITION, ConditionStatus.FALSE, GPU_TUNING_DISABLED_IN_CONTROLLER, message
    )


def gpu_power_condition(
    targets: Sequence[ResolvedTarget], per_target: Mapping[str, TargetMeasurement]
) -> ConditionUpdate | None:
    """`GpuPowerMeasured` for targets whose pods request GPUs: False naming the series that are
    missing and the fix, True once every GPU pod is judged and has GPU series. None when no pod
    requests a GPU, or when not every GPU pod could be judged this round (not measured, not
    scraped yet, a preset without GPU series): the condition then stays as it is."""
    gaps = _gpu_gaps(targets, per_target)
    if gaps:
        message = "; ".join(c.message(_describe(t)) for t, c in gaps)
        return ConditionUpdate(
            ConditionType.GPU_POWER_MEASURED,
            ConditionStatus.FALSE,
            GPU_POWER_NOT_MEASURED,
            message[:MAX_MESSAGE_CHARS],
        )
    gpu_targets = [t for t in targets if t.gpu_pods]
    coverage = [
        per_target[t.key].gpu_coverage if t.key in per_target else None for t in gpu_targets
    ]
    if not gpu_targets or any(
        c is None or len(c.judged) < len(t.gpu_pods)
        for t, c in zip(gpu_targets, coverage, strict=True)
    ):
        return None
    pods = sum(len(t.gpu_pods) for t in gpu_targets)
    return ConditionUpdate(
        ConditionType.GPU_POWER_MEASURED,
        ConditionStatus.TRUE,
        "GpuPowerMeasured",
        f"GPU power series found for all {pods} GPU pod(s) of "
        + ", ".join(t.name for t in gpu_targets),
    )


# -- the status ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusRound:
    """What one reconcile puts in the status; what it did not get to (a plan, measurements)
    is left as it is."""

    conditions: Sequence[ConditionUpdate]
    generation: int
    plan: CeilingPlan | None = None
    observation: CapObservation | None = None
    cap: tuple[float, EffectiveCapSource] | None = None
    targets: Sequence[ResolvedTarget] = ()
    measured: Measured | None = None
    clear_gpu_tuning: bool = False
    """Drop a `GpuTuning` condition this reconciler set, once the config no longer asks (or the
    controller tunes again)."""
    clear_gpu_power: bool = False
    """Drop `GpuPowerMeasured` once no target's pod requests a GPU (or the preset has no GPU
    series to judge them by)."""
    held: set[Held] | None = None

    def desired(
        self, current: PowerCappingConfigStatus | None, now: datetime, *, spec_has_carbon: bool
    ) -> PowerCappingConfigStatus:
        """`current` with this round's fields; the effective cap only when no carbon section
        gives it to the carbon reconciler."""
        merged: Sequence[Condition] | None = current.conditions if current else None
        if self.clear_gpu_tuning and merged:
            merged = [
                c
                for c in merged
                if not (
                    c.type == GPU_TUNING_CONDITION and c.reason == GPU_TUNING_DISABLED_IN_CONTROLLER
                )
            ]
        if self.clear_gpu_power and merged:
            merged = [c for c in merged if c.type != ConditionType.GPU_POWER_MEASURED]
        for condition in self.conditions:
            merged = set_condition(
                merged,
                type_=str(condition.type),
                status=condition.status,
                reason=condition.reason,
                message=condition.message,
                observed_generation=self.generation,
                now=now,
            )
        fields: dict[str, object] = {
            "observed_generation": self.generation,
            "conditions": list(merged or ()),
        }
        cap = self.cap
        if cap is not None and cap[1] is EffectiveCapSource.STATIC and not spec_has_carbon:
            fields["effective_cap_watts"] = cap[0]
            fields["effective_cap_source"] = cap[1]
        plan, observation = self.plan, self.observation
        if plan is not None and observation is not None:
            # Whole watts: `kubectl get pcc` prints it as written, and a meter's decimals are
            # noise (the status settles readings within 5 % anyway).
            measured_w = observation.measured_w
            rounded_w = None if measured_w is None else float(round(measured_w))
            fields["measured_power_watts"] = rounded_w
            fields["targets"] = [
                _target_status(t, plan, self.measured) for t in self.targets
            ] or None
            fields["racks"] = [
                RackStatus(
                    rack_id=r.rack_id,
                    power_watts=r.watts,
                    inlet_celsius=r.inlet_c,
                    headroom_watts=(
                        r.max_watts - r.watts
                        if r.max_watts is not None and r.watts is not None
                        else None
                    ),
                    replica_headroom=r.replica_headroom,
                )
                for r in observation.racks
            ] or (current.racks if current else None)
            fields["last_decision"] = _last_decision(plan, current, now)
        if self.held is not None:
            fields["held_targets"] = held_status(self.held)
        return with_fields(current, **fields)


def held_status(held: set[Held]) -> list[HeldTarget] | None:
    """`status.heldTargets`: the record of lowered ceilings that survives a restart."""
    return [HeldTarget(kind=TargetKindName(str(k)), name=n) for k, n in sorted(held)] or None


def _target_status(
    target: ResolvedTarget, plan: CeilingPlan, measured: Measured | None
) -> TargetStatus:
    learned = plan.state.targets.get(target.name)
    reading = measured.per_target.get(target.key) if measured else None
    watts = reading.watts_or_none if reading else None
    tokens = reading.tokens_per_s_or_none if reading else None
    planned = target.deadline_s is not None
    # A target with a deadline: what the carbon reconciler plans its work from.
    waiting = reading.waiting_requests_or_none if reading and planned else None
    finished = reading.finished_per_s_or_none if reading and planned else None
    return TargetStatus(
        name=target.name,
        kind=TargetKindName(str(target.kind)),
        current_replicas=target.current_replicas,
        user_max_replicas=target.user_max_replicas,
        applied_max_replicas=plan.ceilings.get(target.name, target.applied_max_replicas),
        watts_per_replica=learned.watts_per_replica if learned else None,
        tokens_per_watt=_ratio(tokens, watts),
        min_replicas=target.min_replicas if planned else None,
        deadline_seconds=target.deadline_s,
        waiting_requests=None if waiting is None else round(max(0.0, waiting), 1),
        finished_requests_per_second=None if finished is None else _two_digits(finished),
    )


def _last_decision(
    plan: CeilingPlan, current: PowerCappingConfigStatus | None, now: datetime
) -> Decision | None:
    changed = [d for d in plan.decisions if d.changed]
    if not changed:
        return current.last_decision if current else None
    first = changed[0]
    reason = "; ".join(f"{d.target}: {d.reason}" for d in changed)
    return Decision(time=now, action=_DECISION_ACTIONS[first.action], reason=reason[:1024])


# -- Events ----------------------------------------------------------------------------------


def ceiling_event(target: ResolvedTarget, decision: CeilingDecision) -> tuple[str, str] | None:
    """The Normal Event's reason and message for a ceiling written; None for none (a hold, or
    a write that only takes our annotations off)."""
    event_reason = _EVENT_REASONS.get(decision.action)
    if event_reason is None or not decision.changed:
        return None
    message = (
        f"{target.kind} {target.name}: maxReplicas {decision.previous_max_replicas} -> "
        f"{decision.new_max_replicas}: {decision.reason}"
    )
    return event_reason, message


async def warn_tuning_disabled(
    events: EventSink,
    obj: JsonObject,
    config: PowerCappingConfig,
    memory: WarningMemory,
    message: str,
) -> None:
    """One Warning Event per spec generation. The event recorder would fold repeats into one
    Event, but still patch its count on every reconcile; and after a restart the condition
    already written for this generation says the user was told."""
    if memory.tuning_warned_generation == config.generation:
        return
    status = status_from_wire(obj)
    told = find_condition(status.conditions if status else None, GPU_TUNING_CONDITION)
    if (
        told is not None
        and told.reason == GPU_TUNING_DISABLED_IN_CONTROLLER
        and told.observed_generation == config.generation
        and memory.tuning_event_refused_generation != config.generation
    ):
        memory.tuning_warned_generation = config.generation
        return
    log.warning("gpu_tuning_requested_but_disabled", mode=str(config.gpu_tuning.mode))
    # Remembered only once the API took the Event; a refused one is tried again even though
    # the condition (written anyway) is already there.
    if await events.record(obj, "Warning", "GpuTuningDisabledInController", message):
        memory.tuning_warned_generation = config.generation
        memory.tuning_event_refused_generation = None
    else:
        memory.tuning_event_refused_generation = config.generation


async def warn_gpu_power(
    events: EventSink,
    obj: JsonObject,
    targets: Sequence[ResolvedTarget],
    per_target: Mapping[str, TargetMeasurement],
    memory: WarningMemory,
) -> None:
    """A Warning Event on the config and on each target whose GPU pods have no GPU power
    series, once per distinct gap (capping goes on with what is measured)."""
    gaps = _gpu_gaps(targets, per_target)
    told = "; ".join(coverage.message(_describe(t)) for t, coverage in gaps)
    if not gaps or told == memory.gpu_power_warned:
        memory.gpu_power_warned = told or None
        return
    log.warning("gpu_power_not_measured", targets=[t.name for t, _ in gaps])
    recorded = await events.record(obj, "Warning", GPU_POWER_NOT_MEASURED, told[:1024])
    for target, coverage in gaps:
        await events.record(
            target.obj, "Warning", GPU_POWER_NOT_MEASURED, coverage.message(_describe(target))
        )
    if recorded:
        memory.gpu_power_warned = told


# -- metrics ---------------------------------------------------------------------------------


def record_metrics(
    metrics: CappingMetrics,
    key: str,
    observation: CapObservation,
    plan: CeilingPlan,
    measured: Measured,
) -> None:
    """The config's gauges after a decided round (decision counts are the reconciler's)."""
    # The cap the whole scope must stay under (a batch-only carbon cap is not it; that one
    # is climatik_effective_cap_watts).
    metrics.power_cap_watts.labels(key).set(observation.cap_w)
    metrics.metrics_available.labels(key).set(0 if measured.problem else 1)
    if observation.measured_w is not None:
        metrics.power_watts.labels(key).set(observation.measured_w)
    # The power model's prediction and its error (headroom with a demand signal); gone when
    # a round has none, so a stale figure never reads as current.
    for gauge, value in (
        (metrics.predicted_power_watts, plan.predicted_w),
        (metrics.prediction_error_watts, plan.prediction_error_w),
    ):
        gauge.replace(key, {} if value is None else {(): value})
    metrics.target_predicted_power_watts.replace(
        key,
        {(d.target,): d.predicted_watts for d in plan.decisions if d.predicted_watts is not None},
    )
    # Each round's per-target series replace the last round's: a target gone loses its series.
    learned = plan.state.targets
    metrics.target_max_replicas.replace(
        key, {(d.target,): d.new_max_replicas for d in plan.decisions}
    )
    metrics.target_replica_power_watts.replace(
        key,
        {
            (d.target,): watts
            for d in plan.decisions
            if d.target in learned and (watts := learned[d.target].watts_per_replica) is not None
        },
    )
    metrics.target_tokens_per_joule.replace(
        key,
        {
            (t.name,): t.tokens_per_joule
            for t in observation.targets
            if t.tokens_per_joule is not None
        },
    )


# -- helpers ---------------------------------------------------------------------------------


def _binding_note(observation: CapObservation, targets: Sequence[ResolvedTarget]) -> str:
    """Which cap binds, when a carbon cap holds back only deferrable (batch) targets."""
    if observation.deferrable_cap_w is None:
        return ""
    batch = ", ".join(t.name for t in targets if t.deferrable)
    return (
        f"; carbon cap {observation.deferrable_cap_w:.0f} W binds only deferrable targets "
        f"({batch}); the others may use up to {observation.cap_w:.0f} W (powerCapLimit)"
    )


def _describe(target: ResolvedTarget) -> str:
    return f"{target.kind} {target.name}"


def _gpu_gaps(
    targets: Sequence[ResolvedTarget], per_target: Mapping[str, TargetMeasurement]
) -> list[tuple[ResolvedTarget, GpuCoverage]]:
    """The targets with GPU pods that have no GPU power series, and how they are covered."""
    found = [(t, per_target[t.key].gpu_coverage) for t in targets if t.key in per_target]
    return [(t, c) for t, c in found if c is not None and c.unmeasured]


def _user_max(targets: Sequence[ResolvedTarget], name: str) -> int:
    return next((t.user_max_replicas for t in targets if t.name == name), 0)


def _ratio(tokens: float | None, watts: float | None) -> float | None:
    """Tokens per watt for the status; None unless a number (JSON has no Infinity)."""
    if tokens is None or not watts:
        return None
    ratio = tokens / watts
    return ratio if math.isfinite(ratio) else None


def _two_digits(value: float) -> float:
    """A rate to two significant digits: what a plan needs, without a status write for noise
    (it is not settled like watts: half a request per second is much for a slow target)."""
    if value <= 0:
        return 0.0
    return float(f"{value:.2g}")
