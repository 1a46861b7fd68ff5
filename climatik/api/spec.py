"""The spec of a PowerCappingConfig: what the user asks for, and the bounds the API enforces.

The spec keeps the design document's fields exactly (`powerCapLimit`, `deploymentName`,
`scaleObjectRef[]`, `metrics[]`, `rackConstraints[]`) and adds optional extension objects whose
defaults reproduce a sensible controller without any of them. `climatik.api.crd` turns these
models into the CRD's structural OpenAPI schema; the bounds, patterns and CEL rules declared here
are what the API server enforces, and pydantic enforces the same bounds when the controller reads
an object, so the two can never disagree about what a valid object is.

Conventions (Kubernetes API conventions): camelCase names with units in them, integers for
watts, degrees and seconds, enums rather than booleans wherever a third choice may come, every
string and list bounded so CEL rules stay within the API server's cost budget.
"""

from __future__ import annotations

from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from climatik.api.base import (
    LABEL_VALUE,
    QUALIFIED_NAME,
    RACK_ID,
    Celsius,
    CrdModel,
    DnsName,
    HttpUrl,
    Percent,
    PromQL,
    RackWatts,
    Watts,
    crd_rules,
)
from climatik.api.spec_carbon import Carbon
from climatik.domain.config import (
    CoolingMode,
    GpuTuningMode,
    MeasurementPreset,
    PlacementMode,
    PolicyType,
    SelectorOperator,
)

# ---------------------------------------------------------------------------------------------
# Spec: the design document's fields
# ---------------------------------------------------------------------------------------------


class ObjectName(CrdModel):
    """The `metadata` of a referenced object: only its name (same namespace)."""

    name: DnsName = Field(description="Name of the referenced object in this namespace.")


class ScaleObjectRef(CrdModel):
    """A KEDA ScaledObject whose `maxReplicaCount` the controller may lower and restore."""

    api_version: Literal["keda.sh/v1alpha1"] = Field(
        default="keda.sh/v1alpha1", description="API version of the ScaledObject."
    )
    kind: Literal["ScaledObject"] = Field(
        default="ScaledObject", description="Kind of the referenced object."
    )
    metadata: ObjectName = Field(description="Which ScaledObject, by name, in this namespace.")


class Metric(CrdModel):
    """A PromQL query returning the power (watts) drawn by the capped workloads."""

    type: Literal["Prometheus"] = Field(description="Metric source; only Prometheus.")
    prometheus_address: HttpUrl = Field(description="Base URL of the Prometheus server.")
    query: PromQL = Field(description="PromQL query whose result is the power in watts.")
    threshold: Watts | None = Field(
        default=None,
        description=(
            "Watts at which this metric alone triggers capping, even below powerCapLimit. "
            "Unset: only powerCapLimit counts."
        ),
    )


class RackConstraint(CrdModel):
    """Limits for one rack, identified by the value of the nodes' rack label."""

    model_config = ConfigDict(
        json_schema_extra=crd_rules(
            {
                "rule": "has(self.maxPower) || has(self.maxTemperature)",
                "message": "rackConstraints[] needs maxPower or maxTemperature (or both)",
                "fieldPath": ".maxPower",
                "reason": "FieldValueRequired",
            }
        )
    )

    rack_id: Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=RACK_ID)] = (
        Field(description="Rack identifier: the value of the rack label on its nodes.")
    )
    max_power: RackWatts | None = Field(default=None, description="Rack power limit in watts.")
    max_temperature: Celsius | None = Field(
        default=None, description="Rack inlet temperature limit in degrees Celsius."
    )

    @model_validator(mode="after")
    def _one_limit(self) -> RackConstraint:
        if self.max_power is None and self.max_temperature is None:
            raise ValueError("rackConstraints[] needs maxPower or maxTemperature (or both)")
        return self


# ---------------------------------------------------------------------------------------------
# Spec: extensions
# ---------------------------------------------------------------------------------------------


