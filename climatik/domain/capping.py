"""What the replica-ceiling policies consume and produce.

A power-capping decision reads one capped scope (a PowerCappingConfig: its cap, its measured
power, the targets it scales, the racks they run on) and writes one new `maxReplicaCount` per
target with an action, a reason code (`CeilingReason`, for metrics and code that branches on
why) and a reason in words (for people: status, Events, logs). These types are shared by the
live controller and the twin, so both feed the policies exactly the same shapes.

Guarantees: every value is frozen; "no data" is `None`, never zero (a missing measurement must
never look like an idle service); watts and replica counts are validated on construction.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field


class CeilingAction(enum.StrEnum):
    """What a decision did to a target's ceiling."""

    HOLD = "hold"
    """The ceiling stays as it is."""
    LOWER = "lower"
    """The ceiling goes down (power or rack pressure)."""
    RAISE = "raise"
    """The ceiling goes up but stays below the user's own maximum."""
    RESTORE = "restore"
    """The ceiling returns to the user's own maximum."""
    SAFE = "safe"
    """Data has been missing for too long: the configured safe ceiling applies."""


class CeilingReason(enum.StrEnum):
    """Why a decision went the way it did: a closed set, so metrics label by it and code can
    branch on it, never on the words of `CeilingDecision.reason`."""

    NO_POWER_DATA = "no_power_data"
    """The scope's power is missing: the ceiling in force holds (missing data never lowers)."""
    SAFE_CEILING = "safe_ceiling"
    """Power has been missing longer than the fail-safe allows: the safe ceiling applies."""
    NO_TARGET_POWER_DATA = "no_target_power_data"
    """This target's own power is missing (the scope's is not): its ceiling holds."""
    NO_ESTIMATE = "no_estimate"
    """No watts-per-replica estimate yet for this target: its ceiling holds."""
    POWER_AT_LIMIT = "power_at_limit"
    """Threshold: power at or above the limit share of the cap: ceiling = current replicas."""
    RACK_AT_LIMIT = "rack_at_limit"
    """Threshold: a rack is at its limits: ceiling = current replicas."""
    POWER_NEAR_LIMIT = "power_near_limit"
    """Threshold: power at or above the approach share of the cap: ceiling = current + 1."""
    RACK_NEAR_LIMIT = "rack_near_limit"
    """Threshold: a rack approaches its limits: ceiling = current + 1."""
    BELOW_THRESHOLD = "below_threshold"
    """Threshold: power below the approach share: released to the user's maximum."""
    FITS_UNDER_CAP = "fits_under_cap"
    """Headroom: every target at its user's maximum fits under the cap."""
    WITHIN_HYSTERESIS = "within_hysteresis"
    """Headroom: the ceiling in force lies within the hysteresis band and stays."""
    OVER_BUDGET = "over_budget"
    """Headroom: the budget under the cap allows fewer replicas: lowered."""
    OVER_CARBON_BUDGET = "over_carbon_budget"
    """Headroom: a deferrable target's budget under the carbon cap allows fewer: lowered."""
    HEADROOM = "headroom"
    """Headroom: the budget leaves room for more replicas: raised."""
    OVER_CAP_HOLDING = "over_cap_holding"
    """Headroom: there is room for more replicas, but the scope measures above the cap less its
    margin (a cut's effect is still arriving): the ceiling holds instead of rising."""
    CUT_ARRIVING = "cut_arriving"
    """Headroom: there is room for more replicas only with watts a fall in some target's
    replicas frees (a cut, or its autoscaler scaling in), which the measurement still holds (a
    lag and a rate window): the ceiling holds instead of rising on savings not seen yet."""
    STEP_DOWN_WAITING = "step_down_waiting"
    """Both: the policy would step the ceiling down, but its last step-down is younger than the
    step-down interval (measurements still lag it): the ceiling holds."""


