"""Read a PowerCappingConfig object (a dict from the API server or a YAML file) into domain values.

The reconcilers work on `climatik.domain.config.PowerCappingConfig`, never on raw dicts: this
module is the one place that knows the wire format. A bad object raises `InvalidConfigError`
whose message names every offending field by its API path (`spec.policy.holdingThresholdPercent`)
so the controller can put it in a condition verbatim. Percentages become fractions, seconds
floats, and the design document's `scaleObjectRef`/`deploymentName` become `TargetRef`s.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from climatik.api.resource import PowerCappingConfig
from climatik.api.spec import (
    ApplyWindow,
    PlacementMigration,
    Policy,
    PowerCappingConfigSpec,
    SloBounds,
    TargetSelector,
)
from climatik.api.spec_carbon import Carbon, CarbonTargetType
from climatik.domain import config as domain
from climatik.domain.carbon import CarbonTarget, EmissionRateTarget, IntensityBandTarget
from climatik.domain.paths import field_path
from climatik.domain.placement import MigrationSettings

_PERCENT = 100.0


class InvalidConfigError(ValueError):
    """A PowerCappingConfig object the controller cannot act on; the message names the fields."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


def parse_object(obj: Mapping[str, Any]) -> PowerCappingConfig:
    """Validate a whole object; raise `InvalidConfigError` naming each bad field."""
    try:
        return PowerCappingConfig.model_validate(obj)
    except ValidationError as error:
        problems = [
            f"{field_path(item['loc']) or '<object>'}: {item['msg']}" for item in error.errors()
        ]
        raise InvalidConfigError(problems) from None


def _fraction(percent: int) -> float:
    return percent / _PERCENT


def _targets(spec: PowerCappingConfigSpec) -> tuple[domain.TargetRef, ...]:
    refs = [
        domain.TargetRef(domain.TargetKind.SCALED_OBJECT, ref.metadata.name)
        for ref in spec.scale_object_ref or ()
    ]
    if spec.deployment_name is not None:
        refs.append(domain.TargetRef(domain.TargetKind.DEPLOYMENT, spec.deployment_name))
    return tuple(refs)


def _selector(selector: TargetSelector | None) -> domain.LabelSelector | None:
    if selector is None:
        return None
    return domain.LabelSelector(
        match_labels=tuple(sorted((selector.match_labels or {}).items())),
        match_expressions=tuple(
            domain.LabelRequirement(item.key, item.operator, tuple(item.values or ()))
            for item in selector.match_expressions or ()
        ),
    )


def _policy(policy: Policy) -> domain.PolicyConfig:
    return domain.PolicyConfig(
        type=policy.type,
        capping_threshold_fraction=_fraction(policy.capping_threshold_percent),
        holding_threshold_fraction=_fraction(policy.holding_threshold_percent),
        safety_margin_fraction=_fraction(policy.safety_margin_percent),
        hysteresis_fraction=_fraction(policy.hysteresis_percent),
        step_down_replicas=policy.step_down_replicas,
        step_down_interval_s=float(policy.step_down_interval_seconds),
    )


def _carbon_target(carbon: Carbon) -> CarbonTarget:
    target = carbon.target
    if target.type is CarbonTargetType.EMISSION_RATE:
        assert target.emission_rate_grams_per_hour is not None  # the model validator checked
        return EmissionRateTarget(
            grams_per_hour=float(target.emission_rate_grams_per_hour), pue=carbon.pue
        )
    assert target.clean_intensity_g_per_kwh is not None
    assert target.dirty_intensity_g_per_kwh is not None
    return IntensityBandTarget(
        clean_g_per_kwh=float(target.clean_intensity_g_per_kwh),
        dirty_g_per_kwh=float(target.dirty_intensity_g_per_kwh),
    )


def _carbon(carbon: Carbon | None) -> domain.CarbonConfig | None:
    if carbon is None:
        return None
    secret = carbon.api_key_secret_ref
    static = carbon.static_intensity_g_per_kwh
    return domain.CarbonConfig(
        provider=carbon.provider,
        target=_carbon_target(carbon),
        floor_w=float(carbon.floor_watts),
        region_id=carbon.region_id,
        postcode=carbon.postcode,
        zone=carbon.zone,
        region=carbon.region,
        static_intensity_g_per_kwh=None if static is None else float(static),
        pue=carbon.pue,
        api_key_secret=None if secret is None else domain.SecretKeyRef(secret.name, secret.key),
        max_age_s=float(carbon.max_age_seconds),
        fallback=carbon.fallback,
    )


def _migration(migration: PlacementMigration) -> MigrationSettings | None:
    if not migration.enabled:
        return None
    return MigrationSettings(
        min_gain_c=migration.min_gain_celsius,
        min_interval_s=float(migration.min_interval_seconds),
        min_ready=migration.min_ready_replicas,
    )


def _window(window: ApplyWindow | None) -> domain.DailyWindow | None:
    if window is None:
        return None
    return domain.DailyWindow(window.start_minute, window.end_minute, window.time_zone)


