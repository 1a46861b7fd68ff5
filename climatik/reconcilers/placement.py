"""The placement reconciler: rack scores, webhook snapshot, deletion costs, template, cooling.

For one PowerCappingConfig (key `namespace/name`) every `interval_s`, and whenever the config
changes, it:

1. finds the Deployments the config targets (through its ScaledObjects / InferenceServices, or
   `deploymentName` directly) and their pods, and the racks from the nodes' rack label;
2. reads rack signals (power, inlet, supply air, power history) from a `RackSignalSource`, and
   the racks' heat recirculation factors from a ConfigMap (or, lacking one, estimates them from
   the history it has seen, by least squares);
3. scores the racks per workload with the placement policy (`score_racks`, the smoothing term
   uses the workload's own power series);
4. acts, according to `spec.placement.mode`:
   - `Webhook` (default): publishes the preferred racks and the racks to avoid in the
     `PlacementSnapshot` that the admission webhook reads (new pods only, nothing restarts);
   - `Template` (opt-in): patches the Deployment's pod-template node affinity, the design
     document's §10.5 literally: required `In` the admissible racks, preferred the best one.
     Every change is a rollout of the whole Deployment, so it changes only when the set of
     admissible racks or the best rack changes, and at most once per `template_min_interval_s`.
     The user's own node affinity is remembered in an annotation and kept in every patch;
   - in both modes keeps `controller.kubernetes.io/pod-deletion-cost` current on the managed
     pods (lower on hotter / fuller racks, so the ReplicaSet removes those replicas first);
     a pod is patched only when its value changes. `patch` on pods is granted per namespace
     (docs/security.md), so a 403 is an expected answer, not a failure: the rest of placement
     goes on, the condition names the RBAC fix, one `DeletionCostForbidden` Warning per
     config, `climatik_placement_deletion_costs_allowed` drops to 0, and that namespace is not
     tried again for `deletion_cost_retry_s`;
5. recommends supply-air setpoints per cooling group (zone, or rack) and, with
   `spec.cooling.mode: Webhook`, posts them to the cooling system (`DryRun` only reports);
6. reports: the `RacksWithinLimits` condition (with per-rack score, power, inlet and headroom in
   its message), Events on transitions, and the `climatik_rack_*` metrics. The recirculation
   ConfigMap comes from an informer's cache (one name, every namespace); parts of it that
   cannot be used are named in that
   condition and in a `RecirculationConfigInvalid` Warning (once per distinct problem, also
   across restarts: not when the condition already names it); the bad part is ignored and those
   racks fall back to the estimate from history. The ConfigMap is untrusted input: its parse
   never raises, runs off the event loop, and costs time linear in its capped size.

Steps 1 to 3 and the snapshot need only reads, and everything after the snapshot runs only
while `may_write()` (by default the client's leadership gate) says this replica leads. The
manager runs reconcile workers on the leader only, so only the leader's webhook has scores: a
standby's webhook answers allowed and unplaced (docs/placement.md, Known limits).

`status.racks` is written by the power-cap reconciler; this one writes only its condition, with
the object's resourceVersion, so neither can silently drop the other's update.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Hashable,
    Mapping,
    Sequence,
    Sized,
)
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import aiohttp
import structlog
import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from climatik.api.convert import InvalidConfigError, config_from_object
from climatik.api.models import ConditionStatus, ConditionType, PowerCappingConfigStatus
from climatik.api.status import find_condition, set_condition, status_from_wire, status_patch
from climatik.domain.config import CoolingMode, PlacementMode, PowerCappingConfig, TargetKind
from climatik.domain.placement import (
    InletReading,
    PlacementStrategy,
    PlacementWeights,
    PlaceObservation,
    PlaceScore,
    RecirculationEstimate,
    SupplySetpoint,
    SupplySettings,
)
from climatik.kube.client import DEPLOYMENTS, PODS, ApiError, KubeClient
from climatik.kube.store import thaw
from climatik.policies.observations import (
    HEAT_HISTORY_SAMPLES,
    PlaceReading,
    group_nodes_by_rack,
    heat_coefficients,
    observe_places,
    recirculation_from_history,
    refit_due,
    replica_added_watts,
    zone_watts,
)
from climatik.policies.placement import (
    order_pods_for_scale_in,
    preferred_rack_weights,
    recommend_supply_setpoints,
    score_racks,
    score_scale_in,
)
from climatik.reconcilers.placement_metrics import PlacementMetrics
from climatik.reconcilers.placement_webhook import PlacementSnapshot, WorkloadPlacement
from climatik.reconcilers.resources import POWER_CAPPING_CONFIGS
from climatik.reconcilers.result import Result
from climatik.reconcilers.targets import NAMESPACE_INDEX, WorkloadCaches
from climatik.sources.address import AddressPolicy
from climatik.sources.cooling import (
    CoolingController,
    CoolingError,
    DryRunCoolingController,
    HttpCoolingController,
)
from climatik.sources.power import power_query_config_for
from climatik.sources.prometheus import PrometheusSettings
from climatik.sources.prometheus_pool import PrometheusPool
from climatik.sources.promql import QueryTemplateError
from climatik.sources.racks import (
    PrometheusRackSignalSource,
    RackNodes,
    RackSignalQueries,
    RackSignals,
    RackSignalSource,
    StaticRackSignalSource,
    rack_queries_for,
)

log = structlog.get_logger(__name__)

DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
HTTP_FORBIDDEN = 403
ORIGINAL_AFFINITY_ANNOTATION = "climatik-project.ai/original-node-affinity"
"""The user's own node affinity of a Deployment, kept while Template mode owns the template."""
TEMPLATE_RACKS_ANNOTATION = "climatik-project.ai/placement-racks"
"""What Template mode last wrote, in words, and when it may next change."""
RECIRCULATION_KEY = "racks.yaml"

Obj = Mapping[str, Any]