class Policy(CrdModel):
    """Which rule turns measured power into replica ceilings, and its tuning."""

    model_config = ConfigDict(
        json_schema_extra=crd_rules(
            {
                "rule": "self.cappingThresholdPercent < self.holdingThresholdPercent",
                "message": "holdingThresholdPercent must be greater than cappingThresholdPercent",
                "fieldPath": ".holdingThresholdPercent",
            },
            {
                "rule": "self.hysteresisPercent < self.cappingThresholdPercent",
                "message": "hysteresisPercent must be smaller than cappingThresholdPercent",
                "fieldPath": ".hysteresisPercent",
            },
        )
    )

    type: PolicyType = Field(
        default=PolicyType.HEADROOM,
        description=(
            "Headroom learns watts per replica and sets ceilings from the remaining headroom; "
            "Threshold is the design document's rule (capping: current+1, holding: current)."
        ),
    )
    capping_threshold_percent: Percent = Field(
        default=80, description="Percent of the effective cap at which ceilings start to bind."
    )
    holding_threshold_percent: Percent = Field(
        default=95, description="Percent of the effective cap at which ceilings freeze growth."
    )
    safety_margin_percent: Annotated[int, Field(ge=0, le=50)] = Field(
        default=5, description="Percent of the cap the Headroom policy keeps unused."
    )
    hysteresis_percent: Annotated[int, Field(ge=0, le=50)] = Field(
        default=5,
        description="Power must fall this many percent below a threshold before a ceiling lifts.",
    )
    step_down_replicas: Annotated[int, Field(ge=1, le=100)] = Field(
        default=1,
        description=(
            "Most replicas a ceiling drops below the running replicas per step while power is "
            "under the cap; above the cap, measured or predicted for the running replicas at "
            "their demand, a step drops what the cap needs at once."
        ),
    )
    step_down_interval_seconds: Annotated[int, Field(ge=0, le=3600)] = Field(
        default=30,
        description=(
            "Seconds after a target's step-down before its next one (measured power lags a "
            "step-down); power above the cap (measured or predicted) and the fail-safe never "
            "wait."
        ),
    )

    @model_validator(mode="after")
    def _ordered(self) -> Policy:
        if not self.capping_threshold_percent < self.holding_threshold_percent:
            raise ValueError("holdingThresholdPercent must be greater than cappingThresholdPercent")
        if not self.hysteresis_percent < self.capping_threshold_percent:
            raise ValueError("hysteresisPercent must be smaller than cappingThresholdPercent")
        return self


class LabelSelectorRequirement(CrdModel):
    """One `matchExpressions` term, as in Kubernetes' LabelSelectorRequirement."""

    model_config = ConfigDict(
        json_schema_extra=crd_rules(
            {
                "rule": (
                    "self.operator in ['In', 'NotIn'] ? "
                    "(has(self.values) && size(self.values) > 0) : "
                    "(!has(self.values) || size(self.values) == 0)"
                ),
                "message": "values must be non-empty for In and NotIn and empty otherwise",
                "fieldPath": ".values",
            }
        )
    )

    key: Annotated[str, StringConstraints(min_length=1, max_length=317, pattern=QUALIFIED_NAME)]
    operator: SelectorOperator
    values: (
        Annotated[
            list[Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE)]],
            Field(max_length=64, json_schema_extra={"x-kubernetes-list-type": "set"}),
        ]
        | None
    ) = None

    @model_validator(mode="after")
    def _values_match_operator(self) -> LabelSelectorRequirement:
        wants_values = self.operator in {SelectorOperator.IN, SelectorOperator.NOT_IN}
        if wants_values != bool(self.values):
            raise ValueError("values must be non-empty for In and NotIn and empty otherwise")
        return self


