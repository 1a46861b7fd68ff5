"""The hand-over of tuning results from the GPU-tuning to the power-cap reconciler."""

from __future__ import annotations

import pytest

from climatik.reconcilers.tuning_hints import TuningHints


def test_hints_are_taken_once_as_the_mean_of_the_results_per_config() -> None:
    hints = TuningHints()
    hints.record("ns/cap", 0.7)
    hints.record("ns/cap", 0.8)
    hints.record("ns/other", 0.5)
    assert hints.take("ns/cap") == pytest.approx(0.75)
    assert hints.take("ns/cap") is None
    assert hints.take("ns/other") == pytest.approx(0.5)
    assert hints.take("ns/never") is None
