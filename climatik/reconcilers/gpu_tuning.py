"""The GPU-frequency reconciler: runs clock-tuning Jobs where they pay off (design doc §10.2).

For a PowerCappingConfig with `gpuTuning.mode` Recommend or Apply, it creates one
`climatik gpu-tune` Job per node that hosts the config's pods, when power approaches the cap, a
rack nears its limits, or tokens per watt has shifted since the last tuning; never more often
than `minIntervalSeconds` per node and never two at once on a node (the Jobs carry the node in
a label, so this holds across controller restarts). It reads each Job's result ConfigMap and
tells the power-cap reconciler how much a replica's power changed (`TuningHints`), so ceilings
reflect the tuned clocks at once instead of after relearning. When to tune and what a result
means are pure policy (`climatik.policies.gpu_tuning`).

With `gpuTuning.clocksUnderCap` it also posts each target's sweep and running clock on the
`ClockBoard`, and carries out the clocks the power-cap reconciler asks for there: a short lock
Job (`gpu-tune --mode lock`) on each node running another clock (which then rescales its own
model on the change, so no `TuningHints` go out for such a config).

Every Job changes the clocks of every GPU of its node, for every tenant whose pods run there: the
sweep locks each clock it measures (for up to `active_deadline_s`), and `Apply` keeps the chosen
one. So a config author alone may not start one: only configs in the namespaces a cluster
administrator lists in `CLIMATIK_GPU_TUNING__ALLOWED_NAMESPACES` (none by default) are tuned, in
either mode. Elsewhere no Job is created (`build_job` refuses it itself, so no path can skip
the check), no result feeds back, and the config is told: a `GpuTuning` condition (False,
`TuningNotAllowed`) while it asks, and one Warning Event per spec generation.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from climatik.api.status import (
    GPU_TUNING_APPLY_NOT_ALLOWED_BEFORE,
    GPU_TUNING_CONDITION,
    GPU_TUNING_NOT_ALLOWED,
    find_condition,
    peer_status,
    set_condition,
    status_from_wire,
)
from climatik.api.status_models import Condition, ConditionStatus, PowerCappingConfigStatus
from climatik.domain.config import GpuTuningMode, PowerCappingConfig
from climatik.domain.gpu import (
    TUNE_NODE_LABEL,
    TUNE_RESULT_KEY,
    ClockSample,
    lock_configmap_name,
    node_label_value,
    result_configmap_name,
)
from climatik.kube.cache import Cache, EventSink
from climatik.kube.client import ApiError, KubeClient
from climatik.kube.json import (
    JsonDict,
    JsonObject,
    JsonValue,
    ObjectMeta,
    as_object,
    child,
    objects,
)
from climatik.kube.resources import JOBS
from climatik.kube.store import FrozenMapping
from climatik.policies.clock_round import ClockProfile
from climatik.policies.gpu_tuning import (
    TriggerInputs,
    clock_after,
    sweep_of,
    target_watts_scales,
    tuning_reason,
    watts_scale,
)
from climatik.reconcilers.clock_board import ClockBoard
from climatik.reconcilers.opening import ConfigOpening
from climatik.reconcilers.result import Result
from climatik.reconcilers.settings import GpuTuningSettings
from climatik.reconcilers.status_writer import with_fields, write_status
from climatik.reconcilers.targets import ResolvedTarget, WorkloadCaches
from climatik.reconcilers.tuning_hints import TuningHints

log = structlog.get_logger(__name__)

CONFIG_LABEL = "climatik-project.ai/gpu-tune-config"
PURPOSE_LABEL = "climatik-project.ai/gpu-tune-purpose"
"""`sweep` or `lock`: a lock Job (a clock decided under the cap) does not count against the
sweeps' `minIntervalSeconds`."""
ALLOWED_NAMESPACES_ENV = "CLIMATIK_GPU_TUNING__ALLOWED_NAMESPACES"
NOT_ALLOWED_EVENT = "GpuTuningNotAllowed"
"""The Warning Event's reason for a config asking for tuning where it is not allowed."""


class TuningNotAllowedError(ValueError):
    """A tuning Job was asked for a config whose namespace the settings do not allow."""


