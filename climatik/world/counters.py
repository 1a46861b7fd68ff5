"""Counters integrate their rates over time, so `rate()` of a counter in Prometheus returns the
watts or tokens per second that were set.

A frozen pod's counters stand still (it serves old samples), and a NaN or infinite rate adds
nothing: a broken gauge must not poison the energy counters for good.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from climatik.world.readings import PodReadings


def finite_or_zero(value: float | None) -> float:
    """A rate a counter may absorb: NaN, infinities and None count as nothing."""
    return value if value is not None and math.isfinite(value) else 0.0


def integrate_counters(pods: Iterable[PodReadings], dt_s: float) -> None:
    """Add `dt_s` seconds at each unfrozen pod's current rates to its counters."""
    for pod in pods:
        if pod.frozen_at_ms is not None:
            continue
        tokens_per_s = finite_or_zero(pod.tokens_per_s)
        pod.cpu_joules += finite_or_zero(pod.cpu_watts) * dt_s
        pod.gpu_joules += finite_or_zero(pod.gpu_watts) * dt_s
        pod.tokens_total += tokens_per_s * dt_s
        pod.prompt_tokens_total += tokens_per_s * pod.prompt_tokens_per_output_token * dt_s
        if pod.tokens_per_request > 0:
            pod.requests_total += tokens_per_s / pod.tokens_per_request * dt_s
