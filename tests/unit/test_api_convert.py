"""A PowerCappingConfig object becomes domain values, and a bad one is refused naming its field.

The invalid objects are the same list the integration test sends to the real API server, so the
controller's own reading of an object never accepts what the API server refuses.
"""

from __future__ import annotations

from typing import Any

import pytest

from climatik.api.convert import InvalidConfigError, config_from_object, parse_object
from climatik.domain.carbon import EmissionRateTarget, IntensityBandTarget
from climatik.domain.config import (
    CarbonFallback,
    CarbonProvider,
    GpuTuningMode,
    LabelRequirement,
    LabelSelector,
    MeasurementPreset,
    PolicyType,
    RackConstraint,
    SecretKeyRef,
    SelectorOperator,
    TargetKind,
    TargetRef,
)
from climatik.domain.paths import field_path
from climatik.domain.placement import MigrationSettings
from tests.api_cases import (
    BASE,
    DESIGN_EXAMPLES,
    FULL_EXAMPLE,
    INVALID_CASE_IDS,
    INVALID_CASES,
    InvalidCase,
    load,
)


def test_design_example_becomes_domain_values() -> None:
    obj = load(DESIGN_EXAMPLES["section-8.1.3-kserve"])
    obj["metadata"].update(namespace="llm", generation=3)
    config = config_from_object(obj)
    assert config.key == "llm/llm-inference-power-cap"
    assert config.generation == 3
    assert config.power_cap_w == 1000.0
    assert config.targets == (TargetRef(TargetKind.SCALED_OBJECT, "llm-inference-scaledobject"),)
    assert config.racks == (
        RackConstraint("rack-1", 2000.0, 30.0),
        RackConstraint("rack-2", 1500.0, 28.0),
    )
    assert config.rack("rack-2") == RackConstraint("rack-2", 1500.0, 28.0)
    assert config.rack("rack-9") is None
    assert config.metrics == ()
    assert config.carbon is None
    # The defaults reach the domain as fractions.
    assert config.policy.type is PolicyType.HEADROOM
    assert config.policy.capping_threshold_fraction == pytest.approx(0.80)
    assert config.policy.holding_threshold_fraction == pytest.approx(0.95)
    assert config.placement.migration is None  # off unless enabled


def test_api_spec_example_keeps_deployment_and_metrics() -> None:
    config = config_from_object(load(DESIGN_EXAMPLES["section-3.2-api-spec"]))
    assert config.deployment_name == "vllm-deployment"
    assert TargetRef(TargetKind.DEPLOYMENT, "vllm-deployment") in config.targets
    assert len(config.targets) == 3
    (metric,) = config.metrics
    assert metric.prometheus_address == "http://prometheus-server"
    assert metric.threshold_w == 2500.0


def test_every_extension_converts() -> None:
    config = config_from_object(load(FULL_EXAMPLE))
    assert config.policy.type is PolicyType.THRESHOLD
    assert config.policy.capping_threshold_fraction == pytest.approx(0.75)
    assert config.policy.hysteresis_fraction == pytest.approx(0.03)
    assert config.policy.step_down_interval_s == 60.0
    assert config.target_selector == LabelSelector(
        match_labels=(("climatik-project.ai/capped", "true"),),
        match_expressions=(
            LabelRequirement("serving.kserve.io/inferenceservice", SelectorOperator.EXISTS),
            LabelRequirement("tier", SelectorOperator.IN, ("gold", "silver")),
        ),
    )
    assert config.power_measurement.preset is MeasurementPreset.CUSTOM
    assert config.power_measurement.rack_power_query == "sum by (rack) (pdu_output_watts)"
    carbon = config.carbon
    assert carbon is not None
    assert carbon.provider is CarbonProvider.ELECTRICITY_MAPS
    assert carbon.zone == "DE"
    assert carbon.target == IntensityBandTarget(clean_g_per_kwh=100.0, dirty_g_per_kwh=400.0)
    assert carbon.floor_w == 4000.0
    assert carbon.api_key_secret == SecretKeyRef("electricitymaps", "token")
    assert carbon.fallback is CarbonFallback.FLOOR_CAP
    assert carbon.max_age_s == 1800.0
    assert config.placement.rack_label_key == "topology.example.com/rack"
    assert config.placement.exclude_over_limit_racks is False
    assert config.placement.migration == MigrationSettings(
        min_gain_c=0.2, min_interval_s=600.0, min_ready=3
    )
    assert config.cooling.webhook_url == "https://cooling.example.com/api/v1/recommendations"
    assert config.gpu_tuning.mode is GpuTuningMode.RECOMMEND
    assert config.gpu_tuning.slo.max_time_to_first_token_s == pytest.approx(0.5)
    assert config.gpu_tuning.slo.max_inter_token_latency_s == pytest.approx(0.05)
    assert config.replica_sizing.max_time_to_first_token_s == pytest.approx(1.0)
    assert config.replica_sizing.max_inter_token_latency_s == pytest.approx(0.08)
    assert config.replica_sizing.slo_attainment == pytest.approx(0.999)
    assert config.fail_safe.safe_max_replicas == 2
    assert config.fail_safe.hold_s == 600.0


