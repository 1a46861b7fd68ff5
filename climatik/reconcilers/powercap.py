"""The power-cap reconciler: measured watts become replica ceilings (issue 6, design doc §3).

For one PowerCappingConfig: resolve its targets from the caches, measure their watts and tokens
through Prometheus, ask the configured ceiling policy for new ceilings, merge-patch the ceilings
that changed, and write the status (conditions, per-target state, the decision and why), Events
and metrics. Missing data is never zero: the policy holds and the status says why. Ceilings held
by a config that no longer targets an object (or no longer exists) are given back.

A carbon cap binds the way the twin applies it (`caps_with_carbon`): when some targets are
annotated deferrable (and the Headroom policy can budget per target), it holds back only them and
the others keep powerCapLimit; otherwise it is the cap of the whole scope.

With GPU tuning switched off controller-wide (`CLIMATIK_GPU_TUNING__ENABLED=false`), a config whose
`spec.gpuTuning.mode` still asks for tuning is capped as usual, and told why nothing tunes: a
`GpuTuning` condition (False, `DisabledInController`) while it asks, and one Warning Event per
spec generation, not one per reconcile.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog

from climatik.api.convert import InvalidConfigError, config_from_object
from climatik.api.models import (
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
from climatik.api.status import (
    GPU_TUNING_CONDITION,
    GPU_TUNING_DISABLED_IN_CONTROLLER,
    find_condition,
    set_condition,
    status_from_wire,
)
from climatik.domain.capping import (
    CapObservation,
    CappingState,
    CeilingAction,
    CeilingDecision,
    CeilingPlan,
    TargetObservation,
)
from climatik.domain.config import GpuTuningMode, PowerCappingConfig, TargetKind
from climatik.kube.client import ApiError, KubeClient
from climatik.policies.capping_spec import batch_can_yield, policy_settings
from climatik.policies.ceilings import decide_replica_ceilings
from climatik.policies.gpu_tuning import rescale_watts_per_replica
from climatik.policies.observations import (
    IDLE_SAMPLE_NODES,
    IdlePower,
    RackReading,
    ceiling_settings,
    group_nodes_by_rack,
    learn_idle_power,
    measured_watts_per_replica,
    observe_cap,
    observe_racks,
    observe_target,
)
from climatik.reconcilers.actuation import (
    ceiling_patch,
    holds_below_user_max,
    resource_of,
    restore_patch,
)
from climatik.reconcilers.metrics import CappingMetrics
from climatik.reconcilers.resources import (
    CAPPED_BY_ANNOTATION,
    GIVE_BACK_FINALIZER,
    POWER_CAPPING_CONFIGS,
)
from climatik.reconcilers.result import Result, TerminalError
from climatik.reconcilers.settings import CappingSettings
from climatik.reconcilers.status_writer import with_fields, write_status
from climatik.reconcilers.targets import ResolvedTarget, WorkloadCaches
from climatik.reconcilers.tuning_hints import TuningHints
from climatik.sources.address import AddressPolicy
from climatik.sources.breaker import BreakerSettings
from climatik.sources.plausibility import PlausibilityLimits
from climatik.sources.power import (
    GpuCoverage,
    PowerSource,
    PrometheusPowerSource,
    Reading,
    TargetMeasurement,
    TargetPods,
    TokensQueryConfig,
    judges_gpu_power,
    outcome_message,
    power_query_config_for,
)
from climatik.sources.prometheus import (
    NoData,
    PrometheusError,
    PrometheusSettings,
)
from climatik.sources.prometheus_pool import PrometheusPool
from climatik.sources.promql import QueryTemplateError
from climatik.sources.racks import (
    PrometheusRackSignalSource,
    RackNodes,
    RackSignalQueries,
    RackSignalSource,
    rack_queries_for,
)

log = structlog.get_logger(__name__)

_ConditionSpec = tuple[str, ConditionStatus, str, str]
"""A condition to set: type, status, reason, message."""

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


def prometheus_pool(
    settings: CappingSettings, session_factory: Callable[[], Awaitable[aiohttp.ClientSession]]
) -> PrometheusPool:
    """The shared Prometheus read layer the settings ask for (one per controller)."""
    return PrometheusPool(
        session_factory,
        cache_ttl_s=settings.prometheus_cache_ttl_s,
        breaker=BreakerSettings(
            settings.prometheus_breaker_initial_s, settings.prometheus_breaker_max_s
        ),
    )


@dataclass(frozen=True, slots=True)
class _Sources:
    """Where one config's readings come from: its targets' power and tokens, and its racks."""

    power: PowerSource
    racks: RackSignalSource
    judges_gpu_power: bool = False
    """Whether the preset has GPU power series to judge GPU pods by (`GpuPowerMeasured`)."""


@dataclass
class _ConfigMemory:
    """What the reconciler keeps per config between reconciles (lost on restart: relearned)."""

    state: CappingState = field(default_factory=CappingState)
    learning_paused_until_s: float = 0.0
    """After GPU clocks changed, readings from before the change are still in Prometheus for a
    scrape or two; they must not undo the rescaled estimates."""
    tuning_warned_generation: int | None = None
    """The spec generation last warned about asking for GPU tuning the controller does not run."""
    tuning_event_refused_generation: int | None = None
    """The generation whose warning Event the API refused (to be sent again)."""
    held: set[Held] = field(default_factory=set)
    """Objects this process lowered and has not given back (status.heldTargets is the record
    that survives a restart; the informer cache may not show our own write yet)."""
    status_written_s: float | None = None
    """When the status was last written unsettled (see `CappingSettings.status_refresh_s`)."""
    idle: IdlePower = field(default_factory=IdlePower)
    """A node's idle draw, learned from the config's rack nodes that host none of its pods."""
    sources: tuple[int, _Sources] | None = None
    """The config's sources and the spec generation they were built for: building them parses
    its query templates, which 333 reconciles a second at 5,000 configs need not redo."""
    gpu_power_warned: str | None = None
    """The unmeasured GPU power last warned about (an Event per distinct gap, not per round)."""


@dataclass(frozen=True, slots=True)
class _RackRound:
    """This round's rack readings and the measured watts of rack nodes hosting no target pod."""

    readings: tuple[RackReading, ...] = ()
    idle_node_watts: tuple[float | None, ...] = ()


