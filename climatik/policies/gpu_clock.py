"""Which locked SM clock to run a GPU at: the most tokens per joule within the SLO bounds.

The sweep measures a handful of clocks; `choose_gpu_clock` picks among them. The baseline is the
highest clock measured (what the GPU does untuned), and a clock is admissible only while its
throughput stays within `max_throughput_loss` of that baseline and its p99 token latency (when
measured) within `max_p99_token_latency_s`. When nothing else is admissible the baseline stays.
"""

from __future__ import annotations

import math
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


# --- clocks decided with the replicas under a binding cap -----------------------------------


@dataclass(frozen=True, slots=True)
class ClockTarget:
    """One target as the joint clock decision sees it: its tuning sweep and its demand.

    The sweep (the GPU-tuning Job's samples: one replica at full load per clock) gives each
    clock's tokens per second and watts; the controller measures the demand and learns the
    node idle draw, so a clock's dynamic energy per token is (watts - idle) / tokens.
    """

    name: str
    samples: tuple[ClockSample, ...]
    tuned_mhz: int
    """`choose_gpu_clock`'s pick: the most tokens per joule within the SLO bounds."""
    current_mhz: int
    demand_tokens_per_s: float | None
    seats: int
    """Replicas it may hold: its user max, at most its own plus the free nodes."""
    allowed_replicas: int = 0
    """Replicas its ceiling lets run now: a faster clock must fit with all of them saturated
    (a clock acts at once, a lowered ceiling only a replica at a time)."""
    priority: int = 0
    max_p99_token_latency_s: float | None = None
    settled: bool = True
    """Its clock has held long enough for the power measured to be at that clock (a window
    that straddles a change mixes two clocks): only then may it rise."""
    changeable: bool = True
    """Its clock last changed at least `CLOCK_CHANGE_INTERVAL_S` ago: otherwise it keeps it."""


def _dynamic_j_per_token(sample: ClockSample, idle_w: float) -> float:
    return max(0.0, sample.watts - idle_w) / max(sample.tokens_per_s, 1e-9)


def _served(target: ClockTarget, sample: ClockSample, left_w: float, idle_w: float) -> float:
    """Tokens per second the target serves at this clock: its demand, as far as its seats and
    the dynamic watts left reach."""
    per_token = _dynamic_j_per_token(sample, idle_w)
    by_power = left_w / per_token if per_token > 0 else math.inf
    return max(
        0.0,
        min(target.demand_tokens_per_s or 0.0, target.seats * sample.tokens_per_s, by_power),
    )


def _raise_w(target: ClockTarget, faster: ClockSample, idle_w: float) -> float:
    """Extra dynamic watts of every replica the ceiling allows, saturated, at a faster clock
    than the target's current one (`inf` when its sweep lacks the current)."""
    current = next((s for s in target.samples if s.clock_mhz == target.current_mhz), None)
    if current is None:
        return math.inf

    def busy_w(sample: ClockSample) -> float:
        # Saturated whatever the demand says: a burst fills them before the next decision.
        tokens = target.allowed_replicas * sample.tokens_per_s
        return tokens * _dynamic_j_per_token(sample, idle_w)

    return busy_w(faster) - busy_w(current)


CLOCK_HYSTERESIS = 0.02
"""A target keeps its clock while that serves within this share of the best clock's tokens."""

CLOCK_CHANGE_INTERVAL_S = 900.0
"""A target's clock changes at most this often (the CRD's `clockChangeIntervalSeconds`
default). Live, each change is a Job on every node of the target; in the twin
(`climatik-joint-clocks`, no interval -> 15 minutes) it cost nothing and gained: `over-demand`
373 changes a day -> 47, tokens 1,384.8 -> 1,407.4 M, 2.1 Wh over the cap -> none;
`oversubscribed` 206 -> 17, SLO 79.6 -> 81.8 % (tokens -0.5 %); `default` 26 -> 6, SLO 92.9 ->
94.7 %; `carbon-swing` 322 -> 26, SLO 95.9 -> 97.6 %: a clock that follows every burst
chases the measurement's lag."""