def _check_optional_watts(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        msg = f"{name} must be a finite number of watts >= 0 or None (no data), got {value}"
        raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class TargetObservation:
    """One scaled workload (a KEDA ScaledObject or an InferenceService) as measured now."""

    name: str
    current_replicas: int
    min_replicas: int
    user_max_replicas: int
    """The user's own ceiling (remembered in an annotation while Climatik lowers it)."""
    applied_max_replicas: int
    """The ceiling in force now (`spec.maxReplicaCount`)."""
    watts: float | None
    """Power drawn by the target's pods; `None` when the query returned no usable data."""
    tokens_per_s: float | None = None
    """Generated tokens per second over the same pods; `None` when unknown."""
    limited_by_ceiling: bool | None = None
    """The autoscaler wants more replicas than the ceiling allows (the HPA's `ScalingLimited`
    condition with reason `TooManyReplicas`); `None` when unknown, in which case the target
    counts as wanting more. (Guessing from "running at the ceiling" instead makes two targets
    sharing a cap trade headroom back and forth every decision: lowering one to its running
    count makes it look limited next time.)"""
    priority: int = 0
    """Higher keeps its replicas first when the cap tightens (interactive serving over batch
    work that can wait); among equal priorities the more efficient target keeps more."""
    deferrable: bool = False
    """Its work may wait for a cleaner grid: only deferrable targets yield to a carbon cap."""
    demand_tokens_per_s: float | None = None
    """Tokens per second the target's demand asks for: arriving work plus the backlog its
    autoscaler drains (what its trigger metric measures, in tokens); `None`: not measured, in
    which case every replica is charged its learned full-load watts."""

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.current_replicas < 0:
            msg = f"{self.name}: replica counts must be >= 0"
            raise ValueError(msg)
        if self.user_max_replicas < self.min_replicas:
            msg = (
                f"{self.name}: user max replicas ({self.user_max_replicas}) is below "
                f"min replicas ({self.min_replicas})"
            )
            raise ValueError(msg)
        _check_optional_watts(f"{self.name}: watts", self.watts)
        if self.tokens_per_s is not None and not (
            math.isfinite(self.tokens_per_s) and self.tokens_per_s >= 0
        ):
            msg = f"{self.name}: tokens_per_s must be >= 0 or None, got {self.tokens_per_s}"
            raise ValueError(msg)
        if self.demand_tokens_per_s is not None and not (
            math.isfinite(self.demand_tokens_per_s) and self.demand_tokens_per_s >= 0
        ):
            msg = (
                f"{self.name}: demand_tokens_per_s must be >= 0 or None, "
                f"got {self.demand_tokens_per_s}"
            )
            raise ValueError(msg)

    @property
    def wants_more_replicas(self) -> bool:
        """True when the autoscaler is held by the ceiling, or when that is unknown."""
        if self.limited_by_ceiling is not None:
            return self.limited_by_ceiling
        return True

    @property
    def tokens_per_joule(self) -> float | None:
        """Tokens per joule (tokens per second per watt), when both are known and their ratio is
        a number (a few tokens over a denormal wattage is not an efficiency)."""
        if self.tokens_per_s is None or self.watts is None or self.watts <= 0:
            return None
        ratio = self.tokens_per_s / self.watts
        return ratio if math.isfinite(ratio) else None


@dataclass(frozen=True, slots=True)
class RackObservation:
    """One rack the capped targets run on, with its limits.

    `replica_headroom` is how many more replicas of the capped targets the rack can take before
    it reaches its power or temperature limit (the caller converts watts and degrees into replica
    units, because only it knows which pods run where); `None` means unknown (no rack data), and
    0 means the rack is at or over a limit.
    """

    rack_id: str
    watts: float | None = None
    max_watts: float | None = None
    inlet_c: float | None = None
    max_inlet_c: float | None = None
    replica_headroom: int | None = None

    def __post_init__(self) -> None:
        _check_optional_watts(f"rack {self.rack_id}: watts", self.watts)
        if self.replica_headroom is not None and self.replica_headroom < 0:
            msg = f"rack {self.rack_id}: replica_headroom must be >= 0"
            raise ValueError(msg)

    @property
    def at_limit(self) -> bool:
        """True when a measured rack power or temperature has reached its limit."""
        power_hit = (
            self.watts is not None and self.max_watts is not None and self.watts >= self.max_watts
        )
        heat_hit = (
            self.inlet_c is not None
            and self.max_inlet_c is not None
            and self.inlet_c >= self.max_inlet_c
        )
        return power_hit or heat_hit or self.replica_headroom == 0

    @property
    def approaching_limit(self) -> bool:
        """True at 80 % or more of a rack's power limit, or within 1 °C of its temperature limit."""
        power_near = (
            self.watts is not None
            and self.max_watts is not None
            and self.watts >= 0.8 * self.max_watts
        )
        heat_near = (
            self.inlet_c is not None
            and self.max_inlet_c is not None
            and self.inlet_c >= self.max_inlet_c - 1.0
        )
        return power_near or heat_near


@dataclass(frozen=True, slots=True)
class CapObservation:
    """One capped scope: a cap, the power measured under it, its targets and their racks."""

    scope: str
    cap_w: float
    measured_w: float | None
    """Total power of the scope (targets plus anything else under the cap); `None`: no data."""
    targets: tuple[TargetObservation, ...]
    racks: tuple[RackObservation, ...] = ()
    deferrable_cap_w: float | None = None
    """A lower cap (from the grid's carbon intensity) that deferrable targets must fit under,
    counting everything else in the scope; the others may still use up to `cap_w`. `None`:
    `cap_w` for all."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.cap_w) and self.cap_w > 0):
            msg = f"{self.scope}: cap_w must be a positive number of watts, got {self.cap_w}"
            raise ValueError(msg)
        if self.deferrable_cap_w is not None and not (
            math.isfinite(self.deferrable_cap_w) and 0 < self.deferrable_cap_w <= self.cap_w
        ):
            msg = (
                f"{self.scope}: deferrable_cap_w must be positive and at most cap_w "
                f"({self.cap_w}), got {self.deferrable_cap_w}"
            )
            raise ValueError(msg)
        _check_optional_watts(f"{self.scope}: measured_w", self.measured_w)
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            msg = f"{self.scope}: target names must be unique, got {names}"
            raise ValueError(msg)

    @property
    def breached(self) -> bool:
        """Measured above the cap itself (not just past a threshold or the margin): the hard
        limit comes first, so step-downs neither wait nor go gradually."""
        return self.measured_w is not None and self.measured_w > self.cap_w

    @property
    def utilisation(self) -> float | None:
        """Measured power as a share of the cap, or `None` without data."""
        return None if self.measured_w is None else self.measured_w / self.cap_w

    @property
    def rack_replica_headroom(self) -> int | None:
        """More replicas the racks admit in total; `None` (unbounded) when a rack's is unknown.

        A rack at or over a limit counts 0 whatever its reported headroom.
        """
        if not self.racks:
            return None
        total = 0
        for rack in self.racks:
            if rack.at_limit:
                continue
            if rack.replica_headroom is None:
                return None
            total += rack.replica_headroom
        return total


@dataclass(frozen=True, slots=True)
class CeilingDecision:
    """The new ceiling of one target and why."""

    target: str
    previous_max_replicas: int
    new_max_replicas: int
    action: CeilingAction
    code: CeilingReason
    """Why, as a code (metrics, branching)."""
    reason: str
    """Why, in words with the figures (status, Events, logs)."""
    planned_watts: float | None = None
    """Watts the new ceiling allows if every replica draws the learned estimate."""
    predicted_watts: float | None = None
    """Watts the policy's power model predicts for the target now (its replicas at its
    demand), to set beside the measured watts; `None` where the model has no prediction."""

    @property
    def changed(self) -> bool:
        """True when the ceiling must be written (decisions are idempotent otherwise)."""
        return self.new_max_replicas != self.previous_max_replicas


@dataclass(frozen=True, slots=True)
class TargetLearnerState:
    """What the headroom policy remembers about one target between decisions."""

    watts_per_replica: float | None = None
    """Robust estimate of one replica's power at the load it has been seen to reach."""
    samples: int = 0
    last_data_s: float | None = None
    """When usable watts were last seen for this target (the policy's `now_s` clock)."""
    joules_per_token: float | None = None
    """Dynamic energy per generated token: the target's watts above the idle draw of the nodes
    its replicas occupy, per token per second served (a moving average)."""
    joules_per_token_spread: float = 0.0
    """Mean relative deviation of the samples from that average: the model's uncertainty."""
    dynamic_watts_avg: float | None = None
    tokens_per_s_avg: float | None = None
    """Moving averages of the dynamic watts and the tokens per second the energy per token is
    the ratio of: a ratio of averages, so a round whose token rate still lags a change (a
    replica that began serving within the rate window) weighs by its few tokens instead of
    moving the estimate by its large ratio."""
    tokens_per_replica: float | None = None
    """Tokens per second one replica serves when its demand exceeds it (a moving average of
    rounds with a backlog only); `None`: never seen saturated."""
    demand_tokens_per_s: float | None = None
    """Envelope of the target's demand: rises at once, falls over a few decisions, so a burst
    that paused for a minute keeps its power reserved."""
    replicas_seen: int | None = None
    """Replicas at the previous decision: the energy model learns only while the count holds
    (a window with a replica starting or leaving mixes two operating points)."""
    steady_rounds: int = 0
    """Decisions in a row that have seen `replicas_seen` replicas (0: it just changed)."""
    fell_from: int | None = None
    """While the rate windows still hold the replicas of the last fall in the replica count,
    the count before it (what the measured watts are shared over); else `None`."""
    rose_from: int | None = None
    """For `settle_rounds` decisions after a rise in the replica count, the count before it
    (new replicas still loading their model); else `None`."""


