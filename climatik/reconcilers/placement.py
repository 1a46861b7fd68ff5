"""The placement reconciler: per PowerCappingConfig, observe racks, score, act, report.

For one config (key `namespace/name`) every `interval_s`, and whenever the config changes, it:

1. finds the Deployments the config targets (through its ScaledObjects / InferenceServices, or
   `deploymentName` directly) and their pods;
2. observes the racks (`placement_racks`: nodes by rack label, rack signals, recirculation from
   the ConfigMap or estimated from history);
3. scores the racks per workload with the placement policy (`score_racks`, the smoothing term
   uses the workload's own power series);
4. acts, according to `spec.placement.mode`:
   - `Webhook` (default): publishes the preferred racks and the racks to avoid in the
     `PlacementSnapshot` that the admission webhook reads (new pods only, nothing restarts);
   - `Template` (opt-in): patches the Deployment's pod-template node affinity
     (`placement_template`), at most once per `template_min_interval_s` (each is a rollout);
   - in both modes keeps pod-deletion costs current (`placement_deletion_costs`); a namespace
     refusing the patch (403) leaves the rest of placement working, the condition names the
     RBAC fix, and one `DeletionCostForbidden` Warning per config says so;
   - with `spec.placement.migration.enabled`, moves at most one running replica per interval
     to a cooler rack by evicting it (`placement_migration`);
5. recommends supply-air setpoints per cooling group (zone, or rack) and, with
   `spec.cooling.mode: Webhook`, posts them to the cooling system (`DryRun` only reports);
6. reports (`placement_report`): the `RacksWithinLimits` condition, Events on transitions (a
   `RecirculationConfigInvalid` Warning once per distinct ConfigMap problem, also across
   restarts: not when the condition already names it), and the `climatik_rack_*` metrics.

Steps 1 to 3 and the snapshot need only reads, and everything after the snapshot runs only
while `may_write()` (by default the client's leadership gate) says this replica leads. The
manager runs reconcile workers on the leader only, so only the leader's webhook has scores: a
standby's webhook answers allowed and unplaced (docs/placement.md, Known limits).

`status.racks` is written by the power-cap reconciler; this one writes only its condition, with
the object's resourceVersion (`status_writer`: a lost race is recomputed on a fresh read), so
neither can silently drop the other's update.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import structlog

from climatik.api.status import (
    ConditionUpdate,
    condition_settled,
    peer_status,
    set_condition,
    status_from_wire,
)
from climatik.api.status_models import ConditionType, PowerCappingConfigStatus
from climatik.domain.config import CoolingMode, PlacementMode, PowerCappingConfig, TargetKind
from climatik.domain.placement import (
    InletReading,
    PlacementStrategy,
    PlacementWeights,
    PlaceObservation,
    PlaceScore,
    SupplySetpoint,
    SupplySettings,
)
from climatik.kube.cache import Cache, EventSink
from climatik.kube.client import KubeClient
from climatik.kube.json import JsonObject, ObjectMeta, child, labels_of, strings
from climatik.kube.resources import DEPLOYMENTS
from climatik.kube.store import FrozenMapping
from climatik.policies.observations import replica_added_watts
from climatik.policies.placement import (
    preferred_rack_weights,
    recommend_supply_setpoints,
    score_racks,
    score_scale_in,
)
from climatik.reconcilers.opening import ConfigOpening
from climatik.reconcilers.placement_deletion_costs import DeletionCosts
from climatik.reconcilers.placement_metrics import PlacementMetrics
from climatik.reconcilers.placement_migration import Migrations, MoveCandidate, is_ready
from climatik.reconcilers.placement_racks import RackObserver, RackView, RecirculationMemory, finite
from climatik.reconcilers.placement_report import (
    condition_names,
    rack_line,
    racks_condition,
    report_metrics,
)
from climatik.reconcilers.placement_template import TEMPLATE_RACKS_ANNOTATION, template_patch
from climatik.reconcilers.placement_webhook import PlacementSnapshot, WorkloadPlacement
from climatik.reconcilers.replica_footprint import fewest_seats
from climatik.reconcilers.result import Result
from climatik.reconcilers.settings import PlacementSettings
from climatik.reconcilers.status_writer import with_fields, write_status
from climatik.reconcilers.targets import NAMESPACE_INDEX, WorkloadCaches
from climatik.sources.cooling import CoolingController, CoolingError
from climatik.sources.racks import RackSignalSource

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Workload:
    """One Deployment a config places, with its pods and their nodes."""

    namespace: str
    deployment: str
    pods: tuple[JsonObject, ...]
    """The pods not being deleted: the ones placement and deletion costs act on."""
    terminating: tuple[JsonObject, ...] = ()
    """Pods being deleted: they still draw power while they drain, so they count in its share."""
    targets: tuple[str, ...] = ()
    """The config's targets (by name) whose workload this is: their footprints' seats count."""


@dataclass
class _Memory:
    """What the reconciler remembers about one config between reconciles."""

    over_limit: frozenset[str] = frozenset()
    last_cooling: str = ""
    template_changed_at: dict[str, float] = field(default_factory=dict)
    status_written_s: float | None = None
    """When the condition was last written unsettled (see `status_refresh_s`)."""
    recirculation: RecirculationMemory = field(default_factory=RecirculationMemory)
    reported_recirculation_problem: str = ""
    """The problem last sent as an Event: a Warning goes out only when the text changes."""
    reported_deletion_cost_problem: str = ""
    """The deletion-cost problem last sent as an Event (one Warning per distinct text)."""


def _always() -> bool:
    return True


def _running(pod: JsonObject) -> bool:
    """A pod that draws power: phase Running, terminating or not (it draws while it drains)."""
    return child(pod, "status").get("phase") == "Running"


class PlacementReconciler:
    """Reconciles one PowerCappingConfig key for rack placement and cooling."""

    def __init__(
        self,
        client: KubeClient,
        *,
        configs: Cache[FrozenMapping],
        workloads: WorkloadCaches,
        nodes: Cache[FrozenMapping],
        recirculation_maps: Cache[FrozenMapping],
        signal_source: Callable[[PowerCappingConfig], Awaitable[RackSignalSource]],
        cooling: Callable[[PowerCappingConfig], Awaitable[CoolingController]],
        snapshot: PlacementSnapshot,
        events: EventSink,
        metrics: PlacementMetrics,
        settings: PlacementSettings | None = None,
        weights: PlacementWeights | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        may_write: Callable[[], bool] | None = None,
        vpa_footprints: bool = True,
    ) -> None:
        self._client = client
        # The VPA-hold controller writes `status.replicaFootprints`; with it off they are stale.
        self._vpa_footprints = vpa_footprints
        # Defaults to the client's leadership gate, so the same reconciler may run on standbys.
        gate: Callable[[], bool] = getattr(client, "write_gate", _always)
        self._may_write = may_write if may_write is not None else gate
        self._configs = configs
        self._caches = workloads
        self._deployments = workloads.deployments
        self._pods = workloads.pods
        self._signal_source = signal_source
        self._cooling = cooling
        self.snapshot = snapshot
        self._events = events
        self._metrics = metrics
        self._settings = settings or PlacementSettings()
        self._weights = weights or PlacementWeights()
        self._clock = clock
        self._wall_clock = wall_clock
        self._memory: dict[str, _Memory] = {}
        self._workloads_kept: dict[
            str, tuple[tuple[PowerCappingConfig, tuple[int, ...]], list[Workload]]
        ] = {}
        self._rack_observer = RackObserver(
            nodes=nodes,
            recirculation_maps=recirculation_maps,
            settings=self._settings,
            clock=clock,
        )
        self._deletion_costs = DeletionCosts(
            client, metrics, retry_s=self._settings.deletion_cost_retry_s, clock=clock
        )
        self._migrations = Migrations(client, events, metrics, clock=clock)
        # The power-cap reconciler reports an invalid spec; placement stands aside.
        self._opening = ConfigOpening(configs, forget=self._forget)

    # -- the loop -------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> Result:
        opened = await self._opening.open(key)
        if isinstance(opened, Result):
            return opened
        obj, config = opened.obj, opened.config
        if (
            config.placement.mode is PlacementMode.DISABLED
            and config.cooling.mode is CoolingMode.DISABLED
        ):
            self._forget(key)
            return Result()
        memory = self._memory.setdefault(key, _Memory())

        source = await self._signal_source(config)
        racks = await self._rack_observer.observe(config, source, memory.recirculation)
        workloads = self._workloads(config)
        scored: dict[tuple[str, str], tuple[PlaceScore, ...]] = {}
        keep: dict[tuple[str, str], tuple[PlaceScore, ...]] = {}
        moves: list[MoveCandidate] = []
        observations = [r.observation for r in racks]
        rack_of_node = {node: r.rack_id for r in racks for node in r.nodes}
        footprints = peer_status(obj).replica_footprints if self._vpa_footprints else None
        for workload in workloads:
            every_pod = (*workload.pods, *workload.terminating)
            pod_names = [str(ObjectMeta.of(p).name) for p in every_pod]
            series = await source.service_power_series(workload.namespace, pod_names)
            # The series sums the power of these pods; the running ones (draining or not) draw it.
            replica_w = replica_added_watts(
                finite(series[-1]) if series else None, sum(1 for p in every_pod if _running(p))
            )
            key_w = (workload.namespace, workload.deployment)
            # A rack without a seat for one replica of VPA's footprint ranks last, unpreferred.
            seats = fewest_seats(footprints, workload.targets)
            seated = {o.place_id: replace(o, seats=seats.get(o.place_id)) for o in observations}
            scored[key_w] = score_racks(
                list(seated.values()),
                PlacementStrategy.CLIMATIK,
                self._weights,
                service_series_w=series or None,
                added_watts=replica_w,
            )
            if config.placement.migration is not None:
                moves.append(
                    _move_candidate(workload, scored[key_w], seated, rack_of_node, replica_w)
                )
            # Scale-in: the same prediction the other way round (the twin uses this rule too).
            keep[key_w] = score_scale_in(
                observations, replica_w, weights=self._weights, service_series_w=series or None
            )
        # Rack-level view (no service): what status, metrics and cooling report.
        rack_scores = score_racks([r.observation for r in racks], weights=self._weights)

        self._publish(config, workloads, scored)
        if not self._may_write():
            # A standby: its admission webhook needs the scores too (the Service sends it
            # requests), but only the leader writes to the cluster or the cooling system.
            return Result(requeue_after=self._settings.interval_s)
        await self._report_recirculation(obj, memory)
        if config.placement.mode is not PlacementMode.DISABLED:
            await self._keep_deletion_costs(config, workloads, keep, rack_of_node)
            if config.placement.migration is None:
                self._migrations.forget(key)
            else:
                await self._migrations.maybe_move(
                    obj,
                    key,
                    config.placement.migration,
                    moves,
                    {o.place_id: o for o in observations},
                )
        await self._report_deletion_costs(obj, config, memory)
        if config.placement.mode is PlacementMode.TEMPLATE:
            await self._templates(config, workloads, scored, memory)
        setpoints = await self._cool(obj, config, racks, memory)
        report_metrics(
            self._metrics,
            config,
            racks,
            rack_scores,
            setpoints,
            recirculation_ok=not memory.recirculation.problem,
            deletion_costs_allowed=(
                None
                if config.placement.mode is PlacementMode.DISABLED
                else not self._deletion_costs.problem(config)
            ),
        )
        await self._report_status(obj, config, racks, rack_scores, memory)
        return Result(requeue_after=self._settings.interval_s)

    def _forget(self, key: str) -> None:
        self.snapshot.remove(key)
        self._memory.pop(key, None)
        self._metrics.forget_config(key)
        self._migrations.forget(key)
        self._caches.forget(key)
        self._workloads_kept.pop(key, None)

    # -- reading --------------------------------------------------------------------------------

    def _workloads(self, config: PowerCappingConfig) -> list[Workload]:
        """The config's workloads and their pods, kept while its namespace is unchanged."""
        stamp = (config, self._caches.namespace_version(config.namespace))
        kept = self._workloads_kept.get(config.key)
        if kept is not None and kept[0] == stamp:
            return kept[1]
        workloads = self._find_workloads(config)
        self._workloads_kept[config.key] = (stamp, workloads)
        return workloads

    def _find_workloads(self, config: PowerCappingConfig) -> list[Workload]:
        namespace = config.namespace
        resolution = self._caches.resolve(config)
        names: dict[str, tuple[str, ...]] = {}
        for target in resolution.targets:
            if target.kind is TargetKind.INFERENCE_SERVICE:
                name = f"{target.name}-predictor"
            else:
                ref = child(child(target.obj, "spec"), "scaleTargetRef")
                if ref.get("kind", "Deployment") != "Deployment" or not ref.get("name"):
                    continue
                name = str(ref["name"])
            names[name] = (*names.get(name, ()), target.name)
        if config.deployment_name:
            names.setdefault(config.deployment_name, ())
        out: list[Workload] = []
        for name, targets in names.items():
            deployment = self._deployments.store.get(f"{namespace}/{name}")
            if deployment is None:
                continue
            selector = child(child(deployment, "spec"), "selector")
            match_labels = child(selector, "matchLabels")
            if not match_labels:
                continue
            matching = [
                p
                for p in self._pods.store.by_index(NAMESPACE_INDEX, namespace)
                if all(labels_of(p).get(k) == v for k, v in match_labels.items())
            ]
            pods = tuple(p for p in matching if not ObjectMeta.of(p).deletion_timestamp)
            terminating = tuple(p for p in matching if ObjectMeta.of(p).deletion_timestamp)
            out.append(Workload(namespace, name, pods, terminating, targets))
        return out

    # -- acting ---------------------------------------------------------------------------------

    def _publish(
        self,
        config: PowerCappingConfig,
        workloads: Sequence[Workload],
        scored: Mapping[tuple[str, str], tuple[PlaceScore, ...]],
    ) -> None:
        if config.placement.mode is not PlacementMode.WEBHOOK:
            self.snapshot.remove(config.key)
            return
        now = self._clock()
        placements = []
        for w in workloads:
            scores = scored[(w.namespace, w.deployment)]
            placements.append(
                WorkloadPlacement(
                    config_key=config.key,
                    namespace=w.namespace,
                    deployment=w.deployment,
                    rack_label_key=config.placement.rack_label_key,
                    preferred=preferred_rack_weights(scores, self._settings.max_preferred_racks),
                    excluded=_excluded(config, scores),
                    computed_at_s=now,
                    seatless=tuple(sorted(s.place_id for s in scores if not s.seated)),
                )
            )
        self.snapshot.update(config.key, placements)

    async def _keep_deletion_costs(
        self,
        config: PowerCappingConfig,
        workloads: Sequence[Workload],
        scored: Mapping[tuple[str, str], tuple[PlaceScore, ...]],
        rack_of_node: Mapping[str, str],
    ) -> None:
        for w in workloads:
            await self._deletion_costs.apply(
                config.key, w.namespace, w.pods, scored[(w.namespace, w.deployment)], rack_of_node
            )

    async def _report_deletion_costs(
        self, obj: JsonObject, config: PowerCappingConfig, memory: _Memory
    ) -> None:
        """One Warning per config while its namespace refuses deletion-cost patches (not one
        per reconcile, and not again after a restart whose condition already names it)."""
        problem = self._deletion_costs.problem(config)
        if problem == memory.reported_deletion_cost_problem:
            return
        if problem and not condition_names(obj, problem):
            await self._events.record(obj, "Warning", "DeletionCostForbidden", problem)
        memory.reported_deletion_cost_problem = problem

    async def _templates(
        self,
        config: PowerCappingConfig,
        workloads: Sequence[Workload],
        scored: Mapping[tuple[str, str], tuple[PlaceScore, ...]],
        memory: _Memory,
    ) -> None:
        for w in workloads:
            deployment = self._deployments.store.get(f"{w.namespace}/{w.deployment}")
            if deployment is None:
                continue
            scores = scored[(w.namespace, w.deployment)]
            patch = template_patch(deployment, config.placement.rack_label_key, scores)
            if patch is None:
                continue
            last = memory.template_changed_at.get(w.deployment)
            now = self._clock()
            if last is not None and now - last < self._settings.template_min_interval_s:
                continue
            await self._client.merge_patch(DEPLOYMENTS, w.deployment, patch, w.namespace)
            memory.template_changed_at[w.deployment] = now
            self._metrics.template_patches.labels(config.key).inc()
            note = strings(child(patch, "metadata"), "annotations")[TEMPLATE_RACKS_ANNOTATION]
            log.info("template_affinity_applied", deployment=f"{w.namespace}/{w.deployment}")
            await self._events.record(
                deployment,
                "Normal",
                "TemplateAffinityUpdated",
                f"PowerCappingConfig {config.key} set the pod template's rack affinity ({note}); "
                "this rolls the Deployment out",
            )

    async def _cool(
        self,
        obj: JsonObject,
        config: PowerCappingConfig,
        racks: Sequence[RackView],
        memory: _Memory,
    ) -> tuple[SupplySetpoint, ...]:
        if config.cooling.mode is CoolingMode.DISABLED:
            return ()
        readings = [
            InletReading(
                place_id=r.rack_id,
                inlet_c=r.observation.inlet_c,
                group=r.zone,
                supply_c=r.observation.supply_c,
                it_watts=r.observation.watts,
            )
            for r in racks
            if r.observation.inlet_c is not None
        ]
        setpoints = recommend_supply_setpoints(
            readings,
            SupplySettings(
                redline_c=config.cooling.redline_celsius,
                guard_c=self._settings.supply_guard_c,
                min_supply_c=self._settings.min_supply_c,
                max_supply_c=self._settings.max_supply_c,
                max_step_c=self._settings.max_supply_step_c,
            ),
        )
        if not setpoints:
            return ()
        summary = "; ".join(
            f"{s.group}: {s.change_c:+.1f} °C"
            + (f" to {s.supply_c:.1f} °C" if s.supply_c is not None else "")
            + f" (hottest {s.hottest_place_id} {s.hottest_inlet_c:.1f} °C)"
            for s in setpoints
        )
        if config.cooling.mode is CoolingMode.WEBHOOK:
            controller = await self._cooling(config)
            try:
                outcome = await controller.apply(config.key, setpoints)
            except CoolingError as error:
                self._metrics.cooling_posts.labels(config.key, "error").inc()
                await self._events.record(obj, "Warning", "CoolingWebhookFailed", str(error))
                return setpoints
            self._metrics.cooling_posts.labels(config.key, "sent").inc()
            if summary != memory.last_cooling:
                await self._events.record(
                    obj, "Normal", "CoolingSetpointsSent", f"{summary} ({outcome.detail})"
                )
        elif summary != memory.last_cooling:
            await self._events.record(
                obj, "Normal", "CoolingRecommendation", f"dry run, not sent: {summary}"
            )
        memory.last_cooling = summary
        return setpoints

    # -- reporting ------------------------------------------------------------------------------

    async def _report_recirculation(self, obj: JsonObject, memory: _Memory) -> None:
        """A Warning Event when the ConfigMap's problem changes (once per text, not per round).

        What was reported lives in memory, lost on a restart or a failover; the condition this
        reconciler writes holds the problem too, so a problem it already names was told."""
        problem = memory.recirculation.problem
        if problem == memory.reported_recirculation_problem:
            return
        if problem and not condition_names(obj, problem):
            await self._events.record(obj, "Warning", "RecirculationConfigInvalid", problem)
        memory.reported_recirculation_problem = problem

    async def _report_status(
        self,
        obj: JsonObject,
        config: PowerCappingConfig,
        racks: Sequence[RackView],
        rack_scores: Sequence[PlaceScore],
        memory: _Memory,
    ) -> None:
        """Write the RacksWithinLimits condition (a lost race is retried on a fresh read)."""
        by_id = {r.rack_id: r for r in racks}
        problems = (
            self._deletion_costs.problem(config),
            self._migrations.problem(config.key, config.namespace)
            if config.placement.migration is not None
            else "",
            memory.recirculation.problem,
        )
        problem = ". ".join(n for n in problems if n)
        condition = racks_condition(config, racks, rack_scores, problem)
        over = condition.over
        for rack in sorted(over - memory.over_limit):
            await self._events.record(
                obj,
                "Warning",
                "RackOverLimit",
                f"rack {rack} is at or over its limit: {rack_line(by_id[rack], None)}; new "
                "replicas are steered away and its replicas are removed first on scale-in",
            )
        memory.over_limit = over
        now = self._wall_clock()

        def desire(current: PowerCappingConfigStatus | None) -> PowerCappingConfigStatus:
            conditions = set_condition(
                current.conditions if current else None,
                type_=str(ConditionType.RACKS_WITHIN_LIMITS),
                status=condition.status,
                reason=condition.reason,
                message=condition.message,
                observed_generation=config.generation,
                now=now,
            )
            return with_fields(current, conditions=list(conditions))

        now_s = self._clock()
        refresh = (
            memory.status_written_s is None
            or now_s - memory.status_written_s >= self._settings.status_refresh_s
        )
        if not refresh:
            update = ConditionUpdate(
                str(ConditionType.RACKS_WITHIN_LIMITS),
                condition.status,
                condition.reason,
                condition.message,
            )
            current = status_from_wire(obj)
            conditions = current.conditions if current else None
            if condition_settled(conditions, update, config.generation):
                return  # what write_status would find: nothing to send
        if await write_status(self._client, obj, desire, settled=not refresh) and refresh:
            memory.status_written_s = now_s


