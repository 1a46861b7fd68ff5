"""Holds VPA's evictions for capped targets on racks at or near their limits (issue 23).

VPA applies a recommendation by evicting pods (`updateMode` Recreate, InPlaceOrRecreate or the
deprecated Auto). For each PowerCappingConfig with `rackConstraints`, this reconciler reads the
racks' power and inlet from the config's `status.racks` (written by the power-cap reconciler),
asks `racks_to_hold` which racks are too close to their limits, and for every
VerticalPodAutoscaler in the config's namespace whose `targetRef` is the Deployment of one of the
config's targets with a pod on such a rack, switches `spec.updatePolicy.updateMode` to `Initial`
by JSON merge patch: new pods still get VPA's recommendation from its admission controller, and
no running pod is evicted. The user's mode is remembered in an annotation (as a capped
ScaledObject remembers its user's `maxReplicaCount`) and written back once the racks cool. A mode
the user changes during a hold is theirs: the annotations go and the new mode stays (and is held
again at the next round if the rack is still hot). A VPA that is no longer the config's (its
Deployment is no longer a target), and every VPA a deleted config held, get their mode back.
Each hold and release is an Event on the VPA and on the config, and the config's
`VpaEvictionsHeld` condition names what is held and why.

Each round it also writes one replica's footprint for each target with a VPA (VPA's
recommendation as the CPU and memory a new replica asks for, and the seats that leaves per rack;
`replica_footprint`) and GPUs per replica (`replica_size`).

A config holds a VPA only behind its finalizer `vpa-give-back` (added before the first hold,
dropped once it holds none): deleting it waits until every VPA it holds has its mode back, so a
config deleted while the controller is down gives its VPAs back when the controller returns, as
a capped ScaledObject gets its ceiling back behind the power-cap reconciler's finalizer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

import structlog

from climatik.api.status import set_condition, status_from_wire
from climatik.api.status_models import (
    ConditionStatus,
    PowerCappingConfigStatus,
    ReplicaFootprintStatus,
    ReplicaSizeStatus,
)
from climatik.domain.config import PowerCappingConfig, TargetKind
from climatik.kube.cache import Cache, EventSink
from climatik.kube.client import ApiError, KubeClient
from climatik.kube.json import (
    JsonDict,
    JsonObject,
    ObjectMeta,
    child,
    labels_of,
    objects,
    strings,
    text,
)
from climatik.kube.resources import (
    DEPLOYMENTS,
    INFERENCE_SERVICES,
    VERTICAL_POD_AUTOSCALERS,
    Resource,
)
from climatik.kube.store import FrozenMapping, object_key, split_key
from climatik.policies.vpa_hold import HoldThresholds, RackReading, racks_to_hold
from climatik.reconcilers.opening import ConfigOpening
from climatik.reconcilers.replica_footprint import replica_footprints
from climatik.reconcilers.replica_size import fragmentation_message, replica_sizes, slo_goal
from climatik.reconcilers.replica_size_apply import (
    STABLE_ROUNDS,
    already_rolled,
    inference_service_roll_patch,
    opted_in,
    predictor_problem,
    roll_patch,
    under_cap,
    wanted,
)
from climatik.reconcilers.resources import (
    POWER_CAPPING_CONFIGS,
    VPA_GIVE_BACK_FINALIZER,
    VPA_HELD_BY_ANNOTATION,
    VPA_USER_MODE_ANNOTATION,
)
from climatik.reconcilers.result import Result
from climatik.reconcilers.settings import VpaSettings
from climatik.reconcilers.status_writer import with_fields, write_status
from climatik.reconcilers.targets import NAMESPACE_INDEX, ResolvedTarget, WorkloadCaches

log = structlog.get_logger(__name__)

CONDITION = "VpaEvictionsHeld"
HOLD_MODE = "Initial"
EVICTING_MODES = frozenset({"Auto", "Recreate", "InPlaceOrRecreate"})
"""The modes in which VPA's updater evicts (or may evict) running pods."""
DEFAULT_MODE = "Recreate"
"""What VPA v1.8 does when `updatePolicy.updateMode` is absent."""
CONFLICT_RETRY_S = 1.0
"""A config or VPA that changed under a write is decided again this soon, on fresh state."""


