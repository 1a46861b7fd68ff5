"""The hand-over of tuning results from the GPU-tuning to the power-cap reconciler."""

from __future__ import annotations

import pytest

from climatik.reconcilers.tuning_hints import TuningHints


def test_hints_are_taken_once_per_config_and_later_nodes_results_compound() -> None:
    hints = TuningHints()
    hints.record("ns/cap", {"chat": 0.8, "batch": 0.9})
    hints.record("ns/cap", {"chat": 0.9})  # other nodes, tuned after the first ones
    hints.record("ns/other", {"chat": 0.5})
    assert hints.take("ns/cap") == pytest.approx({"chat": 0.72, "batch": 0.9})
    assert hints.take("ns/cap") is None
    assert hints.take("ns/other") == pytest.approx({"chat": 0.5})
    assert hints.take("ns/never") is None
