"""An endpoint's load curve: fitted from windows with tokens, kept while idle, never falling."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from climatik.domain.routing import LoadCurve, LoadWindow
from climatik.policies.load_curve import fit_load_curve


def _window(
    batch: float,
    *,
    tpot_s: float,
    watts: float,
    seconds: float = 15.0,
    prefills: float = 0.0,
    prefill_s: float = 0.0,
) -> LoadWindow:
    """A window at a steady `batch`: its counters as vLLM and the GPU meter would gain them."""
    return LoadWindow(
        seconds=seconds,
        decode_s=batch * seconds,
        decode_tokens=batch * seconds / tpot_s,
        gpu_joules=watts * seconds,
        prefill_s=prefill_s * prefills,
        prefills=prefills,
    )


def _on_lines(batch: float) -> LoadWindow:
    return _window(batch, tpot_s=0.03 + 0.0005 * batch, watts=4000.0 + 10.0 * batch, prefills=3)


def test_the_fit_recovers_the_lines_its_windows_lie_on() -> None:
    curve = fit_load_curve([_on_lines(b) for b in (4, 10, 25, 40, 60)])
    assert curve is not None
    assert curve.tpot_s == pytest.approx(0.03)
    assert curve.tpot_s_per_request == pytest.approx(0.0005)
    assert curve.watts == pytest.approx(4000.0)
    assert curve.watts_per_request == pytest.approx(10.0)
    assert curve.batch_seen == pytest.approx(60.0)
    assert curve.prefill_s == 0.0


def test_windows_without_tokens_teach_nothing() -> None:
    """An idle window (idle watts, no tokens) would read 0 tokens per joule: the curve it
    leaves is the one the busy windows gave."""
    busy = [_on_lines(b) for b in (5, 20, 40)]
    idle = LoadWindow(seconds=15.0, decode_s=0.0, decode_tokens=0.0, gpu_joules=15.0 * 800.0)
    assert fit_load_curve([*busy, idle, idle]) == fit_load_curve(busy)
    assert fit_load_curve([idle]) is None
    assert fit_load_curve([]) is None


def test_a_falling_slope_is_noise_and_fitted_flat() -> None:
    falling = [_window(b, tpot_s=0.06 - 0.0005 * b, watts=5000.0 - 5 * b) for b in (5, 20, 40)]
    curve = fit_load_curve(falling)
    assert curve is not None
    assert curve.tpot_s_per_request == 0.0
    assert curve.watts_per_request == 0.0


def test_one_batch_seen_predicts_no_faster_tokens_past_it() -> None:
    """Seen only at batch 10, the curve is flat there; past it, time per token grows at least
    in proportion to the batch (a fuller batch makes no more tokens per second)."""
    curve = fit_load_curve([_window(10, tpot_s=0.04, watts=4000.0)])
    assert curve is not None
    assert curve.tpot_s_at(10) == pytest.approx(0.04)
    assert curve.tpot_s_at(5) == pytest.approx(0.04)
    assert curve.tpot_s_at(30) == pytest.approx(0.12)


def test_tokens_per_joule_rise_with_the_batch_where_draw_is_nearly_flat() -> None:
    curve = LoadCurve(watts=4000.0, watts_per_request=10.0, tpot_s=0.03, tpot_s_per_request=5e-4)
    assert curve.tokens_per_joule_at(1) == pytest.approx(1 / (0.0305 * 4010.0))
    assert curve.tokens_per_joule_at(40) > curve.tokens_per_joule_at(10) > 0


_windows = st.lists(
    st.builds(
        _window,
        st.floats(0.1, 64.0),
        tpot_s=st.floats(0.01, 0.5),
        watts=st.floats(100.0, 6000.0),
        seconds=st.floats(1.0, 30.0),
        prefills=st.floats(0.0, 20.0),
        prefill_s=st.floats(0.01, 2.0),
    ),
    min_size=1,
    max_size=30,
)


@given(_windows, st.randoms())
def test_a_fitted_curve_never_falls_and_does_not_depend_on_order(
    windows: list[LoadWindow], rng: random.Random
) -> None:
    curve = fit_load_curve(windows)
    assert curve is not None
    assert curve.tpot_s_per_request >= 0
    assert curve.watts_per_request >= 0
    batches = [w.batch for w in windows]
    assert curve.batch_seen == pytest.approx(max(batches))
    low, high = min(batches), max(batches)
    assert curve.tpot_s_at(high) >= curve.tpot_s_at(low) - 1e-12
    shuffled = list(windows)
    rng.shuffle(shuffled)
    again = fit_load_curve(shuffled)
    assert again is not None
    assert again.tpot_s_at(high) == pytest.approx(curve.tpot_s_at(high), rel=1e-6, abs=1e-9)
    assert again.watts_at(high) == pytest.approx(curve.watts_at(high), rel=1e-6, abs=1e-6)


@given(_windows)
def test_a_fitted_curve_is_never_negative(windows: list[LoadWindow]) -> None:
    curve = fit_load_curve(windows)
    assert curve is not None
    assert curve.tpot_s >= 0
    assert curve.watts >= 0
    assert curve.tpot_s_at(1.0) > 0