class TargetSelector(CrdModel):
    """Selects ScaledObjects and InferenceServices in this namespace by label."""

    model_config = ConfigDict(
        json_schema_extra=crd_rules(
            {
                "rule": (
                    "(has(self.matchLabels) && size(self.matchLabels) > 0) || "
                    "(has(self.matchExpressions) && size(self.matchExpressions) > 0)"
                ),
                "message": (
                    "targetSelector needs matchLabels or matchExpressions (empty selects all)"
                ),
                "fieldPath": ".matchLabels",
                "reason": "FieldValueRequired",
            }
        )
    )

    match_labels: (
        Annotated[
            dict[str, Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE)]],
            Field(max_length=32),
        ]
        | None
    ) = Field(default=None, description="Labels every selected object must carry.")
    match_expressions: Annotated[list[LabelSelectorRequirement], Field(max_length=16)] | None = (
        Field(default=None, description="Set-based requirements, all of which must hold.")
    )

    @model_validator(mode="after")
    def _not_empty(self) -> TargetSelector:
        if not self.match_labels and not self.match_expressions:
            raise ValueError(
                "targetSelector needs matchLabels or matchExpressions (empty selects all)"
            )
        return self


class PowerMeasurement(CrdModel):
    """Where per-target power and per-rack readings come from."""

    model_config = ConfigDict(
        json_schema_extra=crd_rules(
            {
                "rule": "self.preset != 'Custom' || has(self.powerQuery)",
                "message": "powerQuery is required when preset is Custom",
                "fieldPath": ".powerQuery",
                "reason": "FieldValueRequired",
            }
        )
    )

    preset: MeasurementPreset = Field(
        default=MeasurementPreset.KEPLER_POD,
        description="KeplerPod (Kepler >= 0.10), Kepler07, DCGM, or Custom (powerQuery).",
    )
    prometheus_address: HttpUrl | None = Field(
        default=None,
        description="Prometheus base URL; unset: metrics[0] or the controller's default.",
    )
    power_query: PromQL | None = Field(
        default=None, description="PromQL overriding the preset's per-target power query."
    )
    rack_power_query: PromQL | None = Field(
        default=None, description="PromQL returning watts per rack, labelled by rack id."
    )
    rack_temperature_query: PromQL | None = Field(
        default=None, description="PromQL returning inlet degrees Celsius per rack."
    )

    @model_validator(mode="after")
    def _custom_has_query(self) -> PowerMeasurement:
        if self.preset is MeasurementPreset.CUSTOM and self.power_query is None:
            raise ValueError("powerQuery is required when preset is Custom")
        return self


class PlacementMigration(CrdModel):
    """Moving running replicas to cooler racks (opt-in: each move restarts one replica)."""

    enabled: bool = Field(
        default=False,
        description="Evict one ready replica at a time (the Eviction API, so "
        "PodDisruptionBudgets hold) when moving it to the workload's best-ranked rack is "
        "predicted to lower the room's hottest inlet by minGainCelsius; the replacement is "
        "placed as every new pod. Needs create on pods/eviction in the config's namespace.",
    )
    min_gain_celsius: Annotated[float, Field(gt=0, le=10)] = Field(
        default=0.1, description="Least predicted drop of the hottest inlet worth a move."
    )
    min_interval_seconds: Annotated[int, Field(ge=30, le=86_400)] = Field(
        default=300, description="Least time between two moves of this config."
    )
    min_ready_replicas: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=2,
        description="A workload with fewer ready replicas, or with one still starting, keeps "
        "its replicas where they are.",
    )


class Placement(CrdModel):
    """Rack-aware placement of new pods."""

    mode: PlacementMode = Field(
        default=PlacementMode.WEBHOOK,
        description="Webhook (affinity at pod creation), Template (patches the pod template, "
        "restarting replicas), or Disabled.",
    )
    rack_label_key: Annotated[
        str, StringConstraints(min_length=1, max_length=317, pattern=QUALIFIED_NAME)
    ] = Field(default="climatik-project.ai/rack", description="Node label naming the rack.")
    exclude_over_limit_racks: bool = Field(
        default=True, description="Steer new pods away from racks over their limits."
    )
    migration: PlacementMigration = Field(
        default_factory=PlacementMigration,
        description="Moving running replicas to cooler racks (off unless enabled).",
    )


