"""A daily window in a time zone (`replicaSizing.applyWindow`): local clock time, daylight
saving, windows past midnight."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from climatik.domain.config import DailyWindow

NIGHT_IN_BERLIN = DailyWindow(start_minute=60, end_minute=300, time_zone="Europe/Berlin")
"""01:00-05:00 local time."""


def test_the_window_is_local_time_with_daylight_saving() -> None:
    winter, summer = datetime(2026, 1, 15, tzinfo=UTC), datetime(2026, 7, 15, tzinfo=UTC)
    # Winter: Berlin is UTC+1, so 01:00-05:00 local is 00:00-04:00 UTC.
    assert NIGHT_IN_BERLIN.contains(winter.replace(hour=0, minute=30))
    assert NIGHT_IN_BERLIN.contains(winter.replace(hour=3, minute=59))
    assert not NIGHT_IN_BERLIN.contains(winter.replace(hour=4)), "the end is exclusive"
    # Summer: UTC+2, so 23:00-03:00 UTC.
    assert NIGHT_IN_BERLIN.contains(summer.replace(hour=2, minute=30))
    assert not NIGHT_IN_BERLIN.contains(summer.replace(hour=3, minute=30))
    assert NIGHT_IN_BERLIN.describe() == "01:00-05:00 Europe/Berlin"


def test_on_the_days_clocks_change_the_window_follows_the_local_clock() -> None:
    """Local clock minutes: on 29 March 2026 Berlin skips 02:00-03:00, so a window of those
    minutes does not happen that day; on 25 October it repeats them, so it happens twice."""
    skipped = DailyWindow(start_minute=120, end_minute=180, time_zone="Europe/Berlin")
    spring = datetime(2026, 3, 29, tzinfo=UTC)
    assert not any(skipped.contains(spring + timedelta(minutes=m)) for m in range(0, 24 * 60, 5))
    autumn = datetime(2026, 10, 24, 22, 0, tzinfo=UTC)  # 00:00 local, summer time
    inside = [m for m in range(0, 6 * 60, 5) if skipped.contains(autumn + timedelta(minutes=m))]
    assert len(inside) == 2 * 12, "02:00-03:00 twice: once in summer time, once in winter time"
    assert NIGHT_IN_BERLIN.contains(spring.replace(hour=0, minute=30)), "01:30 local, UTC+1"
    assert NIGHT_IN_BERLIN.contains(spring.replace(hour=1, minute=30)), "03:30 local, UTC+2"


def test_a_window_that_ends_before_it_starts_runs_past_midnight() -> None:
    late = DailyWindow(start_minute=22 * 60 + 30, end_minute=5 * 60)
    day = datetime(2026, 3, 1, tzinfo=UTC)
    assert late.contains(day.replace(hour=23))
    assert late.contains(day.replace(hour=4, minute=59))
    assert not late.contains(day.replace(hour=12))
    assert not late.contains(day.replace(hour=22, minute=29))


@given(
    st.integers(0, 24 * 60 - 1),
    st.integers(0, 24 * 60 - 1),
    st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
    st.integers(0, 365 * 24 * 60),
)
def test_a_window_and_its_reverse_share_the_day_between_them(
    start: int, end: int, zone: str, minute_of_year: int
) -> None:
    """Whatever the instant, exactly one of [start, end) and [end, start) holds it."""
    if start == end:
        return
    now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minute_of_year)
    forward = DailyWindow(start, end, zone).contains(now)
    backward = DailyWindow(end, start, zone).contains(now)
    assert forward != backward
