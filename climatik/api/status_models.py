"""The status of a PowerCappingConfig: what the controller observed and did, as the CRD stores it.

Written only by the controller, through the status subresource (`climatik.api.status` computes
the transitions and the merge patch); the API server enforces these bounds on every write.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from climatik.api.base import CAMEL_CASE, CONDITION_REASON, RACK_ID, CrdModel, DnsName


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
    min_replicas: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="The user's minimum (deferrable targets with a deadline)."
    )
    deadline_seconds: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description=(
            "Each request's deadline after arrival, from the climatik-project.ai/deferrable "
            "annotation: its work is planned into clean carbon slots."
        ),
    )
    waiting_requests: Annotated[float, Field(ge=0)] | None = Field(
        default=None,
        description="Requests queued in its pods (deferrable targets with a deadline).",
    )
    finished_requests_per_second: Annotated[float, Field(ge=0)] | None = Field(
        default=None,
        description="Requests its pods finish per second (deferrable targets with a deadline).",
    )


class DeferrablePlanStatus(CrdModel):
    """The carbon reconciler's plan for one deferrable target with a deadline."""

    kind: TargetKindName = Field(description="ScaledObject or InferenceService.")
    name: DnsName = Field(description="Name of the target, in the config's namespace.")
    planned_max_replicas: Annotated[int, Field(ge=0)] = Field(
        description="The ceiling the plan sets now (the power-cap reconciler keeps it until "
        "validUntil, never above the user's own)."
    )
    valid_until: datetime = Field(
        description="After this the plan is stale and the target runs to the user's maximum."
    )
    backlog_requests: Annotated[float, Field(ge=0)] = Field(description="Requests waiting now.")
    planned_requests: Annotated[float, Field(ge=0)] = Field(
        description="Requests the plan serves in the current carbon slot."
    )
    done_requests: Annotated[float, Field(ge=0)] = Field(
        description="Requests finished so far in the current carbon slot."
    )
    deadline_misses: Annotated[float, Field(ge=0)] = Field(
        description="Requests seen waiting past their deadline since the controller started."
    )
    behind: bool = Field(
        description="Its work cannot all meet its deadlines at full capacity: it runs "
        "regardless of carbon."
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
    replica_headroom: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description=(
            "More replicas of the targets the rack takes: its seats for one replica's footprint "
            "(free nodes without one), bounded by its power headroom over watts per replica; 0 "
            "near its inlet limit."
        ),
    )


class ReplicaSizeStatus(CrdModel):
    """GPUs per replica (tensor-parallel size) for one target: now and recommended, each with
    its predicted tokens per joule and SLO attainment at the measured load (issue 23)."""

    name: DnsName = Field(description="The target, by its name in `targets`.")
    current_gpus: Annotated[int, Field(ge=0, le=1024)] = Field(
        description="GPUs per replica now (`nvidia.com/gpu` of the pod template)."
    )
    recommended_gpus: Annotated[int, Field(ge=0, le=1024)] | None = Field(
        default=None, description="GPUs per replica recommended; absent when not measured."
    )
    reason: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=CAMEL_CASE)] = (
        Field(description="Keep, Efficiency, Slo, Fragmented or Unmeasured.")
    )
    current_tokens_per_joule: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="Predicted tokens per joule at the current size."
    )
    recommended_tokens_per_joule: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="Predicted tokens per joule at the recommended size."
    )
    current_slo_attainment: Annotated[float, Field(ge=0, le=1)] | None = Field(
        default=None, description="Predicted share of requests meeting the SLO now."
    )
    recommended_slo_attainment: Annotated[float, Field(ge=0, le=1)] | None = Field(
        default=None, description="Predicted share of requests meeting the SLO, recommended."
    )


class RackSeats(CrdModel):
    """How many more replicas of one footprint a rack's nodes can take."""

    rack_id: Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=RACK_ID)] = (
        Field(description="Rack identifier (value of the rack label).")
    )
    replicas: Annotated[int, Field(ge=0)] = Field(
        description="Replicas that fit the rack's nodes now (allocatable less bound requests)."
    )


class ReplicaFootprintStatus(CrdModel):
    """One replica's footprint for a target with a VerticalPodAutoscaler: the CPU and memory a
    new replica is admitted with (VPA's target where VPA applies it), and the seats it leaves
    on each rack. Watts per replica are not VPA's: they stay the power model's (issue 23)."""

    name: DnsName = Field(description="The target, by its name in `targets`.")
    vertical_pod_autoscaler: DnsName = Field(description="The VPA whose targetRef is its workload.")
    source: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=CAMEL_CASE)] = (
        Field(
            description=(
                "VpaTarget: the recommendation applies to new replicas; Requests: it does not "
                "(mode Off, or no recommendation yet), so the pods' own requests count."
            )
        )
    )
    cpu_cores: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="CPU cores one new replica asks for."
    )
    memory_bytes: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="Memory bytes one new replica asks for."
    )
    requested_cpu_cores: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="CPU cores a running replica asks for now."
    )
    requested_memory_bytes: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="Memory bytes a running replica asks for now."
    )
    seats: (
        Annotated[
            list[RackSeats],
            Field(
                max_length=256,
                json_schema_extra={
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["rackId"],
                },
            ),
        ]
        | None
    ) = Field(default=None, description="Per rack, replicas of this footprint that still fit.")


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
    deferrable_plans: (
        Annotated[
            list[DeferrablePlanStatus],
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
            "Deferrable targets with a deadline: the carbon reconciler's plan and how it is kept."
        ),
    )
    replica_sizes: (
        Annotated[
            list[ReplicaSizeStatus],
            Field(
                max_length=256,
                json_schema_extra={
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                },
            ),
        ]
        | None
    ) = Field(default=None, description="GPUs per replica, per target: now and recommended.")
    replica_footprints: (
        Annotated[
            list[ReplicaFootprintStatus],
            Field(
                max_length=256,
                json_schema_extra={
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                },
            ),
        ]
        | None
    ) = Field(
        default=None,
        description="Per target with a VerticalPodAutoscaler: one replica's CPU and memory, and "
        "how many more fit each rack.",
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
