"""The power-cap reconciler: glue that observes, decides, acts and reports for one config.

For one PowerCappingConfig (issue 6, design doc §3): resolve its targets from the caches,
measure their watts and tokens (`powercap_measure`), ask the configured ceiling policy for new
ceilings (`climatik.policies`), merge-patch the ceilings that changed, and report the status,
Events and metrics (`powercap_report`). Missing data is never zero: the policy holds and the
status says why. Ceilings held by a config that no longer targets an object (or no longer
exists) are given back, by the config's own records (`status.heldTargets`, behind a finalizer).

A carbon cap binds the way the twin applies it (`caps_with_carbon`): when some targets are
annotated deferrable (and the Headroom policy can budget per target), it holds back only them and
the others keep powerCapLimit; otherwise it is the cap of the whole scope.

With GPU tuning switched off controller-wide (`CLIMATIK_GPU_TUNING__ENABLED=false`), a config whose
`spec.gpuTuning.mode` still asks for tuning is capped as usual, and told why nothing tunes: a
`GpuTuning` condition (False, `DisabledInController`) while it asks, and one Warning Event per
spec generation, not one per reconcile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
import structlog

from climatik.api.status import ConditionUpdate, peer_status, status_from_wire
from climatik.api.status_models import ConditionStatus, ConditionType
from climatik.domain.capping import CapObservation, CappingState, CeilingDecision, CeilingPlan
from climatik.domain.config import PowerCappingConfig, TargetKind
from climatik.kube.cache import Cache, EventSink
from climatik.kube.client import ApiError, KubeClient
from climatik.kube.json import JsonObject, ObjectMeta, child
from climatik.kube.store import FrozenMapping, object_key, split_key
from climatik.policies.gpu_tuning import rescale_watts_per_replica
from climatik.policies.observations import IdlePower
from climatik.reconcilers.actuation import (
    ceiling_patch,
    holds_below_user_max,
    resource_of,
    restore_patch,
)
from climatik.reconcilers.clock_board import ClockBoard
from climatik.reconcilers.metrics import CappingMetrics
from climatik.reconcilers.opening import ConfigOpening
from climatik.reconcilers.powercap_clocks import ClockMemory, follow_clock_changes, request_clocks
from climatik.reconcilers.powercap_decide import decide_round
from climatik.reconcilers.powercap_measure import (
    CapMeasurer,
    CapSources,
    effective_cap,
    prometheus_pool,
)
from climatik.reconcilers.powercap_report import (
    Held,
    StatusRound,
    WarningMemory,
    ceiling_event,
    gpu_power_condition,
    held_status,
    misconfigured_conditions,
    record_metrics,
    round_conditions,
    tuning_disabled_condition,
    warn_gpu_power,
    warn_tuning_disabled,
)
from climatik.reconcilers.replica_footprint import fewest_seats
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
from climatik.sources.prometheus_pool import PrometheusPool

log = structlog.get_logger(__name__)

_CONFLICT_RETRY_S = 1.0
"""How soon a write refused with 409 (the object moved on) is decided again, on fresh state."""

EARLIEST_DECISION_SHARE = 0.75
"""A reconcile decides again only once this share of the control interval has passed since the
last decision began, unless the spec or its set of targets changed. Events on the targets (the
controller's own ceiling writes among them, which KServe echoes into its ScaledObject) otherwise
start rounds on the same measurements, and each round's bounded step compounds: ceilings ran
4 -> 5 -> 6 -> 5 within 0.4 s in the KServe demo. The twin decides once an interval; so does
this. Below 1 so a periodic reconcile queued early by the lateness lead (at most 10 % of the
interval) or after a late one still decides."""


@dataclass
class _ConfigMemory:
    """What the reconciler keeps per config between reconciles (lost on restart: relearned)."""

    state: CappingState = field(default_factory=CappingState)
    learning_paused_until_s: float = 0.0
    """After GPU clocks changed, readings from before the change are still in Prometheus for a
    scrape or two; they must not undo the rescaled estimates."""
    warned: WarningMemory = field(default_factory=WarningMemory)
    """What the config was already warned about (GPU tuning switched off, GPU power unseen)."""
    held: set[Held] = field(default_factory=set)
    """Objects this process lowered and has not given back (status.heldTargets is the record
    that survives a restart; the informer cache may not show our own write yet)."""
    status_written_s: float | None = None
    """When the status was last written unsettled (see `CappingSettings.status_refresh_s`)."""
    idle: IdlePower = field(default_factory=IdlePower)
    """A node's idle draw, learned from the config's rack nodes that host none of its pods."""
    sources: tuple[int, CapSources] | None = None
    """The config's sources and the spec generation they were built for: building them parses
    its query templates, which 333 reconciles a second at 5,000 configs need not redo."""
    decided_s: float | None = None
    """When the last decision that was written began (None: decide at the next reconcile)."""
    clocks: ClockMemory = field(default_factory=ClockMemory)
    """Its targets' clocks, running and requested (`gpuTuning.clocksUnderCap`)."""
    decided_for: tuple[int | None, frozenset[tuple[str, str]]] | None = None
    """The spec generation and targets that decision was for: a change to either is decided
    at once (see `EARLIEST_DECISION_SHARE`)."""


class PowerCapReconciler:
    """Reconciles one PowerCappingConfig key (`namespace/name`)."""

    def __init__(
        self,
        client: KubeClient,
        *,
        configs: Cache[FrozenMapping],
        workloads: WorkloadCaches,
        nodes: Cache[FrozenMapping],
        events: EventSink,
        metrics: CappingMetrics,
        settings: CappingSettings,
        session_factory: Callable[[], Awaitable[aiohttp.ClientSession]],
        prometheus: PrometheusPool | None = None,
        hints: TuningHints | None = None,
        clocks: ClockBoard | None = None,
        gpu_tuning_enabled: bool = True,
        vpa_footprints: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self._workloads = workloads
        self._events = events
        self._metrics = metrics
        self._settings = settings
        # The controller hands over its shared read layer; a reconciler built alone gets its own.
        self._measurer = CapMeasurer(
            settings, prometheus or prometheus_pool(settings, session_factory), nodes
        )
        self._hints = hints
        self._clocks = clocks
        self._gpu_tuning_enabled = gpu_tuning_enabled
        # The VPA-hold controller writes `status.replicaFootprints`; with it off they are stale.
        self._vpa_footprints = vpa_footprints
        self._clock = clock
        self._wall_clock = wall_clock
        self._memory: dict[str, _ConfigMemory] = {}
        # A config gone without our finalizer (it held nothing, or someone removed it) is
        # forgotten: no record is left to give back by, and an annotation is no authority. One
        # being deleted is finalized before its spec is read. An invalid spec is reported here,
        # once for the four controllers that read the config.
        self._opening = ConfigOpening(
            configs,
            forget=self._forget,
            report_invalid=self._report_invalid,
            finalize=self._finalize,
        )

    # -- the loop -----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> Result:
        started_s = self._clock()
        opened = await self._opening.open(key)
        if isinstance(opened, Result):
            return opened
        obj: JsonObject = opened.obj
        config = opened.config
        memory = self._memory.setdefault(key, _ConfigMemory())
        tuning_off = tuning_disabled_condition(config, gpu_tuning_enabled=self._gpu_tuning_enabled)
        if tuning_off is not None:
            await warn_tuning_disabled(self._events, obj, config, memory.warned, tuning_off.message)
        tuning = [tuning_off] if tuning_off is not None else []
        scales = self._hints.take(key) if self._hints is not None else None
        if scales:
            # GPU clocks changed under the targets: their replicas now draw `scale` times the power.
            memory.state = rescale_watts_per_replica(memory.state, scales)
            memory.learning_paused_until_s = self._clock() + self._settings.tuning_grace_s
            log.info(
                "watts_per_replica_rescaled", scales={t: round(s, 3) for t, s in scales.items()}
            )
        learning = self._clock() >= memory.learning_paused_until_s
        profiles = None
        if config.gpu_tuning.clocks_under_cap and self._clocks is not None:
            profiles = self._clocks.profiles(key)
            memory.state = follow_clock_changes(
                memory.clocks, memory.state, profiles, idle_w=memory.idle.watts, now_s=started_s
            )
        resolution = self._workloads.resolve(config)
        targets = resolution.targets
        targeted = {(t.kind, t.name) for t in targets}
        decided_for = (config.generation, frozenset((str(k), n) for k, n in targeted))
        wait_s = self._too_soon_s(memory, decided_for, started_s)
        if wait_s is not None:
            return Result(requeue_after=wait_s)
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
            if target.copied_to_pods is not None:
                # Capping goes on (the cap comes first); the Event says how to stop the restarts.
                for about in (obj, target.obj):
                    await self._events.record(
                        about, "Warning", "CeilingRestartsPods", target.copied_to_pods
                    )

        try:
            sources = self._sources(config, memory)
        except TerminalError as error:
            # A config that cannot be measured (no Prometheus, a bad query template): say so
            # where the user looks, and wait for the spec to change.
            problem = str(error)
            await self._write_status(
                obj,
                StatusRound(
                    [*misconfigured_conditions(problem), *tuning],
                    generation=config.generation,
                    cap=effective_cap(obj, config),
                    clear_gpu_tuning=tuning_off is None,
                ),
            )
            await self._events.record(obj, "Warning", "MeasurementMisconfigured", problem)
            raise
        measured, racks = await self._measurer.measure(config, sources, targets, memory.idle)
        gpu_power = gpu_power_condition(targets, measured.per_target)
        if gpu_power is not None:
            await warn_gpu_power(self._events, obj, targets, measured.per_target, memory.warned)
        elif not any(t.gpu_pods for t in targets):
            memory.warned.gpu_power_warned = None
        cap_w, cap_source = effective_cap(obj, config)
        decided = decide_round(
            config,
            key,
            targets,
            measured,
            racks,
            cap_w=cap_w,
            state=memory.state,
            idle=memory.idle,
            learning=learning,
            plans=peer_status(obj).deferrable_plans,
            wall_now=self._wall_clock(),
            now_s=self._clock(),
            seats=(
                fewest_seats(peer_status(obj).replica_footprints, {t.name for t in targets})
                if self._vpa_footprints
                else {}
            ),
        )
        observation, plan = decided.observation, decided.plan
        _trace_round(observation, plan)
        if profiles is not None and self._clocks is not None:
            requests = request_clocks(
                memory.clocks,
                config,
                decided,
                profiles,
                settle_s=self._settings.tuning_grace_s,
                now_s=started_s,
            )
            self._clocks.request(key, requests)
        acted = await self._act(obj, config, key, plan, targets, held=held)
        if acted is None:
            memory.decided_s = None
            return Result(requeue_after=_CONFLICT_RETRY_S)
        obj, held, conflicts = acted
        for decision in plan.decisions:
            self._metrics.count_decision(key, decision.action, decision.code)
        memory.held = held
        if measured.problem is not None:
            await self._events.record(obj, "Warning", "MetricsUnavailable", measured.problem)

        record_metrics(self._metrics, key, observation, plan, measured)
        conditions = round_conditions(
            config, plan, measured, resolution.missing, targets, observation=observation
        )
        await self._write_status(
            obj,
            StatusRound(
                [*conditions, *tuning, *([gpu_power] if gpu_power else [])],
                generation=config.generation,
                plan=plan,
                observation=observation,
                cap=(cap_w, cap_source),
                targets=targets,
                measured=measured,
                clear_gpu_tuning=tuning_off is None,
                clear_gpu_power=not (any(t.gpu_pods for t in targets) and sources.judges_gpu_power),
                held=held,
            ),
            memory=memory,
        )
        # A ceiling write refused because the object moved on is decided again on fresh state.
        # What this round learned from its measurement is not kept: the retry measures again,
        # and learning the same rates twice counted a steady round too many (the KServe and
        # Deployment demos decided 7 -> 5, then 5 -> 6, 0.1 s apart on one measurement).
        if conflicts:
            memory.decided_s = None
            return Result(requeue_after=_CONFLICT_RETRY_S)
        memory.idle, memory.state = decided.idle, plan.state
        memory.decided_s, memory.decided_for = started_s, decided_for
        # The next decision an interval after this one began, not after it ended: a reconcile
        # that waited on Prometheus must not stretch the control period by its own length.
        elapsed_s = self._clock() - started_s
        return Result(requeue_after=max(self._settings.interval_s - elapsed_s, 0.0))

    def learned_state(self, key: str) -> CappingState | None:
        """What the policy has learned for a config so far (its power model, step-downs);
        None before its first round."""
        memory = self._memory.get(key)
        return memory.state if memory is not None else None

    def _too_soon_s(
        self,
        memory: _ConfigMemory,
        decided_for: tuple[int | None, frozenset[tuple[str, str]]],
        now_s: float,
    ) -> float | None:
        """Seconds until the next decision is due when this reconcile comes too soon after the
        last one for the same spec and targets; None when it should decide now."""
        if memory.decided_s is None or memory.decided_for != decided_for:
            return None
        since_s = now_s - memory.decided_s
        if since_s >= EARLIEST_DECISION_SHARE * self._settings.interval_s:
            return None
        return self._settings.interval_s - since_s

    async def _report_invalid(self, obj: JsonObject, problem: str) -> None:
        """Say where the user looks which fields only the controller's own checks refused (the
        API server validates the schema). The other reconcilers stand aside: told once."""
        invalid = ConditionUpdate(
            ConditionType.READY, ConditionStatus.FALSE, "InvalidSpec", problem
        )
        await self._write_status(
            obj,
            StatusRound(
                [invalid],
                generation=ObjectMeta.of(obj).generation or 0,
                # What it asks for cannot be read: no stale "tuning disabled" note either.
                clear_gpu_tuning=True,
            ),
        )

    def _sources(self, config: PowerCappingConfig, memory: _ConfigMemory) -> CapSources:
        if memory.sources is not None and memory.sources[0] == config.generation:
            return memory.sources[1]
        sources = self._measurer.sources(config)
        memory.sources = (config.generation, sources)
        return sources

    # -- acting -------------------------------------------------------------------------------

    async def _act(
        self,
        obj: JsonObject,
        config: PowerCappingConfig,
        key: str,
        plan: CeilingPlan,
        targets: Sequence[ResolvedTarget],
        *,
        held: set[Held],
    ) -> tuple[JsonObject, set[Held], int] | None:
        """Write the ceilings that changed, holds on record first. The config as updated, what
        it holds now, and how many writes were refused (409); None when the config changed
        under the record (decide again on fresh state)."""
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
        unguarded = GIVE_BACK_FINALIZER not in ObjectMeta.of(obj).finalizers
        if new_holds or (held and unguarded):
            # Record before acting: a crash between the two leaves a record of an object not
            # yet capped (dropped at give-back), never a capped object without a record. A hold
            # without the finalizer (capped before records existed, or the finalizer removed by
            # hand) gets it now, or deleting the config would leave the ceiling lowered.
            recorded = await self._record_holds(obj, held | new_holds)
            if recorded is None:
                return None
            obj = recorded
            held = held | new_holds
        conflicts = 0
        for target, decision in changed:
            if await self._apply(obj, config, target, decision):
                if not holds_below_user_max(target, decision.new_max_replicas):
                    held.discard((target.kind, target.name))
            else:
                conflicts += 1
        return obj, held, conflicts

    async def _apply(
        self,
        obj: JsonObject,
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
        event = ceiling_event(target, decision)
        if event is not None:
            reason, message = event
            await self._events.record(obj, "Normal", reason, message)
            await self._events.record(target.obj, "Normal", reason, message)
        return True

    # -- what the config holds, and giving it back ----------------------------------------------

    @staticmethod
    def _held(obj: JsonObject, memory: _ConfigMemory | None) -> set[Held]:
        """The objects this config recorded holding: its status and this process's memory."""
        status = status_from_wire(obj)
        recorded = {
            (TargetKind(str(h.kind)), h.name)
            for h in (status.held_targets if status else None) or ()
        }
        return recorded | (memory.held if memory is not None else set())

    async def _record_holds(self, obj: JsonObject, held: set[Held]) -> JsonObject | None:
        """Put `held` on record (status) behind the give-back finalizer; the updated object, or
        None when the config changed under the finalizer patch (decide again on fresh state)."""
        finalizers = list(ObjectMeta.of(obj).finalizers)
        if GIVE_BACK_FINALIZER not in finalizers:
            try:
                obj = await self._set_finalizers(obj, [*finalizers, GIVE_BACK_FINALIZER])
            except ApiError as error:
                if not error.is_conflict:
                    raise
                return None
        records = held_status(held)
        await write_status(
            self._client, obj, lambda current: with_fields(current, held_targets=records)
        )
        return obj

    async def _give_back(self, obj: JsonObject, key: str, held: set[Held]) -> set[Held]:
        """Restore the user's ceiling on objects this config holds but no longer targets.

        Only objects of the config's own namespace, named by its own records, and still
        annotated as capped by it: an annotation alone moves nothing, and an object someone
        else has taken over (or that is gone) is simply dropped from the records. Returns what
        is still held: a restore refused because the object moved on is tried again, and one
        refused for another reason (a webhook, RBAC) is reported and tried again, without
        holding up the capping of the config's other targets.
        """
        namespace = str(ObjectMeta.of(obj).namespace)
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

    async def _finalize(self, key: str, obj: JsonObject) -> Result:
        """A deleted config gives back what it holds, then lets the deletion finish."""
        finalizers = list(ObjectMeta.of(obj).finalizers)
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

    async def _set_finalizers(self, obj: JsonObject, finalizers: list[str]) -> JsonObject:
        """The config's finalizers, as a merge patch conditional on its resourceVersion (the
        list is replaced whole, so a finalizer someone else added meanwhile is never lost)."""
        namespace, name = split_key(object_key(obj))
        return await self._client.merge_patch(
            POWER_CAPPING_CONFIGS,
            name,
            {
                "metadata": {
                    "finalizers": finalizers,
                    "resourceVersion": ObjectMeta.of(obj).resource_version,
                }
            },
            namespace,
        )

    def _forget(self, key: str) -> None:
        self._memory.pop(key, None)
        self._metrics.forget(key)
        self._workloads.forget(key)

    # -- reporting ----------------------------------------------------------------------------

    async def _write_status(
        self, obj: JsonObject, report: StatusRound, *, memory: _ConfigMemory | None = None
    ) -> None:
        """Merge this round's report into the status. With `memory`, measurement noise is
        settled (not written) except once every `status_refresh_s`, so a steady config costs
        the API server almost no writes."""
        now = self._wall_clock()
        # The carbon reconciler owns the effective cap of configs with a carbon section.
        spec_has_carbon = bool(child(obj, "spec").get("carbon"))
        now_s = self._clock()
        refresh = memory is None or (
            memory.status_written_s is None
            or now_s - memory.status_written_s >= self._settings.status_refresh_s
        )
        written = await write_status(
            self._client,
            obj,
            lambda current: report.desired(current, now, spec_has_carbon=spec_has_carbon),
            settled=not refresh,
        )
        if memory is not None and written and refresh:
            memory.status_written_s = now_s


def _trace_round(observation: CapObservation, plan: CeilingPlan) -> None:
    """Every round's inputs and outcome at debug level: why a ceiling moved (or did not) a
    few seconds after a demand step is read from these lines, not reconstructed. Built only
    when debug is on: a controller with thousands of configs decides hundreds a second."""
    if not log.is_enabled_for(logging.DEBUG):
        return
    log.debug(
        "round_decided",
        measured_w=observation.measured_w,
        cap_w=observation.cap_w,
        breach_ahead=plan.breach_ahead,
        predicted_w=plan.predicted_w,
        targets={
            t.name: {
                "replicas": t.current_replicas,
                "ceiling": t.applied_max_replicas,
                "limited": t.limited_by_ceiling,
                "watts": t.watts,
                "demand_tokens_per_s": t.demand_tokens_per_s,
                "rising": (learned := plan.state.targets.get(t.name)) is not None
                and learned.rose_from is not None,
            }
            for t in observation.targets
        },
        decisions={d.target: [d.new_max_replicas, d.reason] for d in plan.decisions},
    )


def _capped_by(obj: JsonObject) -> str | None:
    return ObjectMeta.of(obj).annotations.get(CAPPED_BY_ANNOTATION)
