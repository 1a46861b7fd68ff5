"""Pydantic models of the PowerCappingConfig custom resource: the single source of its schema.

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

import enum
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

from climatik.domain.config import (
    CarbonFallback,
    CarbonProvider,
    CoolingMode,
    GpuTuningMode,
    MeasurementPreset,
    PlacementMode,
    PolicyType,
    SelectorOperator,
)

GROUP = "powercapping.climatik-project.ai"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "PowerCappingConfig"
PLURAL = "powercappingconfigs"
SINGULAR = "powercappingconfig"
SHORT_NAMES = ("pcc",)
LIST_KIND = "PowerCappingConfigList"

# Plausible physical ranges. 100 MW is a large datacenter campus; 1 MW a very dense rack row
# feed; temperatures are rack inlet/exhaust limits, where anything above 100 °C is a typo.
MAX_CAP_WATTS = 100_000_000
MAX_RACK_WATTS = 1_000_000
MIN_CELSIUS = 1
MAX_CELSIUS = 100

# RE2/ECMA-compatible patterns (the API server evaluates them with Go's regexp).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
HTTP_URL = r"^https?://[^\s/?#]+([/?#][^\s]*)?$"
RACK_ID = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
DATA_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
CAMEL_CASE = r"^[A-Z][A-Za-z0-9]*$"
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
UK_OUTWARD_POSTCODE = r"^[A-Z]{1,2}[0-9][A-Z0-9]?$"

DnsName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
HttpUrl = Annotated[str, StringConstraints(min_length=8, max_length=2048, pattern=HTTP_URL)]
PromQL = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
Watts = Annotated[int, Field(gt=0, le=MAX_CAP_WATTS)]
RackWatts = Annotated[int, Field(gt=0, le=MAX_RACK_WATTS)]
Celsius = Annotated[int, Field(ge=MIN_CELSIUS, le=MAX_CELSIUS)]
Percent = Annotated[int, Field(ge=1, le=100)]
IntensityGramsPerKWh = Annotated[int, Field(ge=0, le=5000)]


def _rules(*rules: dict[str, str]) -> dict[str, Any]:
    """The `x-kubernetes-validations` extension for a model's schema."""
    return {"x-kubernetes-validations": list(rules)}


class CrdModel(BaseModel):
    """Base of every API model: camelCase on the wire, immutable, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
        # Defaults are checked like input, so a default the API server would refuse fails here.
        validate_default=True,
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
        json_schema_extra=_rules(
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
        json_schema_extra=_rules(
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
        default=1, description="Most replicas a ceiling drops per step when above it."
    )
    step_down_interval_seconds: Annotated[int, Field(ge=0, le=3600)] = Field(
        default=30, description="Seconds between step-downs."
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
        json_schema_extra=_rules(
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
        json_schema_extra=_rules(
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
        json_schema_extra=_rules(
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


class SecretKeySelector(CrdModel):
    """A key of a Secret in this namespace (no namespace field: no cross-namespace reads)."""

    name: DnsName = Field(description="Secret name in the config's namespace.")
    key: Annotated[
        str, StringConstraints(min_length=1, max_length=253, pattern=DATA_KEY_PATTERN)
    ] = Field(description="Key inside the Secret's data.")


class CarbonTargetType(enum.StrEnum):
    """How the grid intensity turns into a cap."""

    EMISSION_RATE = "EmissionRate"
    INTENSITY_BAND = "IntensityBand"


class CarbonTargetSpec(CrdModel):
    """A carbon goal: a steady emission rate, or a linear band between clean and dirty grids."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            {
                "rule": "self.type != 'EmissionRate' || has(self.emissionRateGramsPerHour)",
                "message": "emissionRateGramsPerHour is required when type is EmissionRate",
                "fieldPath": ".emissionRateGramsPerHour",
                "reason": "FieldValueRequired",
            },
            {
                "rule": (
                    "self.type != 'IntensityBand' || "
                    "(has(self.cleanIntensityGramsPerKWh) && has(self.dirtyIntensityGramsPerKWh))"
                ),
                "message": (
                    "cleanIntensityGramsPerKWh and dirtyIntensityGramsPerKWh are required "
                    "when type is IntensityBand"
                ),
                "fieldPath": ".dirtyIntensityGramsPerKWh",
                "reason": "FieldValueRequired",
            },
            {
                "rule": (
                    "!has(self.cleanIntensityGramsPerKWh) || !has(self.dirtyIntensityGramsPerKWh)"
                    " || self.cleanIntensityGramsPerKWh < self.dirtyIntensityGramsPerKWh"
                ),
                "message": "cleanIntensityGramsPerKWh must be below dirtyIntensityGramsPerKWh",
                "fieldPath": ".cleanIntensityGramsPerKWh",
            },
        )
    )

    type: CarbonTargetType = Field(description="EmissionRate or IntensityBand.")
    emission_rate_grams_per_hour: Annotated[int, Field(gt=0, le=1_000_000_000)] | None = Field(
        default=None,
        description="EmissionRate: cap = rate / (intensity x PUE), in gCO2 per hour.",
    )
    clean_intensity_g_per_kwh: IntensityGramsPerKWh | None = Field(
        default=None,
        alias="cleanIntensityGramsPerKWh",
        description="IntensityBand: at or below this gCO2/kWh the full powerCapLimit applies.",
    )
    dirty_intensity_g_per_kwh: IntensityGramsPerKWh | None = Field(
        default=None,
        alias="dirtyIntensityGramsPerKWh",
        description="IntensityBand: at or above this gCO2/kWh the cap is floorWatts.",
    )

    @model_validator(mode="after")
    def _complete(self) -> CarbonTargetSpec:
        clean, dirty = self.clean_intensity_g_per_kwh, self.dirty_intensity_g_per_kwh
        if (
            self.type is CarbonTargetType.EMISSION_RATE
            and self.emission_rate_grams_per_hour is None
        ):
            raise ValueError("emissionRateGramsPerHour is required when type is EmissionRate")
        if self.type is CarbonTargetType.INTENSITY_BAND and (clean is None or dirty is None):
            raise ValueError(
                "cleanIntensityGramsPerKWh and dirtyIntensityGramsPerKWh are required "
                "when type is IntensityBand"
            )
        if clean is not None and dirty is not None and not clean < dirty:
            raise ValueError("cleanIntensityGramsPerKWh must be below dirtyIntensityGramsPerKWh")
        return self