def tuning_allowed(namespace: str, settings: GpuTuningSettings) -> bool:
    """Whether configs of `namespace` may run tuning Jobs (`allowed_namespaces`, `*`: all)."""
    allowed = settings.allowed_namespaces
    return "*" in allowed or namespace in allowed


def tuning_refused(config: PowerCappingConfig, settings: GpuTuningSettings) -> bool:
    """The config asks for tuning (Recommend or Apply) where the settings do not allow it."""
    return config.gpu_tuning.mode is not GpuTuningMode.DISABLED and not tuning_allowed(
        config.namespace, settings
    )


def build_job(
    config: PowerCappingConfig,
    node: str,
    metrics_urls: Sequence[str],
    settings: GpuTuningSettings,
    now: datetime,
) -> JsonDict:
    """The tuning Job for one node: pinned to it, privileged just enough for NVML clocks.

    Raises TuningNotAllowedError for a config whose namespace `settings.allowed_namespaces`
    does not allow: even a recommending sweep locks the node's clocks while it runs."""
    if not tuning_allowed(config.namespace, settings):
        raise TuningNotAllowedError(
            f"namespace {config.namespace} may not run GPU tuning Jobs ({ALLOWED_NAMESPACES_ENV})"
        )
    mode = "apply" if config.gpu_tuning.mode is GpuTuningMode.APPLY else "recommend"
    args: list[JsonValue] = ["gpu-tune", "--mode", mode]
    for url in metrics_urls:
        args += ["--vllm-metrics", url]
    slo = config.gpu_tuning.slo
    args += ["--max-throughput-loss", f"{settings.max_throughput_loss:g}"]
    if slo.max_inter_token_latency_s is not None:
        args += ["--max-p99-token-latency-s", f"{slo.max_inter_token_latency_s:g}"]
    args += ["--result-configmap", f"{settings.job_namespace}/{result_configmap_name(node)}"]
    return _job(config, node, args, purpose="sweep", settings=settings, now=now)


def build_lock_job(
    config: PowerCappingConfig,
    node: str,
    clock_mhz: int,
    settings: GpuTuningSettings,
    now: datetime,
) -> JsonDict:
    """The Job that locks one node's GPUs at `clock_mhz` (`gpu-tune --mode lock`), seconds
    long, with the sweep Job's privileges; its result goes to the node's lock ConfigMap.

    Raises TuningNotAllowedError where `build_job` would."""
    if not tuning_allowed(config.namespace, settings):
        raise TuningNotAllowedError(
            f"namespace {config.namespace} may not run GPU tuning Jobs ({ALLOWED_NAMESPACES_ENV})"
        )
    args: list[JsonValue] = ["gpu-tune", "--mode", "lock", "--clock-mhz", str(clock_mhz)]
    args += ["--result-configmap", f"{settings.job_namespace}/{lock_configmap_name(node)}"]
    return _job(config, node, args, purpose="lock", settings=settings, now=now)


