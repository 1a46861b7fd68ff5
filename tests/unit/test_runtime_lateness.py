"""The lateness quantile and the lead it gives: bounded, never negative."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from climatik.runtime.lateness import Lateness


def test_the_lead_is_the_recent_high_lateness_within_a_tenth_of_the_interval() -> None:
    lateness = Lateness(window=100, refresh_every=10)
    assert lateness.lead_s(15) == 0.0  # nothing seen yet: no lead
    for i in range(100):
        lateness.observe(0.5 if i % 50 else 3.0)  # two slow outliers in a hundred
    assert lateness.high_s == 3.0
    assert lateness.lead_s(15) == 1.5  # a tenth of the interval at most
    for _ in range(100):
        lateness.observe(0.2)  # the window forgets
    assert lateness.lead_s(15) == pytest.approx(0.2)


@given(
    st.lists(st.floats(min_value=-5, max_value=1e4, allow_nan=False), max_size=300),
    st.floats(min_value=0, max_value=3600, allow_nan=False),
)
def test_the_lead_is_never_negative_nor_beyond_its_share(
    observed: list[float], interval_s: float
) -> None:
    lateness = Lateness(window=64, refresh_every=16)
    for late_s in observed:
        lateness.observe(late_s)
    assert 0.0 <= lateness.lead_s(interval_s) <= 0.1 * interval_s


def test_settings_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="quantile"):
        Lateness(quantile=0)
