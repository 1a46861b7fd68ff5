"""The API models read the design document's examples, round-trip through YAML, and default sanely.

The CRD carries defaults too (the API server applies them); the last tests prove both sources
agree, so an object means the same whether or not it passed through the API server.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from climatik.api.crd import build_crd
from climatik.api.resource import PowerCappingConfig
from climatik.api.spec import PowerCappingConfigSpec, ScaleObjectRef
from climatik.api.spec_carbon import Carbon, CarbonTargetType
from climatik.domain.config import (
    CarbonFallback,
    CoolingMode,
    GpuTuningMode,
    MeasurementPreset,
    PlacementMode,
    PolicyType,
)
from tests.api_cases import DESIGN_EXAMPLES, FULL_EXAMPLE, load

EXAMPLES = {**DESIGN_EXAMPLES, "full": FULL_EXAMPLE}


def _wire(model: PowerCappingConfig, *, exclude_unset: bool = False) -> dict[str, Any]:
    return model.model_dump(
        mode="json", by_alias=True, exclude_none=True, exclude_unset=exclude_unset
    )


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_round_trips_exactly(name: str) -> None:
    source = load(EXAMPLES[name])
    model = PowerCappingConfig.model_validate(source)
    assert _wire(model, exclude_unset=True) == source


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_yaml_text_round_trip_preserves_the_model(name: str) -> None:
    model = PowerCappingConfig.model_validate(load(EXAMPLES[name]))
    text = yaml.safe_dump(_wire(model))
    assert PowerCappingConfig.model_validate(yaml.safe_load(text)) == model


def test_design_example_8_1_3_reads_as_written() -> None:
    model = PowerCappingConfig.model_validate(load(DESIGN_EXAMPLES["section-8.1.3-kserve"]))
    spec = model.spec
    assert spec.power_cap_limit == 1000
    assert [ref.metadata.name for ref in spec.scale_object_ref or ()] == [
        "llm-inference-scaledobject"
    ]
    racks = {
        rack.rack_id: (rack.max_power, rack.max_temperature) for rack in spec.rack_constraints or ()
    }
    assert racks == {"rack-1": (2000, 30), "rack-2": (1500, 28)}


def test_minimal_spec_gets_every_extension_default() -> None:
    spec = PowerCappingConfigSpec.model_validate({"powerCapLimit": 500, "deploymentName": "llm"})
    assert spec.policy.type is PolicyType.HEADROOM
    assert (spec.policy.capping_threshold_percent, spec.policy.holding_threshold_percent) == (
        80,
        95,
    )
    assert spec.policy.step_down_replicas == 1
    assert spec.power_measurement.preset is MeasurementPreset.KEPLER_POD
    assert spec.carbon is None
    assert spec.target_selector is None
    assert spec.placement.mode is PlacementMode.WEBHOOK
    assert spec.placement.rack_label_key == "climatik-project.ai/rack"
    assert spec.placement.exclude_over_limit_racks is True
    assert spec.cooling.mode is CoolingMode.DISABLED
    assert spec.gpu_tuning.mode is GpuTuningMode.DISABLED
    assert spec.fail_safe.max_metric_age_seconds == 120
    assert spec.fail_safe.safe_max_replicas is None


def test_scale_object_ref_defaults_to_keda() -> None:
    ref = ScaleObjectRef.model_validate({"metadata": {"name": "so"}})
    assert (ref.api_version, ref.kind) == ("keda.sh/v1alpha1", "ScaledObject")


def test_carbon_defaults() -> None:
    carbon = Carbon.model_validate(
        {
            "provider": "UKNationalGrid",
            "target": {"type": "EmissionRate", "emissionRateGramsPerHour": 5},
        }
    )
    assert carbon.target.type is CarbonTargetType.EMISSION_RATE
    assert (carbon.floor_watts, carbon.pue, carbon.max_age_seconds) == (0, 1.0, 3600)
    assert carbon.fallback is CarbonFallback.STATIC_CAP


def test_models_are_immutable() -> None:
    spec = PowerCappingConfigSpec.model_validate({"powerCapLimit": 500, "deploymentName": "llm"})
    with pytest.raises(ValueError, match="frozen"):
        spec.power_cap_limit = 1  # type: ignore[misc]


def _crd_defaults(node: dict[str, Any], path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    found: dict[tuple[str, ...], Any] = {}
    if "default" in node:
        found[path] = node["default"]
    for name, child in node.get("properties", {}).items():
        found.update(_crd_defaults(child, (*path, name)))
    return found


def _model_value(wire: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        wire = wire[part]
    return wire


def test_crd_defaults_equal_model_defaults() -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    # A spec in which every object that has defaulted leaves is present but empty where allowed.
    spec = PowerCappingConfigSpec.model_validate(
        {
            "powerCapLimit": 1000,
            "scaleObjectRef": [{"metadata": {"name": "so"}}],
            "carbon": {
                "provider": "UKNationalGrid",
                "target": {"type": "EmissionRate", "emissionRateGramsPerHour": 1},
            },
            "replicaSizing": {"applyWindow": {"start": "02:00", "end": "05:00"}},
        }
    )
    wire = spec.model_dump(mode="json", by_alias=True)
    defaults = _crd_defaults(schema)
    assert len(defaults) >= 20
    for path, default in defaults.items():
        if path[0] == "scaleObjectRef":
            assert _model_value(wire["scaleObjectRef"][0], path[1:]) == default
        else:
            assert _model_value(wire, path) == default, path


def test_clocks_under_cap_needs_apply_and_defaults_to_fifteen_minutes() -> None:
    base = {"powerCapLimit": 500, "deploymentName": "llm"}
    spec = PowerCappingConfigSpec.model_validate(
        {**base, "gpuTuning": {"mode": "Apply", "clocksUnderCap": True}}
    )
    assert spec.gpu_tuning.clocks_under_cap is True
    assert spec.gpu_tuning.clock_change_interval_seconds == 900
    for mode in ("Recommend", "Disabled"):
        with pytest.raises(ValidationError, match=r"clocksUnderCap needs gpuTuning.mode Apply"):
            PowerCappingConfigSpec.model_validate(
                {**base, "gpuTuning": {"mode": mode, "clocksUnderCap": True}}
            )
    with pytest.raises(ValidationError, match="clockChangeIntervalSeconds"):
        PowerCappingConfigSpec.model_validate(
            {**base, "gpuTuning": {"mode": "Apply", "clockChangeIntervalSeconds": 10}}
        )