def _job(
    config: PowerCappingConfig,
    node: str,
    args: list[JsonValue],
    *,
    purpose: str,
    settings: GpuTuningSettings,
    now: datetime,
) -> JsonDict:
    labels = {
        TUNE_NODE_LABEL: node_label_value(node),
        CONFIG_LABEL: f"{config.namespace}.{config.name}"[:63],
        PURPOSE_LABEL: purpose,
        "app.kubernetes.io/name": "climatik-gpu-tune",
        "app.kubernetes.io/managed-by": "climatik",
    }
    stamp = now.strftime("%Y%m%d%H%M%S")
    container: JsonDict = {
        "name": "gpu-tune",
        "image": settings.image,
        "args": args,
        "env": [
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
            {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "utility"},
        ],
        # Locking SM clocks through NVML needs root with CAP_SYS_ADMIN on the node; nothing
        # more (no privileged mode, no host namespaces), and only in this Job's namespace.
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        },
    }
    pod_spec: JsonDict = {
        "nodeName": node,
        "restartPolicy": "Never",
        "serviceAccountName": settings.service_account,
        "containers": [container],
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    if settings.runtime_class:
        pod_spec["runtimeClassName"] = settings.runtime_class
    return {
        "apiVersion": JOBS.api_version,
        "kind": JOBS.kind,
        "metadata": {
            "name": (
                f"climatik-gpu-{'tune' if purpose == 'sweep' else purpose}-"
                f"{hashlib.sha256(node.encode()).hexdigest()[:10]}-{stamp}"
            ),
            "namespace": settings.job_namespace,
            "labels": labels,
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": settings.active_deadline_s,
            "ttlSecondsAfterFinished": settings.ttl_after_finished_s,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def _job_active(job: JsonObject) -> bool:
    status = child(job, "status")
    return (
        not status.get("succeeded")
        and not status.get("failed")
        and not any(
            c.get("type") in {"Complete", "Failed"} and c.get("status") == "True"
            for c in objects(status, "conditions")
        )
    )


def _created_s(obj: JsonObject) -> float:
    stamp = ObjectMeta.of(obj).raw.get("creationTimestamp")
    if not stamp:
        return 0.0
    return datetime.fromisoformat(str(stamp)).timestamp()


@dataclass
class _NodeMemory:
    tokens_per_watt_at_tuning: float | None = None
    applied_results: set[str] = field(default_factory=set)
    sweep: tuple[tuple[ClockSample, ...], int] | None = None
    """The node's latest sweep (samples, fastest first) and the clock it chose."""
    locked_mhz: int | None = None
    """The clock its GPUs are locked at (`None`: their default, the sweep's top clock)."""
    lock_failed_s: float | None = None
    """When a lock Job last reported an error: no other lock there for `minIntervalSeconds`."""
    lock_created_s: float = 0.0
    """When this process last created a lock Job there ..."""
    lock_result_s: float = 0.0
    """... and last read a lock result: a Job with no result yet is in flight, or failed."""
    lock_asked: int | None = None
    """The clock its latest lock result was asked for: a GPU that cannot run it exactly took
    the nearest below, and asking again would only repeat the Job."""
    wanted_by: dict[str, int] = field(default_factory=dict)
    """Per config whose targets run there, the clock it asks for: a node shared by several
    configs runs the fastest, whichever config reconciles, so they never lock it in turn."""
    lock_error: str | None = None
    """That error, until a Warning Event has told the config."""
    moved: bool = False
    """Its clock is a lock Job's, not its sweep's: put back when clocks stop moving."""
    swept_s: float = 0.0
    """When its latest sweep result was read: a sweep Job created after it still sweeps."""

    def take(self, result: Mapping[str, Any], now_s: float) -> None:
        """What one result document (a sweep's or a lock's) says about the node."""
        mode = result.get("mode")
        self.sweep = sweep_of(result) or self.sweep
        self.locked_mhz = clock_after(result, self.locked_mhz)
        if mode in {"apply", "recommend"}:
            self.swept_s = now_s
            self.lock_asked = None
            self.moved = False
        elif mode == "lock":
            self.lock_result_s = now_s
            self.moved = self.locked_mhz is not None
            error = result.get("error")
            if isinstance(error, Mapping):
                self.lock_failed_s = now_s
                self.lock_error = f"{error.get('message')} ({error.get('reason')})"
            else:
                asked = result.get("requestedClockMHz")
                self.lock_asked = asked if isinstance(asked, int) else None


class GpuTuningReconciler:
    """Reconciles GPU tuning for one PowerCappingConfig key."""

    def __init__(
        self,
        client: KubeClient,
        *,
        configs: Cache[FrozenMapping],
        workloads: WorkloadCaches,
        jobs: Cache[FrozenMapping],
        results: Cache[FrozenMapping],
        events: EventSink,
        hints: TuningHints,
        settings: GpuTuningSettings,
        clocks: ClockBoard | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._workloads = workloads
        self._jobs = jobs
        self._results = results
        self._events = events
        self._hints = hints
        self._clocks = clocks or ClockBoard()
        self._settings = settings
        self._wall_clock = wall_clock
        self._clock = clock
        self._nodes: dict[str, _NodeMemory] = {}
        self._refusals: dict[str, _RefusalMemory] = {}
        # The power-cap reconciler reports an invalid spec; tuning stands aside.
        self._opening = ConfigOpening(configs, forget=self._forget)

    async def reconcile(self, key: str) -> Result:
        opened = await self._opening.open(key)
        if isinstance(opened, Result):
            return opened
        obj, config = opened.obj, opened.config
        refused = tuning_refused(config, self._settings)
        told = await self._report_refusal(key, obj, config, refused=refused)
        if refused:
            # No Job and no result read back: watts per replica are learned from measurements
            # only, as with tuning off. Polled again only to retry an Event the API refused.
            return Result() if told else Result(requeue_after=self._settings.interval_s)
        if config.gpu_tuning.mode is GpuTuningMode.DISABLED:
            self._clocks.forget(key)
            return Result()
        targets = self._workloads.resolve(config).targets
        nodes = sorted({n for t in targets for n in t.pod_nodes if n})
        moving = config.gpu_tuning.clocks_under_cap
        self._collect_results(key, targets, nodes, hint_watts=not moving)
        profiles = self._profiles(targets)
        if moving:
            self._clocks.post_profiles(key, profiles)
            await self._lock_requested(
                obj, key, config, targets, profiles, requested=self._clocks.requested(key)
            )
        else:
            # Clocks no longer move: nodes a lock Job left at another clock go back to their
            # sweep's pick (Apply) or their default (Recommend: the sweep's top clock).
            self._clocks.forget(key)
            await self._lock_requested(
                obj, key, config, targets, profiles, requested={}, put_back=config.gpu_tuning.mode
            )
        status = peer_status(obj)  # the power-cap and carbon reconcilers' readings
        tokens_per_watt = _mean_tokens_per_watt(status)
        cap_w = status.effective_cap_watts or config.power_cap_w
        racks_near = _rack_near_limit(config, status)
        for node in nodes:
            memory = self._nodes.setdefault(node, _NodeMemory())
            reason = tuning_reason(
                TriggerInputs(
                    measured_w=status.measured_power_watts,
                    cap_w=float(cap_w),
                    rack_near_limit=racks_near,
                    tokens_per_watt=tokens_per_watt,
                    tokens_per_watt_at_last_tuning=memory.tokens_per_watt_at_tuning,
                )
            )
            if reason is None or not self._may_start(node, config):
                continue
            urls = _metrics_urls(
                targets, node, self._workloads.pods, self._settings.vllm_metrics_port
            )
            job = build_job(config, node, urls, self._settings, self._wall_clock())
            try:
                await self._client.create(JOBS, job, self._settings.job_namespace)
            except ApiError as error:
                if error.is_conflict:
                    continue  # created a moment ago by this same decision
                raise
            memory.tokens_per_watt_at_tuning = tokens_per_watt
            job_name = ObjectMeta.of(job).name
            message = f"GPU tuning Job {job_name} on node {node}: {reason}"
            log.info("gpu_tuning_job_created", node=node, job=job_name, why=reason)
            await self._events.record(obj, "Normal", "GpuTuningStarted", message)
        return Result(requeue_after=self._settings.interval_s)

    def _forget(self, key: str) -> None:
        self._refusals.pop(key, None)
        for memory in self._nodes.values():
            memory.wanted_by.pop(key, None)
        self._clocks.forget(key)
        self._workloads.forget(key)

    # -- Clocks decided with the replicas (gpuTuning.clocksUnderCap) ----------------------------

    def _node_clock(self, node: str, default_mhz: int) -> int:
        """The clock a node runs: its lock, else its GPUs' default (`default_mhz`, the top
        clock of a sweep; a node swept or locked by no Job yet runs it too)."""
        memory = self._nodes.get(node)
        if memory is None:
            return default_mhz
        if memory.locked_mhz is not None:
            return memory.locked_mhz
        return _top_mhz(memory.sweep[0]) if memory.sweep is not None else default_mhz

    def _profiles(self, targets: Sequence[ResolvedTarget]) -> dict[str, ClockProfile]:
        """Per target with a swept node: the sweep of its first such node and the fastest clock
        any of its nodes runs."""
        profiles: dict[str, ClockProfile] = {}
        for target in targets:
            placed = sorted({n for n in target.pod_nodes if n})
            sweeps = [s for n in placed if (s := self._nodes.get(n, _NodeMemory()).sweep)]
            if not sweeps:
                continue
            samples, tuned = sweeps[0]
            top = _top_mhz(samples)
            profiles[target.name] = ClockProfile(
                samples=samples,
                tuned_mhz=tuned,
                current_mhz=max(self._node_clock(n, top) for n in placed),
            )
        return profiles

    async def _lock_requested(
        self,
        obj: JsonObject,
        key: str,
        config: PowerCappingConfig,
        targets: Sequence[ResolvedTarget],
        profiles: Mapping[str, ClockProfile],
        *,
        requested: Mapping[str, int],
        put_back: GpuTuningMode | None = None,
    ) -> None:
        """A lock Job on each node whose clock differs from what the power-cap reconciler asked
        for its targets (a node shared by several, of this config or others: the fastest of
        their clocks, so no target runs slower than its own latency bound allows, and two
        configs never lock it in turn); with `put_back`, on each node a lock Job moved, back
        to its sweep's pick (Apply) or its top clock. A node whose last lock was asked for the
        same clock is left alone (its GPUs took the nearest below: asking again repeats it)."""
        wanted: dict[str, tuple[int, int]] = {}
        for target in targets:
            profile = profiles.get(target.name)
            if profile is None:
                continue
            top = profile.top_mhz
            for node in {n for n in target.pod_nodes if n}:
                memory = self._nodes.get(node)
                clock = requested.get(target.name)
                if put_back is not None and memory is not None and memory.moved:
                    sweep = memory.sweep or (profile.samples, profile.tuned_mhz)
                    clock = sweep[1] if put_back is GpuTuningMode.APPLY else _top_mhz(sweep[0])
                    # Only down: a rise here would pass no spare-watt check, and no model
                    # follows it once clocks stop moving. A node left below waits for its
                    # next sweep.
                    running = self._node_clock(node, top)
                    clock = clock if clock < running else None
                if clock is None:
                    continue
                asked, _ = wanted.get(node, (0, top))
                wanted[node] = (max(asked, clock), top)
        for node, memory in self._nodes.items():
            if node in wanted:
                memory.wanted_by[key] = wanted[node][0]
            else:
                memory.wanted_by.pop(key, None)
        for node, (_, top) in sorted(wanted.items()):
            memory = self._nodes.setdefault(node, _NodeMemory())
            clock = max(memory.wanted_by.values(), default=wanted[node][0])
            running = self._node_clock(node, top)
            if clock in {running, memory.lock_asked} or self._node_busy(node):
                continue
            if memory.lock_error is not None:
                message = f"locking node {node}'s GPU clock failed: {memory.lock_error}"
                await self._events.record(obj, "Warning", "GpuClockLockFailed", message)
                memory.lock_error = None
            # A failed lock, or one whose Job left no result at all (NVML missing, an image
            # without lock mode), waits `minIntervalSeconds` before the next try.
            failed_s = memory.lock_failed_s
            if memory.lock_created_s > memory.lock_result_s:
                failed_s = max(failed_s or 0.0, memory.lock_created_s)
            if failed_s is not None and self._clock() - failed_s < config.gpu_tuning.min_interval_s:
                continue
            job = build_lock_job(config, node, clock, self._settings, self._wall_clock())
            try:
                await self._client.create(JOBS, job, self._settings.job_namespace)
            except ApiError as error:
                if error.is_conflict:
                    continue
                raise
            memory.lock_created_s = self._clock()
            job_name = ObjectMeta.of(job).name
            log.info("gpu_clock_lock_job_created", node=node, job=job_name, clock_mhz=clock)
            await self._events.record(
                obj,
                "Normal",
                "GpuClockLocking",
                f"GPU clock Job {job_name} locks node {node} at {clock} MHz (was {running}): "
                "clocks decided with the replicas under the cap",
            )

    # -- Tuning where it is not allowed ---------------------------------------------------------

    async def _report_refusal(
        self, key: str, obj: JsonObject, config: PowerCappingConfig, *, refused: bool
    ) -> bool:
        """Keep the `GpuTuning`/`TuningNotAllowed` condition true to the spec and the settings,
        and send its Warning Event once per spec generation; False while that Event is owed.

        The status is written only when the condition must appear, change or go, so a steady
        config costs no write. After a restart, a condition already written for this generation
        says the user was told; an Event the API refused is tried again. A condition of the
        reason earlier releases wrote (`ApplyNotAllowed`) is this reconciler's too: replaced
        or removed, never left behind."""
        told = _refusal_condition(obj)
        if not refused:
            self._refusals.pop(key, None)
            if told is not None:
                await write_status(self._client, obj, _without_refusal_condition)
            return True
        message = _refusal_message(config)
        now = self._wall_clock()

        def desire(current: PowerCappingConfigStatus | None) -> PowerCappingConfigStatus:
            conditions = set_condition(
                current.conditions if current else None,
                type_=GPU_TUNING_CONDITION,
                status=ConditionStatus.FALSE,
                reason=GPU_TUNING_NOT_ALLOWED,
                message=message,
                observed_generation=config.generation,
                now=now,
            )
            return with_fields(current, conditions=list(conditions))

        memory = self._refusals.setdefault(key, _RefusalMemory())
        if memory.warned_generation != config.generation:
            already_told = (
                told is not None
                and told.reason == GPU_TUNING_NOT_ALLOWED
                and told.observed_generation == config.generation
                and memory.event_refused_generation != config.generation
            )
            if not already_told:
                log.warning(
                    "gpu_tuning_not_allowed",
                    namespace=config.namespace,
                    mode=str(config.gpu_tuning.mode),
                    setting=ALLOWED_NAMESPACES_ENV,
                )
                if await self._events.record(obj, "Warning", NOT_ALLOWED_EVENT, message):
                    memory.warned_generation = config.generation
                    memory.event_refused_generation = None
                else:
                    memory.event_refused_generation = config.generation
            else:
                memory.warned_generation = config.generation
        await write_status(self._client, obj, desire)
        return memory.warned_generation == config.generation

    def _node_jobs(self, node: str) -> list[JsonObject]:
        label = node_label_value(node)
        return [
            j
            for j in self._jobs.store.objects()
            if ObjectMeta.of(j).labels.get(TUNE_NODE_LABEL) == label
        ]

    def _node_busy(self, node: str) -> bool:
        """A Job (sweep or lock) still runs on the node: NVML would refuse a second lock. A
        sweep counts until its result is read, whatever its Job's status says (the dev
        cluster's kwok completes a Job's pod at once while the world plays the sweep)."""
        jobs = self._node_jobs(node)
        if any(_job_active(j) for j in jobs):
            return True
        memory = self._nodes.get(node)
        swept_s = memory.swept_s if memory is not None else 0.0
        now_s = self._clock()
        return any(
            swept_s < _created_s(j) and now_s - _created_s(j) < self._settings.active_deadline_s
            for j in _sweeps(jobs)
        )

    def _may_start(self, node: str, config: PowerCappingConfig) -> bool:
        """One Job per node at a time, and at most one sweep per `minIntervalSeconds`."""
        if self._node_busy(node):
            return False
        newest = max((_created_s(j) for j in _sweeps(self._node_jobs(node))), default=0.0)
        return self._clock() - newest >= config.gpu_tuning.min_interval_s

    def _collect_results(
        self,
        key: str,
        targets: Sequence[ResolvedTarget],
        nodes: Sequence[str],
        *,
        hint_watts: bool,
    ) -> None:
        """Read the nodes' new results (sweeps and locks): remember each node's sweep and
        clock, and, with `hint_watts`, hand what an applied clock did to each target's
        replicas over to the power-cap reconciler. (Where clocks move with the replicas the
        power-cap reconciler rescales its model on every clock change itself.)"""
        node_scales: dict[str, float] = {}
        for node in nodes:
            memory = self._nodes.setdefault(node, _NodeMemory())
            for name in (result_configmap_name(node), lock_configmap_name(node)):
                result = self._new_result(node, name, memory)
                if result is None:
                    continue
                memory.take(result, self._clock())
                if result.get("mode") == "lock" and isinstance(result.get("error"), Mapping):
                    log.warning("gpu_clock_lock_failed", node=node, error=memory.lock_error)
                scale = watts_scale(result)
                if scale is not None:
                    node_scales[node] = scale
                    log.info("gpu_tuning_result_applied", node=node, watts_scale=round(scale, 3))
        if node_scales and hint_watts:
            target_nodes = {t.name: t.pod_nodes for t in targets}
            self._hints.record(key, target_watts_scales(node_scales, target_nodes))

    def _new_result(self, node: str, name: str, memory: _NodeMemory) -> JsonObject | None:
        """The result document in ConfigMap `name`, once per version of it."""
        cm = self._results.store.get(f"{self._settings.job_namespace}/{name}")
        if cm is None:
            return None
        version = f"{name}@{ObjectMeta.of(cm).raw.get('resourceVersion')}"
        if version in memory.applied_results:
            return None
        memory.applied_results.add(version)
        try:
            return as_object(json.loads(str(child(cm, "data").get(TUNE_RESULT_KEY, "{}"))))
        except ValueError:
            log.warning("gpu_tuning_result_unreadable", node=node, configmap=name)
            return None


@dataclass
class _RefusalMemory:
    warned_generation: int | None = None
    """The spec generation whose `GpuTuningNotAllowed` Event the API took."""
    event_refused_generation: int | None = None
    """The generation whose Event the API refused (to be sent again)."""


def _refusal_message(config: PowerCappingConfig) -> str:
    return (
        f"spec.gpuTuning.mode is {config.gpu_tuning.mode}, but namespace {config.namespace} is "
        f"not in the controller's {ALLOWED_NAMESPACES_ENV} (Helm gpuTuning.allowedNamespaces): "
        "a tuning Job locks the SM clocks of every GPU of its node, for every workload there, "
        "while it sweeps (Recommend) or for good (Apply), so a cluster administrator allows it "
        "per namespace. No tuning Job runs; watts per replica are learned from measurements "
        "only. Ask your administrator to add the namespace, or set spec.gpuTuning.mode to "
        "Disabled"
    )


_OWN_REASONS = frozenset({GPU_TUNING_NOT_ALLOWED, GPU_TUNING_APPLY_NOT_ALLOWED_BEFORE})


def _refusal_condition(obj: JsonObject) -> Condition | None:
    """This reconciler's `GpuTuning` condition on the object, or None."""
    status = status_from_wire(obj)
    found = find_condition(status.conditions if status else None, GPU_TUNING_CONDITION)
    return found if found is not None and found.reason in _OWN_REASONS else None


def _without_refusal_condition(
    current: PowerCappingConfigStatus | None,
) -> PowerCappingConfigStatus:
    kept = [
        c
        for c in (current.conditions if current else None) or ()
        if not (c.type == GPU_TUNING_CONDITION and c.reason in _OWN_REASONS)
    ]
    return with_fields(current, conditions=kept)


def _rack_near_limit(config: PowerCappingConfig, status: PowerCappingConfigStatus) -> bool:
    """A rack within 10 % of its power limit (from the power-cap reconciler's rack status)."""
    for rack in status.racks or ():
        constraint = config.rack(rack.rack_id)
        if constraint is None or constraint.max_power_w is None or rack.headroom_watts is None:
            continue
        if rack.headroom_watts <= 0.1 * constraint.max_power_w:
            return True
    return False


def _mean_tokens_per_watt(status: PowerCappingConfigStatus) -> float | None:
    values = [t.tokens_per_watt for t in status.targets or () if t.tokens_per_watt is not None]
    return sum(values) / len(values) if values else None


def _sweeps(jobs: Sequence[JsonObject]) -> list[JsonObject]:
    """The sweep Jobs among a node's (lock Jobs are labelled apart)."""
    return [j for j in jobs if ObjectMeta.of(j).labels.get(PURPOSE_LABEL) != "lock"]


def _top_mhz(samples: Sequence[ClockSample]) -> int:
    return max(s.clock_mhz for s in samples)


def _metrics_urls(
    targets: Sequence[ResolvedTarget], node: str, pods: Cache[FrozenMapping], port: int
) -> list[str]:
    urls = []
    for target in targets:
        for pod_name, pod_node in zip(target.pods, target.pod_nodes, strict=True):
            if pod_node != node:
                continue
            pod = pods.store.get(f"{target.namespace}/{pod_name}")
            ip = child(pod, "status").get("podIP") if pod is not None else None
            if ip:
                urls.append(f"http://{ip}:{port}/metrics")
    return urls
