"""What the world has served so far, in simulated time: the figures `simulate` reports per
policy (tokens, requests that met their SLOs, IT energy, energy drawn above the site cap and
its largest excess), tallied from the world's own steps so
a live run can be set beside the twin's.

These are the world's ground truth, not measurements: the controller never reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from climatik.world.site import Frame


@dataclass
class SiteFigures:
    cap_w: float = float("inf")
    """The scenario's site cap, which the twin's cap violation is measured against."""
    simulated_s: float = 0.0
    site_w: float = 0.0
    """The last step's IT power of every node."""
    supply_c: float = 0.0
    energy_j: float = 0.0
    cap_violation_ws: float = 0.0
    """The integral of max(0, site power - cap) over simulated time, as the twin's."""
    max_overshoot_w: float = 0.0
    """The largest step's site power above the cap (0 when never over)."""
    demand_rps: dict[str, float] = field(default_factory=dict)
    """The last step's arrivals per service."""
    tokens: dict[str, float] = field(default_factory=dict)
    arrived: dict[str, float] = field(default_factory=dict)
    met_slo: dict[str, float] = field(default_factory=dict)

    def add(self, frame: Frame, dt_s: float) -> None:
        """Count one step of `dt_s` simulated seconds."""
        self.simulated_s += dt_s
        self.site_w = frame.site_w
        self.supply_c = frame.supply_c
        self.energy_j += frame.site_w * dt_s
        over = max(0.0, frame.site_w - self.cap_w)
        self.cap_violation_ws += over * dt_s
        self.max_overshoot_w = max(self.max_overshoot_w, over)
        for service in frame.services:
            name = service.name
            arrived = service.demand_rps * dt_s
            self.demand_rps[name] = service.demand_rps
            self.tokens[name] = self.tokens.get(name, 0.0) + service.tokens_per_s * dt_s
            self.arrived[name] = self.arrived.get(name, 0.0) + arrived
            self.met_slo[name] = self.met_slo.get(name, 0.0) + service.slo_met_fraction * arrived