class Carbon(CrdModel):
    """Carbon-aware capping: lower the cap while the grid is dirty."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            {
                "rule": "self.provider != 'ElectricityMaps' || has(self.zone)",
                "message": "zone is required for the ElectricityMaps provider",
                "fieldPath": ".zone",
                "reason": "FieldValueRequired",
            },
            {
                "rule": "self.provider != 'WattTime' || has(self.region)",
                "message": "region is required for the WattTime provider",
                "fieldPath": ".region",
                "reason": "FieldValueRequired",
            },
            {
                "rule": "self.provider != 'Static' || has(self.staticIntensityGramsPerKWh)",
                "message": "staticIntensityGramsPerKWh is required for the Static provider",
                "fieldPath": ".staticIntensityGramsPerKWh",
                "reason": "FieldValueRequired",
            },
            {
                "rule": (
                    "!(self.provider in ['ElectricityMaps', 'WattTime']) || "
                    "has(self.apiKeySecretRef)"
                ),
                "message": "apiKeySecretRef is required for ElectricityMaps and WattTime",
                "fieldPath": ".apiKeySecretRef",
                "reason": "FieldValueRequired",
            },
            {
                "rule": "!has(self.regionId) || !has(self.postcode)",
                "message": "set regionId or postcode, not both",
                "fieldPath": ".postcode",
                "reason": "FieldValueForbidden",
            },
            {
                "rule": (
                    "self.provider == 'UKNationalGrid' || "
                    "(!has(self.regionId) && !has(self.postcode))"
                ),
                "message": "regionId and postcode apply only to the UKNationalGrid provider",
                "fieldPath": ".regionId",
                "reason": "FieldValueForbidden",
            },
        )
    )

    provider: CarbonProvider = Field(
        description="UKNationalGrid (no key), ElectricityMaps, WattTime, or Static."
    )
    region_id: Annotated[int, Field(ge=1, le=17)] | None = Field(
        default=None, description="UKNationalGrid: regional id 1-17; unset: national."
    )
    postcode: (
        Annotated[str, StringConstraints(max_length=4, pattern=UK_OUTWARD_POSTCODE)] | None
    ) = Field(default=None, description="UKNationalGrid: outward postcode, e.g. RG10.")
    zone: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="ElectricityMaps zone, e.g. DE or US-CAL-CISO."
    )
    region: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="WattTime region, e.g. CAISO_NORTH."
    )
    static_intensity_g_per_kwh: IntensityGramsPerKWh | None = Field(
        default=None,
        alias="staticIntensityGramsPerKWh",
        description="Static: the fixed intensity in gCO2/kWh (tests, air-gapped sites).",
    )
    target: CarbonTargetSpec = Field(description="The carbon goal that sets the cap.")
    floor_watts: Annotated[int, Field(ge=0, le=MAX_CAP_WATTS)] = Field(
        default=0, description="The cap never drops below this for carbon (watts)."
    )
    pue: Annotated[float, Field(ge=1.0, le=3.0)] = Field(
        default=1.0, description="Power usage effectiveness multiplying IT power."
    )
    api_key_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description=(
            "Secret key holding the API key (ElectricityMaps) or `user:password` (WattTime)."
        ),
    )
    max_age_seconds: Annotated[int, Field(ge=60, le=86_400)] = Field(
        default=3600, description="Readings older than this count as missing."
    )
    fallback: CarbonFallback = Field(
        default=CarbonFallback.STATIC_CAP,
        description="Cap while data is missing: StaticCap (powerCapLimit) or FloorCap.",
    )

    @model_validator(mode="after")
    def _provider_fields(self) -> Carbon:
        provider = self.provider
        if provider is CarbonProvider.ELECTRICITY_MAPS and self.zone is None:
            raise ValueError("zone is required for the ElectricityMaps provider")
        if provider is CarbonProvider.WATT_TIME and self.region is None:
            raise ValueError("region is required for the WattTime provider")
        if provider is CarbonProvider.STATIC and self.static_intensity_g_per_kwh is None:
            raise ValueError("staticIntensityGramsPerKWh is required for the Static provider")
        keyed = {CarbonProvider.ELECTRICITY_MAPS, CarbonProvider.WATT_TIME}
        if provider in keyed and self.api_key_secret_ref is None:
            raise ValueError("apiKeySecretRef is required for ElectricityMaps and WattTime")
        if self.region_id is not None and self.postcode is not None:
            raise ValueError("set regionId or postcode, not both")
        uk_only = self.region_id is not None or self.postcode is not None
        if uk_only and provider is not CarbonProvider.UK_NATIONAL_GRID:
            raise ValueError("regionId and postcode apply only to the UKNationalGrid provider")
        return self


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


class Cooling(CrdModel):
    """Cooling recommendations from rack readings."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
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
        json_schema_extra=_rules(
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


# ---------------------------------------------------------------------------------------------
# Status: written only by the controller, through the status subresource
# ---------------------------------------------------------------------------------------------


class ConditionStatus(enum.StrEnum):
    """A condition's truth value."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(enum.StrEnum):
    """Condition types the controller sets (others may appear; the schema allows any)."""

    READY = "Ready"
    METRICS_AVAILABLE = "MetricsAvailable"
    CAPPING = "Capping"
    CARBON_AVAILABLE = "CarbonAvailable"
    TARGETS_RESOLVED = "TargetsResolved"
    RACKS_WITHIN_LIMITS = "RacksWithinLimits"
    GPU_POWER_MEASURED = "GpuPowerMeasured"
    """Set while a target's pods request GPUs: False when the preset has no GPU power series
    for some of them (their GPUs count 0 W); absent when no pod requests a GPU."""


class Condition(CrdModel):
    """One condition, shaped like metav1.Condition."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=316, pattern=CAMEL_CASE)] = (
        Field(description="Ready, MetricsAvailable, Capping, CarbonAvailable, ...")
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: Annotated[
        str, StringConstraints(min_length=1, max_length=1024, pattern=CONDITION_REASON)
    ] = Field(description="CamelCase reason for the last transition.")
    message: Annotated[str, StringConstraints(max_length=32_768)] = Field(
        default="", description="What happened and what to fix, in words."
    )
    last_transition_time: datetime = Field(description="When status last changed.")
    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="The spec generation this condition was computed from."
    )


