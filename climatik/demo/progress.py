"""One progress line of the demo: the site's power against the cap, and per service the ready
replicas against the ceiling the controller set (KEDA's maxReplicaCount)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServiceState:
    ready: int
    wanted: int
    """The Deployment's replicas (what KEDA's HPA asks for)."""
    ceiling: int | None
    """The ScaledObject's maxReplicaCount; None before it exists."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    elapsed_s: float
    simulated_h: float
    pods_w: float | None
    """What the services' pods draw (None: no answer from Prometheus yet)."""
    cap_w: float
    site_w: float | None
    """What the config measures against its cap: the whole site, servers' floors included."""
    services: Mapping[str, ServiceState]


def _kw(watts: float | None) -> str:
    return "   -- " if watts is None else f"{watts / 1000:6.1f}"


def progress_line(snap: Snapshot) -> str:
    """`  120 s  h 14.33  site  47.9 / 50.0 kW ( 96 %)  pods  30.1 kW  chat 3/4 <= 7  ...`"""
    share = "" if snap.site_w is None else f" ({100 * snap.site_w / snap.cap_w:3.0f} %)"
    services = "  ".join(
        f"{name} {s.ready}/{s.wanted} <= {'-' if s.ceiling is None else s.ceiling}"
        for name, s in sorted(snap.services.items())
    )
    return (
        f"{snap.elapsed_s:5.0f} s  h {snap.simulated_h:5.2f}  "
        f"site {_kw(snap.site_w)} / {snap.cap_w / 1000:.1f} kW{share}  "
        f"pods {_kw(snap.pods_w)} kW  {services}"
    )


@dataclass(frozen=True, slots=True)
class ServedFigures:
    """What the world served one service over the run (simulated time)."""

    tokens: float
    arrived: float
    met_slo: float


def summary_lines(
    simulated_s: float | None, energy_j: float | None, served: Mapping[str, ServedFigures]
) -> list[str]:
    """The run's figures as `simulate` names them, from the world's own tally."""
    if simulated_s is None:
        return ["the world reported no figures"]
    hours = simulated_s / 3600.0
    lines = [
        f"simulated {hours:.2f} h"
        + ("" if energy_j is None else f", IT energy {energy_j / 3.6e6:.1f} kWh")
    ]
    for name, figures in sorted(served.items()):
        attainment = (
            "-" if figures.arrived <= 0 else f"{100 * figures.met_slo / figures.arrived:.1f} %"
        )
        lines.append(f"{name}: {figures.tokens:,.0f} tokens, SLO attainment {attainment}")
    return lines
