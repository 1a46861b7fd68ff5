"""The deferrable-work planner: hand-computed cases, its invariants, and its optimum against
the twin's LP solver on small cases."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from climatik.domain.carbon import CarbonReading
from climatik.policies.deferrable import (
    DeferrablePlan,
    DeferrableTarget,
    PlanSettings,
    QueuedWork,
    plan_deferrable_work,
    queued_by_arrival,
    within_measured_power,
)
from climatik.sim.lp import Model

T0 = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)
SLOT = timedelta(hours=1)
EXACT = PlanSettings(capacity_fraction=1.0, deadline_guard=timedelta(0), wait_penalty_per_h=0.0)


def forecast(intensities: list[float]) -> list[CarbonReading]:
    return [
        CarbonReading(c, T0 + i * SLOT, T0 + (i + 1) * SLOT, is_forecast=True)
        for i, c in enumerate(intensities)
    ]


def target(
    queued: list[tuple[float, int]],
    *,
    arrivals_per_s: float = 0.0,
    deadline_h: float = 24.0,
    rate: float = 1.0 / 3600.0,
    min_replicas: int = 0,
    max_replicas: int = 4,
) -> DeferrableTarget:
    """`queued`: (requests, deadline in hours from T0); by default a replica serves one
    request an hour, so capacities read as replica-hours."""
    return DeferrableTarget(
        name="batch",
        queued=tuple(QueuedWork(amount, T0 + timedelta(hours=h)) for amount, h in queued),
        arrivals_per_s=arrivals_per_s,
        deadline=timedelta(hours=deadline_h),
        requests_per_replica_s=rate,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
    )


def test_backlog_waits_for_the_clean_slot_and_runs_there() -> None:
    # 6 replica-hours due in 3 h; the clean middle hour takes 4, the cleaner of the others 2.
    intensities = [300.0, 80.0, 200.0]
    plan = plan_deferrable_work(target([(6, 3)]), forecast(intensities), T0, EXACT)
    assert [s.planned for s in plan.slots] == pytest.approx([0, 4, 2])
    assert plan.ceiling == 0
    assert not plan.behind
    later = plan_deferrable_work(target([(6, 3)]), forecast(intensities)[1:], T0 + SLOT, EXACT)
    assert later.ceiling == 4  # raised to the user's max in the clean slot


def test_a_slot_is_counted_for_the_replicas_the_site_gives_at_its_hour() -> None:
    # 6 replica-hours due in 3 h, the clean middle hour 01:00. Counted at the maximum it takes
    # 4 and the work waits; but at 01:00 the site's power has only left room for one replica
    # (another service's daily peak), so the plan serves the rest now and in the last hour.
    intensities = [300.0, 80.0, 200.0]
    busy_at_one: list[float | None] = [None] * 24
    busy_at_one[1] = 1.0
    work = replace(target([(6, 3)]), admitted_by_hour=tuple(busy_at_one))
    plan = plan_deferrable_work(work, forecast(intensities), T0, EXACT)
    assert [s.planned for s in plan.slots] == pytest.approx([1, 1, 4])
    assert [s.capacity for s in plan.slots] == pytest.approx([4, 1, 4])
    assert plan.ceiling == 1
    # The current slot counts what the measured power admits now, not the hour's history.
    crowded = replace(work, admitted_now=0)
    late = plan_deferrable_work(crowded, forecast(intensities), T0, EXACT)
    assert late.behind
    assert late.slots[0].capacity == pytest.approx(0)


def test_deadline_forces_dirty_work_when_clean_slots_come_too_late() -> None:
    # Due in 1 h: only the dirty current hour can serve it.
    plan = plan_deferrable_work(target([(3, 1)]), forecast([400.0, 10.0]), T0, EXACT)
    assert plan.ceiling == 3
    assert plan.slots[0].planned == pytest.approx(3)


def test_behind_plan_runs_at_max_regardless_of_carbon() -> None:
    plan = plan_deferrable_work(target([(9, 2)]), forecast([400.0, 10.0, 10.0]), T0, EXACT)
    assert plan.behind
    assert plan.ceiling == 4
    assert "behind plan" in plan.reason


def test_minimum_replicas_serve_in_every_slot_and_the_rest_goes_clean() -> None:
    plan = plan_deferrable_work(
        target([(5, 3)], min_replicas=1), forecast([400.0, 10.0, 300.0]), T0, EXACT
    )
    # One replica-hour on the floor each hour (3), the 2 left in the clean hour.
    assert [s.planned for s in plan.slots] == pytest.approx([1, 3, 1])
    assert plan.ceiling == 1


def test_expected_arrivals_take_their_share_of_the_clean_slot() -> None:
    # 2 requests an hour arrive, each due 2 h after its hour starts; the clean hour is the second.
    plan = plan_deferrable_work(
        target([], arrivals_per_s=2 / 3600, deadline_h=2, max_replicas=4),
        forecast([300.0, 50.0, 300.0, 300.0]),
        T0,
        EXACT,
    )
    # Hour 0's and hour 1's arrivals both run in the clean hour 1; arrivals further than one
    # deadline ahead are not planned yet.
    assert [s.planned for s in plan.slots] == pytest.approx([0, 4, 0, 0])
    assert plan.ceiling == 0


def test_a_price_on_waiting_keeps_work_from_chasing_a_barely_cleaner_later_slot() -> None:
    intensities = [100.0, 99.0]
    exact = plan_deferrable_work(target([(2, 2)]), forecast(intensities), T0, EXACT)
    assert exact.ceiling == 0
    careful = plan_deferrable_work(target([(2, 2)]), forecast(intensities), T0, PlanSettings())
    assert careful.ceiling > 0


def test_no_forecast_covering_now_runs_at_max() -> None:
    plan = plan_deferrable_work(target([(1, 5)]), forecast([100.0])[:0], T0, EXACT)
    assert plan.ceiling == 4
    assert plan.slots == ()


def test_queued_by_arrival_keeps_the_newest_work_first_in_first_out() -> None:
    arrivals = [(T0, 5.0), (T0 + SLOT, 3.0), (T0 + 2 * SLOT, 2.0)]
    parts = queued_by_arrival(arrivals, 4.0, timedelta(hours=6))
    assert [(p.amount, p.deadline) for p in parts] == [
        (2.0, T0 + SLOT + timedelta(hours=6)),
        (2.0, T0 + 2 * SLOT + timedelta(hours=6)),
    ]
    more = queued_by_arrival(arrivals, 12.0, timedelta(hours=6))
    assert sum(p.amount for p in more) == pytest.approx(12.0)
    assert more[0].deadline == T0 + timedelta(hours=6)


def test_an_interval_inferred_below_zero_is_taken_from_the_one_before() -> None:
    # Arrivals inferred from noisy readings: the newest interval read 30 below zero. Its
    # shortfall comes off the interval before it, so the backlog keeps its true age.
    arrivals = [(T0, 100.0), (T0 + SLOT, 100.0), (T0 + 2 * SLOT, -30.0)]
    parts = queued_by_arrival(arrivals, 150.0, timedelta(hours=6))
    assert [p.deadline for p in parts] == [T0 + timedelta(hours=6), T0 + SLOT + timedelta(hours=6)]
    assert [p.amount for p in parts] == pytest.approx([80.0, 70.0])


# --- invariants ------------------------------------------------------------------------------

intensity_lists = st.lists(st.floats(0, 500), min_size=1, max_size=10)
backlogs = st.lists(st.tuples(st.floats(0.1, 6.0), st.integers(1, 10)), min_size=0, max_size=6)


def _edf_misses(queued: list[tuple[float, int]], amounts: list[float]) -> float:
    """Work left unserved by its deadline when slot t serves at most amounts[t], earliest
    deadline first (an independent check of the plan)."""
    left = sorted([list(q) for q in queued], key=lambda q: q[1])
    for t, amount in enumerate(amounts):
        room = amount
        for item in left:
            if item[1] <= t or room <= 0:
                continue
            take = min(room, item[0])
            item[0] -= take
            room -= take
    return sum(amount for amount, _ in left)


@settings(max_examples=200, deadline=None)
@given(intensity_lists, backlogs, st.integers(0, 2), st.integers(1, 5))
def test_plan_keeps_capacity_and_meets_every_deadline_it_can(
    intensities: list[float],
    queued: list[tuple[float, int]],
    floor: int,
    top: int,
) -> None:
    floor = min(floor, top)
    plan = plan_deferrable_work(
        target(queued, min_replicas=floor, max_replicas=top), forecast(intensities), T0, EXACT
    )
    for slot in plan.slots:
        assert slot.planned <= slot.capacity + 1e-6
    assert floor <= plan.ceiling <= top
    if not plan.behind:
        due = [(a, min(h, len(intensities))) for a, h in queued]
        assert _edf_misses(due, [s.planned for s in plan.slots]) == pytest.approx(0, abs=1e-6)
        assert sum(s.planned for s in plan.slots) == pytest.approx(plan.work, abs=1e-6)
    else:
        assert plan.ceiling == top


rooms = st.none() | st.floats(0.0, 6.0)


@settings(max_examples=200, deadline=None)
@given(
    intensity_lists,
    backlogs,
    st.integers(0, 2),
    st.integers(1, 5),
    st.none() | st.integers(0, 6),
    st.lists(rooms, min_size=24, max_size=24),
)
def test_no_slot_counts_more_replicas_than_the_power_admits_at_its_hour(
    intensities: list[float],
    queued: list[tuple[float, int]],
    floor: int,
    top: int,
    now_room: int | None,
    hourly_room: list[float | None],
) -> None:
    """With the room the measured power leaves (now, and learned per hour of the day): each
    slot counts at most the replicas admitted at its hour (never fewer than the minimum, never
    more than the maximum), the plan fits what it counted, and a plan not behind still meets
    every deadline on the slots' planned work."""
    floor = min(floor, top)
    work = replace(
        target(queued, min_replicas=floor, max_replicas=top),
        admitted_now=now_room,
        admitted_by_hour=tuple(hourly_room),
    )
    plan = plan_deferrable_work(work, forecast(intensities), T0, EXACT)
    rate = work.requests_per_replica_s * SLOT.total_seconds()
    for i, slot in enumerate(plan.slots):
        room = now_room if i == 0 else hourly_room[slot.start.hour]
        counted = top if room is None else max(floor, min(top, room))
        assert slot.capacity <= counted * rate + 1e-6
        assert slot.planned <= slot.capacity + 1e-6
    assert floor <= plan.ceiling <= top
    if not plan.behind:
        due = [(a, min(h, len(intensities))) for a, h in queued]
        assert _edf_misses(due, [s.planned for s in plan.slots]) == pytest.approx(0, abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(intensity_lists, backlogs, st.floats(0, 500), st.integers(0, 1))
def test_a_cleaner_current_slot_never_delays_work(
    intensities: list[float], queued: list[tuple[float, int]], cleaner: float, floor: int
) -> None:
    base = plan_deferrable_work(
        target(queued, min_replicas=floor), forecast(intensities), T0, EXACT
    )
    clean = [min(cleaner, intensities[0]), *intensities[1:]]
    moved = plan_deferrable_work(target(queued, min_replicas=floor), forecast(clean), T0, EXACT)
    assert moved.planned_now >= base.planned_now - 1e-6
    assert moved.ceiling >= base.ceiling


@settings(max_examples=200, deadline=None)
@given(intensity_lists, backlogs, st.floats(0, 500), st.integers(0, 9))
def test_a_cleaner_later_slot_never_brings_more_work_into_a_dirtier_now(
    intensities: list[float], queued: list[tuple[float, int]], cleaner: float, which: int
) -> None:
    """The other side of the same rule: a later slot made cleaner can only pull work to it."""
    which = min(which, len(intensities) - 1)
    base = plan_deferrable_work(target(queued), forecast(intensities), T0, EXACT)
    clean = list(intensities)
    clean[which] = min(cleaner, clean[which])
    moved = plan_deferrable_work(target(queued), forecast(clean), T0, EXACT)
    if which > 0:
        assert moved.planned_now <= base.planned_now + 1e-6
    assert moved.slots[which].planned >= base.slots[which].planned - 1e-6


def _lp_least_emissions(
    intensities: list[float], queued: list[tuple[float, int]], top: int
) -> float:
    """The least intensity-weighted work, by LP: x[i, t] of part i served in slot t <= due."""
    n_t, n_i = len(intensities), len(queued)
    due = np.array([min(h, n_t) for _, h in queued])
    allowed = np.arange(n_t)[None, :] < due[:, None]
    model = Model()
    x = model.cols(
        (n_i, n_t),
        cost=np.tile(np.array(intensities), (n_i, 1)),
        upper=np.where(allowed, np.inf, 0.0),
    )
    amounts = np.array([a for a, _ in queued])
    every = model.rows((n_i,), lower=amounts, upper=amounts)
    model.coef(np.repeat(every[:, None], n_t, axis=1), x, np.ones((n_i, n_t)))
    room = model.rows((n_t,), upper=np.full(n_t, float(top)))
    model.coef(np.repeat(room[None, :], n_i, axis=0), x, np.ones((n_i, n_t)))
    solution = model.solve()
    return solution.objective if solution.optimal else math.inf


@settings(max_examples=60, deadline=None)
@given(intensity_lists, backlogs.filter(bool), st.integers(1, 5))
def test_the_greedy_plan_is_the_least_emitting_one(
    intensities: list[float], queued: list[tuple[float, int]], top: int
) -> None:
    plan: DeferrablePlan = plan_deferrable_work(
        target(queued, max_replicas=top), forecast(intensities), T0, EXACT
    )
    best = _lp_least_emissions(intensities, queued, top)
    if plan.behind:
        assert best == math.inf
        return
    cost = sum(s.planned * s.intensity_g_per_kwh for s in plan.slots)
    assert cost == pytest.approx(best, rel=1e-6, abs=1e-6)


def test_a_raise_is_held_to_what_the_measured_power_leaves() -> None:
    def held(plan: int, replicas: int, measured_w: float | None, minimum: int = 0) -> int:
        return within_measured_power(
            plan,
            replicas=replicas,
            min_replicas=minimum,
            measured_w=measured_w,
            budget_w=1000.0,
            replica_w=200.0,
        )

    # 500 W measured: room for two more replicas, whatever the plan asks.
    assert held(6, 1, 500.0) == 3
    assert held(2, 1, 500.0) == 2
    # Over the budget: one below the running replicas; a lower plan stays lower.
    assert held(6, 4, 1100.0) == 3
    assert held(0, 4, 1100.0) == 0
    # Never below the minimum; without a measurement the plan stands.
    assert held(6, 1, 1100.0, minimum=1) == 1
    assert held(6, 1, None) == 6