class PlacementSettings(BaseSettings):
    """Controller-wide settings of rack placement (prefix `CLIMATIK_PLACEMENT__`)."""

    model_config = SettingsConfigDict(env_prefix="CLIMATIK_PLACEMENT__", extra="ignore")

    interval_s: float = Field(default=30.0, gt=0)
    status_refresh_s: float = Field(default=300.0, gt=0)
    """Rack readings in the condition message that moved by less than 5 % are written at most
    this often; a new status, reason, rack over its limit or problem at once."""
    """How often racks are re-read and re-scored, besides reacting to changes."""
    workers: int = Field(default=2, ge=1)
    """Configs of the placement controller reconciled at once (never one config twice)."""
    reconcile_timeout_s: float = Field(default=60.0, gt=0)
    """A placement reconcile still running after this is cancelled and retried with backoff.
    Longer than power capping's: it asks for each workload's power history in turn."""
    zone_label_key: str = "climatik-project.ai/zone"
    """Node label naming the cooling zone; without it a rack is its own zone."""
    recirculation_config_map: str = "climatik-recirculation"
    """ConfigMap (in the config's namespace) with `racks.yaml`: per rack
    `recirculationCPerKw`, optionally `zone` and `inletRiseCPerKw` (the rack's column of the heat
    matrix: per inlet rack, °C of rise per kW dissipated in this rack)."""
    snapshot_max_age_s: float = Field(default=300.0, gt=0)
    """The webhook ignores scores older than this (the reconciler has stalled)."""
    max_preferred_racks: int = Field(default=10, ge=1, le=100)
    template_min_interval_s: float = Field(default=600.0, ge=0)
    """Least time between two Template-mode patches of one Deployment (each is a rollout)."""
    history_samples: int = Field(default=HEAT_HISTORY_SAMPLES, ge=0)
    """Rack readings kept per config for estimating recirculation (0 disables the estimate)."""
    prometheus_address: str | None = None
    """Prometheus for rack signals when a config names none (as `CLIMATIK_CAPPING__...`)."""
    prometheus_timeout_s: float = Field(default=5.0, gt=0)
    allowed_hosts: list[str] = Field(default_factory=list)
    """When set, Prometheus and cooling-webhook URLs may only name these hosts."""
    rack_label: str = "rack"
    """Label carrying the rack in rack-level query results (`$rack` queries need none)."""
    exhaust_temperature_query: str | None = None
    airflow_query: str | None = None
    cooling_power_query: str | None = None
    supply_temperature_query: str | None = None
    """Site-wide rack queries the PowerCappingConfig has no field for (see docs/placement.md)."""
    history_window_s: float = Field(default=3600.0, ge=0)
    """Rack and service power history fetched for the smoothing term (0: no smoothing)."""
    webhook_port: int = Field(default=9443, ge=0, le=65535)
    """Port of the placement admission webhook (HTTPS)."""
    webhook_cert_dir: str = "/etc/climatik/webhook"
    """Directory with `tls.crt` and `tls.key`; without them the webhook is not served."""
    deletion_cost_retry_s: float = Field(default=600.0, ge=0)
    """After the API refuses (403) a pod-deletion-cost patch in a namespace, how long no pod
    of that namespace is patched again (RBAC grants `patch` on pods per namespace)."""
    supply_guard_c: float = Field(default=0.5, ge=0)
    min_supply_c: float = 10.0
    max_supply_c: float = 27.0
    max_supply_step_c: float = Field(default=2.0, gt=0)


@dataclass(frozen=True, slots=True)
class Workload:
    """One Deployment a config places, with its pods and their nodes."""

    namespace: str
    deployment: str
    pods: tuple[Obj, ...]
    """The pods not being deleted: the ones placement and deletion costs act on."""
    terminating: tuple[Obj, ...] = ()
    """Pods being deleted: they still draw power while they drain, so they count in its share."""


@dataclass
class _RackHistory:
    """Complete rack readings (power and inlet of every rack) for the recirculation estimate,
    one sample per interval, shared by every config that reads the same racks the same way:
    racks are physical, so thousands of configs must not each keep (and fit) their own copy."""

    samples: deque[tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...] | None]]
    """(rack watts, rack inlets, the supply air reaching each rack or `None` unmeasured)."""
    last_sample_s: float | None = None
    appended: int = 0
    """Samples ever appended, so an estimate is refitted after `HEAT_REFIT_SAMPLES` new ones."""
    estimate: tuple[int, RecirculationEstimate | None] | None = None


@dataclass
class _Memory:
    """What the reconciler remembers about one config between reconciles."""

    over_limit: frozenset[str] = frozenset()
    last_cooling: str = ""
    template_changed_at: dict[str, float] = field(default_factory=dict)
    status_written_s: float | None = None
    """When the condition was last written unsettled (see `status_refresh_s`)."""
    recirculation_problem: str = ""
    """What is wrong with the recirculation ConfigMap this round, in words ("" when nothing)."""
    reported_recirculation_problem: str = ""
    """The problem last sent as an Event: a Warning goes out only when the text changes."""
    recirculation_parsed: tuple[_ParseKey, _Parsed] | None = None
    """The last `racks.yaml` parsed (with the racks it was checked against) and its result."""
    reported_deletion_cost_problem: str = ""
    """The deletion-cost problem last sent as an Event (one Warning per distinct text)."""


@dataclass
class _Forbidden:
    """A namespace where the API refused a pod-deletion-cost patch (HTTP 403)."""

    retry_at_s: float
    """Monotonic time before which no pod of the namespace is patched."""


@dataclass(frozen=True, slots=True)
class RackView:
    """A rack as the reconciler sees it this round."""

    rack_id: str
    nodes: tuple[str, ...]
    zone: str
    signals: RackSignals
    observation: PlaceObservation


def _always() -> bool:
    return True


def _meta(obj: Obj) -> Obj:
    meta: Obj = obj.get("metadata") or {}
    return meta


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _running(pod: Obj) -> bool:
    """A pod that draws power: phase Running, terminating or not (it draws while it drains)."""
    return (pod.get("status") or {}).get("phase") == "Running"


@dataclass(frozen=True, slots=True)
class RackCoefficients:
    """The usable part of one rack's entry in the recirculation ConfigMap."""

    factor_c_per_kw: float | None = None
    column: tuple[tuple[str, float], ...] = ()
    """Per inlet rack, °C of rise per kW dissipated here; only known racks, finite and ≥ 0."""
    zone: str | None = None


_ParseKey = tuple[str, tuple[str, ...]]
"""A `racks.yaml` text and the sorted rack ids it was checked against."""
_Parsed = tuple[Mapping[str, RackCoefficients], Sequence[str]]
"""What `parse_recirculation` made of it: usable coefficients and the problems found."""


