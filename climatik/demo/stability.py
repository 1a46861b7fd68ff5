"""How the live loop reacts and whether it settles: the time from a demand step to the site's
power back under the cap, and how often each service's ceiling changes and flaps.

Pure, on samples in simulated seconds. A flap is a change that reverses the one before it,
which itself reversed the one before (up-down-up or down-up-down): one reversal is the loop
following demand, a second in a row is it hunting.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reaction:
    """One demand step: when it came, when power first went over the cap after it, and when
    it was back under (None: never over, or still over at the end)."""

    step_s: float
    over_s: float | None
    back_s: float | None

    @property
    def seconds(self) -> float | None:
        """From the step to power back under the cap; 0 when it never went over."""
        if self.over_s is None:
            return 0.0
        return None if self.back_s is None else self.back_s - self.step_s


def reactions(
    power: Sequence[tuple[float, float]], cap_w: float, steps_s: Sequence[float]
) -> list[Reaction]:
    """Each step's reaction on `power` ((time, watts), time-ordered), up to the next step."""
    found = []
    ends = [*steps_s[1:], math.inf][: len(steps_s)]
    for start, end in zip(steps_s, ends, strict=True):
        over_s = back_s = None
        for t, watts in power:
            if t < start or t >= end:
                continue
            if over_s is None and watts > cap_w:
                over_s = t
            elif over_s is not None and watts <= cap_w:
                back_s = t
                break
        found.append(Reaction(start, over_s, back_s))
    return found


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def changes(ceilings: Sequence[int]) -> list[int]:
    """The signed changes between consecutive distinct ceilings (+1 up, -1 down)."""
    return [1 if b > a else -1 for a, b in itertools.pairwise(ceilings) if b != a]


def flaps(ceilings: Sequence[int]) -> int:
    """Changes that reverse a change that itself reversed the one before (see the docstring)."""
    moves = changes(ceilings)
    return sum(1 for a, b, c in zip(moves, moves[1:], moves[2:], strict=False) if a == c and a != b)


@dataclass(frozen=True, slots=True)
class CeilingActivity:
    changes_per_h: float
    flaps_per_h: float


def ceiling_activity(
    ceilings: Mapping[str, Sequence[int]], simulated_s: float
) -> dict[str, CeilingActivity]:
    """Per service, ceiling changes and flaps per simulated hour over the sampled ceilings."""
    hours = simulated_s / 3600.0
    if hours <= 0:
        return {}
    return {
        name: CeilingActivity(len(changes(seen)) / hours, flaps(seen) / hours)
        for name, seen in sorted(ceilings.items())
    }