def clocks_under_cap(
    targets: Sequence[ClockTarget],
    *,
    dynamic_budget_w: float | None,
    idle_w: float | None,
    spare_w: float | None = None,
    boost: bool = False,
) -> dict[str, int]:
    """Each target's clock, decided with what the cap leaves for work (POLCA's idea).

    Power follows work: a server draws its idle power whatever it serves, and each token adds
    its clock's dynamic energy, lower at a lower clock (a replica then serves fewer tokens, so
    the same tokens take more replicas). The dynamic watts the cap leaves are shared tier by
    tier (higher priority first; within a tier the more tokens per joule first): a target takes
    the clock whose tokens, min(demand, seats x tokens per replica, watts left / energy per
    token), are the most. Its tuned clock while that serves its whole demand (efficiency
    first); a slower one when the watts left bind (one more replica's worth of work per watt);
    and, with `boost`, a faster one than tuned when its seats bind and the watts allow (at the
    user's maximum or a full room). Off by default: in the twin's `default` the boosted
    replicas' watts made the ceilings shed a replica of the same service, and the SLO fell
    (94.6 % -> 93.0 %). Only
    clocks whose token latency stays within bounds are candidates; a target keeps its clock
    while that serves within `CLOCK_HYSTERESIS` of the best. So a clock lowered under the cap
    stays low while its seats keep up with the demand: the same tokens for less energy, and
    more replicas at a lower utilisation queue less (in the twin's `default`, going back to the
    tuned clock as soon as the cap had room cost 1.7 points of SLO). A slower clock acts at once and
    only lowers power; a faster one is taken only where the extra watts of every replica its
    ceiling allows, saturated, fit in `spare_w`: what the ceilings just decided leave under the
    cap (the ceilings spent the measured headroom already). A target not `changeable` keeps
    its clock and its watts. Without a demand, an idle draw or a budget, every clock stays as it
    is (going back to the tuned one unchecked could raise a clock into watts the cap lacks).
    """
    as_is = {t.name: t.current_mhz for t in targets}
    if dynamic_budget_w is None or idle_w is None or not targets:
        return as_is
    if any(t.demand_tokens_per_s is None for t in targets):
        return as_is
    chosen = {t.name: t.tuned_mhz if t.changeable else t.current_mhz for t in targets}

    def options(target: ClockTarget) -> list[ClockSample]:
        limit = target.max_p99_token_latency_s
        return sorted(
            (
                s
                for s in target.samples
                if limit is None or s.p99_token_latency_s is None or s.p99_token_latency_s <= limit
            ),
            key=lambda s: s.clock_mhz,
            reverse=True,
        )

    def efficiency(target: ClockTarget) -> float:
        tuned = next((s for s in target.samples if s.clock_mhz == target.tuned_mhz), None)
        return 0.0 if tuned is None else tuned.tokens_per_joule

    left_w = max(0.0, dynamic_budget_w)
    spare_left = [max(0.0, spare_w) if spare_w is not None else math.inf]
    for target in sorted(targets, key=lambda t: (-t.priority, -efficiency(t))):
        usable = options(target)
        if not usable:
            continue
        current_mhz = target.current_mhz

        def safe(
            sample: ClockSample,
            left: float = left_w,
            target: ClockTarget = target,
            current_mhz: int = current_mhz,
        ) -> bool:
            if sample.clock_mhz <= current_mhz:
                return True
            if not target.settled:
                return False
            # Above its tuned clock only at the user's maximum: while its ceiling holds
            # replicas back, watts buy more tokens as replicas than as clock.
            at_max = boost and target.allowed_replicas >= target.seats
            if sample.clock_mhz > target.tuned_mhz and not at_max:
                return False
            return 0.0 <= _raise_w(target, sample, idle_w) <= min(left, spare_left[0])

        if not target.changeable:
            chosen[target.name] = current_mhz
            held = next((s for s in target.samples if s.clock_mhz == current_mhz), None)
            if held is not None:
                spent = _served(target, held, left_w, idle_w) * _dynamic_j_per_token(held, idle_w)
                left_w = max(0.0, left_w - spent)
            continue
        usable = [s for s in usable if safe(s)]
        if not usable:
            continue
        served = {s.clock_mhz: _served(target, s, left_w, idle_w) for s in usable}
        best = max(served.values())
        near = [s for s in usable if served[s.clock_mhz] >= best * (1.0 - 1e-3)]
        by_clock = {s.clock_mhz: s for s in usable}
        tuned = by_clock.get(target.tuned_mhz)
        if tuned is not None and tuned in near:
            pick = tuned
        elif best > 0 and served[near[0].clock_mhz] > served.get(target.tuned_mhz, 0.0):
            # Seats bind: the fastest clock that serves the most; power binds: the fastest of
            # the slow clocks that serve the most.
            pick = near[0]
        else:
            pick = tuned or usable[0]
        current = by_clock.get(target.current_mhz)
        if current is not None and served[current.clock_mhz] >= served[pick.clock_mhz] * (
            1.0 - CLOCK_HYSTERESIS
        ):
            pick = current
        chosen[target.name] = pick.clock_mhz
        if pick.clock_mhz > target.current_mhz:
            spare_left[0] -= max(0.0, _raise_w(target, pick, idle_w))
        left_w -= served[pick.clock_mhz] * _dynamic_j_per_token(pick, idle_w)
        left_w = max(0.0, left_w)
    return chosen


def clock_change_ratios(
    samples: Sequence[ClockSample], from_mhz: int, to_mhz: int, idle_w: float
) -> tuple[float, float, float] | None:
    """What a clock change does to a replica, from the sweep: the ratios (new / old) of its
    dynamic energy per token, its tokens per second and its full-load watts; `None` when the
    sweep lacks either clock. The power model rescales what it measured at the old clock by
    them, so its prediction holds at the new clock before it has measured there."""
    by_clock = {s.clock_mhz: s for s in samples}
    old, new = by_clock.get(from_mhz), by_clock.get(to_mhz)
    if old is None or new is None:
        return None
    old_j = _dynamic_j_per_token(old, idle_w)
    if old_j <= 0 or old.tokens_per_s <= 0 or old.watts <= 0:
        return None
    return (
        _dynamic_j_per_token(new, idle_w) / old_j,
        new.tokens_per_s / old.tokens_per_s,
        new.watts / old.watts,
    )