def thresholds_of(settings: VpaSettings) -> HoldThresholds:
    """The policy's thresholds from the controller's settings."""
    return HoldThresholds(
        hold_fraction=settings.hold_fraction,
        release_fraction=settings.release_fraction,
        hold_margin_c=settings.hold_margin_c,
        release_margin_c=settings.release_margin_c,
    )


def update_mode(vpa: JsonObject) -> str:
    """The VPA's update mode as VPA reads it (absent: its default)."""
    return text(child(child(vpa, "spec"), "updatePolicy"), "updateMode") or DEFAULT_MODE


def _with_resource_version(vpa: JsonObject, annotations: Mapping[str, str | None]) -> JsonDict:
    metadata: JsonDict = {"annotations": dict(annotations)}
    resource_version = ObjectMeta.of(vpa).raw.get("resourceVersion")
    if resource_version:  # refused (409) if the VPA changed since it was read
        metadata["resourceVersion"] = resource_version
    return metadata


def hold_patch(vpa: JsonObject, config_key: str) -> JsonDict:
    """Switch to `Initial`, remembering the user's mode and who holds it."""
    annotations = {VPA_USER_MODE_ANNOTATION: update_mode(vpa), VPA_HELD_BY_ANNOTATION: config_key}
    return {
        "metadata": _with_resource_version(vpa, annotations),
        "spec": {"updatePolicy": {"updateMode": HOLD_MODE}},
    }


def release_patch(vpa: JsonObject) -> JsonDict:
    """Give the user's mode back, or, when the user changed the mode during the hold, keep
    theirs and drop only the annotations."""
    forget: dict[str, str | None] = {VPA_USER_MODE_ANNOTATION: None, VPA_HELD_BY_ANNOTATION: None}
    patch: JsonDict = {"metadata": _with_resource_version(vpa, forget)}
    remembered = strings(child(vpa, "metadata"), "annotations").get(VPA_USER_MODE_ANNOTATION)
    if update_mode(vpa) == HOLD_MODE and remembered:
        patch["spec"] = {"updatePolicy": {"updateMode": remembered}}
    return patch


def _held_by(vpa: JsonObject) -> str | None:
    """The config that holds the VPA's evictions, by its annotation (checked against the key of
    the config reconciled, in the VPA's own namespace: a hint, never authority elsewhere)."""
    return strings(child(vpa, "metadata"), "annotations").get(VPA_HELD_BY_ANNOTATION)


def target_deployment(target: ResolvedTarget) -> str | None:
    """The Deployment a target scales: a ScaledObject's `scaleTargetRef`, or KServe's
    `<name>-predictor`."""
    if target.kind is TargetKind.INFERENCE_SERVICE:
        return f"{target.name}-predictor"
    ref = child(child(target.obj, "spec"), "scaleTargetRef")
    if ref.get("kind", "Deployment") != "Deployment":
        return None
    return text(ref, "name")


def _to_hold(vpa: JsonObject, hot: Sequence[str]) -> bool:
    """Whether to switch the VPA to `Initial` now: its pods are on held racks, nobody holds it
    yet, and its mode evicts."""
    return bool(hot) and _held_by(vpa) is None and update_mode(vpa) in EVICTING_MODES


def vpa_deployment(vpa: JsonObject) -> str | None:
    """The Deployment a VPA sizes (None for any other kind of target)."""
    ref = child(child(vpa, "spec"), "targetRef")
    if ref.get("kind") != "Deployment":
        return None
    return text(ref, "name")