class Cooling(CrdModel):
    """Cooling recommendations from rack readings."""

    model_config = ConfigDict(
        json_schema_extra=crd_rules(
            {
                "rule": "self.mode != 'Webhook' || has(self.webhookURL)",
                "message": "webhookURL is required when mode is Webhook",
                "fieldPath": ".webhookURL",
                "reason": "FieldValueRequired",
            }
        )
    )

    mode: CoolingMode = Field(
        default=CoolingMode.DISABLED,
        description="DryRun (record recommendations), Webhook (send them), or Disabled.",
    )
    webhook_url: HttpUrl | None = Field(
        default=None, alias="webhookURL", description="Where Webhook mode POSTs recommendations."
    )
    redline_celsius: Annotated[int, Field(ge=10, le=60)] = Field(
        default=32, description="Inlet temperature treated as the rack's red line."
    )

    @model_validator(mode="after")
    def _webhook_has_url(self) -> Cooling:
        if self.mode is CoolingMode.WEBHOOK and self.webhook_url is None:
            raise ValueError("webhookURL is required when mode is Webhook")
        return self


class SloBounds(CrdModel):
    """Service levels a tuned GPU clock must keep."""

    max_time_to_first_token_milliseconds: Annotated[int, Field(ge=1, le=600_000)] | None = None
    max_inter_token_latency_milliseconds: Annotated[int, Field(ge=1, le=60_000)] | None = None
    min_tokens_per_second: Annotated[int, Field(ge=1, le=10_000_000)] | None = None


class GpuTuning(CrdModel):
    """GPU clock tuning for tokens per watt."""

    model_config = ConfigDict(
        json_schema_extra=crd_rules(
            {
                "rule": (
                    "!has(self.clocksUnderCap) || !self.clocksUnderCap || "
                    "(has(self.mode) && self.mode == 'Apply')"
                ),
                "message": "gpuTuning.clocksUnderCap needs gpuTuning.mode Apply",
                "fieldPath": ".clocksUnderCap",
            },
        )
    )

    mode: GpuTuningMode = Field(
        default=GpuTuningMode.DISABLED,
        description=(
            "Disabled; Recommend (a Job sweeps clocks and reports the best, then restores the "
            "defaults); or Apply (the Job also keeps the best clock). Either runs a Job only in "
            "namespaces the controller's CLIMATIK_GPU_TUNING__ALLOWED_NAMESPACES lists "
            "(elsewhere none runs and the GpuTuning condition says why)."
        ),
    )
    min_interval_seconds: Annotated[int, Field(ge=60, le=604_800)] = Field(
        default=3600, description="Least time between two tuning runs."
    )
    slo_bounds: SloBounds | None = Field(
        default=None, description="Latency and throughput a clock choice must keep."
    )
    clocks_under_cap: bool = Field(
        default=False,
        description=(
            "Apply only: under a binding cap, also move each target's clock with its replicas "
            "(a slower clock when the watts bind serves more of the demand per watt; back up "
            "when the cap has room), at most every clockChangeIntervalSeconds per target, "
            "through a short Job per node that locks the clock. Needs a sweep's result on the "
            "target's nodes."
        ),
    )
    clock_change_interval_seconds: Annotated[int, Field(ge=30, le=86_400)] = Field(
        default=900,
        description=(
            "With clocksUnderCap: least time between two clock changes of a target (each is a "
            "Job per node; a clock that follows every burst chases the measurement's lag)."
        ),
    )

    @model_validator(mode="after")
    def _clocks_under_cap_applies(self) -> GpuTuning:
        if self.clocks_under_cap and self.mode is not GpuTuningMode.APPLY:
            msg = "gpuTuning.clocksUnderCap needs gpuTuning.mode Apply"
            raise ValueError(msg)
        return self