def _move_candidate(
    workload: Workload,
    scores: Sequence[PlaceScore],
    seated: Mapping[str, PlaceObservation],
    rack_of_node: Mapping[str, str],
    replica_w: float | None,
) -> MoveCandidate:
    """The workload as migration sees it: its ready pods by rack and where a new one goes."""
    serving = [pod for pod in workload.pods if is_ready(pod)]
    ready: dict[str, list[str]] = {}
    for pod in serving:
        rack = rack_of_node.get(str(child(pod, "spec").get("nodeName") or ""))
        if rack is not None:
            ready.setdefault(rack, []).append(str(ObjectMeta.of(pod).name))
    top = next((s for s in scores if s.admissible and s.seated), None)
    return MoveCandidate(
        namespace=workload.namespace,
        deployment=workload.deployment,
        ready_pods={rack: tuple(sorted(names)) for rack, names in ready.items()},
        settled=not workload.terminating and len(serving) == len(workload.pods),
        target=None if top is None else seated[top.place_id],
        replica_watts=replica_w,
    )


def _excluded(config: PowerCappingConfig, scores: Sequence[PlaceScore]) -> tuple[str, ...]:
    """Racks to refuse; never all of them (placement must not make pods unschedulable)."""
    if not config.placement.exclude_over_limit_racks:
        return ()
    over = tuple(sorted(s.place_id for s in scores if not s.admissible))
    if len(over) == len(scores):
        return ()
    return over