@dataclass(frozen=True, slots=True)
class StepDown:
    """One target's last step-down: when it was decided and the ceiling it set."""

    at_s: float
    """The decision's time (the policy's `now_s` clock)."""
    to_replicas: int
    """The ceiling it set: while the ceiling in force is no higher, the step-down is in force
    (one refused on a conflict, or undone by a raise since, is not)."""


@dataclass(frozen=True, slots=True)
class CappingState:
    """Everything a ceiling policy carries from one decision to the next.

    The policy returns a new state instead of mutating anything, so it stays pure and a
    controller restart only costs relearning (and forgets the last step-downs, which only lets
    the next one come sooner: the safe direction).
    """

    targets: dict[str, TargetLearnerState] = field(default_factory=dict)
    last_scope_data_s: float | None = None
    no_data_since_s: float | None = None
    """When the current gap in the scope's power data began; `None` while data flows."""
    predicted_w: float | None = None
    """The scope's power the last plan predicted for this decision (its ceilings in force)."""
    step_downs: dict[str, StepDown] = field(default_factory=dict)
    """Each target's last step-down, by name: the next one waits the step-down interval."""


@dataclass(frozen=True, slots=True)
class CeilingPlan:
    """The outcome of one ceiling decision for a scope."""

    scope: str
    decisions: tuple[CeilingDecision, ...]
    state: CappingState
    budget_w: float | None = None
    """Watts the plan allowed the targets (after margin and untargeted load), when computed."""
    reason: str = ""
    predicted_w: float | None = None
    """The scope's power the plan predicts once its ceilings are in force (headroom)."""
    prediction_error_w: float | None = None
    """Measured minus what the previous plan predicted for now: the power model's error."""
    breach_ahead: bool = False
    """The power model predicts the running replicas, at their demand, above the cap itself:
    step-downs neither wait nor go gradually, as for a measured breach."""

    def ceiling(self, target: str) -> int:
        """The new ceiling of `target` (raises KeyError for an unknown name)."""
        for decision in self.decisions:
            if decision.target == target:
                return decision.new_max_replicas
        raise KeyError(target)

    @property
    def ceilings(self) -> dict[str, int]:
        """New ceilings by target name."""
        return {d.target: d.new_max_replicas for d in self.decisions}