class EffectiveCapSource(enum.StrEnum):
    """What set the effective cap."""

    STATIC = "Static"
    CARBON = "Carbon"


class TargetKindName(enum.StrEnum):
    """Kinds that appear in `status.targets`."""

    SCALED_OBJECT = "ScaledObject"
    INFERENCE_SERVICE = "InferenceService"
    DEPLOYMENT = "Deployment"


class TargetStatus(CrdModel):
    """The controller's view of one capped target."""

    name: DnsName = Field(description="Name of the capped object.")
    kind: TargetKindName = Field(description="ScaledObject, InferenceService or Deployment.")
    current_replicas: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="Replicas running now."
    )
    user_max_replicas: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="The user's own ceiling, restored when pressure recedes."
    )
    applied_max_replicas: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="The ceiling the controller applied."
    )
    watts_per_replica: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="Learned power per replica in watts."
    )
    tokens_per_watt: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="Generated tokens per second per watt (efficiency)."
    )


class HeldTarget(CrdModel):
    """An object in the config's own namespace whose ceiling this config lowered.

    The controller's record of what it must give back: it restores a ceiling only on an object
    listed here (and still annotated as capped by this config), never on an annotation's word.
    """

    kind: TargetKindName = Field(description="ScaledObject or InferenceService.")
    name: DnsName = Field(description="Name of the object, in the config's namespace.")


