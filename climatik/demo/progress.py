"""One progress line of the demo: power against the cap, and per service the ready replicas
against the ceiling the controller set (KEDA's maxReplicaCount)."""

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
    """What the config measures (None: no answer from Prometheus yet)."""
    cap_w: float
    site_w: float | None
    services: Mapping[str, ServiceState]


def _kw(watts: float | None) -> str:
    return "   -- " if watts is None else f"{watts / 1000:6.1f}"


def progress_line(snap: Snapshot) -> str:
    """`  120 s  h 14.33  pods  30.1 / 32.4 kW (93 %)  site 47.9 kW  chat 3/4 <= 7  ...`"""
    share = "" if snap.pods_w is None else f" ({100 * snap.pods_w / snap.cap_w:3.0f} %)"
    services = "  ".join(
        f"{name} {s.ready}/{s.wanted} <= {'-' if s.ceiling is None else s.ceiling}"
        for name, s in sorted(snap.services.items())
    )
    return (
        f"{snap.elapsed_s:5.0f} s  h {snap.simulated_h:5.2f}  "
        f"pods {_kw(snap.pods_w)} / {snap.cap_w / 1000:.1f} kW{share}  "
        f"site {_kw(snap.site_w)} kW  {services}"
    )