HH_MM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
TIME_ZONE = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


class ApplyWindow(CrdModel):
    """A daily window in which a GPUs-per-replica roll may start (a maintenance window)."""

    model_config = ConfigDict(
        json_schema_extra=crd_rules(
            {
                "rule": "self.start != self.end",
                "message": "applyWindow.end must differ from applyWindow.start",
                "fieldPath": ".end",
            },
        )
    )

    start: Annotated[str, StringConstraints(max_length=5, pattern=HH_MM)] = Field(
        description="Local time the window opens, HH:MM (24 h)."
    )
    end: Annotated[str, StringConstraints(max_length=5, pattern=HH_MM)] = Field(
        description="Local time it closes, HH:MM; earlier than start: the next day."
    )
    time_zone: Annotated[
        str,
        StringConstraints(min_length=1, max_length=64, pattern=TIME_ZONE),
        # CEL looks the name up in the API server's own time-zone database: an unknown zone
        # fails the evaluation ("unknown time zone X evaluating rule: <message>"), on this
        # field's path since the rule sits on the field. Go's `Local` (the server's own zone)
        # is refused: the controller's zone is not the server's.
        Field(
            json_schema_extra=crd_rules(
                {
                    "rule": (
                        "self != 'Local' && (self == 'UTC' || "
                        "timestamp('2000-01-01T00:00:00Z').getHours(self) >= 0)"
                    ),
                    "message": (
                        "applyWindow.timeZone must be an IANA time zone such as Europe/Berlin"
                    ),
                }
            )
        ),
    ] = Field(default="UTC", description="IANA time zone of start and end.")

    @model_validator(mode="after")
    def _valid(self) -> ApplyWindow:
        if self.start == self.end:
            raise ValueError("applyWindow.end must differ from applyWindow.start")
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            msg = "applyWindow.timeZone must be an IANA time zone such as Europe/Berlin"
            raise ValueError(msg) from exc
        return self

    @property
    def start_minute(self) -> int:
        return _minutes(self.start)

    @property
    def end_minute(self) -> int:
        return _minutes(self.end)


class ReplicaSizing(CrdModel):
    """The service level a recommended GPUs per replica must keep (`status.replicaSizes`)."""

    max_time_to_first_token_milliseconds: Annotated[int, Field(ge=1, le=600_000)] = Field(
        default=2000, description="Time to first token a request must meet."
    )
    max_inter_token_latency_milliseconds: Annotated[int, Field(ge=1, le=60_000)] = Field(
        default=100, description="Time between tokens every decode step must meet."
    )
    slo_attainment_percent: Annotated[float, Field(ge=50, le=99.999)] = Field(
        default=95,
        description=(
            "Percent of requests that must meet both at the measured load; a size predicted to "
            "serve fewer is not recommended (a higher goal trades tokens per joule for latency)."
        ),
    )
    apply_window: ApplyWindow | None = Field(
        default=None,
        description=(
            "When a workload that opts in may be rolled to the recommended size; unset: any "
            "time (a roll still waits until the site is under its cap)."
        ),
    )


class FailSafe(CrdModel):
    """Behaviour when power readings are stale, empty or NaN (never read as zero)."""

    max_metric_age_seconds: Annotated[int, Field(ge=5, le=3600)] = Field(
        default=120, description="Readings older than this count as missing."
    )
    hold_seconds: Annotated[int, Field(ge=0, le=86_400)] = Field(
        default=300, description="How long the last decision holds while readings are missing."
    )
    safe_max_replicas: Annotated[int, Field(ge=1, le=10_000)] | None = Field(
        default=None,
        description="Ceiling after holdSeconds without readings; unset: keep holding.",
    )


