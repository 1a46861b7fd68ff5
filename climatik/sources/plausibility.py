"""Physical bounds on measurements: values no real system produces are "no data", not decisions.

Measurements are untrusted input. Whoever writes a PowerCappingConfig chooses the Prometheus the
controller asks, and even a genuine Prometheus serves whatever an exporter or a recording rule
wrote. A reading of -50 W, 5e307 W or 1e12 tokens/s must neither reach the policies (whose
domain types refuse it, which used to fail every reconcile) nor steer a ceiling. This module
states the bounds; the sources turn a value outside them into `NoData(Implausible)` with a
message naming the value and the bound, so the reconciler's missing-data path (hold, then the
fail-safe ceiling, `MetricsAvailable=False`) applies.

The bounds are deliberately generous: they catch nonsense, not unusual hardware.

- Watts: at most `max_watts_per_server` per server (100 kW by default, several times the
  densest GPU servers sold today). A pod runs on one server, so a target may draw at most the
  bound times its pod count; a scope or a rack at most the bound times its node count.
- Tokens per second: at most `max_tokens_per_s_per_pod` per pod (1e6 by default). One pod
  serves one model replica; the fastest replicas today generate in the tens of thousands of
  tokens per second in aggregate, so 1e6 is two orders of magnitude of headroom.
- Temperatures (rack inlet, exhaust, supply air): -30 to 100 °C; data-centre air outside that
  range is a broken sensor or a wrong query, never a reading to act on.
- Airflow: at most 10 m³/s per node (a server moves well under 1 m³/s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

DEFAULT_MAX_WATTS_PER_SERVER: Final = 100_000.0
DEFAULT_MAX_TOKENS_PER_S_PER_POD: Final = 1_000_000.0
DEFAULT_MIN_TEMPERATURE_C: Final = -30.0
DEFAULT_MAX_TEMPERATURE_C: Final = 100.0
MAX_AIRFLOW_M3_PER_S_PER_NODE: Final = 10.0


@dataclass(frozen=True, slots=True)
class PlausibleRange:
    """Where a value must lie to be taken as a measurement; `basis` says why, for messages."""

    low: float
    high: float
    unit: str
    basis: str = ""

    def problem(self, value: float) -> str | None:
        """Why `value` is not plausible, or None when it is."""
        if math.isfinite(value) and self.low <= value <= self.high:
            return None
        why = f": {self.basis}" if self.basis else ""
        return (
            f"{value:g} {self.unit} is outside the plausible range "
            f"{self.low:g}..{self.high:g} {self.unit}{why}"
        )


@dataclass(frozen=True, slots=True)
class PlausibilityLimits:
    """The controller's bounds (`CLIMATIK_CAPPING__MAX_PLAUSIBLE_WATTS_PER_SERVER`)."""

    max_watts_per_server: float = DEFAULT_MAX_WATTS_PER_SERVER
    max_tokens_per_s_per_pod: float = DEFAULT_MAX_TOKENS_PER_S_PER_POD
    min_temperature_c: float = DEFAULT_MIN_TEMPERATURE_C
    max_temperature_c: float = DEFAULT_MAX_TEMPERATURE_C

    def __post_init__(self) -> None:
        for name in ("max_watts_per_server", "max_tokens_per_s_per_pod"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if not (
            math.isfinite(self.min_temperature_c)
            and math.isfinite(self.max_temperature_c)
            and self.min_temperature_c < self.max_temperature_c
        ):
            raise ValueError("the plausible temperature range must be finite and not empty")

    def pod_watts(self, pods: int) -> PlausibleRange:
        """A target's power: a pod cannot draw more than the server it runs on."""
        count = max(1, pods)
        return PlausibleRange(
            0.0,
            self.max_watts_per_server * count,
            "W",
            f"{count} pod(s) x {self.max_watts_per_server:g} W per server at most",
        )

    def server_watts(self, servers: int) -> PlausibleRange:
        """The power of `servers` nodes (a capped scope, a rack); at least one server's worth."""
        count = max(1, servers)
        return PlausibleRange(
            0.0,
            self.max_watts_per_server * count,
            "W",
            f"{count} node(s) x {self.max_watts_per_server:g} W per server at most",
        )

    def pod_tokens_per_s(self, pods: int) -> PlausibleRange:
        count = max(1, pods)
        return PlausibleRange(
            0.0,
            self.max_tokens_per_s_per_pod * count,
            "tokens/s",
            f"{count} pod(s) x {self.max_tokens_per_s_per_pod:g} tokens/s at most",
        )

    def temperature_c(self) -> PlausibleRange:
        return PlausibleRange(self.min_temperature_c, self.max_temperature_c, "°C")

    def airflow_m3_per_s(self, nodes: int) -> PlausibleRange:
        count = max(1, nodes)
        return PlausibleRange(
            0.0,
            MAX_AIRFLOW_M3_PER_S_PER_NODE * count,
            "m³/s",
            f"{count} node(s) x {MAX_AIRFLOW_M3_PER_S_PER_NODE:g} m³/s at most",
        )
