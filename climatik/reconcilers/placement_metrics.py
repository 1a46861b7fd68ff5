"""Prometheus metrics of rack placement and cooling, on the registry the runtime serves.

Kept apart from the reconciler so the admission webhook handler can count its answers without
importing the reconciler. Names follow `climatik_<subsystem>_<what>_<unit>`; `config` is the
PowerCappingConfig key (`namespace/name`), `rack` the rack label value.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from climatik.reconcilers.series import ConfigCounter, ConfigGauge, Labels


class PlacementMetrics:
    """Every placement and cooling metric, registered on `registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        # One series per config and rack, the score the status reports. The scores per
        # workload (which steer the webhook and scale-in) are not exported: they would multiply
        # the series by every workload of every config; their effect shows in the pods' node
        # affinity and deletion costs.
        self.rack_score = ConfigGauge(
            "climatik_rack_score",
            "Placement score of a rack for the config (higher is better), from its power and "
            "temperature headroom, as in the PowerCappingConfig's status.",
            ["config", "rack"],
            registry=r,
        )
        self.rack_admissible = ConfigGauge(
            "climatik_rack_admissible",
            "1 when the rack is within its power and temperature limits, else 0.",
            ["config", "rack"],
            registry=r,
        )
        self.rack_inlet = ConfigGauge(
            "climatik_rack_inlet_celsius",
            "Measured rack inlet temperature.",
            ["config", "rack"],
            registry=r,
        )
        self.rack_power = ConfigGauge(
            "climatik_rack_power_watts", "Measured rack power.", ["config", "rack"], registry=r
        )
        self.rack_thermal_headroom = ConfigGauge(
            "climatik_rack_thermal_headroom_celsius",
            "Rack temperature limit minus inlet temperature.",
            ["config", "rack"],
            registry=r,
        )
        self.rack_power_headroom = ConfigGauge(
            "climatik_rack_power_headroom_watts",
            "Rack power limit minus rack power.",
            ["config", "rack"],
            registry=r,
        )
        self.supply_setpoint = ConfigGauge(
            "climatik_cooling_supply_setpoint_celsius",
            "Recommended supply-air temperature per cooling group (rack or zone).",
            ["config", "group"],
            registry=r,
        )
        self.supply_change = ConfigGauge(
            "climatik_cooling_supply_change_celsius",
            "Recommended change of the supply-air temperature (positive: warmer).",
            ["config", "group"],
            registry=r,
        )
        self.cooling_posts = ConfigCounter(
            "climatik_cooling_posts_total",
            "Setpoint recommendations sent to the cooling system, by result.",
            ["config", "result"],
            registry=r,
        )
        self.deletion_cost_patches = ConfigCounter(
            "climatik_placement_deletion_cost_patches_total",
            "Pod deletion-cost annotations written.",
            ["config"],
            registry=r,
        )
        self.template_patches = ConfigCounter(
            "climatik_placement_template_patches_total",
            "Deployment pod-template affinity patches (each one is a rollout).",
            ["config"],
            registry=r,
        )
        self.migrations = ConfigCounter(
            "climatik_placement_migrations_total",
            "Replicas moved to a cooler rack (spec.placement.migration), by outcome: evicted, "
            "budget (a PodDisruptionBudget refused), forbidden (RBAC), gone (the pod was gone).",
            ["config", "outcome"],
            registry=r,
        )
        self.recirculation_config_ok = ConfigGauge(
            "climatik_placement_recirculation_config_ok",
            "0 while the recirculation ConfigMap cannot be read or has unusable parts (see the "
            "RecirculationConfigInvalid Event), else 1 (absent counts as fine: history is used).",
            ["config"],
            registry=r,
        )
        self.deletion_costs_allowed = ConfigGauge(
            "climatik_placement_deletion_costs_allowed",
            "0 while the API refuses to patch pod-deletion-cost in the config's namespace (RBAC; "
            "see the DeletionCostForbidden Event): scale-in then ignores rack heat. Else 1.",
            ["config"],
            registry=r,
        )
        self._families: tuple[ConfigGauge | ConfigCounter, ...] = (
            self.recirculation_config_ok,
            self.deletion_costs_allowed,
            self.rack_score,
            self.rack_admissible,
            self.rack_inlet,
            self.rack_power,
            self.rack_thermal_headroom,
            self.rack_power_headroom,
            self.supply_setpoint,
            self.supply_change,
            self.cooling_posts,
            self.deletion_cost_patches,
            self.template_patches,
            self.migrations,
        )
        self._round: dict[str, dict[ConfigGauge, dict[Labels, float]]] = {}
        self.webhook_requests = Counter(
            "climatik_placement_webhook_requests_total",
            "Pod admission requests answered, by result (patched, skipped, error).",
            ["result"],
            registry=r,
        )
        self.webhook_certificate_ok = Gauge(
            "climatik_placement_webhook_certificate_ok",
            "1 while the webhook serves the certificate pair on disk; 0 while it has none it "
            "can load (not serving) or the files on disk do not load (serving the previous).",
            registry=r,
        )

    def set_gauge(self, gauge: ConfigGauge, value: float, config: str, *labels: str) -> None:
        """Set one series of a per-config gauge: in the round `begin_round` opened, else now."""
        staged = self._round.get(config)
        if staged is None:
            gauge.labels(config, *labels).set(value)
        else:
            staged.setdefault(gauge, {})[labels] = value

    def begin_round(self, config: str) -> None:
        """Start collecting the series `config` sets, for `end_round`."""
        self._round[config] = {}

    def end_round(self, config: str) -> None:
        """The round's series replace the config's gauges' series (racks or groups gone go):
        one swap per gauge, so a scrape never sees a round half written."""
        staged = self._round.pop(config, {})
        for family in self._families:
            if isinstance(family, ConfigGauge):
                family.replace(config, staged.get(family, {}))

    def forget_config(self, config: str) -> None:
        """Drop every series of `config` (deleted, or placement and cooling turned off), so
        dashboards do not show racks or groups that are gone."""
        self._round.pop(config, None)
        for family in self._families:
            family.forget(config)