FACTOR_FIELD = "recirculationCPerKw"
COLUMN_FIELD = "inletRiseCPerKw"


def _number(value: Any) -> float | None:
    """`value` as a finite float; None for anything else (YAML booleans included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return number if math.isfinite(number) else None


def _show(value: Any) -> str:
    """`value` in at most about 40 characters, in time independent of its size.

    The ConfigMap is untrusted: `repr` of a container walks all of it, and a few hundred bytes
    of YAML aliases ("billion laughs") make a list of billions of elements that share storage.
    So only scalars are shown; a container is described by its type and length."""
    if isinstance(value, str | bytes):
        text = repr(value[:40])
        return text if len(value) <= 40 else text + "..."
    if value is None or isinstance(value, bool | float | date):
        return repr(value)
    if isinstance(value, int):
        # repr of a huge int is quadratic (and refused past 4300 digits): show its size.
        return repr(value) if abs(value) < 10**30 else "a number of more than 30 digits"
    if isinstance(value, Sized):
        return f"{_kind(value)} of {len(value)} items"
    return _kind(value)


def _kind(value: Any) -> str:
    names = {
        list: "a list",
        dict: "a mapping",
        set: "a set",
        str: "a string",
        bytes: "binary data",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    return "empty" if value is None else names.get(type(value), f"a {type(value).__name__}")


def _name(key: Any) -> str:
    """A rack name from the ConfigMap, for messages: a string key shortened, anything else shown."""
    if isinstance(key, str):
        return key if len(key) <= 64 else key[:61] + "..."
    return _show(key)


def _keys(data: Mapping[str, Any]) -> str:
    text = ", ".join(sorted(str(k) for k in data)) or "none"
    return text if len(text) <= 200 else text[:197] + "..."


def _column(
    rack: str, raw: Any, known_racks: Collection[str]
) -> tuple[tuple[tuple[str, float], ...], list[str]]:
    """A ConfigMap `inletRiseCPerKw` mapping as a heat-matrix column, and what was dropped."""
    if not isinstance(raw, Mapping):
        return (), [
            f"rack {rack}: {COLUMN_FIELD} is {_kind(raw)}, not a mapping of inlet rack to "
            "°C per kW; ignored"
        ]
    entries: list[tuple[str, float]] = []
    problems: list[str] = []
    for key in sorted(raw, key=_name):
        value = raw[key]
        number = _number(value)
        where = f"rack {rack}: {COLUMN_FIELD}.{_name(key)}"
        if not isinstance(key, str):
            problems.append(f"{where}: the key is not a string ({QUOTE_HINT}); ignored")
        elif number is None:
            problems.append(f"{where} {_show(value)} is not a finite number; ignored")
        elif number < 0:
            problems.append(f"{where} {number:g} is negative (heat never cools an inlet); ignored")
        elif key not in known_racks:
            problems.append(
                f"{where} names a rack no node carries and no rackConstraint names; ignored"
            )
        else:
            entries.append((key, number))
    return tuple(entries), problems


MAX_RECIRCULATION_BYTES = 256 * 1024
"""Largest `racks.yaml` read; a larger one is ignored whole (the estimate applies)."""
QUOTE_HINT = "quote rack names in racks.yaml"
_LOADER: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's loader when PyYAML was built with it: faster, and it refuses deep nesting itself."""