class RackStatus(CrdModel):
    """The controller's view of one rack."""

    rack_id: Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=RACK_ID)] = (
        Field(description="Rack identifier (value of the rack label).")
    )
    power_watts: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="Measured rack power in watts."
    )
    inlet_celsius: float | None = Field(
        default=None, description="Measured inlet temperature in degrees Celsius."
    )
    headroom_watts: float | None = Field(
        default=None, description="maxPower minus power; negative when over the limit."
    )


class Decision(CrdModel):
    """The last decision the controller acted on, with its reason in words."""

    time: datetime = Field(description="When the decision was taken.")
    action: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=CAMEL_CASE)] = (
        Field(description="CamelCase action, e.g. Cap, Hold, Release, FailSafe.")
    )
    reason: Annotated[str, StringConstraints(max_length=1024)] = Field(
        default="", description="Why, in words."
    )


class PowerCappingConfigStatus(CrdModel):
    """What the controller observed and did. Written only through the status subresource."""

    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="The spec generation the controller last acted on."
    )
    conditions: (
        Annotated[
            list[Condition],
            Field(
                max_length=16,
                json_schema_extra={
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["type"],
                },
            ),
        ]
        | None
    ) = Field(default=None, description="Conditions following Kubernetes API conventions.")
    measured_power_watts: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="Measured power of all targets together, in watts."
    )
    effective_cap_watts: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="The cap in force, in watts."
    )
    effective_cap_source: EffectiveCapSource | None = Field(
        default=None, description="Static (powerCapLimit) or Carbon (lowered for carbon)."
    )
    targets: (
        Annotated[
            list[TargetStatus],
            Field(
                max_length=256,
                json_schema_extra={
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["kind", "name"],
                },
            ),
        ]
        | None
    ) = Field(default=None, description="Per-target state.")
    racks: (
        Annotated[
            list[RackStatus],
            Field(
                max_length=256,
                json_schema_extra={
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["rackId"],
                },
            ),
        ]
        | None
    ) = Field(default=None, description="Per-rack state.")
    last_decision: Decision | None = Field(
        default=None, description="The last decision acted on and its reason."
    )
    held_targets: (
        Annotated[
            list[HeldTarget],
            Field(
                max_length=256,
                json_schema_extra={
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["kind", "name"],
                },
            ),
        ]
        | None
    ) = Field(
        default=None,
        description=(
            "Objects whose ceiling this config holds below the user's own; the controller gives "
            "back only these, and only in this namespace."
        ),
    )


class ObjectMeta(BaseModel):
    """The few metadata fields the controller reads; the API server owns the rest."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    namespace: str = "default"
    generation: int = 0
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class PowerCappingConfig(CrdModel):
    """A whole PowerCappingConfig object, as stored by the API server."""

    api_version: Literal["powercapping.climatik-project.ai/v1"] = (
        "powercapping.climatik-project.ai/v1"
    )
    kind: Literal["PowerCappingConfig"] = "PowerCappingConfig"
    metadata: ObjectMeta
    spec: PowerCappingConfigSpec
    status: PowerCappingConfigStatus | None = None

    # The schema generator walks only spec and status; metadata is the API server's.
    crd_walked_fields: ClassVar[tuple[str, ...]] = ("spec", "status")
