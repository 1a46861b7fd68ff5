"""The heat-matrix fit on a synthetic room whose truth is known: lagged inlets, powers that move
together, and the geometric prior that decides what such a history cannot."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from climatik.policies import heat_fit
from climatik.policies.heat_fit import (
    PlacePosition,
    estimate_recirculation,
    geometric_prior,
    lagged,
)

FloatArray = npt.NDArray[np.float64]

RACKS, PER_RACK = 3, 4
SAMPLE_S = 30.0
LAG_S = 120.0


def _positions() -> list[PlacePosition]:
    return [
        PlacePosition(rack=float(i // PER_RACK), height=(i % PER_RACK) / (PER_RACK - 1))
        for i in range(RACKS * PER_RACK)
    ]


def _true_matrix() -> FloatArray:
    """A local matrix (°C per kW) that is not the prior's shape: heat rises (more lands above
    the source than below), tops of racks recirculate more, one rack's reach is shorter."""
    pos = _positions()
    n = len(pos)
    d = np.zeros((n, n))
    for i, inlet in enumerate(pos):
        for j, source in enumerate(pos):
            up = inlet.height - source.height
            vertical = np.exp(-up / 0.6) if up >= 0 else np.exp(up / 0.2)
            d[i, j] = (
                (0.15 + 0.35 * source.height)
                * np.exp(-abs(inlet.rack - source.rack) / 0.8)
                * vertical
            )
    return d


def _history(
    samples: int, seed: int, truth: FloatArray | None = None
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Powers that move together (one load that steps as replicas come and go, a little of
    each place's on its own), inlets that follow them through a first-order lag, measured
    with noise."""
    rng = np.random.default_rng(seed)
    d = _true_matrix() if truth is None else truth
    n = d.shape[0]
    t = np.arange(samples) * SAMPLE_S
    steps = np.where(rng.random(samples) < 0.05, rng.normal(0.0, 0.15, samples), 0.0)
    common: FloatArray = np.clip(
        0.5 + 0.3 * np.sin(2 * np.pi * t / 21_600.0) + steps.cumsum(), 0.1, 0.9
    )
    own = rng.normal(0.0, 0.03, (samples, n))
    base = rng.uniform(0.8, 1.0, (n,))
    power_w = 3_000.0 + 7_000.0 * np.clip(common[:, None] * base[None, :] + own, 0.0, 1.0)
    supply: FloatArray = 18.0 + 0.5 * np.sin(2 * np.pi * t / 7_200.0)
    steady = (power_w / 1000.0) @ d.T
    rise = lagged(steady, float(np.exp(-SAMPLE_S / LAG_S)))
    inlet = supply[:, None] + rise + rng.normal(0.0, 0.02, (samples, n))
    return power_w, inlet, supply, d


def _error(estimate: FloatArray, truth: FloatArray) -> float:
    return float(np.abs(estimate - truth).sum() / truth.sum())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lag_and_prior_estimate_the_matrix_better_than_the_plain_fit(seed: int) -> None:
    power_w, inlet, supply, truth = _history(720, seed)
    ids = [f"s{i:02d}" for i in range(truth.shape[0])]
    plain = estimate_recirculation(ids, power_w, inlet, supply)
    better = estimate_recirculation(
        ids, power_w, inlet, supply, sample_s=SAMPLE_S, positions=_positions()
    )
    plain_error = _error(np.array(plain.matrix_c_per_kw), truth)
    better_error = _error(np.array(better.matrix_c_per_kw), truth)
    assert better_error < 0.6 * plain_error, (plain_error, better_error)
    # The diagonal, which correlated powers hide, comes closer to the truth too.
    plain_diag = np.abs(np.diag(np.array(plain.matrix_c_per_kw)) - np.diag(truth)).sum()
    better_diag = np.abs(np.diag(np.array(better.matrix_c_per_kw)) - np.diag(truth)).sum()
    assert better_diag < plain_diag


def test_the_fit_finds_the_inlets_lag() -> None:
    power_w, inlet, supply, truth = _history(720, 4)
    ids = [f"s{i:02d}" for i in range(truth.shape[0])]
    fitted = estimate_recirculation(ids, power_w, inlet, supply, sample_s=SAMPLE_S)
    assert fitted.lag_s == LAG_S
    # Without the spacing of the samples no lag is fitted.
    assert estimate_recirculation(ids, power_w, inlet, supply).lag_s == 0.0


def test_the_prior_is_one_on_the_diagonal_symmetric_and_falls_with_distance() -> None:
    prior = geometric_prior(_positions())
    assert np.diag(prior) == pytest.approx(1.0)
    assert prior == pytest.approx(prior.T)
    # Along a rack, then across racks at the same height: each step away weighs less.
    assert prior[0, 1] > prior[0, 2] > prior[0, 3]
    assert prior[0, PER_RACK] > prior[0, 2 * PER_RACK]


def test_a_matrix_of_the_priors_own_shape_is_recovered_with_the_prior() -> None:
    # Independent powers: the data alone identify the matrix; the prior must not pull it off.
    rng = np.random.default_rng(9)
    truth = 0.3 * geometric_prior(_positions())
    n = truth.shape[0]
    power_w = rng.uniform(3_000, 10_000, (400, n))
    supply = rng.uniform(17, 19, 400)
    inlet = supply[:, None] + (power_w / 1000.0) @ truth.T + rng.normal(0, 0.01, (400, n))
    ids = [f"s{i:02d}" for i in range(n)]
    fitted = estimate_recirculation(ids, power_w, inlet, supply, positions=_positions())
    assert np.abs(np.array(fitted.matrix_c_per_kw) - truth).max() < 0.01


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_how_much_heat_a_place_puts_on_its_own_inlet_is_learned_from_held_out_samples(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A room whose racks' exhaust wraps onto the other servers: each place heats its own
    # inlet a tenth of what the local shape says. Powers move together, so only the samples
    # can tell; the prior with the diagonal fixed at 1 pulls it up.
    truth = _true_matrix()
    truth[np.diag_indices_from(truth)] *= 0.1
    power_w, inlet, supply, _ = _history(720, seed, truth)
    ids = [f"s{i:02d}" for i in range(truth.shape[0])]

    def fit() -> FloatArray:
        fitted = estimate_recirculation(
            ids, power_w, inlet, supply, sample_s=SAMPLE_S, positions=_positions()
        )
        return np.array(fitted.matrix_c_per_kw)

    learned = fit()
    monkeypatch.setattr(heat_fit, "PRIOR_DIAGONALS", (1.0,))
    fixed = fit()
    assert _error(learned, truth) < _error(fixed, truth)
    own = np.diag_indices_from(truth)
    assert np.abs(learned[own] - truth[own]).sum() < 0.5 * np.abs(fixed[own] - truth[own]).sum()


def test_one_position_per_place() -> None:
    with pytest.raises(ValueError, match="one position per place"):
        estimate_recirculation(
            ["a", "b"],
            np.ones((10, 2)),
            np.ones((10, 2)),
            np.zeros(10),
            positions=[PlacePosition(0.0, 0.0)],
        )
