"""Counters integrate the rates that were set, stand still while frozen, and never absorb a
NaN or infinite rate."""

from __future__ import annotations

import math

import pytest

from climatik.world.counters import finite_or_zero, integrate_counters
from climatik.world.readings import PodReadings


def pod(**values: float) -> PodReadings:
    reading = PodReadings(namespace="llm", name="vllm-0")
    for name, value in values.items():
        setattr(reading, name, value)
    return reading


def test_counters_add_each_rate_times_the_interval() -> None:
    p = pod(cpu_watts=100.0, gpu_watts=300.0, tokens_per_s=40.0, tokens_per_request=200.0)
    p.prompt_tokens_per_output_token = 4.0
    integrate_counters([p], 10.0)
    integrate_counters([p], 5.0)
    assert p.cpu_joules == pytest.approx(1500.0)
    assert p.gpu_joules == pytest.approx(4500.0)
    assert p.tokens_total == pytest.approx(600.0)
    assert p.prompt_tokens_total == pytest.approx(2400.0)
    assert p.requests_total == pytest.approx(3.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_broken_rate_adds_nothing_and_leaves_the_others(bad: float) -> None:
    p = pod(cpu_watts=bad, tokens_per_s=10.0)
    integrate_counters([p], 10.0)
    assert p.cpu_joules == 0.0
    assert p.tokens_total == pytest.approx(100.0)


def test_no_gpu_and_no_request_size_add_nothing() -> None:
    p = pod(tokens_per_s=10.0, tokens_per_request=0.0)
    integrate_counters([p], 10.0)
    assert p.gpu_joules == 0.0
    assert p.requests_total == 0.0


def test_a_frozen_pod_stands_still_until_thawed() -> None:
    p = pod(cpu_watts=100.0)
    p.frozen_at_ms = 1
    integrate_counters([p], 10.0)
    assert p.cpu_joules == 0.0
    p.frozen_at_ms = None
    integrate_counters([p], 10.0)
    assert p.cpu_joules == pytest.approx(1000.0)


def test_finite_or_zero() -> None:
    assert finite_or_zero(None) == 0.0
    assert finite_or_zero(math.nan) == 0.0
    assert finite_or_zero(-3.5) == -3.5
