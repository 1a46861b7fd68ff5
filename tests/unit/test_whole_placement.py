"""The placement of whole replicas: enumeration, the MIP and the greedy search agree with a
brute force over every placement, and none beats the fractional floor."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from climatik.sim import bounds
from climatik.sim import whole_placement as wp

IDLE_W = 2800.0


def _brute_force_rise(
    d_matrix: np.ndarray, idle_w: float, replicas: list[int], replica_w: list[float]
) -> float:
    """The least hottest rise over every ordered seating of the replicas (a few servers only)."""
    n = d_matrix.shape[0]
    slots = [j for j, count in enumerate(replicas) for _ in range(count)]
    best = np.inf
    for seats in itertools.permutations(range(n), len(slots)):
        power = np.full(n, idle_w)
        for seat, j in zip(seats, slots, strict=True):
            power[seat] += replica_w[j]
        best = min(best, float((d_matrix @ power).max()))
    return best


def _room(seed: int, servers: int = 6) -> tuple[np.ndarray, list[int], list[float]]:
    rng = np.random.default_rng(seed)
    d_matrix = rng.uniform(0.0, 0.0004, (servers, servers)) + np.diag(
        rng.uniform(0.0, 0.001, servers)
    )
    replicas = [int(rng.integers(0, 3)), int(rng.integers(1, 3))]
    replica_w = [float(w) for w in rng.uniform(500.0, 6000.0, 2)]
    return d_matrix, replicas, replica_w


def _seated_as_asked(found: wp.WholePlacement, replicas: list[int]) -> None:
    assert [int((found.host == j).sum()) for j in range(len(replicas))] == replicas


@pytest.mark.parametrize("seed", range(6))
def test_the_mip_and_enumeration_find_the_best_of_every_placement(seed: int) -> None:
    d_matrix, replicas, replica_w = _room(seed)
    counts, draws = np.array(replicas), np.array(replica_w)
    expected = _brute_force_rise(d_matrix, IDLE_W, replicas, replica_w)
    mip = wp.least_hottest_rise_whole(d_matrix, IDLE_W, counts, draws)
    hosts = wp.every_placement(6, counts)
    listed = wp.enumerated(d_matrix, IDLE_W, hosts, draws)
    assert len(hosts) == wp.placement_count(6, counts)
    for found in (mip, listed):
        assert found.status == "Optimal"
        assert found.rise_c == pytest.approx(expected, rel=1e-3)
        # The placement returned has the rise reported, each service's replicas seated once.
        assert wp.rise_of(d_matrix, IDLE_W, found.host, draws) == pytest.approx(
            found.rise_c, rel=1e-6
        )
        _seated_as_asked(found, replicas)


@pytest.mark.parametrize("seed", range(6))
def test_the_swaps_never_leave_the_greedy_placement_worse(seed: int) -> None:
    d_matrix, replicas, replica_w = _room(seed, servers=7)
    counts, draws = np.array(replicas), np.array(replica_w)
    greedy = wp.greedy_placement(d_matrix, IDLE_W, counts, draws)
    found = wp.improved(d_matrix, IDLE_W, counts, draws)
    best = _brute_force_rise(d_matrix, IDLE_W, replicas, replica_w)
    assert best - 1e-9 <= found.rise_c <= greedy.rise_c + 1e-9
    assert wp.rise_of(d_matrix, IDLE_W, found.host, draws) == pytest.approx(found.rise_c)
    _seated_as_asked(found, replicas)


def test_a_large_room_is_searched_from_the_hottest_inlet() -> None:
    # Past SOURCES_SCANNED servers only some swaps are tried; still never worse than greedy.
    rng = np.random.default_rng(7)
    servers = 3 * wp.SOURCES_SCANNED
    d_matrix = rng.uniform(0.0, 0.0001, (servers, servers)) + np.diag(
        rng.uniform(0.0, 0.001, servers)
    )
    counts, draws = np.array([9, 7, 5]), np.array([5000.0, 3000.0, 1000.0])
    greedy = wp.greedy_placement(d_matrix, IDLE_W, counts, draws)
    found = wp.improved(d_matrix, IDLE_W, counts, draws)
    assert found.rise_c < greedy.rise_c
    assert wp.rise_of(d_matrix, IDLE_W, found.host, draws) == pytest.approx(found.rise_c)
    _seated_as_asked(found, [9, 7, 5])


def test_a_swap_out_of_the_greedy_trap() -> None:
    # The heavy replica first takes server 0 (hottest inlet 1.8 K, against 2.7 on server 2),
    # which leaves the light one server 2 at best (inlet 2: 2.8 K); heavy on 2 and light on 0
    # make 2.7 K.
    d_matrix = np.array([[6.0, 3.0, 0.0], [0.0, 8.0, 9.0], [6.0, 7.0, 5.0]]) / 10_000
    counts, draws = np.array([1, 1]), np.array([3000.0, 2000.0])
    greedy = wp.greedy_placement(d_matrix, 0.0, counts, draws)
    found = wp.improved(d_matrix, 0.0, counts, draws)
    assert greedy.rise_c == pytest.approx(2.8)
    assert found.rise_c == pytest.approx(2.7)
    assert found.rise_c == pytest.approx(_brute_force_rise(d_matrix, 0.0, [1, 1], [3000.0, 2000.0]))


def test_whole_replicas_cannot_beat_the_fractional_floor() -> None:
    # Two servers, one replica of 1000 W: the floor may split it 2:1 (rise 0.667 K); a whole
    # replica sits on one server (rise 1.0 K on server 0, 2.0 K on server 1): 1.0 K.
    d_matrix = np.array([[0.001, 0.0], [0.0, 0.002]])
    found = wp.least_hottest_rise_whole(d_matrix, 0.0, np.array([1]), np.array([1000.0]))
    floor = bounds.least_hottest_rise(d_matrix, np.zeros(2), np.full(2, np.inf), np.array([1000.0]))
    assert found.rise_c == pytest.approx(1.0)
    assert list(found.host) == [0, -1]
    assert floor.rise_c[0] == pytest.approx(2 / 3)
