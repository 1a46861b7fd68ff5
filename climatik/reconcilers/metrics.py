"""Metrics of the reconcilers' decisions, registered on the runtime's registry.

Names follow `climatik_<subsystem>_<what>_<unit>` with Prometheus base units spelled out as the
last word (watts, grams, joules; `docs/operations.md#metrics`); labels are the config
(`namespace/name`), per target the capped object's name, and for decisions the closed sets
`CeilingAction` and `CeilingReason`, so no label value comes from prose.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry

from climatik.domain.capping import CeilingAction, CeilingReason
from climatik.domain.carbon import CarbonSignal
from climatik.reconcilers.series import ConfigCounter, ConfigGauge

_JOULES_PER_KWH = 3.6e6


class CappingMetrics:
    """What the power-cap and carbon reconcilers decided, for dashboards and alerts."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.power_watts = ConfigGauge(
            "climatik_power_watts", "Measured power under the cap.", ["config"], registry=registry
        )
        self.power_cap_watts = ConfigGauge(
            "climatik_power_cap_watts",
            "The cap the whole scope must stay under: the carbon-adjusted cap, or powerCapLimit "
            "while a carbon cap holds back only deferrable targets.",
            ["config"],
            registry=registry,
        )
        self.target_max_replicas = ConfigGauge(
            "climatik_target_max_replicas",
            "Replica ceiling applied to a target.",
            ["config", "target"],
            registry=registry,
        )
        self.target_replica_power_watts = ConfigGauge(
            "climatik_target_replica_power_watts",
            "Learned power of one replica of a target.",
            ["config", "target"],
            registry=registry,
        )
        self.target_tokens_per_joule = ConfigGauge(
            "climatik_target_tokens_per_joule",
            "Generated tokens per joule of a target.",
            ["config", "target"],
            registry=registry,
        )
        self.predicted_power_watts = ConfigGauge(
            "climatik_predicted_power_watts",
            "Power the headroom policy's model predicts for the scope once its ceilings are in "
            "force.",
            ["config"],
            registry=registry,
        )
        self.prediction_error_watts = ConfigGauge(
            "climatik_prediction_error_watts",
            "Measured power minus what the previous decision predicted for now (negative: the "
            "model over-predicts, the safe side).",
            ["config"],
            registry=registry,
        )
        self.target_predicted_power_watts = ConfigGauge(
            "climatik_target_predicted_power_watts",
            "Power the model predicts for a target at its replicas and demand, beside its "
            "measured power.",
            ["config", "target"],
            registry=registry,
        )
        self.decisions = ConfigCounter(
            "climatik_decisions_total",
            "Ceiling decisions, one per target and reconcile, by action (CeilingAction) and "
            "reason code (CeilingReason).",
            ["config", "action", "reason"],
            registry=registry,
        )
        self.metrics_available = ConfigGauge(
            "climatik_metrics_available",
            "1 when the config's power readings are usable, 0 while they are missing.",
            ["config"],
            registry=registry,
        )
        self.carbon_intensity = ConfigGauge(
            "climatik_carbon_intensity_grams_per_joule",
            "Grid carbon intensity the config follows, in grams of CO2 per joule "
            "(x 3.6e6 = g/kWh).",
            ["config", "signal"],
            registry=registry,
        )
        self.effective_cap_watts = ConfigGauge(
            "climatik_effective_cap_watts",
            "The carbon-adjusted cap.",
            ["config"],
            registry=registry,
        )
        self.carbon_available = ConfigGauge(
            "climatik_carbon_available",
            "1 when the carbon reading is live, 0 on last-known-good or fallback.",
            ["config"],
            registry=registry,
        )
        self.emissions = ConfigCounter(
            "climatik_emissions_grams_total",
            "Location-based emissions of the measured power (x PUE), in grams of CO2.",
            ["config"],
            registry=registry,
        )
        self.deferrable_backlog = ConfigGauge(
            "climatik_carbon_deferrable_backlog_requests",
            "Requests a deferrable target with a deadline has waiting.",
            ["config", "target"],
            registry=registry,
        )
        self.deferrable_planned = ConfigGauge(
            "climatik_carbon_deferrable_planned_requests",
            "Requests the carbon plan serves in the current carbon slot.",
            ["config", "target"],
            registry=registry,
        )
        self.deferrable_done = ConfigGauge(
            "climatik_carbon_deferrable_done_requests",
            "Requests finished so far in the current carbon slot.",
            ["config", "target"],
            registry=registry,
        )
        self.deferrable_misses = ConfigCounter(
            "climatik_carbon_deferrable_deadline_misses_total",
            "Requests of a deferrable target seen waiting past their deadline.",
            ["config", "target"],
            registry=registry,
        )

    def forget(self, config: str) -> None:
        """Drop the series of a deleted config so dashboards do not show ghosts."""
        for family in (
            self.power_watts,
            self.power_cap_watts,
            self.metrics_available,
            self.predicted_power_watts,
            self.prediction_error_watts,
            self.target_predicted_power_watts,
            self.decisions,
            self.target_max_replicas,
            self.target_replica_power_watts,
            self.target_tokens_per_joule,
        ):
            family.forget(config)
        self.forget_carbon(config)

    def forget_carbon(self, config: str) -> None:
        """Drop a config's carbon series (deleted, or its carbon section removed)."""
        for family in (
            self.carbon_intensity,
            self.effective_cap_watts,
            self.carbon_available,
            self.emissions,
            self.deferrable_backlog,
            self.deferrable_planned,
            self.deferrable_done,
            self.deferrable_misses,
        ):
            family.forget(config)

    def set_carbon_intensity(
        self, config: str, signal: CarbonSignal, intensity_g_per_kwh: float
    ) -> None:
        """The intensity a config follows, exposed in the base unit (g/J); a series of a signal
        it no longer follows goes."""
        for other in CarbonSignal:
            if other is not signal:
                _remove(self.carbon_intensity, config, str(other))
        self.carbon_intensity.labels(config, str(signal)).set(intensity_g_per_kwh / _JOULES_PER_KWH)

    def count_decision(self, config: str, action: CeilingAction, reason: CeilingReason) -> None:
        """Count one ceiling decision by its codes (never by its words)."""
        self.decisions.labels(config, str(action), str(reason)).inc()


def _remove(metric: ConfigGauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never set for this config
        metric.remove(*labels)
