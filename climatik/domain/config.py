"""A PowerCappingConfig as the policies and reconcilers see it: frozen, typed, in SI-ish units.

The API layer (`climatik.api.convert`) builds these values from a validated custom resource, so
everything here is already checked: percentages are fractions in [0, 1], watts and seconds are
positive, references are plain names in the config's own namespace. Nothing here reads the
cluster, a clock or the network.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from climatik.domain.carbon import CarbonTarget
from climatik.domain.placement import MigrationSettings


class PolicyType(enum.StrEnum):
    """Which decision rule turns measured power into replica ceilings."""

    HEADROOM = "Headroom"
    """Learn watts per replica and set ceilings from the remaining headroom (the default)."""
    THRESHOLD = "Threshold"
    """The design document's literal rule: >= 80 % current + 1, >= 95 % current, else release."""


class TargetKind(enum.StrEnum):
    """The kinds of object whose replica ceiling Climatik may cap."""

    SCALED_OBJECT = "ScaledObject"
    INFERENCE_SERVICE = "InferenceService"
    DEPLOYMENT = "Deployment"


class MeasurementPreset(enum.StrEnum):
    """Where per-target power comes from; each preset implies a PromQL shape."""

    KEPLER_POD = "KeplerPod"
    """Kepler >= 0.10: `kepler_pod_cpu_watts` (plus GPU watts where enabled)."""
    KEPLER_07 = "Kepler07"
    """Kepler 0.7.x: `rate(kepler_container_joules_total[1m])`."""
    DCGM = "DCGM"
    """NVIDIA DCGM exporter: `DCGM_FI_DEV_POWER_USAGE` by exported pod."""
    CUSTOM = "Custom"
    """The user's own `powerQuery`."""


class CarbonProvider(enum.StrEnum):
    """Which grid carbon intensity source to ask."""

    UK_NATIONAL_GRID = "UKNationalGrid"
    ELECTRICITY_MAPS = "ElectricityMaps"
    WATT_TIME = "WattTime"
    STATIC = "Static"


class CarbonFallback(enum.StrEnum):
    """The cap to use while carbon data is missing or older than its maximum age."""

    STATIC_CAP = "StaticCap"
    """Fall back to `powerCapLimit`: carbon awareness pauses, service does not suffer."""
    FLOOR_CAP = "FloorCap"
    """Fall back to the carbon floor: emissions stay bounded, throughput may suffer."""


class PlacementMode(enum.StrEnum):
    """How rack-aware placement acts on pods."""

    WEBHOOK = "Webhook"
    """Mutating admission webhook adds preferred node affinity at pod creation."""
    TEMPLATE = "Template"
    """Patch the workload's pod template (restarts every replica; opt-in)."""
    DISABLED = "Disabled"


class CoolingMode(enum.StrEnum):
    """Whether cooling recommendations are only recorded or sent to a cooling system."""

    DRY_RUN = "DryRun"
    WEBHOOK = "Webhook"
    DISABLED = "Disabled"


class GpuTuningMode(enum.StrEnum):
    """Whether GPU clock tuning is off, only recommended, or applied by a Job."""

    DISABLED = "Disabled"
    RECOMMEND = "Recommend"
    APPLY = "Apply"


class SelectorOperator(enum.StrEnum):
    """Label selector operators, as in Kubernetes' LabelSelectorRequirement."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True, slots=True)
class TargetRef:
    """One object to cap, by kind and name, in the config's namespace."""

    kind: TargetKind
    name: str


@dataclass(frozen=True, slots=True)
class LabelRequirement:
    """One `matchExpressions` entry."""

    key: str
    operator: SelectorOperator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, object]) -> bool:
        """Kubernetes semantics: NotIn and DoesNotExist match objects without the key."""
        match self.operator:
            case SelectorOperator.IN:
                return self.key in labels and labels[self.key] in self.values
            case SelectorOperator.NOT_IN:
                return self.key not in labels or labels[self.key] not in self.values
            case SelectorOperator.EXISTS:
                return self.key in labels
            case SelectorOperator.DOES_NOT_EXIST:
                return self.key not in labels


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A label selector over ScaledObjects and InferenceServices (all terms ANDed)."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[LabelRequirement, ...] = ()

    def matches(self, labels: Mapping[str, object]) -> bool:
        """True when every label and every expression matches `labels` (a value that is not a
        string matches no term)."""
        return all(labels.get(key) == value for key, value in self.match_labels) and all(
            requirement.matches(labels) for requirement in self.match_expressions
        )


@dataclass(frozen=True, slots=True)
class PrometheusMetric:
    """One `metrics[]` entry: a PromQL power query and the watts at which it alone caps."""

    prometheus_address: str
    query: str
    threshold_w: float | None = None