class PowerCappingConfigSpec(CrdModel):
    """What the user asks for. Owned by the user; the controller never writes it."""

    model_config = ConfigDict(
        json_schema_extra=crd_rules(
            {
                "rule": (
                    "has(self.deploymentName) || has(self.targetSelector) || "
                    "(has(self.scaleObjectRef) && size(self.scaleObjectRef) > 0)"
                ),
                "message": "name a target: scaleObjectRef, deploymentName or targetSelector",
                "fieldPath": ".scaleObjectRef",
                "reason": "FieldValueRequired",
            },
            {
                "rule": (
                    "!has(self.scaleObjectRef) || self.scaleObjectRef.all(r, "
                    "self.scaleObjectRef.exists_one(o, o.metadata.name == r.metadata.name))"
                ),
                "message": "scaleObjectRef names must be unique",
                "fieldPath": ".scaleObjectRef",
                "reason": "FieldValueDuplicate",
            },
            {
                "rule": "!has(self.carbon) || self.carbon.floorWatts <= self.powerCapLimit",
                "message": "carbon.floorWatts must not exceed powerCapLimit",
                "fieldPath": ".carbon.floorWatts",
            },
        )
    )

    power_cap_limit: Watts = Field(description="Power cap in watts for all targets together.")
    deployment_name: DnsName | None = Field(
        default=None, description="A Deployment in this namespace (design document field)."
    )
    scale_object_ref: (
        Annotated[
            list[ScaleObjectRef],
            Field(max_length=64, json_schema_extra={"x-kubernetes-list-type": "atomic"}),
        ]
        | None
    ) = Field(default=None, description="KEDA ScaledObjects whose maxReplicaCount is capped.")
    metrics: (
        Annotated[
            list[Metric],
            Field(max_length=8, json_schema_extra={"x-kubernetes-list-type": "atomic"}),
        ]
        | None
    ) = Field(default=None, description="Prometheus queries for the targets' power.")
    rack_constraints: (
        Annotated[
            list[RackConstraint],
            Field(
                max_length=256,
                json_schema_extra={
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["rackId"],
                },
            ),
        ]
        | None
    ) = Field(default=None, description="Per-rack power and temperature limits.")
    policy: Policy = Field(default_factory=Policy, description="Decision rule and its tuning.")
    target_selector: TargetSelector | None = Field(
        default=None, description="Label selector over ScaledObjects and InferenceServices."
    )
    power_measurement: PowerMeasurement = Field(
        default_factory=PowerMeasurement, description="Power and rack reading sources."
    )
    carbon: Carbon | None = Field(default=None, description="Carbon-aware capping; off unset.")
    placement: Placement = Field(default_factory=Placement, description="Rack-aware placement.")
    cooling: Cooling = Field(default_factory=Cooling, description="Cooling recommendations.")
    gpu_tuning: GpuTuning = Field(default_factory=GpuTuning, description="GPU clock tuning.")
    replica_sizing: ReplicaSizing = Field(
        default_factory=ReplicaSizing, description="GPUs per replica: the SLO a size must keep."
    )
    fail_safe: FailSafe = Field(default_factory=FailSafe, description="Missing-data behaviour.")

    @model_validator(mode="after")
    def _consistent(self) -> PowerCappingConfigSpec:
        if not (self.deployment_name or self.target_selector or self.scale_object_ref):
            raise ValueError("name a target: scaleObjectRef, deploymentName or targetSelector")
        names = [ref.metadata.name for ref in self.scale_object_ref or ()]
        if len(names) != len(set(names)):
            raise ValueError("scaleObjectRef names must be unique")
        # The API server enforces this one through the list-map type of rackConstraints.
        rack_ids = [rack.rack_id for rack in self.rack_constraints or ()]
        if len(rack_ids) != len(set(rack_ids)):
            raise ValueError("rackConstraints rackId values must be unique")
        if self.carbon is not None and self.carbon.floor_watts > self.power_cap_limit:
            raise ValueError("carbon.floorWatts must not exceed powerCapLimit")
        return self
