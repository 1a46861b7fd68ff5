"""The per-server circuit breaker: fail fast after a failure, one probe per cool-down, doubling
cool-downs up to a maximum, any answer closes it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from climatik.sources.breaker import (
    BreakerSettings,
    CircuitBreaker,
    CircuitOpenError,
    Outcome,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def tripped(clock: Clock) -> CircuitBreaker:
    breaker = CircuitBreaker(BreakerSettings(5.0, 60.0), clock=clock)
    breaker.record(breaker.admit(), Outcome.FAILURE, "did not answer within 5 s")
    return breaker


def test_a_failure_opens_it_and_the_refusal_says_since_when_and_until_when() -> None:
    clock = Clock()
    breaker = tripped(clock)
    clock.now += 2.0
    with pytest.raises(CircuitOpenError) as refused:
        breaker.admit()
    assert refused.value.retry_in_s == pytest.approx(3.0)
    assert str(refused.value) == (
        "failing fast since its last failure 2 s ago (did not answer within 5 s); next try in 3 s"
    )


def test_one_probe_after_the_cool_down_and_its_success_closes_it() -> None:
    clock = Clock()
    breaker = tripped(clock)
    clock.now += 5.0
    probe = breaker.admit()
    assert probe.probe
    with pytest.raises(CircuitOpenError, match="a probe request is running"):
        breaker.admit()
    breaker.record(probe, Outcome.SUCCESS)
    assert breaker.is_closed
    assert not breaker.admit().probe


def test_failed_probes_double_the_cool_down_up_to_the_maximum() -> None:
    clock = Clock()
    breaker = tripped(clock)
    waits = []
    for _ in range(6):
        with pytest.raises(CircuitOpenError) as refused:
            breaker.admit()
        assert refused.value.retry_in_s is not None
        waits.append(round(refused.value.retry_in_s))
        clock.now += refused.value.retry_in_s
        breaker.record(breaker.admit(), Outcome.FAILURE, "refused")
    assert waits == [5, 10, 20, 40, 60, 60]


def test_requests_admitted_before_it_opened_do_not_lengthen_the_cool_down() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerSettings(5.0, 60.0), clock=clock)
    first, second = breaker.admit(), breaker.admit()
    breaker.record(first, Outcome.FAILURE, "timeout")
    breaker.record(second, Outcome.FAILURE, "timeout")
    with pytest.raises(CircuitOpenError) as refused:
        breaker.admit()
    assert refused.value.retry_in_s == pytest.approx(5.0)


def test_a_probe_that_learned_nothing_lets_the_next_one_through() -> None:
    clock = Clock()
    breaker = tripped(clock)
    clock.now += 5.0
    breaker.record(breaker.admit(), Outcome.NEUTRAL)
    assert not breaker.is_closed
    assert breaker.admit().probe


def test_any_answer_closes_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerSettings(5.0, 60.0), clock=clock)
    early = breaker.admit()
    breaker.record(breaker.admit(), Outcome.FAILURE, "timeout")
    breaker.record(early, Outcome.SUCCESS)  # answered after all: the server is alive
    assert breaker.is_closed


@given(
    initial=st.floats(min_value=0.01, max_value=100.0),
    maximum=st.floats(min_value=0.01, max_value=1000.0),
    failures=st.integers(min_value=1, max_value=10_000),
)
def test_cool_downs_grow_and_never_pass_the_maximum(
    initial: float, maximum: float, failures: int
) -> None:
    settings = BreakerSettings(initial, maximum)
    assert 0 < settings.cooldown_s(failures) <= max(maximum, 0.0)
    assert settings.cooldown_s(failures) <= settings.cooldown_s(failures + 1)
