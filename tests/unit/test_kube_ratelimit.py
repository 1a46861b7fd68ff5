"""Rate limiters: per-key exponential backoff, global token bucket, and the max of both."""

from __future__ import annotations

import itertools

import pytest

from climatik.kube.ratelimit import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    default_controller_rate_limiter,
)
from tests.unit.fakeclock import FakeClock


def test_exponential_doubles_per_key_from_5ms_to_1000s() -> None:
    limiter = ItemExponentialFailureRateLimiter()
    delays = [limiter.when("a") for _ in range(20)]
    assert delays[:4] == [0.005, 0.01, 0.02, 0.04]
    assert delays[-1] == 1000.0
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert limiter.when("b") == 0.005  # keys back off independently
    assert limiter.num_requeues("a") == 20


def test_exponential_forget_resets_one_key() -> None:
    limiter = ItemExponentialFailureRateLimiter()
    limiter.when("a")
    limiter.when("a")
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == 0.005


def test_exponential_survives_a_very_long_failure_streak() -> None:
    limiter = ItemExponentialFailureRateLimiter()
    for _ in range(2000):
        delay = limiter.when("a")
    assert delay == 1000.0


def test_bucket_allows_a_burst_then_ten_per_second() -> None:
    clock = FakeClock()
    limiter = BucketRateLimiter(qps=10, burst=100, clock=clock)
    assert [limiter.when(i) for i in range(100)] == [0.0] * 100
    assert limiter.when("x") == pytest.approx(0.1)
    assert limiter.when("y") == pytest.approx(0.2)
    clock.advance(1.0)  # refills 10 tokens, 2 of which pay the debt
    assert [limiter.when(i) for i in range(8)] == [0.0] * 8
    assert limiter.when("z") == pytest.approx(0.1)


def test_bucket_never_holds_more_than_its_burst() -> None:
    clock = FakeClock()
    limiter = BucketRateLimiter(qps=10, burst=5, clock=clock)
    clock.advance(3600)
    assert [limiter.when(i) for i in range(5)] == [0.0] * 5
    assert limiter.when("x") > 0


def test_max_of_takes_the_longest_wait() -> None:
    clock = FakeClock()
    limiter = default_controller_rate_limiter(clock=clock)
    # The bucket dominates once its burst is spent; the per-key backoff for a fresh key is 5 ms.
    for i in range(100):
        assert limiter.when(f"k{i}") == 0.005
    assert limiter.when("fresh") == pytest.approx(0.1)
    # A key failing many times is dominated by its own backoff.
    for _ in range(15):
        delay = limiter.when("bad")
    assert delay == pytest.approx(0.005 * 2**14)  # the 15th failure waits 5 ms * 2**14
    limiter.forget("bad")
    assert limiter.num_requeues("bad") == 0


def test_max_of_needs_a_limiter() -> None:
    with pytest.raises(ValueError, match="at least one"):
        MaxOfRateLimiter()