@dataclass(frozen=True, slots=True)
class RackConstraint:
    """Limits for one rack; at least one of the two is set."""

    rack_id: str
    max_power_w: float | None = None
    max_temperature_celsius: float | None = None


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Tuning of the replica-ceiling policy; fractions are of the effective cap."""

    type: PolicyType = PolicyType.HEADROOM
    capping_threshold_fraction: float = 0.80
    holding_threshold_fraction: float = 0.95
    safety_margin_fraction: float = 0.05
    hysteresis_fraction: float = 0.05
    step_down_replicas: int = 1
    step_down_interval_s: float = 30.0


@dataclass(frozen=True, slots=True)
class PowerMeasurementConfig:
    """Where power and rack readings come from; `None` falls back to controller settings."""

    preset: MeasurementPreset = MeasurementPreset.KEPLER_POD
    prometheus_address: str | None = None
    power_query: str | None = None
    rack_power_query: str | None = None
    rack_temperature_query: str | None = None


@dataclass(frozen=True, slots=True)
class SecretKeyRef:
    """A key in a Secret of the config's own namespace (never another namespace's)."""

    name: str
    key: str


@dataclass(frozen=True, slots=True)
class CarbonConfig:
    """Carbon-aware capping: which grid signal to follow and how it lowers the cap."""

    provider: CarbonProvider
    target: CarbonTarget
    floor_w: float
    region_id: int | None = None
    postcode: str | None = None
    zone: str | None = None
    region: str | None = None
    static_intensity_g_per_kwh: float | None = None
    pue: float = 1.0
    api_key_secret: SecretKeyRef | None = None
    max_age_s: float = 3600.0
    fallback: CarbonFallback = CarbonFallback.STATIC_CAP


@dataclass(frozen=True, slots=True)
class PlacementConfig:
    """Rack-aware placement of new pods."""

    mode: PlacementMode = PlacementMode.WEBHOOK
    rack_label_key: str = "climatik-project.ai/rack"
    exclude_over_limit_racks: bool = True
    migration: MigrationSettings | None = None
    """When running replicas are moved to cooler racks; None: never (the default)."""


@dataclass(frozen=True, slots=True)
class CoolingConfig:
    """Rack cooling recommendations."""

    mode: CoolingMode = CoolingMode.DISABLED
    webhook_url: str | None = None
    redline_celsius: float = 32.0


@dataclass(frozen=True, slots=True)
class SloBounds:
    """Service levels a GPU clock choice must keep; `None` means unbounded."""

    max_time_to_first_token_s: float | None = None
    max_inter_token_latency_s: float | None = None
    min_tokens_per_second: float | None = None


@dataclass(frozen=True, slots=True)
class GpuTuningConfig:
    """GPU clock tuning Jobs."""

    mode: GpuTuningMode = GpuTuningMode.DISABLED
    min_interval_s: float = 3600.0
    slo: SloBounds = field(default_factory=SloBounds)
    clocks_under_cap: bool = False
    """Also move each target's clock with its replicas under a binding cap (Apply only)."""
    clock_change_interval_s: float = 900.0
    """Least time between two clock changes of a target (`gpu_clock.CLOCK_CHANGE_INTERVAL_S`)."""


@dataclass(frozen=True, slots=True)
class DailyWindow:
    """The same minutes of every day in a time zone: from `start_minute` (inclusive) to
    `end_minute` (exclusive) after local midnight, past midnight when the end is earlier."""

    start_minute: int
    end_minute: int
    time_zone: str = "UTC"

    def contains(self, now: datetime) -> bool:
        """Whether `now` (an aware datetime) falls inside the window, in its time zone."""
        local = now.astimezone(ZoneInfo(self.time_zone))
        minute = local.hour * 60 + local.minute
        if self.start_minute <= self.end_minute:
            return self.start_minute <= minute < self.end_minute
        return minute >= self.start_minute or minute < self.end_minute

    def describe(self) -> str:
        def clock(minute: int) -> str:
            return f"{minute // 60:02d}:{minute % 60:02d}"

        return f"{clock(self.start_minute)}-{clock(self.end_minute)} {self.time_zone}"


@dataclass(frozen=True, slots=True)
class ReplicaSizingConfig:
    """The service level a recommended number of GPUs per replica must keep, and when an
    opted-in workload may be rolled to it."""

    max_time_to_first_token_s: float = 2.0
    max_inter_token_latency_s: float = 0.1
    slo_attainment: float = 0.95
    """Share of requests that must meet both latencies."""
    apply_window: DailyWindow | None = None
    """When a roll may start; `None`: at any time."""


@dataclass(frozen=True, slots=True)
class FailSafeConfig:
    """What to do when power readings are stale, empty or NaN (never treat them as zero).

    Hold the last decision for `hold_s` once readings are older than `max_metric_age_s`; then
    fall to `safe_max_replicas`, or keep holding when it is `None`.
    """

    max_metric_age_s: float = 120.0
    hold_s: float = 300.0
    safe_max_replicas: int | None = None


@dataclass(frozen=True, slots=True)
class PowerCappingConfig:
    """Everything one PowerCappingConfig object asks of the controller."""

    namespace: str
    name: str
    generation: int
    power_cap_w: float
    deployment_name: str | None = None
    targets: tuple[TargetRef, ...] = ()
    target_selector: LabelSelector | None = None
    metrics: tuple[PrometheusMetric, ...] = ()
    racks: tuple[RackConstraint, ...] = ()
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    power_measurement: PowerMeasurementConfig = field(default_factory=PowerMeasurementConfig)
    carbon: CarbonConfig | None = None
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    cooling: CoolingConfig = field(default_factory=CoolingConfig)
    gpu_tuning: GpuTuningConfig = field(default_factory=GpuTuningConfig)
    replica_sizing: ReplicaSizingConfig = field(default_factory=ReplicaSizingConfig)
    fail_safe: FailSafeConfig = field(default_factory=FailSafeConfig)

    def prometheus_address(self, default: str | None = None) -> str | None:
        """The Prometheus to ask: `powerMeasurement`'s, else the design document's `metrics[]`,
        else the controller's default."""
        return (
            self.power_measurement.prometheus_address
            or next((m.prometheus_address for m in self.metrics), None)
            or default
        )

    @property
    def key(self) -> str:
        """The work-queue key, `namespace/name`."""
        return f"{self.namespace}/{self.name}"

    def rack(self, rack_id: str) -> RackConstraint | None:
        """The constraint for `rack_id`, if the config names that rack."""
        return next((rack for rack in self.racks if rack.rack_id == rack_id), None)