def parse_recirculation(
    text: str, rack_ids: Collection[str], *, loader: type[Any] = _LOADER
) -> tuple[dict[str, RackCoefficients], list[str]]:
    """The usable part of `racks.yaml`, and every part that is not, in words (stable order).

    A bad part is dropped and the rest kept: a rack whose factor or column is dropped falls back
    to the estimate from history, exactly as a rack the ConfigMap does not name. The text is
    untrusted (anyone who may edit ConfigMaps in the namespace): this never raises, and takes
    time about linear in the text's size, which is capped (no `repr` of what YAML aliases may
    have made huge). Pure, so the reconciler runs it off the event loop."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_RECIRCULATION_BYTES:
        return {}, [
            f"is {size} bytes, more than the {MAX_RECIRCULATION_BYTES} read; all of it is ignored"
        ]
    try:
        parsed = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader, never the full one
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError) as error:
        # RecursionError: deep nesting with the pure-Python loader; ValueError and friends:
        # constructors of odd scalars (an integer of more than 4300 digits, a bad timestamp).
        detail = " ".join(str(error).split())[:200] or type(error).__name__
        return {}, [f"not valid YAML ({detail}); all of it is ignored"]
    if parsed is None:
        return {}, []
    if not isinstance(parsed, Mapping):
        return {}, [
            f"the document is {_kind(parsed)}, not a mapping of rack to settings; "
            "all of it is ignored"
        ]
    known = frozenset(rack_ids)
    racks: dict[str, RackCoefficients] = {}
    problems: list[str] = []
    for key in sorted(parsed, key=_name):
        entry = parsed[key]
        if not isinstance(key, str):
            # YAML 1.1 reads `no:` as False, `010:` as 8 and `null:` as None.
            problems.append(f"key {_show(key)} is not a string ({QUOTE_HINT}); ignored")
            continue
        rack = _name(key)
        if key not in known:
            problems.append(
                f"rack {rack} names a rack no node carries and no rackConstraint names; ignored"
            )
            continue
        if not isinstance(entry, Mapping):
            problems.append(f"rack {rack}: the entry is {_kind(entry)}, not a mapping; ignored")
            continue
        factor: float | None = None
        if FACTOR_FIELD in entry:
            raw = entry[FACTOR_FIELD]
            factor = _number(raw)
            if factor is None:
                problems.append(
                    f"rack {rack}: {FACTOR_FIELD} {_show(raw)} is not a finite number; ignored"
                )
            elif factor < 0:
                problems.append(
                    f"rack {rack}: {FACTOR_FIELD} {factor:g} is negative (heat never cools an "
                    "inlet); ignored"
                )
                factor = None
        column: tuple[tuple[str, float], ...] = ()
        if COLUMN_FIELD in entry:
            column, dropped = _column(rack, entry[COLUMN_FIELD], known)
            problems.extend(dropped)
        zone = entry.get("zone")
        if zone is not None and not isinstance(zone, str):
            problems.append(f"rack {rack}: zone is {_kind(zone)}, not a string; ignored")
            zone = None
        racks[key] = RackCoefficients(factor, column, zone or None)
    return racks, problems


_SAMPLE_GAP = 0.5
"""A shared rack history takes a sample once per half interval at most (configs reconcile at
scattered moments; a sample per config would sample far faster than the interval)."""

_MAX_PROBLEMS = 6
"""Problems named in one Event or condition message; the rest are counted."""
_MAX_PROBLEM_CHARS = 1500
"""The named problems are cut to this, so the whole text fits the condition message."""
_MAX_MESSAGE_CHARS = 4000
"""A condition message is cut to this (the rack list first, the ConfigMap problem never)."""


class PlacementReconciler:
    """Reconciles one PowerCappingConfig key for rack placement and cooling."""

    def __init__(
        self,
        client: KubeClient,
        *,
        configs: Any,
        workloads: WorkloadCaches,
        nodes: Any,
        recirculation_maps: Any,
        signal_source: Callable[[PowerCappingConfig], Awaitable[RackSignalSource]],
        cooling: Callable[[PowerCappingConfig], Awaitable[CoolingController]],
        snapshot: PlacementSnapshot,
        events: Any,
        metrics: PlacementMetrics,
        settings: PlacementSettings | None = None,
        weights: PlacementWeights | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        may_write: Callable[[], bool] | None = None,
    ) -> None:
        self._client = client
        # Defaults to the client's leadership gate, so the same reconciler may run on standbys.
        gate: Callable[[], bool] = getattr(client, "write_gate", _always)
        self._may_write = may_write if may_write is not None else gate
        self._configs = configs
        self._caches = workloads
        self._deployments = workloads.deployments
        self._pods = workloads.pods
        self._nodes = nodes
        self._recirculation_maps = recirculation_maps
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
        self._histories: dict[tuple[Hashable, tuple[str, ...]], _RackHistory] = {}
        self._workloads_kept: dict[str, tuple[tuple[Any, ...], list[Workload]]] = {}
        self._node_racks: (
            tuple[tuple[str, int], tuple[Mapping[str, tuple[str, ...]], Mapping[str, str]]] | None
        ) = None
        self._deletion_cost_forbidden: dict[str, _Forbidden] = {}
        """Namespaces whose pods the API refused to patch, until a patch there succeeds."""

    # -- the loop -------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> Result:
        obj = self._configs.store.get(key)
        if obj is None:
            self._forget(key)
            return Result()
        try:
            config = config_from_object(obj)
        except InvalidConfigError:
            # The power-cap reconciler reports an invalid spec; placement just stands aside.
            self._forget(key)
            return Result()
        if (
            config.placement.mode is PlacementMode.DISABLED
            and config.cooling.mode is CoolingMode.DISABLED
        ):
            self._forget(key)
            return Result()
        memory = self._memory.setdefault(key, _Memory())

        source = await self._signal_source(config)
        racks = await self._racks(config, source, memory)
        workloads = self._workloads(config)
        scored: dict[tuple[str, str], tuple[PlaceScore, ...]] = {}
        keep: dict[tuple[str, str], tuple[PlaceScore, ...]] = {}
        observations = [r.observation for r in racks]
        for workload in workloads:
            every_pod = (*workload.pods, *workload.terminating)
            pod_names = [str(_meta(p).get("name")) for p in every_pod]
            series = await source.service_power_series(workload.namespace, pod_names)
            # The series sums the power of these pods; the running ones (draining or not) draw it.
            replica_w = replica_added_watts(
                _finite(series[-1]) if series else None, sum(1 for p in every_pod if _running(p))
            )
            key_w = (workload.namespace, workload.deployment)
            scored[key_w] = score_racks(
                observations,
                PlacementStrategy.CLIMATIK,
                self._weights,
                service_series_w=series or None,
                added_watts=replica_w,
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
            await self._deletion_costs(config, workloads, keep, racks)
        await self._report_deletion_costs(obj, config, memory)
        if config.placement.mode is PlacementMode.TEMPLATE:
            await self._templates(config, workloads, scored, memory)
        setpoints = await self._cool(obj, config, racks, memory)
        self._report_metrics(config, racks, rack_scores, setpoints, memory=memory)
        requeue = await self._report_status(obj, config, racks, rack_scores, memory)
        if requeue:
            return Result(requeue=True)
        return Result(requeue_after=self._settings.interval_s)

    def _forget(self, key: str) -> None:
        self.snapshot.remove(key)
        self._memory.pop(key, None)
        self._metrics.forget_config(key)
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
        names: dict[str, None] = {}
        for target in resolution.targets:
            if target.kind is TargetKind.INFERENCE_SERVICE:
                names[f"{target.name}-predictor"] = None
            else:
                ref = (target.obj.get("spec") or {}).get("scaleTargetRef") or {}
                if ref.get("kind", "Deployment") == "Deployment" and ref.get("name"):
                    names[str(ref["name"])] = None
        if config.deployment_name:
            names[config.deployment_name] = None
        out: list[Workload] = []
        for name in names:
            deployment = self._deployments.store.get(f"{namespace}/{name}")
            if deployment is None:
                continue
            selector = (deployment.get("spec") or {}).get("selector") or {}
            match_labels: Mapping[str, str] = selector.get("matchLabels") or {}
            if not match_labels:
                continue
            matching = [
                p
                for p in self._pods.store.by_index(NAMESPACE_INDEX, namespace)
                if all((_meta(p).get("labels") or {}).get(k) == v for k, v in match_labels.items())
            ]
            pods = tuple(p for p in matching if not _meta(p).get("deletionTimestamp"))
            terminating = tuple(p for p in matching if _meta(p).get("deletionTimestamp"))
            out.append(Workload(namespace, name, pods, terminating))
        return out

    async def _recirculation(
        self, config: PowerCappingConfig, rack_ids: Collection[str], memory: _Memory
    ) -> dict[str, RackCoefficients]:
        """The ConfigMap's usable coefficients; what is wrong, in `memory.recirculation_problem`.

        Read from the informer's cache (the controller watches ConfigMaps of this one name, by
        name), never by a GET per reconcile. Absent is not a problem: the estimate from history
        is the documented default."""
        name = self._settings.recirculation_config_map
        where = f"ConfigMap {config.namespace}/{name}"
        problems: list[str] = []
        cm = self._recirculation_maps.store.get(f"{config.namespace}/{name}")
        if cm is None:
            memory.recirculation_problem = ""
            return {}
        data = cm.get("data") or {}
        text: str | None = data.get(RECIRCULATION_KEY)
        if text is None:
            problems.append(
                f"has no key {RECIRCULATION_KEY} (keys: {_keys(data)}); "
                "recirculation is estimated from power and inlet history instead"
            )
        coefficients: dict[str, RackCoefficients] = {}
        if text:
            coefficients, bad = await self._parse_recirculation(text, rack_ids, memory)
            problems.extend(f"{RECIRCULATION_KEY}: {p}" for p in bad)
        if problems:
            shown = problems[:_MAX_PROBLEMS]
            if len(problems) > len(shown):
                shown.append(f"and {len(problems) - len(shown)} more")
            listed = "; ".join(shown)
            if len(listed) > _MAX_PROBLEM_CHARS:
                listed = listed[: _MAX_PROBLEM_CHARS - 3] + "..."
            memory.recirculation_problem = (
                f"{where}: {listed}. Racks without a usable {FACTOR_FIELD} or {COLUMN_FIELD} use "
                "the estimate from power and inlet history (no recirculation term until there is "
                "enough)"
            )
        else:
            memory.recirculation_problem = ""
        return coefficients

    async def _parse_recirculation(
        self, text: str, rack_ids: Collection[str], memory: _Memory
    ) -> tuple[dict[str, RackCoefficients], list[str]]:
        """`parse_recirculation` in a worker thread, once per distinct text and set of racks.

        Parsing up to `MAX_RECIRCULATION_BYTES` of YAML takes a while; on the event loop it
        would delay the lease renewal and every other reconcile. Most rounds read the same
        ConfigMap, so the last result is kept (a string compare, not a parse)."""
        key = (text, tuple(sorted(rack_ids)))
        cached = memory.recirculation_parsed
        if cached is not None and cached[0] == key:
            coefficients, problems = cached[1]
        else:
            coefficients, problems = await asyncio.to_thread(parse_recirculation, text, key[1])
            memory.recirculation_parsed = (key, (coefficients, problems))
        return dict(coefficients), list(problems)

    async def _racks(
        self, config: PowerCappingConfig, source: RackSignalSource, memory: _Memory
    ) -> list[RackView]:
        found_nodes, zone_of_rack = self._racks_of_nodes(config.placement.rack_label_key)
        nodes_by_rack = {rack: list(nodes) for rack, nodes in found_nodes.items()}
        for constraint in config.racks:
            nodes_by_rack.setdefault(constraint.rack_id, [])
        rack_ids = sorted(nodes_by_rack)
        if not rack_ids:
            return []
        signals = await source.read_racks(
            [RackNodes(r, tuple(sorted(nodes_by_rack[r]))) for r in rack_ids]
        )
        coefficients = await self._recirculation(config, rack_ids, memory)
        history = self._history(source, rack_ids)
        hrf, columns = self._hrf(rack_ids, signals, coefficients, history)
        none = RackCoefficients()
        zones = {r: coefficients.get(r, none).zone or zone_of_rack.get(r) or r for r in rack_ids}
        readings = []
        for r in rack_ids:
            limits = config.rack(r)
            readings.append(
                PlaceReading(
                    place_id=r,
                    watts=_finite(signals[r].watts),
                    inlet_c=_finite(signals[r].inlet_c),
                    max_inlet_c=(
                        limits.max_temperature_celsius
                        if limits is not None and limits.max_temperature_celsius is not None
                        else config.cooling.redline_celsius
                    ),
                    max_watts=limits.max_power_w if limits is not None else None,
                    zone=zones[r],
                    supply_c=_finite(signals[r].supply_c),
                    load_series_w=signals[r].power_history_w,
                )
            )
        observations = observe_places(
            readings,
            factors=hrf,
            columns=columns,
            zone_w=zone_watts((zones[r], _finite(signals[r].watts)) for r in rack_ids),
        )
        return [
            RackView(r, tuple(nodes_by_rack[r]), zones[r], signals[r], observation)
            for r, observation in zip(rack_ids, observations, strict=True)
        ]

    def _racks_of_nodes(
        self, label: str
    ) -> tuple[Mapping[str, tuple[str, ...]], Mapping[str, str]]:
        """Nodes by rack, and each rack's zone, from the node labels: kept until a node
        changes (every config of a cluster asks the same, every interval)."""
        key = (label, self._nodes.store.version)
        if self._node_racks is not None and self._node_racks[0] == key:
            return self._node_racks[1]
        grouping = group_nodes_by_rack(
            (
                (str(_meta(node).get("name")), _meta(node).get("labels") or {})
                for node in self._nodes.store.objects()
            ),
            label,
            self._settings.zone_label_key,
        )
        found = (grouping.nodes_by_rack, grouping.zone_of_rack)
        self._node_racks = (key, found)
        return found

    def _hrf(
        self,
        rack_ids: Sequence[str],
        signals: Mapping[str, RackSignals],
        coefficients: Mapping[str, RackCoefficients],
        history: _RackHistory,
    ) -> tuple[dict[str, float], dict[str, tuple[tuple[str, float], ...]]]:
        """Recirculation factor and heat-matrix column per rack: configured, else estimated."""
        configured: dict[str, float] = {}
        columns: dict[str, tuple[tuple[str, float], ...]] = {}
        for r in rack_ids:
            entry = coefficients.get(r)
            if entry is None:
                continue
            if entry.factor_c_per_kw is not None:
                configured[r] = entry.factor_c_per_kw
            if entry.column:
                columns[r] = entry.column
        # Remember complete readings for the estimate (racks with power and inlet).
        watts = [_finite(signals[r].watts) for r in rack_ids]
        inlets = [_finite(signals[r].inlet_c) for r in rack_ids]
        supplies = [_finite(signals[r].supply_c) for r in rack_ids]
        now_s = self._clock()
        due = (
            history.last_sample_s is None
            or now_s - history.last_sample_s >= _SAMPLE_GAP * self._settings.interval_s
        )
        if due and history.samples.maxlen and all(v is not None for v in (*watts, *inlets)):
            history.samples.append(
                (
                    tuple(w or 0.0 for w in watts),
                    tuple(t or 0.0 for t in inlets),
                    tuple(s for s in supplies if s is not None)
                    if all(s is not None for s in supplies)
                    else None,
                )
            )
            history.last_sample_s = now_s
            history.appended += 1
        if len(configured) == len(rack_ids) and len(columns) == len(rack_ids):
            return configured, columns
        return heat_coefficients(rack_ids, self._estimate(rack_ids, history), configured, columns)

    def _history(self, source: RackSignalSource, rack_ids: Sequence[str]) -> _RackHistory:
        """The shared history of these racks read from this source (new when either is)."""
        key = (source.history_key, tuple(rack_ids))
        history = self._histories.get(key)
        if history is None or history.samples.maxlen != self._settings.history_samples:
            history = self._histories[key] = _RackHistory(
                deque(maxlen=self._settings.history_samples)
            )
        return history

    @staticmethod
    def _estimate(rack_ids: Sequence[str], history: _RackHistory) -> RecirculationEstimate | None:
        """The recirculation fitted to the history, refitted every `HEAT_REFIT_SAMPLES` samples."""
        if history.estimate is not None and not refit_due(history.estimate[0], history.appended):
            return history.estimate[1]
        estimate = recirculation_from_history(
            rack_ids,
            [h[0] for h in history.samples],
            [h[1] for h in history.samples],
            [h[2] for h in history.samples],
        )
        history.estimate = (history.appended, estimate)
        return estimate

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
                )
            )
        self.snapshot.update(config.key, placements)

    async def _deletion_costs(
        self,
        config: PowerCappingConfig,
        workloads: Sequence[Workload],
        scored: Mapping[tuple[str, str], tuple[PlaceScore, ...]],
        racks: Sequence[RackView],
    ) -> None:
        rack_of_node = {node: r.rack_id for r in racks for node in r.nodes}
        for w in workloads:
            forbidden = self._deletion_cost_forbidden.get(w.namespace)
            if forbidden is not None and self._clock() < forbidden.retry_at_s:
                continue  # refused a moment ago: asking for every pod again changes nothing
            by_name = {str(_meta(p).get("name")): p for p in w.pods}
            places = {
                name: rack_of_node.get(str((p.get("spec") or {}).get("nodeName") or ""))
                for name, p in by_name.items()
            }
            costs = order_pods_for_scale_in(places, scored[(w.namespace, w.deployment)])
            for name, cost in costs.items():
                annotations = _meta(by_name[name]).get("annotations") or {}
                current = annotations.get(DELETION_COST_ANNOTATION)
                if current == str(cost) or (current is None and cost == 0):
                    continue
                try:
                    await self._client.merge_patch(
                        PODS,
                        name,
                        {"metadata": {"annotations": {DELETION_COST_ANNOTATION: str(cost)}}},
                        w.namespace,
                    )
                except ApiError as error:
                    if error.is_not_found:
                        continue  # the pod went away meanwhile
                    if error.status == HTTP_FORBIDDEN:
                        self._deletion_cost_refused(w.namespace, name, error)
                        break
                    raise
                self._deletion_cost_forbidden.pop(w.namespace, None)
                self._metrics.deletion_cost_patches.labels(config.key).inc()
                log.info(
                    "deletion_cost_applied",
                    pod=f"{w.namespace}/{name}",
                    rack=places[name],
                    cost=cost,
                )

    def _deletion_cost_refused(self, namespace: str, pod: str, error: ApiError) -> None:
        """Stop patching the namespace's pods for a while; the API's own words go to the log
        (the condition and Event keep one stable text, so they are not repeated per pod)."""
        retry_s = self._settings.deletion_cost_retry_s
        self._deletion_cost_forbidden[namespace] = _Forbidden(self._clock() + retry_s)
        log.warning(
            "deletion_cost_forbidden",
            pod=f"{namespace}/{pod}",
            error=str(error),
            retry_in_s=retry_s,
        )

    def _deletion_cost_problem(self, config: PowerCappingConfig) -> str:
        """Why scale-in order is unavailable for this config, in words ("" when it is not)."""
        namespace = config.namespace
        if (
            config.placement.mode is PlacementMode.DISABLED
            or namespace not in self._deletion_cost_forbidden
        ):
            return ""
        minutes = self._settings.deletion_cost_retry_s / 60.0
        return (
            f"Scale-in order is unavailable: the API server refused (HTTP 403) to patch pods in "
            f"namespace {namespace}, so {DELETION_COST_ANNOTATION} is not kept current and "
            "scale-in removes replicas regardless of rack heat (new replicas are still placed). "
            f"Grant the controller's ServiceAccount patch on pods in {namespace}: Helm "
            "rbac.podDeletionCost.namespaces, or a Role like the one in "
            f"deploy/overlays/pod-deletion-cost (docs/security.md). Tried again every "
            f"{minutes:g} min; the log event deletion_cost_forbidden has the API's answer"
        )

    async def _report_deletion_costs(
        self, obj: Obj, config: PowerCappingConfig, memory: _Memory
    ) -> None:
        """One Warning per config while its namespace refuses deletion-cost patches (not one
        per reconcile, and not again after a restart whose condition already names it)."""
        problem = self._deletion_cost_problem(config)
        if problem == memory.reported_deletion_cost_problem:
            return
        if problem and not _condition_names(obj, problem):
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
            note = patch["metadata"]["annotations"][TEMPLATE_RACKS_ANNOTATION]
            log.info("template_affinity_applied", deployment=f"{w.namespace}/{w.deployment}")
            await self._events.record(
                deployment,
                "Normal",
                "TemplateAffinityUpdated",
                f"PowerCappingConfig {config.key} set the pod template's rack affinity ({note}); "
                "this rolls the Deployment out",
            )

    async def _cool(
        self, obj: Obj, config: PowerCappingConfig, racks: Sequence[RackView], memory: _Memory
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

    async def _report_recirculation(self, obj: Obj, memory: _Memory) -> None:
        """A Warning Event when the ConfigMap's problem changes (once per text, not per round).

        What was reported lives in memory, lost on a restart or a failover; the condition this
        reconciler writes holds the problem too, so a problem it already names was told."""
        problem = memory.recirculation_problem
        if problem == memory.reported_recirculation_problem:
            return
        if problem and not _condition_names(obj, problem):
            await self._events.record(obj, "Warning", "RecirculationConfigInvalid", problem)
        memory.reported_recirculation_problem = problem

    def _report_metrics(
        self,
        config: PowerCappingConfig,
        racks: Sequence[RackView],
        rack_scores: Sequence[PlaceScore],
        setpoints: Sequence[SupplySetpoint],
        *,
        memory: _Memory,
    ) -> None:
        m = self._metrics
        key = config.key
        m.begin_round(key)
        m.set_gauge(m.recirculation_config_ok, 0.0 if memory.recirculation_problem else 1.0, key)
        if config.placement.mode is not PlacementMode.DISABLED:
            allowed = 0.0 if self._deletion_cost_problem(config) else 1.0
            m.set_gauge(m.deletion_costs_allowed, allowed, key)
        for s in rack_scores:
            m.set_gauge(m.rack_score, s.score, key, s.place_id)
        admissible = {s.place_id: s.admissible for s in rack_scores}
        for r in racks:
            o = r.observation
            m.set_gauge(m.rack_admissible, 1.0 if admissible[r.rack_id] else 0.0, key, r.rack_id)
            if o.inlet_c is not None:
                m.set_gauge(m.rack_inlet, o.inlet_c, key, r.rack_id)
            if o.watts is not None:
                m.set_gauge(m.rack_power, o.watts, key, r.rack_id)
            if o.thermal_headroom_c is not None:
                m.set_gauge(m.rack_thermal_headroom, o.thermal_headroom_c, key, r.rack_id)
            if o.power_headroom_w is not None:
                m.set_gauge(m.rack_power_headroom, o.power_headroom_w, key, r.rack_id)
        for sp in setpoints:
            m.set_gauge(m.supply_change, sp.change_c, key, sp.group)
            if sp.supply_c is not None:
                m.set_gauge(m.supply_setpoint, sp.supply_c, key, sp.group)
        m.end_round(key)

    async def _report_status(
        self,
        obj: Obj,
        config: PowerCappingConfig,
        racks: Sequence[RackView],
        rack_scores: Sequence[PlaceScore],
        memory: _Memory,
    ) -> bool:
        """Write the RacksWithinLimits condition; True when the write lost a race (retry)."""
        by_id = {r.rack_id: r for r in racks}
        over = frozenset(s.place_id for s in rack_scores if not s.admissible)
        lines = [_rack_line(by_id[s.place_id], s) for s in rack_scores[:16]]
        measured = any(
            r.observation.inlet_c is not None or r.observation.watts is not None for r in racks
        )
        if not racks or not measured:
            status, reason = ConditionStatus.UNKNOWN, "NoRackData"
            problems = [p for r in racks for p in r.signals.problems][:3]
            message = (
                "no rack readings: " + "; ".join(problems)
                if problems
                else f"no nodes carry the rack label {config.placement.rack_label_key!r}"
                if not racks
                else "no rack readings"
            )
        elif over:
            status, reason = ConditionStatus.FALSE, "RackOverLimit"
            message = f"over a limit: {', '.join(sorted(over))}. " + "; ".join(lines)
        else:
            status, reason = ConditionStatus.TRUE, "WithinLimits"
            message = "; ".join(lines)
        notes = (self._deletion_cost_problem(config), memory.recirculation_problem)
        problem = ". ".join(n for n in notes if n)
        if problem:
            # The condition is where an operator looks first; the Event alone would age out. A
            # hot room's rack list is long: it is cut, never the problems (the recirculation one
            # at most _MAX_PROBLEM_CHARS plus a fixed text, the deletion-cost one a fixed text,
            # so they always fit).
            room = _MAX_MESSAGE_CHARS - len(problem) - 2
            if len(message) > room:
                message = message[: max(0, room - 3)] + "..."
            message = f"{message}. {problem}"
        for rack in sorted(over - memory.over_limit):
            await self._events.record(
                obj,
                "Warning",
                "RackOverLimit",
                f"rack {rack} is at or over its limit: {_rack_line(by_id[rack], None)}; new "
                "replicas are steered away and its replicas are removed first on scale-in",
            )
        memory.over_limit = over
        current = status_from_wire(obj)
        conditions = set_condition(
            current.conditions if current else None,
            type_=str(ConditionType.RACKS_WITHIN_LIMITS),
            status=status,
            reason=reason,
            message=message[:_MAX_MESSAGE_CHARS],
            observed_generation=config.generation,
            now=self._wall_clock(),
        )
        desired = (current or PowerCappingConfigStatus()).model_copy(
            update={"conditions": list(conditions)}
        )
        now_s = self._clock()
        refresh = (
            memory.status_written_s is None
            or now_s - memory.status_written_s >= self._settings.status_refresh_s
        )
        patch = status_patch(
            current,
            desired,
            resource_version=_meta(obj).get("resourceVersion"),
            settled=not refresh,
        )
        if patch is None:
            return False
        try:
            await self._client.merge_patch(
                POWER_CAPPING_CONFIGS,
                config.name,
                patch,
                config.namespace,
                subresource="status",
            )
        except ApiError as error:
            if error.is_conflict:
                return True
            if error.is_not_found:
                return False
            raise
        if refresh:
            memory.status_written_s = now_s
        return False


def _condition_names(obj: Obj, problem: str) -> bool:
    """Whether the object's RacksWithinLimits condition already names `problem`."""
    try:
        status = status_from_wire(obj)
    except ValueError:  # a status this version cannot read: report rather than stay silent
        return False
    found = find_condition(
        status.conditions if status else None, str(ConditionType.RACKS_WITHIN_LIMITS)
    )
    return found is not None and problem in (found.message or "")