class VpaHoldReconciler:
    """Reconciles one PowerCappingConfig key: hold or release its targets' VPAs."""

    def __init__(
        self,
        client: KubeClient,
        *,
        configs: Cache[FrozenMapping],
        workloads: WorkloadCaches,
        vpas: Cache[FrozenMapping],
        nodes: Cache[FrozenMapping],
        events: EventSink,
        settings: VpaSettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self._workloads = workloads
        self._vpas = vpas
        self._nodes = nodes
        self._events = events
        self._settings = settings
        self._thresholds = thresholds_of(settings)
        self._clock = clock
        self._held_racks: dict[str, frozenset[str]] = {}
        self._fragmented: dict[str, frozenset[str]] = {}
        """Per config key, the fragmentation Events last recorded (one per change)."""
        self._steady: dict[str, dict[str, tuple[int, int]]] = {}
        """Per config key and target: the size recommended and for how many rounds in a row."""
        self._noted: dict[str, dict[tuple[str, str], str]] = {}
        """Per config key and workload (resource, name): the last reason recorded for why its
        roll does not happen (the apply window, a predictor out of reach)."""
        self._configs = configs
        self._opening = ConfigOpening(configs, forget=self._forget, finalize=self._finalize)

    def _forget(self, key: str) -> None:
        self._held_racks.pop(key, None)
        self._fragmented.pop(key, None)
        self._steady.pop(key, None)
        self._noted.pop(key, None)

    async def reconcile(self, key: str) -> Result:
        if self._configs.store.get(key) is None:
            await self._release_all(key)  # a deleted config holds nothing any more
        opened = await self._opening.open(key)
        if isinstance(opened, Result):
            return opened
        config, obj = opened.config, opened.obj
        status = status_from_wire(obj)
        readings = [
            RackReading(r.rack_id, r.power_watts, r.inlet_celsius)
            for r in (status.racks or () if status else ())
        ]
        limits = {rack.rack_id: rack for rack in config.racks}
        held_racks = racks_to_hold(
            readings, limits, self._held_racks.get(key, frozenset()), self._thresholds
        )
        self._held_racks[key] = held_racks

        racks_by_deployment = self._racks_by_deployment(config)
        plan: list[tuple[FrozenMapping, list[str]]] = []
        for vpa in self._vpas.store.by_index(NAMESPACE_INDEX, config.namespace):
            deployment = vpa_deployment(vpa)
            if deployment is not None and deployment in racks_by_deployment:
                plan.append((vpa, sorted(racks_by_deployment[deployment] & held_racks)))
            elif _held_by(vpa) == key:
                plan.append((vpa, []))  # no longer one of the config's targets: give it back
        guard = any(_to_hold(vpa, hot) for vpa, hot in plan)
        if guard and await self._set_finalizer(obj, present=True) is None:
            return Result(requeue_after=CONFLICT_RETRY_S)  # no hold without the finalizer
        held: list[str] = []
        holding = False
        for vpa, hot in plan:
            if hot:
                held.append(f"{ObjectMeta.of(vpa).name} (racks {', '.join(hot)})")
            holding = await self._act(config, obj, vpa, hot) or holding
        if not holding:  # a refused drop (409) is tried again next round
            await self._set_finalizer(obj, present=False)
        sizes = replica_sizes(
            self._workloads.resolve(config).targets,
            status,
            pods=self._workloads.pods,
            nodes=self._nodes,
            slo=slo_goal(config.replica_sizing),
        )
        footprints = self._footprints(config)
        await self._record_fragmentation(key, obj, sizes)
        await self._apply_sizes(config, obj, status, sizes, held_racks)
        await self._report(config, obj, held, held_racks, sizes=sizes, footprints=footprints)
        return Result(requeue_after=self._settings.interval_s)

    def _footprints(self, config: PowerCappingConfig) -> list[ReplicaFootprintStatus]:
        """One replica's footprint for each target whose Deployment has a VPA."""
        vpas: dict[str, FrozenMapping] = {}
        for vpa in self._vpas.store.by_index(NAMESPACE_INDEX, config.namespace):
            deployment = vpa_deployment(vpa)
            if deployment is not None:
                vpas.setdefault(deployment, vpa)
        with_vpa = [
            (target, vpas[deployment])
            for target in self._workloads.resolve(config).targets
            if (deployment := target_deployment(target)) is not None and deployment in vpas
        ]
        return replica_footprints(
            with_vpa,
            pods=self._workloads.pods,
            nodes=self._nodes,
            rack_label=config.placement.rack_label_key,
        )

    def _racks_by_deployment(self, config: PowerCappingConfig) -> dict[str, frozenset[str]]:
        """Per Deployment of the config's targets, the racks its pods run on."""
        out: dict[str, frozenset[str]] = {}
        for target in self._workloads.resolve(config).targets:
            deployment = target_deployment(target)
            if deployment is None:
                continue
            label = config.placement.rack_label_key
            racks = {self._rack_of(node, label) for node in target.pod_nodes if node}
            out[deployment] = out.get(deployment, frozenset()) | {r for r in racks if r}
        return out

    def _rack_of(self, node_name: str, label: str) -> str | None:
        node = self._nodes.store.get(node_name)
        if node is None:
            return None
        rack = labels_of(node).get(label)
        return rack if isinstance(rack, str) else None

    async def _act(
        self,
        config: PowerCappingConfig,
        obj: FrozenMapping,
        vpa: JsonObject,
        hot: Sequence[str],
    ) -> bool:
        """Hold or release one VPA; whether the config holds it afterwards."""
        meta = ObjectMeta.of(vpa)
        name = meta.name
        if name is None:
            return False
        held_by = _held_by(vpa)
        mode = update_mode(vpa)
        if _to_hold(vpa, hot):
            await self._client.merge_patch(
                VERTICAL_POD_AUTOSCALERS, name, hold_patch(vpa, config.key), config.namespace
            )
            message = (
                f"updateMode {mode} -> {HOLD_MODE}: racks {', '.join(hot)} are at or near "
                f"their limits in {config.key}; no pod is evicted until they cool"
            )
            log.info("vpa_evictions_held", vpa=name, racks=list(hot), user_mode=mode)
            await self._events.record(vpa, "Normal", "EvictionsHeld", message)
            await self._events.record(obj, "Normal", "VpaEvictionsHeld", f"{name}: {message}")
            return True
        if held_by != config.key:
            return False
        if not hot or mode != HOLD_MODE:
            why = "its racks are below their limits" if not hot else ""
            await self._release(vpa, name, config.namespace, why, obj)
            return False
        return True

    async def _release(
        self,
        vpa: JsonObject,
        name: str,
        namespace: str,
        why: str,
        config_obj: FrozenMapping | None,
    ) -> None:
        """Give the user's mode back (`why` says why; empty: the user changed it meanwhile)."""
        mode = update_mode(vpa)
        patch = release_patch(vpa)
        await self._client.merge_patch(VERTICAL_POD_AUTOSCALERS, name, patch, namespace)
        restored = child(child(patch, "spec"), "updatePolicy").get("updateMode", mode)
        message = (
            f"updateMode {restored} restored: {why}"
            if why
            else f"updateMode {mode} was changed during the hold and is kept"
        )
        log.info("vpa_evictions_released", vpa=name, update_mode=restored)
        await self._events.record(vpa, "Normal", "EvictionsReleased", message)
        if config_obj is not None:
            await self._events.record(
                config_obj, "Normal", "VpaEvictionsReleased", f"{name}: {message}"
            )

    async def _release_all(self, key: str, vpas: Sequence[JsonObject] | None = None) -> None:
        """Give back every VPA of the config's namespace that the (deleted) config holds:
        among `vpas`, or the cached ones."""
        namespace = key.partition("/")[0]
        if vpas is None:
            vpas = self._vpas.store.by_index(NAMESPACE_INDEX, namespace)
        for vpa in vpas:
            name = ObjectMeta.of(vpa).name
            if name is not None and _held_by(vpa) == key:
                await self._release(vpa, name, namespace, f"{key} was deleted", None)

    async def _finalize(self, key: str, obj: FrozenMapping) -> Result:
        """A config being deleted gives back every VPA it holds, then lets the deletion finish.

        The VPAs are listed from the API server, not the cache: a hold written just before the
        deletion may not be cached yet, and the finalizer is the last chance to give it back."""
        namespace = key.partition("/")[0]
        try:
            listed = await self._client.list(VERTICAL_POD_AUTOSCALERS, namespace)
            await self._release_all(key, list(objects(listed, "items")))
        except ApiError as error:
            if not (error.is_conflict or error.is_not_found):
                raise
            return Result(requeue_after=CONFLICT_RETRY_S)
        if await self._set_finalizer(obj, present=False) is None:
            return Result(requeue_after=CONFLICT_RETRY_S)
        self._forget(key)
        return Result()

    async def _set_finalizer(self, obj: FrozenMapping, *, present: bool) -> JsonObject | None:
        """Add or drop `vpa-give-back` on the config: the object as written (or unchanged), or
        None when the config changed since it was read (409: decide again on fresh state). The
        list is replaced whole, conditional on the resourceVersion, so another finalizer added
        meanwhile is never lost."""
        finalizers = list(ObjectMeta.of(obj).finalizers)
        if (VPA_GIVE_BACK_FINALIZER in finalizers) == present:
            return obj
        wanted = (
            [*finalizers, VPA_GIVE_BACK_FINALIZER]
            if present
            else [f for f in finalizers if f != VPA_GIVE_BACK_FINALIZER]
        )
        namespace, name = split_key(object_key(obj))
        metadata: JsonDict = {
            "finalizers": wanted,
            "resourceVersion": ObjectMeta.of(obj).resource_version,
        }
        try:
            return await self._client.merge_patch(
                POWER_CAPPING_CONFIGS, name, {"metadata": metadata}, namespace
            )
        except ApiError as error:
            if error.is_not_found and not present:
                return obj  # gone: nothing left to guard
            if not error.is_conflict:
                raise
            return None

    async def _apply_sizes(
        self,
        config: PowerCappingConfig,
        obj: FrozenMapping,
        status: PowerCappingConfigStatus | None,
        sizes: Sequence[ReplicaSizeStatus],
        held_racks: frozenset[str],
    ) -> None:
        """Roll opted-in Deployments and InferenceServices to a recommendation that has held
        `STABLE_ROUNDS` rounds, only while the config is under its cap, none of its racks is
        held and its apply window (if any) is open."""
        steady = self._steady.setdefault(config.key, {})
        targets = {t.name: t for t in self._workloads.resolve(config).targets}
        for entry in sizes:
            gpus = wanted(entry)
            previous = steady.get(entry.name)
            rounds = previous[1] + 1 if previous and gpus is not None and previous[0] == gpus else 1
            steady[entry.name] = (gpus or 0, rounds)
            target = targets.get(entry.name)
            if gpus is None or rounds < STABLE_ROUNDS or target is None:
                continue
            if held_racks or not under_cap(status):
                continue
            rolled = self._rollable(config, target)
            if rolled is None:
                continue
            resource, name = rolled
            window = config.replica_sizing.apply_window
            if window is not None and not window.contains(self._clock()):
                message = (
                    f"{name}: the roll to {gpus} GPUs per replica waits for the apply window "
                    f"{window.describe()}"
                )
                await self._note_once(
                    config,
                    obj,
                    (resource.plural, name),
                    event_type="Normal",
                    reason="GpusPerReplicaWaiting",
                    message=message,
                )
                continue
            await self._roll(
                config, obj, resource=resource, name=name, current=entry.current_gpus, gpus=gpus
            )

    def _rollable(
        self, config: PowerCappingConfig, target: ResolvedTarget
    ) -> tuple[Resource, str] | None:
        """The object a target is rolled through, if it opted in and was not rolled yet: its
        Deployment, or for KServe its InferenceService (whose predictor Deployment is KServe's)."""
        if target.kind is TargetKind.INFERENCE_SERVICE:
            resource, name = INFERENCE_SERVICES, target.name
            cached: JsonObject | None = target.obj
        else:
            deployment = target_deployment(target)
            if deployment is None:
                return None
            resource, name = DEPLOYMENTS, deployment
            cached = self._workloads.deployments.store.get(f"{config.namespace}/{deployment}")
        if cached is None or not opted_in(cached) or already_rolled(cached):
            return None
        return resource, name

    async def _note_once(
        self,
        config: PowerCappingConfig,
        obj: FrozenMapping,
        workload: tuple[str, str],
        *,
        event_type: str,
        reason: str,
        message: str,
    ) -> None:
        """An Event on the config for why a workload's roll does not happen, once per workload
        and message (a round every few seconds would repeat it)."""
        noted = self._noted.setdefault(config.key, {})
        if noted.get(workload) == message:
            return
        noted[workload] = message
        log.info(
            "gpus_per_replica_not_rolled", config=config.key, workload=workload[1], why=message
        )
        await self._events.record(obj, event_type, reason, message)

    async def _roll(
        self,
        config: PowerCappingConfig,
        obj: FrozenMapping,
        *,
        resource: Resource,
        name: str,
        current: int,
        gpus: int,
    ) -> None:
        isvc = resource is INFERENCE_SERVICES
        patch = inference_service_roll_patch if isvc else roll_patch
        workload = (resource.plural, name)
        try:
            rolled = await self._client.get(resource, name, config.namespace)
            if already_rolled(rolled):
                return
            problem = predictor_problem(rolled, gpus) if isvc else None
            if problem is not None:
                await self._note_once(
                    config,
                    obj,
                    workload,
                    event_type="Warning",
                    reason="GpusPerReplicaNotApplied",
                    message=f"{name}: {problem}",
                )
                return
            await self._client.merge_patch(
                resource, name, patch(rolled, current, gpus), config.namespace
            )
        except ApiError as exc:
            log.warning("gpus_per_replica_not_applied", workload=name, error=str(exc))
            if not exc.is_conflict:  # an object changed meanwhile is tried next round
                await self._events.record(
                    obj, "Warning", "GpusPerReplicaNotApplied", f"{name}: {exc}"
                )
            return
        self._noted.get(config.key, {}).pop(workload, None)
        message = f"rolled from {current} to {gpus} GPUs per replica (tensor-parallel size)"
        log.info("gpus_per_replica_applied", workload=name, previous=current, gpus=gpus)
        await self._events.record(rolled, "Normal", "GpusPerReplicaApplied", message)
        await self._events.record(obj, "Normal", "GpusPerReplicaApplied", f"{name}: {message}")

    async def _record_fragmentation(
        self, key: str, obj: FrozenMapping, sizes: Sequence[ReplicaSizeStatus]
    ) -> None:
        """An Event for each new fragmentation recommendation (not one every round)."""
        messages = frozenset(m for s in sizes if (m := fragmentation_message(s)) is not None)
        for message in sorted(messages - self._fragmented.get(key, frozenset())):
            log.info("replica_size_fragmented", config=key, message=message)
            await self._events.record(obj, "Warning", "GpusFragmented", message)
        self._fragmented[key] = messages

    async def _report(
        self,
        config: PowerCappingConfig,
        obj: FrozenMapping,
        held: Sequence[str],
        held_racks: frozenset[str],
        *,
        sizes: Sequence[ReplicaSizeStatus],
        footprints: Sequence[ReplicaFootprintStatus],
    ) -> None:
        if held:
            status, reason = ConditionStatus.TRUE, "RacksNearLimit"
            message = f"VPA evictions held for {', '.join(held)}"
        else:
            status, reason = ConditionStatus.FALSE, "RacksWithinLimits"
            message = (
                f"racks {', '.join(sorted(held_racks))} are near their limits; no VPA of a "
                "target evicts there"
                if held_racks
                else "no rack is near its limit"
            )
        now = self._clock()

        def desire(current: PowerCappingConfigStatus | None) -> PowerCappingConfigStatus:
            conditions = set_condition(
                current.conditions if current else None,
                type_=CONDITION,
                status=status,
                reason=reason,
                message=message,
                observed_generation=config.generation,
                now=now,
            )
            return with_fields(
                current,
                conditions=list(conditions),
                replica_sizes=list(sizes) or None,
                replica_footprints=list(footprints) or None,
            )

        await write_status(self._client, obj, desire, settled=True)
