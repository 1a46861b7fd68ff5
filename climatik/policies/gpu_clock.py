"""Which locked SM clock to run a GPU at: the most tokens per joule within the SLO bounds.

The sweep measures a handful of clocks; `choose_gpu_clock` picks among them. The baseline is the
highest clock measured (what the GPU does untuned), and a clock is admissible only while its
throughput stays within `max_throughput_loss` of that baseline and its p99 token latency (when
measured) within `max_p99_token_latency_s`. When nothing else is admissible the baseline stays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from climatik.domain.gpu import ClockChoice, ClockSample

DEFAULT_MAX_THROUGHPUT_LOSS = 0.15
"""How much slower per replica a tuned clock may be. Under a binding power cap the watts saved
buy more replicas, so service throughput rises even as each replica slows (the twin's
`climatik` against `climatik-max-clock` shows it); the latency bound protects each request."""


@dataclass(frozen=True, slots=True)
class ClockBounds:
    """The service-level bounds a tuned clock must respect."""

    max_throughput_loss: float = DEFAULT_MAX_THROUGHPUT_LOSS
    max_p99_token_latency_s: float | None = None


def candidate_clocks(
    supported_mhz: Sequence[int], count: int = 8, floor_fraction: float = 0.4
) -> list[int]:
    """Spread `count` sweep points over the supported clocks from the top down to a floor.

    Clocks far below the maximum are never efficient for LLM serving (idle power dominates), so
    the sweep stops at `floor_fraction` of the highest clock.
    """
    ordered = sorted(set(supported_mhz), reverse=True)
    if not ordered:
        return []
    floor = ordered[0] * floor_fraction
    usable = [clock for clock in ordered if clock >= floor]
    if len(usable) <= count:
        return usable
    step = (len(usable) - 1) / (count - 1)
    return sorted({usable[round(i * step)] for i in range(count)}, reverse=True)


def choose_gpu_clock(samples: Sequence[ClockSample], bounds: ClockBounds) -> ClockChoice:
    """The admissible sample with the most tokens per joule (the baseline if none beats it)."""
    if not samples:
        msg = "a clock choice needs at least one sample"
        raise ValueError(msg)
    baseline = max(samples, key=lambda s: s.clock_mhz)
    floor_tps = baseline.tokens_per_s * (1.0 - bounds.max_throughput_loss)

    def admissible(sample: ClockSample) -> bool:
        if sample.tokens_per_s < floor_tps:
            return False
        limit = bounds.max_p99_token_latency_s
        latency = sample.p99_token_latency_s
        return limit is None or latency is None or latency <= limit

    allowed = [s for s in samples if admissible(s)] or [baseline]
    # Prefer the higher clock on a tie: same efficiency, more throughput.
    best = max(allowed, key=lambda s: (s.tokens_per_joule, s.clock_mhz))
    if best is baseline:
        reason = f"{baseline.clock_mhz} MHz kept: no admissible clock is more efficient"
    else:
        gain = best.tokens_per_joule / baseline.tokens_per_joule - 1.0
        loss = 1.0 - best.tokens_per_s / baseline.tokens_per_s
        reason = (
            f"{best.clock_mhz} MHz: {gain:+.1%} tokens/J, {loss:.1%} fewer tokens/s "
            f"(bound {bounds.max_throughput_loss:.0%})"
        )
    return ClockChoice(clock_mhz=best.clock_mhz, chosen=best, baseline=baseline, reason=reason)
