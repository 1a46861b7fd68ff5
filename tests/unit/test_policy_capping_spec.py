"""What a config's spec asks of the ceiling policy: its settings, and where a carbon cap binds."""

from __future__ import annotations

import pytest

from climatik.domain.config import FailSafeConfig, PolicyConfig, PolicyType, PowerCappingConfig
from climatik.policies.capping_spec import batch_can_yield, policy_settings
from climatik.policies.carbon import caps_with_carbon
from climatik.policies.ceiling_settings import FailSafeSettings, HeadroomSettings, ThresholdSettings


def config(policy: PolicyConfig, fail_safe: FailSafeConfig | None = None) -> PowerCappingConfig:
    return PowerCappingConfig(
        namespace="serving",
        name="cap",
        generation=1,
        power_cap_w=1000,
        policy=policy,
        fail_safe=fail_safe or FailSafeConfig(),
    )


def test_threshold_takes_the_specs_fractions_interval_and_fail_safe() -> None:
    spec = PolicyConfig(
        type=PolicyType.THRESHOLD,
        capping_threshold_fraction=0.7,
        holding_threshold_fraction=0.9,
        step_down_interval_s=90.0,
    )
    fail_safe = FailSafeConfig(hold_s=60.0, safe_max_replicas=2)
    assert policy_settings(config(spec, fail_safe)) == ThresholdSettings(
        approach_fraction=0.7,
        limit_fraction=0.9,
        step_down_interval_s=90.0,
        fail_safe=FailSafeSettings(max_data_age_s=60.0, safe_max_replicas=2),
    )


def test_headroom_takes_the_specs_margin_hysteresis_and_step_down() -> None:
    spec = PolicyConfig(
        type=PolicyType.HEADROOM,
        safety_margin_fraction=0.1,
        hysteresis_fraction=0.02,
        step_down_replicas=3,
        step_down_interval_s=0.0,
    )
    assert policy_settings(config(spec)) == HeadroomSettings(
        safety_margin_fraction=0.1,
        hysteresis_fraction=0.02,
        max_step_down_replicas=3,
        step_down_interval_s=0.0,
        # The fail-safe holds for hold_s (not max_metric_age_s, which makes a reading stale).
        fail_safe=FailSafeSettings(max_data_age_s=300.0, safe_max_replicas=None),
    )


@pytest.mark.parametrize(
    ("policy", "deferrable", "expected"),
    [
        (PolicyType.HEADROOM, [True, False], True),
        (PolicyType.HEADROOM, [False, False], False),
        (PolicyType.HEADROOM, [], False),
        # Threshold has no per-target budget: the carbon cap must stay the scope's cap.
        (PolicyType.THRESHOLD, [True, False], False),
    ],
)
def test_a_carbon_cap_binds_batch_only_under_headroom_with_deferrable_work(
    policy: PolicyType, deferrable: list[bool], expected: bool
) -> None:
    cfg = config(PolicyConfig(type=policy))
    assert batch_can_yield(cfg, deferrable) is expected
    base_w, carbon_w = cfg.power_cap_w, 400.0
    cap_w, deferrable_cap_w = caps_with_carbon(
        base_w, carbon_w, any_deferrable=batch_can_yield(cfg, deferrable)
    )
    assert (cap_w, deferrable_cap_w) == ((base_w, carbon_w) if expected else (carbon_w, None))