@dataclass(frozen=True, slots=True)
class _Measured:
    per_target: Mapping[str, TargetMeasurement]
    scope_w: float | None
    problem: str | None
    """Why some readings are unusable (None when every reading is good)."""
    problem_reason: str


class PowerCapReconciler:
    """Reconciles one PowerCappingConfig key (`namespace/name`)."""

    def __init__(
        self,
        client: KubeClient,
        *,
        configs: Any,
        workloads: WorkloadCaches,
        nodes: Any,
        events: Any,
        metrics: CappingMetrics,
        settings: CappingSettings,
        session_factory: Callable[[], Awaitable[aiohttp.ClientSession]],
        prometheus: PrometheusPool | None = None,
        hints: TuningHints | None = None,
        gpu_tuning_enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self._configs = configs
        self._workloads = workloads
        self._nodes = nodes
        self._events = events
        self._metrics = metrics
        self._settings = settings
        # The controller hands over its shared read layer; a reconciler built alone gets its own.
        self._prometheus = prometheus or prometheus_pool(settings, session_factory)
        self._hints = hints
        self._gpu_tuning_enabled = gpu_tuning_enabled
        self._clock = clock
        self._wall_clock = wall_clock
        self._memory: dict[str, _ConfigMemory] = {}

    # -- the loop -----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> Result:
        started_s = self._clock()
        obj = self._configs.store.get(key)
        if obj is None:
            # Gone without our finalizer (it held nothing, or someone removed the finalizer):
            # there is no record left to give back by, and an annotation is no authority.
            self._forget(key)
            return Result()
        if obj["metadata"].get("deletionTimestamp"):
            return await self._finalize(key, obj)
        try:
            config = config_from_object(obj)
        except InvalidConfigError as error:
            # The API server validates the schema; this catches what only the controller sees.
            await self._write_status(
                obj,
                None,
                [(ConditionType.READY, ConditionStatus.FALSE, "InvalidSpec", str(error))],
                generation=int(obj["metadata"].get("generation") or 0),
                # What it asks for cannot be read: no stale "tuning disabled" note either.
                clear_gpu_tuning=True,
            )
            raise TerminalError(f"{key}: {error}") from error

        memory = self._memory.setdefault(key, _ConfigMemory())
        tuning_off = self._tuning_disabled(config)
        if tuning_off:
            await self._warn_tuning_disabled(obj, config, memory, tuning_off[0][3])
        scale = self._hints.take(key) if self._hints is not None else None
        if scale is not None:
            # GPU clocks changed under the targets: a replica now draws `scale` times the power.
            memory.state = rescale_watts_per_replica(memory.state, scale)
            memory.learning_paused_until_s = self._clock() + self._settings.tuning_grace_s
            log.info("watts_per_replica_rescaled", scale=round(scale, 3))
        learning = self._clock() >= memory.learning_paused_until_s
        resolution = self._workloads.resolve(config)
        targets = resolution.targets
        targeted = {(t.kind, t.name) for t in targets}
        # What the spec names is the config's own; so is what it recorded holding. A target
        # capped by this config before records existed is recorded now.
        held = self._held(obj, memory) | {
            (t.kind, t.name) for t in targets if _capped_by(t.obj) == key
        }
        held = (targeted & held) | await self._give_back(obj, key, held - targeted)
        for problem in resolution.missing:
            await self._events.record(obj, "Warning", "TargetMissing", problem)
        for target in targets:
            for problem in target.annotation_problems:
                await self._events.record(obj, "Warning", "InvalidAnnotation", problem)
                await self._events.record(target.obj, "Warning", "InvalidAnnotation", problem)

        try:
            sources = self._sources(config, memory)
        except TerminalError as error:
            # A config that cannot be measured (no Prometheus, a bad query template): say so
            # where the user looks, and wait for the spec to change.
            problem = str(error)
            await self._write_status(
                obj,
                None,
                [
                    (
                        ConditionType.METRICS_AVAILABLE,
                        ConditionStatus.FALSE,
                        "Misconfigured",
                        problem,
                    ),
                    (ConditionType.READY, ConditionStatus.FALSE, "Misconfigured", problem),
                    *tuning_off,
                ],
                generation=config.generation,
                cap=self._effective_cap(obj, config),
                clear_gpu_tuning=not tuning_off,
            )
            await self._events.record(obj, "Warning", "MeasurementMisconfigured", problem)
            raise
        measured, racks = await self._measure_within_budget(config, sources, targets)
        gpu_power = gpu_power_condition(targets, measured.per_target)
        if gpu_power is not None:
            await self._warn_gpu_power(obj, targets, measured.per_target, memory)
        elif not any(t.gpu_pods for t in targets):
            memory.gpu_power_warned = None
        cap_w, cap_source = self._effective_cap(obj, config)
        memory.idle = learn_idle_power(memory.idle, racks.idle_node_watts)
        observed = [
            self._observe(t, measured.per_target.get(t.key) if learning else None) for t in targets
        ]
        observation = observe_cap(
            scope=key,
            base_cap_w=config.power_cap_w,
            cap_w=cap_w,
            measured_w=measured.scope_w,
            targets=observed,
            racks=observe_racks(
                racks.readings,
                per_replica_w=measured_watts_per_replica(observed),
                idle_w=memory.idle.watts,
            ),
            per_target_budget=batch_can_yield(config, (t.deferrable for t in targets)),
        )
        # Idle nodes are inside the measurement only when the config's own query measures
        # the scope (node-level power); per-pod sums leave them out.
        settings = ceiling_settings(
            policy_settings(config), memory.idle, scope_measures_nodes=bool(config.metrics)
        )
        plan = decide_replica_ceilings(observation, settings, memory.state, self._clock())
        memory.state = plan.state
        by_name = {t.name: t for t in targets}
        # A ceiling back at the user's max still carrying our annotations (the user changed it
        # mid-cap to what the policy now allows) is written too, to take the annotations off.
        changed = [
            (by_name[d.target], d)
            for d in plan.decisions
            if d.changed
            or (
                _capped_by(by_name[d.target].obj) == key
                and not holds_below_user_max(by_name[d.target], d.new_max_replicas)
            )
        ]
        new_holds = {
            (t.kind, t.name)
            for t, d in changed
            if holds_below_user_max(t, d.new_max_replicas) and (t.kind, t.name) not in held
        }
        unguarded = GIVE_BACK_FINALIZER not in (obj["metadata"].get("finalizers") or ())
        if new_holds or (held and unguarded):
            # Record before acting: a crash between the two leaves a record of an object not
            # yet capped (dropped at give-back), never a capped object without a record. A hold
            # without the finalizer (capped before records existed, or the finalizer removed by
            # hand) gets it now, or deleting the config would leave the ceiling lowered.
            recorded = await self._record_holds(obj, held | new_holds)
            if recorded is None:
                return Result(requeue_after=_CONFLICT_RETRY_S)
            obj = recorded
            held |= new_holds
        conflicts = 0
        for target, decision in changed:
            if await self._apply(obj, config, target, decision):
                if not holds_below_user_max(target, decision.new_max_replicas):
                    held.discard((target.kind, target.name))
            else:
                conflicts += 1
        for decision in plan.decisions:
            self._metrics.count_decision(key, decision.action, decision.code)
        memory.held = held
        if measured.problem is not None:
            await self._events.record(obj, "Warning", "MetricsUnavailable", measured.problem)

        self._record_metrics(key, observation, plan, measured)
        await self._write_status(
            obj,
            plan,
            [
                *self._conditions(
                    config, plan, measured, resolution.missing, targets, observation=observation
                ),
                *tuning_off,
                *([gpu_power] if gpu_power else []),
            ],
            generation=config.generation,
            observation=observation,
            cap=(cap_w, cap_source),
            targets=targets,
            measured=measured,
            clear_gpu_tuning=not tuning_off,
            clear_gpu_power=not (any(t.gpu_pods for t in targets) and sources.judges_gpu_power),
            held=held,
            memory=memory,
        )
        # A ceiling write refused because the object moved on is decided again on fresh state.
        if conflicts:
            return Result(requeue_after=_CONFLICT_RETRY_S)
        # The next decision an interval after this one began, not after it ended: a reconcile
        # that waited on Prometheus must not stretch the control period by its own length.
        elapsed_s = self._clock() - started_s
        return Result(requeue_after=max(self._settings.interval_s - elapsed_s, 0.0))

    # -- GPU tuning switched off --------------------------------------------------------------

    def _tuning_disabled(self, config: PowerCappingConfig) -> list[_ConditionSpec]:
        """The `GpuTuning` condition when the config asks for tuning this controller does not
        run (`CLIMATIK_GPU_TUNING__ENABLED=false`); empty otherwise."""
        mode = config.gpu_tuning.mode
        if self._gpu_tuning_enabled or mode is GpuTuningMode.DISABLED:
            return []
        message = (
            f"spec.gpuTuning.mode is {mode}, but GPU tuning is disabled in the controller "
            "(CLIMATIK_GPU_TUNING__ENABLED=false): no tuning Job runs and watts per replica are "
            "learned from measurements only; power capping is not affected. Set "
            "spec.gpuTuning.mode to Disabled, or enable GPU tuning in the controller "
            "(with its namespace and Role: docs/gpu-tuning.md)"
        )
        return [
            (
                GPU_TUNING_CONDITION,
                ConditionStatus.FALSE,
                GPU_TUNING_DISABLED_IN_CONTROLLER,
                message,
            )
        ]

    async def _warn_tuning_disabled(
        self,
        obj: Mapping[str, Any],
        config: PowerCappingConfig,
        memory: _ConfigMemory,
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
        if await self._events.record(obj, "Warning", "GpuTuningDisabledInController", message):
            memory.tuning_warned_generation = config.generation
            memory.tuning_event_refused_generation = None
        else:
            memory.tuning_event_refused_generation = config.generation

    # -- GPU power the preset does not see ----------------------------------------------------

    async def _warn_gpu_power(
        self,
        obj: Mapping[str, Any],
        targets: Sequence[ResolvedTarget],
        per_target: Mapping[str, TargetMeasurement],
        memory: _ConfigMemory,
    ) -> None:
        """A Warning Event on the config and on each target whose GPU pods have no GPU power
        series, once per distinct gap (capping goes on with what is measured)."""
        gaps = _gpu_gaps(targets, per_target)
        told = "; ".join(coverage.message(_describe(t)) for t, coverage in gaps)
        if not gaps or told == memory.gpu_power_warned:
            memory.gpu_power_warned = told or None
            return
        log.warning("gpu_power_not_measured", targets=[t.name for t, _ in gaps])
        recorded = await self._events.record(obj, "Warning", GPU_POWER_NOT_MEASURED, told[:1024])
        for target, coverage in gaps:
            await self._events.record(
                target.obj, "Warning", GPU_POWER_NOT_MEASURED, coverage.message(_describe(target))
            )
        if recorded:
            memory.gpu_power_warned = told

    # -- measuring ----------------------------------------------------------------------------

    def _sources(self, config: PowerCappingConfig, memory: _ConfigMemory) -> _Sources:
        if memory.sources is not None and memory.sources[0] == config.generation:
            return memory.sources[1]
        sources = self._build_sources(config)
        memory.sources = (config.generation, sources)
        return sources

    def _build_sources(self, config: PowerCappingConfig) -> _Sources:
        address = config.prometheus_address(self._settings.prometheus_address)
        if address is None:
            msg = (
                "no Prometheus to ask: set spec.powerMeasurement.prometheusAddress (or "
                "CLIMATIK_CAPPING__PROMETHEUS_ADDRESS on the controller)"
            )
            raise TerminalError(msg)
        client = self._prometheus.querier(
            address,
            PrometheusSettings(
                timeout_s=self._settings.prometheus_timeout_s,
                max_sample_age_s=config.fail_safe.max_metric_age_s,
                address_policy=AddressPolicy.from_hosts(self._settings.allowed_hosts),
            ),
        )
        try:
            power = power_query_config_for(config.power_measurement)
            racks = rack_queries_for(
                config.power_measurement,
                # Rack caps need this instant's readings only, no history.
                RackSignalQueries(rack_label=self._settings.rack_label, history_window_s=0),
            )
        except QueryTemplateError as error:
            raise TerminalError(f"spec.powerMeasurement: {error}") from error
        plausibility = PlausibilityLimits(
            max_watts_per_server=self._settings.max_plausible_watts_per_server
        )
        return _Sources(
            PrometheusPowerSource(
                client, power=power, tokens=TokensQueryConfig(), plausibility=plausibility
            ),
            PrometheusRackSignalSource(client, racks, power=power, plausibility=plausibility),
            judges_gpu_power=judges_gpu_power(power),
        )

    async def _measure_within_budget(
        self,
        config: PowerCappingConfig,
        sources: _Sources,
        targets: Sequence[ResolvedTarget],
    ) -> tuple[_Measured, _RackRound]:
        """Targets, scope and racks at once, within `MEASURE_BUDGET` of the reconcile deadline.

        A Prometheus that answers, but slowly (each query inside its own timeout, so its breaker
        never trips), would otherwise have the reconcile cut at its deadline before it wrote
        `MetricsAvailable=False` or applied the fail-safe, and retried with a growing backoff:
        past the budget, what is not measured is no data, and the reconcile goes on."""
        budget_s = MEASURE_BUDGET * self._settings.reconcile_timeout_s
        try:
            async with asyncio.timeout(budget_s), asyncio.TaskGroup() as group:
                measuring = group.create_task(self._measure(config, sources.power, targets))
                observing = group.create_task(self._observe_racks(config, sources.racks, targets))
        except TimeoutError:
            problem = (
                f"the power queries did not finish within {budget_s:g} s "
                f"({MEASURE_BUDGET:.0%} of CLIMATIK_CAPPING__RECONCILE_TIMEOUT_S): the "
                "Prometheus answers too slowly"
            )
            return _Measured({}, None, problem, "PrometheusTimeout"), _RackRound()
        return measuring.result(), observing.result()

    async def _measure(
        self,
        config: PowerCappingConfig,
        source: PowerSource,
        targets: Sequence[ResolvedTarget],
    ) -> _Measured:
        async with asyncio.TaskGroup() as group:
            per_target_task = group.create_task(
                source.measure_targets(
                    [
                        TargetPods(t.key, t.namespace, t.pods, t.newest_pod_created_s, t.gpu_pods)
                        for t in targets
                    ]
                )
            )
            # The design document's own query measures the whole capped scope. The scope may
            # span the cluster: its plausible power is bounded per node.
            scope_task = (
                group.create_task(
                    source.measure_total(config.metrics[0].query, servers=len(self._nodes.store))
                )
                if config.metrics
                else None
            )
        per_target = per_target_task.result()
        problems = [
            (m.watts, f"{m.key}: {outcome_message(m.watts)}")
            for m in per_target.values()
            if not isinstance(m.watts, Reading)
        ]
        scope_w: float | None
        if scope_task is not None:
            scope = scope_task.result()
            scope_w = scope.value if isinstance(scope, Reading) else None
            if not isinstance(scope, Reading):
                problems.append((scope, f"metrics[0].query: {outcome_message(scope)}"))
        elif any(not isinstance(m.watts, Reading) for m in per_target.values()):
            scope_w = None
        else:
            scope_w = sum(
                m.watts.value for m in per_target.values() if isinstance(m.watts, Reading)
            )
        if not problems:
            return _Measured(per_target, scope_w, None, "MetricsAvailable")
        first = problems[0][0]
        reason = first.reason if isinstance(first, PrometheusError) else f"NoData{_nodata(first)}"
        return _Measured(per_target, scope_w, "; ".join(p[1] for p in problems), reason)

    async def _observe_racks(
        self,
        config: PowerCappingConfig,
        source: RackSignalSource,
        targets: Sequence[ResolvedTarget],
    ) -> _RackRound:
        """The constrained racks' readings, and each of their nodes that hosts none of the
        targets' pods read on its own (the rack query over one node), for the idle draw."""
        if not config.racks:
            return _RackRound()
        grouping = group_nodes_by_rack(
            (
                (str(node["metadata"]["name"]), (node.get("metadata") or {}).get("labels") or {})
                for node in self._nodes.store.objects()
            ),
            config.placement.rack_label_key,
        )
        busy = {node for t in targets for node in t.pod_nodes if node}
        nodes = {r.rack_id: grouping.nodes_by_rack.get(r.rack_id, ()) for r in config.racks}
        idle_nodes = sorted({n for rack in nodes.values() for n in rack if n not in busy})[
            :IDLE_SAMPLE_NODES
        ]
        readings = await source.read_racks(
            [
                *(RackNodes(rack_id, rack_nodes) for rack_id, rack_nodes in nodes.items()),
                *(RackNodes(f"{_NODE_PREFIX}{n}", (n,)) for n in idle_nodes),
            ]
        )

        racks = []
        for constraint in config.racks:
            reading = readings.get(constraint.rack_id)
            free = sum(1 for n in nodes[constraint.rack_id] if n not in busy)
            racks.append(
                RackReading(
                    rack_id=constraint.rack_id,
                    watts=reading.watts if reading is not None else None,
                    inlet_c=reading.inlet_c if reading is not None else None,
                    max_watts=constraint.max_power_w,
                    max_inlet_c=constraint.max_temperature_celsius,
                    free_nodes=free if nodes[constraint.rack_id] else None,
                )
            )
        idle_w = tuple(
            readings[f"{_NODE_PREFIX}{n}"].watts
            for n in idle_nodes
            if f"{_NODE_PREFIX}{n}" in readings
        )
        return _RackRound(tuple(racks), idle_w)

    @staticmethod
    def _observe(target: ResolvedTarget, measured: TargetMeasurement | None) -> TargetObservation:
        """The policy's view of a target; `measured=None` holds its ceiling like missing data."""
        return observe_target(
            name=target.name,
            current_replicas=target.current_replicas,
            min_replicas=target.min_replicas,
            user_max_replicas=target.user_max_replicas,
            applied_max_replicas=target.applied_max_replicas,
            watts=measured.watts_or_none if measured else None,
            tokens_per_s=measured.tokens_per_s_or_none if measured else None,
            limited_by_ceiling=target.limited_by_ceiling,
            priority=target.priority,
            deferrable=target.deferrable,
        )

    @staticmethod
    def _effective_cap(
        obj: Mapping[str, Any], config: PowerCappingConfig
    ) -> tuple[float, EffectiveCapSource]:
        """The carbon reconciler's cap when it has set one for this spec, else powerCapLimit."""
        status = obj.get("status") or {}
        carbon_cap = status.get("effectiveCapWatts")
        if (
            config.carbon is not None
            and status.get("effectiveCapSource") == EffectiveCapSource.CARBON
            and isinstance(carbon_cap, int | float)
            and 0 < carbon_cap <= config.power_cap_w
        ):
            return float(carbon_cap), EffectiveCapSource.CARBON
        return config.power_cap_w, EffectiveCapSource.STATIC

    # -- acting -------------------------------------------------------------------------------

    async def _apply(
        self,
        obj: Mapping[str, Any],
        config: PowerCappingConfig,
        target: ResolvedTarget,
        decision: CeilingDecision,
    ) -> bool:
        """Write one ceiling; False when the object changed since it was read (409)."""
        resource, patch = ceiling_patch(target, decision.new_max_replicas, config.key)
        try:
            await self._client.merge_patch(resource, target.name, patch, target.namespace)
        except ApiError as error:
            if not error.is_conflict:
                raise
            log.info("ceiling_conflict", target=target.name, kind=str(target.kind))
            return False
        log.info(
            "ceiling_applied",
            target=target.name,
            kind=str(target.kind),
            previous=decision.previous_max_replicas,
            new=decision.new_max_replicas,
            action=str(decision.action),
            reason=decision.reason,
        )
        event_reason = _EVENT_REASONS.get(decision.action)
        if event_reason is not None and decision.changed:
            message = (
                f"{target.kind} {target.name}: maxReplicas {decision.previous_max_replicas} -> "
                f"{decision.new_max_replicas}: {decision.reason}"
            )
            await self._events.record(obj, "Normal", event_reason, message)
            await self._events.record(target.obj, "Normal", event_reason, message)
        return True

    # -- what the config holds, and giving it back ----------------------------------------------

    @staticmethod
    def _held(obj: Mapping[str, Any], memory: _ConfigMemory | None) -> set[Held]:
        """The objects this config recorded holding: its status and this process's memory."""
        status = status_from_wire(obj)
        recorded = {
            (TargetKind(str(h.kind)), h.name)
            for h in (status.held_targets if status else None) or ()
        }
        return recorded | (memory.held if memory is not None else set())

    async def _record_holds(
        self, obj: Mapping[str, Any], held: set[Held]
    ) -> Mapping[str, Any] | None:
        """Put `held` on record (status) behind the give-back finalizer; the updated object, or
        None when the config changed under the finalizer patch (decide again on fresh state)."""
        finalizers = list(obj["metadata"].get("finalizers") or ())
        if GIVE_BACK_FINALIZER not in finalizers:
            try:
                obj = await self._set_finalizers(obj, [*finalizers, GIVE_BACK_FINALIZER])
            except ApiError as error:
                if not error.is_conflict:
                    raise
                return None
        records = _held_status(held)
        await write_status(
            self._client, obj, lambda current: with_fields(current, held_targets=records)
        )
        return obj

    async def _give_back(self, obj: Mapping[str, Any], key: str, held: set[Held]) -> set[Held]:
        """Restore the user's ceiling on objects this config holds but no longer targets.

        Only objects of the config's own namespace, named by its own records, and still
        annotated as capped by it: an annotation alone moves nothing, and an object someone
        else has taken over (or that is gone) is simply dropped from the records. Returns what
        is still held: a restore refused because the object moved on is tried again, and one
        refused for another reason (a webhook, RBAC) is reported and tried again, without
        holding up the capping of the config's other targets.
        """
        namespace = str(obj["metadata"].get("namespace"))
        still_held: set[Held] = set()
        for kind, name in held:
            informer = (
                self._workloads.inference_services
                if kind is TargetKind.INFERENCE_SERVICE
                else self._workloads.scaled_objects
            )
            cached = informer.store.get(f"{namespace}/{name}")
            if cached is None or _capped_by(cached) != key:
                continue
            patch = restore_patch(cached, kind)
            if patch is None:
                continue
            try:
                await self._client.merge_patch(resource_of(kind), name, patch, namespace)
            except ApiError as error:
                if error.is_not_found:
                    continue
                still_held.add((kind, name))
                if not error.is_conflict:
                    message = (
                        f"{kind} {namespace}/{name}: giving back the user's ceiling was "
                        f"refused (HTTP {error.status} {error.reason}); tried again each "
                        "interval"
                    )
                    log.warning("give_back_refused", target=name, status=error.status)
                    await self._events.record(obj, "Warning", "GiveBackFailed", message)
                continue
            log.info("ceiling_given_back", target=name, kind=str(kind))
        return still_held

    async def _finalize(self, key: str, obj: Mapping[str, Any]) -> Result:
        """A deleted config gives back what it holds, then lets the deletion finish."""
        finalizers = list(obj["metadata"].get("finalizers") or ())
        if GIVE_BACK_FINALIZER not in finalizers:
            self._forget(key)
            return Result()
        memory = self._memory.get(key)
        remaining = await self._give_back(obj, key, self._held(obj, memory))
        if remaining:
            if memory is not None:
                memory.held = remaining
            return Result(requeue_after=self._settings.interval_s)
        try:
            await self._set_finalizers(obj, [f for f in finalizers if f != GIVE_BACK_FINALIZER])
        except ApiError as error:
            if error.is_conflict:
                return Result(requeue_after=_CONFLICT_RETRY_S)
            if not error.is_not_found:
                raise
        log.info("config_finalized", held_given_back=len(self._held(obj, memory)))
        self._forget(key)
        return Result()

    async def _set_finalizers(
        self, obj: Mapping[str, Any], finalizers: list[str]
    ) -> Mapping[str, Any]:
        """The config's finalizers, as a merge patch conditional on its resourceVersion (the
        list is replaced whole, so a finalizer someone else added meanwhile is never lost)."""
        meta = obj["metadata"]
        return await self._client.merge_patch(
            POWER_CAPPING_CONFIGS,
            meta["name"],
            {
                "metadata": {
                    "finalizers": finalizers,
                    "resourceVersion": meta.get("resourceVersion"),
                }
            },
            meta.get("namespace"),
        )

    def _forget(self, key: str) -> None:
        self._memory.pop(key, None)
        self._metrics.forget(key)
        self._workloads.forget(key)

    # -- reporting ----------------------------------------------------------------------------

    def _record_metrics(
        self, key: str, observation: CapObservation, plan: CeilingPlan, measured: _Measured
    ) -> None:
        metrics = self._metrics
        # The cap the whole scope must stay under (a batch-only carbon cap is not it; that one
        # is climatik_effective_cap_watts).
        metrics.power_cap_watts.labels(key).set(observation.cap_w)
        metrics.metrics_available.labels(key).set(0 if measured.problem else 1)
        if observation.measured_w is not None:
            metrics.power_watts.labels(key).set(observation.measured_w)
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
                if d.target in learned
                and (watts := learned[d.target].watts_per_replica) is not None
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

    def _conditions(
        self,
        config: PowerCappingConfig,
        plan: CeilingPlan,
        measured: _Measured,
        missing: Sequence[str],
        targets: Sequence[ResolvedTarget],
        *,
        observation: CapObservation,
    ) -> list[tuple[ConditionType, ConditionStatus, str, str]]:
        capping = [d for d in plan.decisions if d.new_max_replicas < _user_max(targets, d.target)]
        # A bad annotation does not stop capping (the default is used) but must not go unseen.
        ignored = [p for t in targets for p in t.annotation_problems]
        if missing:
            resolved = list(missing)
        elif targets:
            resolved = [f"{len(targets)} target(s): " + ", ".join(t.name for t in targets)]
        else:
            resolved = ["no ScaledObject or InferenceService matches the spec"]
        resolved_reason = "InvalidAnnotation" if ignored else "Resolved"
        conditions = [
            (
                ConditionType.TARGETS_RESOLVED,
                ConditionStatus.FALSE if missing or not targets else ConditionStatus.TRUE,
                "TargetMissing" if missing else ("NoTargets" if not targets else resolved_reason),
                "; ".join([*resolved, *ignored])[:4000],
            ),
            (
                ConditionType.METRICS_AVAILABLE,
                ConditionStatus.FALSE if measured.problem else ConditionStatus.TRUE,
                measured.problem_reason if measured.problem else "MetricsAvailable",
                (measured.problem or "every power reading is fresh")[:4000]
                + ("; holding the last ceilings" if measured.problem else ""),
            ),
            (
                ConditionType.CAPPING,
                ConditionStatus.TRUE if capping else ConditionStatus.FALSE,
                "CeilingsLowered" if capping else "WithinCap",
                (
                    (
                        ", ".join(f"{d.target} at {d.new_max_replicas}" for d in capping)
                        if capping
                        else f"every target at its own maximum under {plan.reason or 'the cap'}"
                    )
                    + _binding_note(observation, targets)
                )[:4000],
            ),
        ]
        ready = not missing and bool(targets)
        conditions.append(
            (
                ConditionType.READY,
                ConditionStatus.TRUE if ready else ConditionStatus.FALSE,
                "Reconciled" if ready else "TargetsNotReady",
                f"policy {config.policy.type} acting on {len(targets)} target(s)",
            )
        )
        return conditions

    async def _write_status(
        self,
        obj: Mapping[str, Any],
        plan: CeilingPlan | None,
        conditions: Sequence[_ConditionSpec],
        *,
        generation: int,
        observation: CapObservation | None = None,
        cap: tuple[float, EffectiveCapSource] | None = None,
        targets: Sequence[ResolvedTarget] = (),
        measured: _Measured | None = None,
        clear_gpu_tuning: bool = False,
        clear_gpu_power: bool = False,
        held: set[Held] | None = None,
        memory: _ConfigMemory | None = None,
    ) -> None:
        """Merge `conditions` into the status; `clear_gpu_tuning` drops a `GpuTuning` condition
        this reconciler set, once the config no longer asks (or the controller tunes again);
        `clear_gpu_power` drops `GpuPowerMeasured` once no target's pod requests a GPU (or the
        preset has no GPU series to judge them by).

        With `memory`, measurement noise is settled (not written) except once every
        `status_refresh_s`, so a steady config costs the API server almost no writes."""
        now = self._wall_clock()
        # The carbon reconciler owns the effective cap of configs with a carbon section.
        owns_cap = (
            cap is not None
            and cap[1] is EffectiveCapSource.STATIC
            and not ((obj.get("spec") or {}).get("carbon"))
        )

        def desire(current: PowerCappingConfigStatus | None) -> PowerCappingConfigStatus:
            merged: Sequence[Condition] | None = current.conditions if current else None
            if clear_gpu_tuning and merged:
                merged = [
                    c
                    for c in merged
                    if not (
                        c.type == GPU_TUNING_CONDITION
                        and c.reason == GPU_TUNING_DISABLED_IN_CONTROLLER
                    )
                ]
            if clear_gpu_power and merged:
                merged = [c for c in merged if c.type != ConditionType.GPU_POWER_MEASURED]
            for type_, status, reason, message in conditions:
                merged = set_condition(
                    merged,
                    type_=str(type_),
                    status=status,
                    reason=reason,
                    message=message,
                    observed_generation=generation,
                    now=now,
                )
            fields: dict[str, Any] = {
                "observed_generation": generation,
                "conditions": list(merged or ()),
            }
            if owns_cap and cap is not None:
                fields["effective_cap_watts"] = cap[0]
                fields["effective_cap_source"] = cap[1]
            if plan is not None and observation is not None:
                fields["measured_power_watts"] = observation.measured_w
                fields["targets"] = [
                    self._target_status(t, plan, measured) for t in targets
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
                    )
                    for r in observation.racks
                ] or (current.racks if current else None)
                fields["last_decision"] = self._last_decision(plan, current, now)
            if held is not None:
                fields["held_targets"] = _held_status(held)
            return with_fields(current, **fields)

        now_s = self._clock()
        refresh = memory is None or (
            memory.status_written_s is None
            or now_s - memory.status_written_s >= self._settings.status_refresh_s
        )
        written = await write_status(self._client, obj, desire, settled=not refresh)
        if memory is not None and written and refresh:
            memory.status_written_s = now_s

    @staticmethod
    def _target_status(
        target: ResolvedTarget, plan: CeilingPlan, measured: _Measured | None
    ) -> TargetStatus:
        learned = plan.state.targets.get(target.name)
        reading = measured.per_target.get(target.key) if measured else None
        watts = reading.watts_or_none if reading else None
        tokens = reading.tokens_per_s_or_none if reading else None
        return TargetStatus(
            name=target.name,
            kind=TargetKindName(str(target.kind)),
            current_replicas=target.current_replicas,
            user_max_replicas=target.user_max_replicas,
            applied_max_replicas=plan.ceilings.get(target.name, target.applied_max_replicas),
            watts_per_replica=learned.watts_per_replica if learned else None,
            tokens_per_watt=_ratio(tokens, watts),
        )

    @staticmethod
    def _last_decision(
        plan: CeilingPlan, current: PowerCappingConfigStatus | None, now: datetime
    ) -> Decision | None:
        changed = [d for d in plan.decisions if d.changed]
        if not changed:
            return current.last_decision if current else None
        first = changed[0]
        reason = "; ".join(f"{d.target}: {d.reason}" for d in changed)
        return Decision(time=now, action=_DECISION_ACTIONS[first.action], reason=reason[:1024])


Held = tuple[TargetKind, str]
"""An object a config holds a lowered ceiling on: its kind and name, in the config's namespace."""

MEASURE_BUDGET = 0.6
"""The share of the reconcile deadline measuring may take; the rest is for deciding, writing
ceilings and status (a reconcile cut at its deadline writes nothing and backs off)."""

_NODE_PREFIX = "node/"
"""Marks a single node's reading among the rack readings (rack ids are label values, which
cannot contain a slash)."""

_CONFLICT_RETRY_S = 1.0
"""How soon a write refused with 409 (the object moved on) is decided again, on fresh state."""


def _held_status(held: set[Held]) -> list[HeldTarget] | None:
    return [HeldTarget(kind=TargetKindName(str(k)), name=n) for k, n in sorted(held)] or None


def _capped_by(obj: Mapping[str, Any]) -> str | None:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    holder = annotations.get(CAPPED_BY_ANNOTATION)
    return str(holder) if holder is not None else None


def _binding_note(observation: CapObservation, targets: Sequence[ResolvedTarget]) -> str:
    """Which cap binds, when a carbon cap holds back only deferrable (batch) targets."""
    if observation.deferrable_cap_w is None:
        return ""
    batch = ", ".join(t.name for t in targets if t.deferrable)
    return (
        f"; carbon cap {observation.deferrable_cap_w:.0f} W binds only deferrable targets "
        f"({batch}); the others may use up to {observation.cap_w:.0f} W (powerCapLimit)"
    )


GPU_POWER_NOT_MEASURED = "GpuPowerNotMeasured"
"""The reason (condition `GpuPowerMeasured` False, and Warning Event) when GPU pods have no GPU
power series under the preset."""


def _describe(target: ResolvedTarget) -> str:
    return f"{target.kind} {target.name}"


def _gpu_gaps(
    targets: Sequence[ResolvedTarget], per_target: Mapping[str, TargetMeasurement]
) -> list[tuple[ResolvedTarget, GpuCoverage]]:
    """The targets with GPU pods that have no GPU power series, and how they are covered."""
    found = [(t, per_target[t.key].gpu_coverage) for t in targets if t.key in per_target]
    return [(t, c) for t, c in found if c is not None and c.unmeasured]


def gpu_power_condition(
    targets: Sequence[ResolvedTarget], per_target: Mapping[str, TargetMeasurement]
) -> _ConditionSpec | None:
    """`GpuPowerMeasured` for targets whose pods request GPUs: False naming the series that are
    missing and the fix, True once every GPU pod is judged and has GPU series. None when no pod
    requests a GPU, or when not every GPU pod could be judged this round (not measured, not
    scraped yet, a preset without GPU series): the condition then stays as it is."""
    gaps = _gpu_gaps(targets, per_target)
    if gaps:
        message = "; ".join(c.message(_describe(t)) for t, c in gaps)
        return (
            ConditionType.GPU_POWER_MEASURED,
            ConditionStatus.FALSE,
            GPU_POWER_NOT_MEASURED,
            message[:4000],
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
    return (
        ConditionType.GPU_POWER_MEASURED,
        ConditionStatus.TRUE,
        "GpuPowerMeasured",
        f"GPU power series found for all {pods} GPU pod(s) of "
        + ", ".join(t.name for t in gpu_targets),
    )


def _user_max(targets: Sequence[ResolvedTarget], name: str) -> int:
    return next((t.user_max_replicas for t in targets if t.name == name), 0)


def _ratio(tokens: float | None, watts: float | None) -> float | None:
    """Tokens per watt for the status; None unless a number (JSON has no Infinity)."""
    if tokens is None or not watts:
        return None
    ratio = tokens / watts
    return ratio if math.isfinite(ratio) else None


def _nodata(outcome: object) -> str:
    return str(outcome.reason) if isinstance(outcome, NoData) else ""
