"""The lead: the largest lateness of the horizon, bounded, never negative, forgotten in time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from climatik.runtime.lateness import Lateness


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_lead_is_the_largest_recent_lateness_within_a_tenth_of_the_interval() -> None:
    clock = Clock()
    lateness = Lateness(horizon_s=60, clock=clock, max_rise=float("inf"))
    assert lateness.lead_s(15) == 0.0  # nothing seen yet: no lead
    for i in range(100):
        clock.now += 0.1
        lateness.observe(0.5 if i % 50 else 3.0)  # two slow outliers in a hundred
    assert lateness.high_s == 3.0
    assert lateness.lead_s(15) == 1.5  # a tenth of the interval at most
    lateness.observe(0.2)
    assert lateness.lead_s(60) == 3.0  # a single late reconcile is not forgotten at once
    clock.now += 61
    lateness.observe(0.2)
    assert lateness.lead_s(15) == pytest.approx(0.2)  # the horizon forgets


def test_a_pause_longer_ago_than_the_horizon_no_longer_leads() -> None:
    clock = Clock()
    lateness = Lateness(horizon_s=60, clock=clock)
    lateness.observe(0.9)
    clock.now = 59.0
    lateness.observe(0.1)
    assert lateness.high_s == 0.9
    clock.now = 61.0
    assert lateness.high_s == 0.1


@given(
    st.lists(
        st.tuples(st.floats(0, 30), st.floats(min_value=-5, max_value=1e4, allow_nan=False)),
        max_size=300,
    ),
    st.floats(min_value=0, max_value=3600, allow_nan=False),
)
def test_the_lead_is_the_sliding_maximum_and_never_beyond_its_share(
    observed: list[tuple[float, float]], interval_s: float
) -> None:
    clock = Clock()
    lateness = Lateness(horizon_s=60, clock=clock, max_rise=float("inf"))
    seen: list[tuple[float, float]] = []
    for step, late_s in observed:
        clock.now += step
        lateness.observe(late_s)
        seen.append((clock.now, max(late_s, 0.0)))
    recent = [late for when, late in seen if when >= clock.now - 60]
    assert lateness.high_s == max(recent, default=0.0)
    assert 0.0 <= lateness.lead_s(interval_s) <= 0.1 * interval_s


def test_the_lead_rises_gradually_and_falls_at_once() -> None:
    """A lead that jumps makes every key queued afterwards due that much earlier, on top of the
    keys queued just before: it rises at `max_rise` per second, and falls at once."""
    clock = Clock()
    lateness = Lateness(horizon_s=60, clock=clock, max_rise=0.02)
    lateness.observe(1.0)
    assert lateness.lead_s(15) == 0.0
    clock.now = 10.0
    assert lateness.lead_s(15) == pytest.approx(0.2)
    clock.now = 40.0
    lateness.observe(1.0)  # the same lateness again
    assert lateness.lead_s(15) == pytest.approx(0.8)
    clock.now = 90.0
    assert lateness.lead_s(15) == pytest.approx(1.0)  # reached the lateness, not beyond it
    clock.now = 101.0  # the 1 s lateness has left the horizon
    lateness.observe(0.1)
    assert lateness.lead_s(15) == pytest.approx(0.1)


def test_settings_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="horizon_s"):
        Lateness(horizon_s=0)
