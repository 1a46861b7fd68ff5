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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

import structlog

from climatik.api.status import set_condition, status_from_wire
from climatik.api.status_models import (
    ConditionStatus,
    PowerCappingConfigStatus,
    ReplicaSizeStatus,
)
from climatik.domain.config import PowerCappingConfig, TargetKind
from climatik.kube.cache import Cache, EventSink
from climatik.kube.client import ApiError, KubeClient
from climatik.kube.json import JsonDict, JsonObject, ObjectMeta, child, labels_of, strings, text
from climatik.kube.resources import DEPLOYMENTS, VERTICAL_POD_AUTOSCALERS
from climatik.kube.store import FrozenMapping
from climatik.policies.vpa_hold import HoldThresholds, RackReading, racks_to_hold
from climatik.reconcilers.opening import ConfigOpening
from climatik.reconcilers.replica_size import fragmentation_message, replica_sizes
from climatik.reconcilers.replica_size_apply import (
    STABLE_ROUNDS,
    already_rolled,
    opted_in,
    roll_patch,
    under_cap,
    wanted,
)
from climatik.reconcilers.resources import VPA_HELD_BY_ANNOTATION, VPA_USER_MODE_ANNOTATION
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
        self._configs = configs
        self._opening = ConfigOpening(configs, forget=self._forget)

    def _forget(self, key: str) -> None:
        self._held_racks.pop(key, None)
        self._fragmented.pop(key, None)
        self._steady.pop(key, None)

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
        held: list[str] = []
        for vpa in self._vpas.store.by_index(NAMESPACE_INDEX, config.namespace):
            deployment = vpa_deployment(vpa)
            if deployment is not None and deployment in racks_by_deployment:
                hot = sorted(racks_by_deployment[deployment] & held_racks)
            elif _held_by(vpa) == key:
                hot = []  # no longer one of the config's targets: give its mode back
            else:
                continue
            if hot:
                held.append(f"{ObjectMeta.of(vpa).name} (racks {', '.join(hot)})")
            await self._act(config, obj, vpa, hot)
        sizes = replica_sizes(
            self._workloads.resolve(config).targets,
            status,
            pods=self._workloads.pods,
            nodes=self._nodes,
        )
        await self._record_fragmentation(key, obj, sizes)
        await self._apply_sizes(config, obj, status, sizes, held_racks)
        await self._report(config, obj, held, held_racks, sizes)
        return Result(requeue_after=self._settings.interval_s)

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
    ) -> None:
        meta = ObjectMeta.of(vpa)
        name = meta.name
        if name is None:
            return
        held_by = _held_by(vpa)
        mode = update_mode(vpa)
        if hot and held_by is None and mode in EVICTING_MODES:
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
        elif held_by == config.key and (not hot or mode != HOLD_MODE):
            why = "its racks are below their limits" if not hot else ""
            await self._release(vpa, name, config.namespace, why, obj)

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

    async def _release_all(self, key: str) -> None:
        """Give back every VPA of the config's namespace that the (deleted) config holds."""
        namespace = key.partition("/")[0]
        for vpa in self._vpas.store.by_index(NAMESPACE_INDEX, namespace):
            name = ObjectMeta.of(vpa).name
            if name is not None and _held_by(vpa) == key:
                await self._release(vpa, name, namespace, f"{key} was deleted", None)

    async def _apply_sizes(
        self,
        config: PowerCappingConfig,
        obj: FrozenMapping,
        status: PowerCappingConfigStatus | None,
        sizes: Sequence[ReplicaSizeStatus],
        held_racks: frozenset[str],
    ) -> None:
        """Roll opted-in Deployments to a recommendation that has held `STABLE_ROUNDS` rounds,
        only while the config is under its cap and none of its racks is held."""
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
            if target.kind is TargetKind.INFERENCE_SERVICE or held_racks or not under_cap(status):
                continue
            name = target_deployment(target)
            cached = (
                self._workloads.deployments.store.get(f"{config.namespace}/{name}")
                if name
                else None
            )
            if name is None or cached is None or not opted_in(cached) or already_rolled(cached):
                continue
            await self._roll(config, obj, name, entry.current_gpus, gpus)

    async def _roll(
        self, config: PowerCappingConfig, obj: FrozenMapping, name: str, current: int, gpus: int
    ) -> None:
        try:
            deployment = await self._client.get(DEPLOYMENTS, name, config.namespace)
            if already_rolled(deployment):
                return
            await self._client.merge_patch(
                DEPLOYMENTS, name, roll_patch(deployment, current, gpus), config.namespace
            )
        except ApiError as exc:
            log.warning("gpus_per_replica_not_applied", deployment=name, error=str(exc))
            if not exc.is_conflict:  # a Deployment changed meanwhile is tried next round
                await self._events.record(
                    obj, "Warning", "GpusPerReplicaNotApplied", f"{name}: {exc}"
                )
            return
        message = f"rolled from {current} to {gpus} GPUs per replica (tensor-parallel size)"
        log.info("gpus_per_replica_applied", deployment=name, previous=current, gpus=gpus)
        await self._events.record(deployment, "Normal", "GpusPerReplicaApplied", message)
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
        sizes: Sequence[ReplicaSizeStatus],
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
                current, conditions=list(conditions), replica_sizes=list(sizes) or None
            )

        await write_status(self._client, obj, desire, settled=True)