def _slo(bounds: SloBounds | None) -> domain.SloBounds:
    if bounds is None:
        return domain.SloBounds()
    ttft_ms = bounds.max_time_to_first_token_milliseconds
    itl_ms = bounds.max_inter_token_latency_milliseconds
    tokens = bounds.min_tokens_per_second
    return domain.SloBounds(
        max_time_to_first_token_s=None if ttft_ms is None else ttft_ms / 1000.0,
        max_inter_token_latency_s=None if itl_ms is None else itl_ms / 1000.0,
        min_tokens_per_second=None if tokens is None else float(tokens),
    )


def to_domain(obj: PowerCappingConfig) -> domain.PowerCappingConfig:
    """The domain value of a validated object."""
    spec = obj.spec
    measurement = spec.power_measurement
    safe_max = spec.fail_safe.safe_max_replicas
    return domain.PowerCappingConfig(
        namespace=obj.metadata.namespace,
        name=obj.metadata.name,
        generation=obj.metadata.generation,
        power_cap_w=float(spec.power_cap_limit),
        deployment_name=spec.deployment_name,
        targets=_targets(spec),
        target_selector=_selector(spec.target_selector),
        metrics=tuple(
            domain.PrometheusMetric(
                prometheus_address=metric.prometheus_address,
                query=metric.query,
                threshold_w=None if metric.threshold is None else float(metric.threshold),
            )
            for metric in spec.metrics or ()
        ),
        racks=tuple(
            domain.RackConstraint(
                rack_id=rack.rack_id,
                max_power_w=None if rack.max_power is None else float(rack.max_power),
                max_temperature_celsius=(
                    None if rack.max_temperature is None else float(rack.max_temperature)
                ),
            )
            for rack in spec.rack_constraints or ()
        ),
        policy=_policy(spec.policy),
        power_measurement=domain.PowerMeasurementConfig(
            preset=measurement.preset,
            prometheus_address=measurement.prometheus_address,
            power_query=measurement.power_query,
            rack_power_query=measurement.rack_power_query,
            rack_temperature_query=measurement.rack_temperature_query,
        ),
        carbon=_carbon(spec.carbon),
        placement=domain.PlacementConfig(
            mode=spec.placement.mode,
            rack_label_key=spec.placement.rack_label_key,
            exclude_over_limit_racks=spec.placement.exclude_over_limit_racks,
            migration=_migration(spec.placement.migration),
        ),
        cooling=domain.CoolingConfig(
            mode=spec.cooling.mode,
            webhook_url=spec.cooling.webhook_url,
            redline_celsius=float(spec.cooling.redline_celsius),
        ),
        gpu_tuning=domain.GpuTuningConfig(
            mode=spec.gpu_tuning.mode,
            min_interval_s=float(spec.gpu_tuning.min_interval_seconds),
            slo=_slo(spec.gpu_tuning.slo_bounds),
            clocks_under_cap=spec.gpu_tuning.clocks_under_cap,
            clock_change_interval_s=float(spec.gpu_tuning.clock_change_interval_seconds),
        ),
        replica_sizing=domain.ReplicaSizingConfig(
            max_time_to_first_token_s=(
                spec.replica_sizing.max_time_to_first_token_milliseconds / 1000.0
            ),
            max_inter_token_latency_s=spec.replica_sizing.max_inter_token_latency_milliseconds
            / 1000.0,
            slo_attainment=spec.replica_sizing.slo_attainment_percent / 100.0,
            apply_window=_window(spec.replica_sizing.apply_window),
        ),
        fail_safe=domain.FailSafeConfig(
            max_metric_age_s=float(spec.fail_safe.max_metric_age_seconds),
            hold_s=float(spec.fail_safe.hold_seconds),
            safe_max_replicas=safe_max,
        ),
    )


_CONVERTED: OrderedDict[tuple[str, str, int], tuple[Any, domain.PowerCappingConfig]] = OrderedDict()
_CONVERTED_MAX = 16_384


def config_from_object(obj: Mapping[str, Any]) -> domain.PowerCappingConfig:
    """Parse and convert in one step: what a reconciler calls on a cached object.

    The status is the controller's own and plays no part in the config: it is left out of the
    validation, which otherwise spends most of its time on conditions and per-target state.
    Four reconcilers convert every config every interval, mostly the same spec as last time:
    a conversion is kept under the config's namespace, name and generation and used again only
    for an equal spec (a dict comparison costs far less than a validation)."""
    meta = obj.get("metadata") or {}
    namespace, name, generation = meta.get("namespace"), meta.get("name"), meta.get("generation")
    if not (isinstance(namespace, str) and isinstance(name, str) and isinstance(generation, int)):
        return to_domain(parse_object({k: v for k, v in obj.items() if k != "status"}))
    key = (namespace, name, generation)
    spec = obj.get("spec")
    kept = _CONVERTED.get(key)
    if kept is not None and kept[0] == spec:
        _CONVERTED.move_to_end(key)
        return kept[1]
    config = to_domain(parse_object({k: v for k, v in obj.items() if k != "status"}))
    # A copy: a reader holding a mutable object must not change what is compared later.
    _CONVERTED[key] = (copy.deepcopy(spec), config)
    if len(_CONVERTED) > _CONVERTED_MAX:
        _CONVERTED.popitem(last=False)
    return config
