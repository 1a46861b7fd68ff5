"""Metrics of the reconcilers' decisions, registered on the runtime's registry.

Names follow `climatik_<subsystem>_<what>_<unit>`; labels are the config (`namespace/name`) and,
per target, the capped object's name.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class CappingMetrics:
    """What the power-cap and carbon reconcilers decided, for dashboards and alerts."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.power_watts = Gauge(
            "climatik_power_watts", "Measured power under the cap.", ["config"], registry=registry
        )
        self.power_cap_watts = Gauge(
            "climatik_power_cap_watts",
            "The cap the whole scope must stay under: the carbon-adjusted cap, or powerCapLimit "
            "while a carbon cap holds back only deferrable targets.",
            ["config"],
            registry=registry,
        )
        self.target_max_replicas = Gauge(
            "climatik_target_max_replicas",
            "Replica ceiling applied to a target.",
            ["config", "target"],
            registry=registry,
        )
        self.target_watts_per_replica = Gauge(
            "climatik_target_watts_per_replica",
            "Learned power of one replica of a target.",
            ["config", "target"],
            registry=registry,
        )
        self.target_tokens_per_joule = Gauge(
            "climatik_target_tokens_per_joule",
            "Generated tokens per joule of a target.",
            ["config", "target"],
            registry=registry,
        )
        self.decisions = Counter(
            "climatik_decisions_total",
            "Ceiling decisions by action and reason class.",
            ["action", "reason"],
            registry=registry,
        )
        self.metrics_available = Gauge(
            "climatik_metrics_available",
            "1 when the config's power readings are usable, 0 while they are missing.",
            ["config"],
            registry=registry,
        )
        self.carbon_intensity = Gauge(
            "climatik_carbon_intensity_g_per_kwh",
            "Grid carbon intensity the config follows.",
            ["config", "signal"],
            registry=registry,
        )
        self.effective_cap_watts = Gauge(
            "climatik_effective_cap_watts",
            "The carbon-adjusted cap.",
            ["config"],
            registry=registry,
        )
        self.carbon_available = Gauge(
            "climatik_carbon_available",
            "1 when the carbon reading is live, 0 on last-known-good or fallback.",
            ["config"],
            registry=registry,
        )
        self.emissions = Counter(
            "climatik_emissions_g_total",
            "Location-based emissions of the measured power (x PUE), in grams of CO2.",
            ["config"],
            registry=registry,
        )

    def forget(self, config: str, targets: list[str]) -> None:
        """Drop the series of a deleted config so dashboards do not show ghosts."""
        for gauge in (
            self.power_watts,
            self.power_cap_watts,
            self.metrics_available,
            self.effective_cap_watts,
            self.carbon_available,
        ):
            try:
                gauge.remove(config)
            except KeyError:
                continue
        for gauge in (
            self.target_max_replicas,
            self.target_watts_per_replica,
            self.target_tokens_per_joule,
        ):
            for target in targets:
                try:
                    gauge.remove(config, target)
                except KeyError:
                    continue