def _excluded(config: PowerCappingConfig, scores: Sequence[PlaceScore]) -> tuple[str, ...]:
    """Racks to refuse; never all of them (placement must not make pods unschedulable)."""
    if not config.placement.exclude_over_limit_racks:
        return ()
    over = tuple(sorted(s.place_id for s in scores if not s.admissible))
    if len(over) == len(scores):
        return ()
    return over


def _rack_line(rack: RackView, score: PlaceScore | None) -> str:
    o = rack.observation
    parts = [rack.rack_id]
    if score is not None:
        parts.append(f"score {score.score:.2f}")
    if o.watts is not None:
        parts.append(f"{o.watts / 1000.0:.1f} kW")
    if o.inlet_c is not None:
        parts.append(f"inlet {o.inlet_c:.1f} °C")
    if o.thermal_headroom_c is not None:
        parts.append(f"{o.thermal_headroom_c:.1f} °C headroom")
    if o.power_headroom_w is not None:
        parts.append(f"{o.power_headroom_w / 1000.0:.1f} kW headroom")
    return " ".join(parts)


def template_patch(
    deployment: Obj, rack_label_key: str, scores: Sequence[PlaceScore]
) -> dict[str, Any] | None:
    """The merge patch that points the Deployment's pod template at the best racks, or None.

    Design document §10.5: `requiredDuringScheduling... In [racks]`, here the admissible racks
    (with one rack hot out of two, exactly the document's `In [rack1]`), plus a preferred term
    for the best rack. The user's own node affinity (remembered in an annotation the first time)
    is kept: our requirement is ANDed into each of its required terms, its preferred terms stay.
    None when there is no admissible rack or nothing would change.
    """
    admissible = [s for s in scores if s.admissible]
    if not admissible:
        return None
    best = min(admissible, key=lambda s: (-s.score, s.place_id)).place_id
    allowed = sorted(s.place_id for s in admissible)
    annotations: Mapping[str, str] = _meta(deployment).get("annotations") or {}
    pod_spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    current = thaw((pod_spec.get("affinity") or {}).get("nodeAffinity"))
    if ORIGINAL_AFFINITY_ANNOTATION in annotations:
        original = json.loads(annotations[ORIGINAL_AFFINITY_ANNOTATION]) or {}
        original_text = annotations[ORIGINAL_AFFINITY_ANNOTATION]
    else:
        original = json.loads(json.dumps(current or {}))  # a deep copy
        original_text = json.dumps(original, sort_keys=True)
    in_allowed = {"key": rack_label_key, "operator": "In", "values": allowed}
    required = dict(original.get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = [dict(t) for t in required.get("nodeSelectorTerms") or []] or [{}]
    for term in terms:
        term["matchExpressions"] = [*(term.get("matchExpressions") or []), in_allowed]
    required["nodeSelectorTerms"] = terms
    preferred = [
        *(original.get("preferredDuringSchedulingIgnoredDuringExecution") or []),
        {
            "weight": 100,
            "preference": {
                "matchExpressions": [{"key": rack_label_key, "operator": "In", "values": [best]}]
            },
        },
    ]
    desired = {
        **original,
        "requiredDuringSchedulingIgnoredDuringExecution": required,
        "preferredDuringSchedulingIgnoredDuringExecution": preferred,
    }
    if current == desired:
        return None
    note = f"best {best}; allowed {','.join(allowed)}"
    return {
        "metadata": {
            "annotations": {
                ORIGINAL_AFFINITY_ANNOTATION: original_text,
                TEMPLATE_RACKS_ANNOTATION: note,
            }
        },
        "spec": {"template": {"spec": {"affinity": {"nodeAffinity": desired}}}},
    }


class PrometheusRackSources:
    """`signal_source` for the live controller: a Prometheus rack source per config.

    The config's `powerMeasurement` gives the address, the rack power and inlet queries and the
    power preset (for the service series); the site-wide extra queries come from settings. A
    config with no Prometheus to ask gets a source without data (placement then ranks by what
    it knows, and the condition says `NoRackData`), never an error that stops capping.
    """

    def __init__(
        self,
        session_factory: Callable[[], Awaitable[aiohttp.ClientSession]],
        settings: PlacementSettings,
        prometheus: PrometheusPool | None = None,
    ) -> None:
        self._settings = settings
        # Shared answers and a breaker per address across configs (one layer per controller).
        self._prometheus = prometheus or PrometheusPool(session_factory)
        # One for every config without a Prometheus: its history (of nothing) is one, too.
        self._no_data = StaticRackSignalSource()

    async def __call__(self, config: PowerCappingConfig) -> RackSignalSource:
        measurement = config.power_measurement
        address = config.prometheus_address(self._settings.prometheus_address)
        if address is None:
            return self._no_data
        client = self._prometheus.querier(
            address,
            PrometheusSettings(
                timeout_s=self._settings.prometheus_timeout_s,
                max_sample_age_s=config.fail_safe.max_metric_age_s,
                address_policy=AddressPolicy.from_hosts(self._settings.allowed_hosts),
            ),
        )
        site = RackSignalQueries(
            exhaust_temperature_query=self._settings.exhaust_temperature_query,
            airflow_query=self._settings.airflow_query,
            cooling_power_query=self._settings.cooling_power_query,
            supply_temperature_query=self._settings.supply_temperature_query,
            rack_label=self._settings.rack_label,
            history_window_s=self._settings.history_window_s,
        )
        try:
            queries = rack_queries_for(measurement, site)
            power = power_query_config_for(measurement)
        except QueryTemplateError:
            # The power-cap reconciler reports the bad template; placement reads nothing.
            return self._no_data
        return PrometheusRackSignalSource(client, queries, power=power)


class CoolingControllers:
    """`cooling` for the live controller: the config's webhook in Webhook mode, else dry run."""

    def __init__(
        self,
        session_factory: Callable[[], Awaitable[aiohttp.ClientSession]],
        settings: PlacementSettings,
    ) -> None:
        self._session_factory = session_factory
        self._settings = settings
        self.dry_run = DryRunCoolingController()

    async def __call__(self, config: PowerCappingConfig) -> CoolingController:
        url = config.cooling.webhook_url
        if config.cooling.mode is not CoolingMode.WEBHOOK or url is None:
            return self.dry_run
        return HttpCoolingController(
            await self._session_factory(),
            str(url),  # the API layer may hand over a pydantic URL object
            address_policy=AddressPolicy.from_hosts(self._settings.allowed_hosts),
        )
