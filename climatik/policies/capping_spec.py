"""What a PowerCappingConfig's spec asks of the ceiling policy.

The policy settings (Threshold or Headroom, with the fail-safe: hold, then the safe ceiling) and
whether a carbon cap may bind deferrable targets only. Pure functions of the spec, so the
reconciler and its tests read the spec the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

from climatik.domain.config import PolicyType, PowerCappingConfig
from climatik.policies.ceiling_settings import (
    CeilingSettings,
    FailSafeSettings,
    HeadroomSettings,
    ThresholdSettings,
)


def policy_settings(config: PowerCappingConfig) -> CeilingSettings:
    """The policy settings a config asks for (fail-safe: hold, then the safe ceiling)."""
    fail_safe = FailSafeSettings(
        max_data_age_s=config.fail_safe.hold_s,
        safe_max_replicas=config.fail_safe.safe_max_replicas,
    )
    policy = config.policy
    if policy.type is PolicyType.THRESHOLD:
        return ThresholdSettings(
            approach_fraction=policy.capping_threshold_fraction,
            limit_fraction=policy.holding_threshold_fraction,
            step_down_interval_s=policy.step_down_interval_s,
            fail_safe=fail_safe,
        )
    return HeadroomSettings(
        safety_margin_fraction=policy.safety_margin_fraction,
        hysteresis_fraction=policy.hysteresis_fraction,
        max_step_down_replicas=policy.step_down_replicas,
        step_down_interval_s=policy.step_down_interval_s,
        fail_safe=fail_safe,
    )


def batch_can_yield(config: PowerCappingConfig, deferrable: Iterable[bool]) -> bool:
    """Whether a carbon cap may bind deferrable targets only (`caps_with_carbon`'s
    `any_deferrable`), given whether each target is deferrable. Only the Headroom policy budgets
    per target; under Threshold the carbon cap stays the whole scope's cap, else annotating a
    target would switch carbon capping off."""
    return config.policy.type is PolicyType.HEADROOM and any(deferrable)