def test_emission_rate_target_carries_pue() -> None:
    obj = load(BASE)
    obj["spec"]["carbon"] = {
        "provider": "UKNationalGrid",
        "regionId": 13,
        "pue": 1.5,
        "target": {"type": "EmissionRate", "emissionRateGramsPerHour": 200_000},
    }
    carbon = config_from_object(obj).carbon
    assert carbon is not None
    assert carbon.target == EmissionRateTarget(grams_per_hour=200_000.0, pue=1.5)
    assert carbon.region_id == 13


@pytest.mark.parametrize("case", INVALID_CASES, ids=INVALID_CASE_IDS)
def test_invalid_object_is_refused_naming_the_field(case: InvalidCase) -> None:
    with pytest.raises(InvalidConfigError) as refused:
        parse_object(case.build())
    leaf = case.field.rsplit(".", 1)[-1].split("[", 1)[0]
    assert leaf in str(refused.value)
    assert refused.value.problems


def test_base_of_the_invalid_cases_is_valid() -> None:
    parse_object(load(BASE))


def test_invalid_case_count_meets_the_issue() -> None:
    assert len(INVALID_CASES) >= 25


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (("spec", "rackConstraints", 0, "maxPower"), "spec.rackConstraints[0].maxPower"),
        (("spec",), "spec"),
        ((), ""),
        (("spec", "scaleObjectRef", 2, "metadata", "name"), "spec.scaleObjectRef[2].metadata.name"),
    ],
)
def test_field_path(location: tuple[int | str, ...], expected: str) -> None:
    assert field_path(location) == expected


@pytest.mark.parametrize(
    ("requirement", "labels", "matches"),
    [
        (LabelRequirement("a", SelectorOperator.IN, ("x",)), {"a": "x"}, True),
        (LabelRequirement("a", SelectorOperator.IN, ("x",)), {"a": "y"}, False),
        (LabelRequirement("a", SelectorOperator.IN, ("x",)), {}, False),
        (LabelRequirement("a", SelectorOperator.NOT_IN, ("x",)), {}, True),
        (LabelRequirement("a", SelectorOperator.NOT_IN, ("x",)), {"a": "x"}, False),
        (LabelRequirement("a", SelectorOperator.EXISTS), {"a": ""}, True),
        (LabelRequirement("a", SelectorOperator.EXISTS), {"b": "x"}, False),
        (LabelRequirement("a", SelectorOperator.DOES_NOT_EXIST), {"b": "x"}, True),
        (LabelRequirement("a", SelectorOperator.DOES_NOT_EXIST), {"a": "x"}, False),
    ],
)
def test_label_requirement_semantics(
    requirement: LabelRequirement, labels: dict[str, str], matches: bool
) -> None:
    assert requirement.matches(labels) is matches
    assert LabelSelector(match_expressions=(requirement,)).matches(labels) is matches


def test_selector_ands_labels_and_expressions() -> None:
    selector = LabelSelector(
        match_labels=(("app", "llm"),),
        match_expressions=(LabelRequirement("tier", SelectorOperator.IN, ("gold",)),),
    )
    assert selector.matches({"app": "llm", "tier": "gold"})
    assert not selector.matches({"app": "llm", "tier": "bronze"})
    assert not selector.matches({"app": "web", "tier": "gold"})


def test_a_conversion_is_reused_only_for_the_same_generation_and_spec() -> None:
    def obj(cap: int, generation: int = 4) -> dict[str, Any]:
        return {
            "apiVersion": "powercapping.climatik-project.ai/v1",
            "kind": "PowerCappingConfig",
            "metadata": {"name": "memo", "namespace": "llm", "generation": generation},
            "spec": {"powerCapLimit": cap, "deploymentName": "vllm"},
        }

    first = config_from_object(obj(1000))
    assert config_from_object(obj(1000)) is first
    assert config_from_object(obj(1000, generation=5)) is not first
    # Same generation, other spec (only fakes and hand-written objects do that): never stale.
    assert config_from_object(obj(900)).power_cap_w == 900.0
    mutable = obj(800)
    assert config_from_object(mutable).power_cap_w == 800.0
    mutable["spec"]["powerCapLimit"] = 700  # a caller changing its own dict afterwards
    assert config_from_object(mutable).power_cap_w == 700.0
