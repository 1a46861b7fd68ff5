"""How the capping policies are tuned: the seed's threshold rule, the headroom policy, and the
fail-safe both share. Defaults are the ones the twin's scenarios run with; the live controller
builds them from each PowerCappingConfig's `policy` (`policies/capping_spec.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class FailSafeSettings:
    """What to do while measurements are missing."""

    max_data_age_s: float = 300.0
    """Hold the last ceilings this long without data."""
    safe_max_replicas: int | None = None
    """Ceiling after `max_data_age_s` (clamped to [min, user max]); `None` keeps holding."""


@dataclass(frozen=True, slots=True)
class ThresholdSettings:
    """The design document's 80 % / 95 % rule."""

    approach_fraction: float = 0.80
    limit_fraction: float = 0.95
    step_down_interval_s: float = 30.0
    """After a target's ceiling is stepped down, its next step-down waits this long (measured
    power lags a step-down); a breach of the cap itself and the fail-safe never wait
    (`policies/step_down.py`)."""
    fail_safe: FailSafeSettings = field(default_factory=FailSafeSettings)


@dataclass(frozen=True, slots=True)
class HeadroomSettings:
    """Tuning of the headroom policy; defaults are the ones the twin's scenarios are run with."""

    safety_margin_fraction: float = 0.03
    """Share of the cap kept free for noise, measurement lag and load growth between decisions
    (the power model charges demand bursts and its own uncertainty on top)."""
    hysteresis_fraction: float = 0.01
    """Extra share of the cap a ceiling must clear before it is raised (keeps ceilings still;
    the model learns only while replica counts hold, so its estimate wobbles little)."""
    max_step_down_replicas: int = 1
    """At most this many replicas fewer than running per decision (graceful step-down)."""
    step_down_interval_s: float = 30.0
    """After a target's ceiling is stepped down, its next step-down waits this long (measured
    power lags a step-down); a breach of the cap itself and the fail-safe never wait
    (`policies/step_down.py`). The CRD's default; at the scenarios' 30 s control interval it
    holds no step-down back, so the twin's figures are those of 0 (measured, every scenario)."""
    step_up_replicas: int = 2
    """Growth allowed above running replicas per decision, at least ..."""
    step_up_fraction: float = 0.25
    """... or this share of the running replicas, whichever is larger."""
    rise_weight: float = 0.5
    """Moving-average weight of a sample above the estimate (learn load increases quickly)."""
    fall_weight: float = 0.02
    """Weight of a sample below it (forget peaks slowly: a quiet hour must not invite a spike)."""
    outlier_ratio: float = 3.0
    """Samples beyond estimate x or ÷ this ratio are clipped to it."""
    initial_watts_per_replica: float | None = None
    """Estimate used before a target has been measured; `None`: hold such a target's ceiling."""
    idle_watts_per_replica: float = 0.0
    """Idle power of the node a new replica lands on when that idle power is already measured
    under the cap (node-level queries); 0 when the cap covers pod power only."""
    idle_pending: bool = False
    """The cap measures whole nodes but their idle draw is not learned yet: the energy model
    waits (dynamic watts would carry the idle draw, and an energy per token learned so stays
    too high for many decisions after)."""
    min_efficiency_share: float = 0.1
    """A target's priority weight is at least this share of the most efficient target's."""
    energy_weight: float = 0.2
    """Moving-average weight of one sample of a target's dynamic energy per token."""
    demand_fall_weight: float = 0.1
    """Weight of a demand sample below the envelope (demand rises are taken at once)."""
    settle_rounds: int = 3
    """Decisions a target's replica count must have held before a round teaches its energy
    model: a new replica serves only after its start-up, and the rate windows then still mix
    the two operating points (start-up 60 s + window 30 s at 30-s decisions: the third round
    after the change is the first clean one). Counted in decisions, so a run whose clock is
    compressed (the demo) settles alike."""
    fail_safe: FailSafeSettings = field(default_factory=FailSafeSettings)


CeilingSettings = ThresholdSettings | HeadroomSettings
