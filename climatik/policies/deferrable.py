"""When deferrable work runs: planned into the cleanest forecast slots before its deadlines.

A deferrable target's queued work and its expected arrivals each carry a deadline. The plan
gives every forecast slot the amount of work to serve in it, chosen to be cleanest: slots are
taken from the cleanest to the dirtiest (time breaks ties), and each takes as much work as can
still be served there without making any deadline unreachable. That greedy is optimal for a
linear cost: the amounts a set of slots can serve form a polymatroid (a transversal one: work
with a release and a deadline matched to slot capacity), whose rank is found by earliest
deadline first (Glover's rule for convex bipartite graphs), and greedy is optimal on a
polymatroid (Edmonds). The replicas a target's minimum keeps running serve anyway, so their
capacity is planned first, in every slot.

The current slot's planned work becomes the ceiling: raised in clean slots up to the user's
maximum, lowered to the minimum in dirty ones. A slot counts the replicas the site's measured
power has given at its hour of the day (the current one what it gives now), not the maximum
where other work keeps the site busy. When the work cannot all be served by its deadlines even
so (behind plan), the ceiling is the maximum whatever the grid.

Guarantees (property tests): no slot is planned beyond its capacity; when the capacity exists,
the plan serves every piece of work by its deadline; a cleaner current slot never gets less
work (a cleaner forecast never delays work). Pure: no clock, no I/O.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from climatik.domain.carbon import CarbonReading

_EPSILON = 1e-9
PLANNED_WORK_MARGIN = 0.05
"""Share of the cap that planned deferrable work leaves to the rest: interactive work keeps
room when a plan raises batch work in a clean slot."""


@dataclass(frozen=True, slots=True)
class QueuedWork:
    """Work waiting to be served (requests), due by `deadline`."""

    amount: float
    deadline: datetime


@dataclass(frozen=True, slots=True)
class DeferrableTarget:
    """One deferrable target as the planner sees it; work is counted in requests."""

    name: str
    queued: tuple[QueuedWork, ...]
    """The backlog, with the deadline of each part (`queued_by_arrival` builds it)."""
    arrivals_per_s: float
    """Expected arrivals from now on (requests per second)."""
    deadline: timedelta
    """Each request's deadline after its arrival."""
    requests_per_replica_s: float
    """What one ready replica serves per second at full batch."""
    min_replicas: int
    max_replicas: int
    horizon_end: datetime | None = None
    """Work must be done by then even where its own deadline is later (the twin's run end)."""
    admitted_now: int | None = None
    """Replicas the measured power leaves room for now (`within_measured_power` at the
    maximum); `None`: not measured, the maximum is counted."""
    admitted_by_hour: tuple[float | None, ...] = ()
    """Replicas the measured power has left room for at each hour of the day (UTC), as learned
    (`DeferrableTracker.learn_admitted`); an hour not seen yet counts the maximum. Other
    services' daily load decides what a slot can give: a plan that counts the maximum in a slot
    the site keeps busy falls behind its deadlines there."""


@dataclass(frozen=True, slots=True)
class PlanSettings:
    """The margins that keep a plan feasible in a world that differs from the forecast."""

    capacity_fraction: float = 0.6
    """Plan with this share of a replica's throughput (start-up, batch ramp, noise, and the
    power other work and `within_measured_power` leave it). On the twin's carbon-swing 0.7
    moved more work to clean slots but let 0.8 % of it miss its deadline; 0.6 0.4 %."""
    deadline_guard: timedelta = timedelta(minutes=30)
    """Plan every deadline this much earlier than it is, at most `deadline_guard_share` of it."""
    deadline_guard_share: float = 0.125
    """A short deadline keeps most of itself (a 2-hour one is planned 15 min early)."""
    wait_penalty_per_h: float = 0.005
    """A slot counts this share dirtier per hour it lies ahead. Forecast error grows with the
    lead time, and the least of many noisy values is biased low: without a price on waiting,
    the plan keeps postponing work to a slot that only looks cleaner, then runs it late in a
    dirty one. 0.5 %/h is 12 % at 24 h ahead, about a provider's day-ahead error."""


@dataclass(frozen=True, slots=True)
class PlannedSlot:
    """One slot of a plan: its intensity, what it could serve and what it is planned to."""

    start: datetime
    end: datetime
    intensity_g_per_kwh: float
    capacity: float
    planned: float


@dataclass(frozen=True, slots=True)
class DeferrablePlan:
    """A target's plan from now to its last deadline, and the ceiling it sets now."""

    name: str
    slots: tuple[PlannedSlot, ...]
    ceiling: int
    backlog: float
    """Requests waiting now."""
    work: float
    """Requests to serve in the plan: the backlog and the arrivals expected in it."""
    behind: bool
    """The work cannot all meet its deadlines even at the most the slots can give (each counted
    at the replicas the site's power gives at its hour): run regardless of carbon."""
    reason: str

    @property
    def planned_now(self) -> float:
        """Requests the plan serves in the current slot."""
        return self.slots[0].planned if self.slots else 0.0


@dataclass(frozen=True, slots=True)
class _Job:
    amount: float
    release: int
    """Index of the first slot that may serve it."""
    due: int
    """Index of the last slot that may serve it."""


def queued_by_arrival(
    arrivals: Sequence[tuple[datetime, float]], waiting: float, deadline: timedelta
) -> tuple[QueuedWork, ...]:
    """The backlog as parts with deadlines, from what arrived (oldest first) and what waits.

    Work is served first in, first out, so the `waiting` requests are the newest that arrived;
    each part is due `deadline` after the start of the interval it arrived in (conservative).
    An interval's arrivals are inferred from noisy readings and may be below zero: what one
    lacks is taken from the one before it (cutting each at zero would count the noise's upside
    only, and date the backlog younger than it is).
    """
    left = max(0.0, waiting)
    parts: list[QueuedWork] = []
    owed = 0.0
    for arrived_at, arrived in reversed(arrivals):
        if left <= _EPSILON:
            break
        amount = arrived + owed
        owed = min(0.0, amount)
        take = min(left, max(0.0, amount))
        if take > 0:
            parts.append(QueuedWork(take, arrived_at + deadline))
            left -= take
    if left > _EPSILON:
        # More waits than the history explains: treat the rest as the oldest known work.
        oldest = arrivals[0][0] if arrivals else None
        if oldest is not None:
            parts.append(QueuedWork(left, oldest + deadline))
    return tuple(reversed(parts))


def plan_deferrable_work(
    target: DeferrableTarget,
    forecast: Sequence[CarbonReading],
    now: datetime,
    settings: PlanSettings | None = None,
) -> DeferrablePlan:
    """Plan `target`'s work into the forecast's cleanest slots and set its ceiling for now.

    Slots are the forecast's from the one covering `now`; the first is cut to start at `now`.
    Expected arrivals come in each slot of the next `deadline` and are due `deadline` after its
    start, or at the end of the forecast if that is sooner (work beyond the forecast is planned
    when it is known). Slots are ranked by intensity with a small price on waiting
    (`wait_penalty_per_h`).
    """
    settings = settings or PlanSettings()
    backlog = sum(q.amount for q in target.queued)
    slots = _slots(forecast, now)
    top = target.max_replicas
    floor = min(target.min_replicas, top)
    if not slots or target.requests_per_replica_s <= 0:
        return DeferrablePlan(
            target.name, (), top, backlog, backlog, behind=backlog > 0, reason="no forecast: max"
        )
    rate = target.requests_per_replica_s * settings.capacity_fraction
    lengths = [(end - start).total_seconds() for start, end, _ in slots]
    guard = min(settings.deadline_guard, target.deadline * settings.deadline_guard_share)
    jobs = _jobs(target, slots, now, guard)
    work = sum(j.amount for j in jobs)
    reach = [_admitted(target, i, start, floor, top) for i, (start, _, _) in enumerate(slots)]
    floor_cap = [floor * rate * s for s in lengths]
    extra_cap = [(r - floor) * rate * s for r, s in zip(reach, lengths, strict=True)]
    full = _served(jobs, [f + e for f, e in zip(floor_cap, extra_cap, strict=True)])
    behind = full < work - _EPSILON * max(1.0, work)
    ranked = [
        c * (1.0 + settings.wait_penalty_per_h * (start - now).total_seconds() / 3600.0)
        for start, _, c in slots
    ]
    on_floor, above = _greedy(jobs, floor_cap, extra_cap, ranked, work)
    planned = [f + a for f, a in zip(on_floor, above, strict=True)]
    planned_slots = tuple(
        PlannedSlot(start, end, intensity, floor_cap[i] + extra_cap[i], planned[i])
        for i, (start, end, intensity) in enumerate(slots)
    )
    intensity_now = slots[0][2]
    if behind:
        return DeferrablePlan(
            target.name,
            planned_slots,
            top,
            backlog,
            work,
            behind=True,
            reason=(
                f"behind plan: {work:.0f} requests due exceed the {full:.0f} that the replicas "
                f"the slots admit serve by their deadlines; running at {top} replicas "
                "regardless of carbon"
            ),
        )
    needed = above[0] / (rate * lengths[0]) if lengths[0] > 0 else 0.0
    ceiling = min(top, floor + math.ceil(needed - 1e-6))
    ceiling = max(ceiling, floor)
    return DeferrablePlan(
        target.name,
        planned_slots,
        ceiling,
        backlog,
        work,
        behind=False,
        reason=(
            f"{planned[0]:.0f} of {work:.0f} requests planned now at {intensity_now:g} g/kWh "
            f"(cleanest slots first, {len(slots)} slots to the last deadline): {ceiling} replicas"
        ),
    )


def _admitted(target: DeferrableTarget, index: int, start: datetime, floor: int, top: int) -> float:
    """Replicas slot `index` (starting at `start`) can be counted on for: what the measured
    power admits now for the current slot, what it has admitted at that hour for later ones,
    the maximum where neither is known; never below the minimum."""
    admitted: float | None = target.admitted_now if index == 0 else None
    if index > 0 and target.admitted_by_hour:
        admitted = target.admitted_by_hour[
            start.astimezone(UTC).hour % len(target.admitted_by_hour)
        ]
    if admitted is None:
        return float(top)
    return max(float(floor), min(float(top), admitted))


def admitted_replicas(
    top: int,
    *,
    replicas: int,
    min_replicas: int,
    measured_w: float | None,
    budget_w: float,
    replica_w: float | None,
) -> int | None:
    """Replicas the measured power leaves room for now, the maximum at most
    (`within_measured_power` at `top`); `None` without a measurement or a replica's watts."""
    if measured_w is None or replica_w is None or replica_w <= 0:
        return None
    return within_measured_power(
        top,
        replicas=replicas,
        min_replicas=min_replicas,
        measured_w=measured_w,
        budget_w=budget_w,
        replica_w=replica_w,
    )


def within_admitted(ceiling: int, admitted: int | None) -> int:
    """A planned ceiling (between the minimum and the maximum) held to `admitted_replicas`:
    the same as `within_measured_power` on it, from the room already worked out."""
    return ceiling if admitted is None else min(ceiling, admitted)


def within_measured_power(
    ceiling: int,
    *,
    replicas: int,
    min_replicas: int,
    measured_w: float | None,
    budget_w: float,
    replica_w: float | None,
) -> int:
    """A planned ceiling kept within what the measured power leaves: raised above the running
    replicas only by the replicas (at `replica_w` each) that still fit `budget_w`, and one
    below them while the measurement is over it. The headroom policy's model of a replica's
    draw lags when a plan raises batch work at once from a few replicas to many at full batch;
    the measurement does not. Without a measurement or a replica's watts, the plan stands."""
    if measured_w is None or replica_w is None or replica_w <= 0:
        return ceiling
    if measured_w > budget_w:
        return max(min_replicas, min(ceiling, replicas - 1))
    room = math.floor((budget_w - measured_w) / replica_w)
    return max(min_replicas, min(ceiling, replicas + room))


def _slots(
    forecast: Sequence[CarbonReading], now: datetime
) -> list[tuple[datetime, datetime, float]]:
    """The forecast from the slot covering `now`, contiguous, the first cut to start at `now`."""
    ordered = sorted((r for r in forecast if r.slot_end > now), key=lambda r: r.slot_start)
    if not ordered or ordered[0].slot_start > now:
        return []
    slots: list[tuple[datetime, datetime, float]] = []
    expected = now
    for reading in ordered:
        if reading.slot_start > expected:
            break  # a gap: plan only up to it
        start = max(reading.slot_start, expected)
        if reading.slot_end <= start:
            continue
        slots.append((start, reading.slot_end, reading.intensity_g_per_kwh))
        expected = reading.slot_end
    return slots


def _due_index(slots: Sequence[tuple[datetime, datetime, float]], deadline: datetime) -> int:
    """The last slot that ends by `deadline` (-1: none; the work is already late)."""
    due = -1
    for i, (_, end, _) in enumerate(slots):
        if end <= deadline:
            due = i
        else:
            break
    return due


def _jobs(
    target: DeferrableTarget,
    slots: Sequence[tuple[datetime, datetime, float]],
    now: datetime,
    guard: timedelta,
) -> list[_Job]:
    last = len(slots) - 1
    end = slots[-1][1]
    if target.horizon_end is not None:
        end = min(end, target.horizon_end)

    def due(deadline: datetime) -> int:
        # Late or due within the current slot: the current slot is its last chance.
        return max(0, min(last, _due_index(slots, min(deadline - guard, end))))

    jobs = [_Job(q.amount, 0, due(q.deadline)) for q in target.queued if q.amount > 0]
    if target.arrivals_per_s > 0:
        # Arrivals further than one deadline ahead compete with nothing queued now.
        last_arrival = now + target.deadline
        if target.horizon_end is not None:
            last_arrival = min(last_arrival, target.horizon_end)
        for i, (start, stop, _) in enumerate(slots):
            if start >= last_arrival:
                break
            amount = target.arrivals_per_s * (stop - max(start, now)).total_seconds()
            jobs.append(_Job(amount, i, max(i, due(start + target.deadline))))
    return jobs


def _served_per_slot(jobs: Sequence[_Job], capacity: Sequence[float]) -> list[float]:
    """What each slot serves of the most work the capacities can serve within every job's
    window: earliest deadline first, slot by slot (optimal for windows that are intervals of
    slots, Glover 1967). It looks no further than the slot it fills, so what it serves in the
    first t slots is also the most that those slots alone can serve."""
    per_slot = [0.0] * len(capacity)
    order = sorted(range(len(jobs)), key=lambda i: jobs[i].release)
    waiting: list[tuple[int, int, float]] = []  # (due, index, amount left)
    nxt = 0
    for t, room_total in enumerate(capacity):
        room = room_total
        while nxt < len(order) and jobs[order[nxt]].release <= t:
            i = order[nxt]
            heapq.heappush(waiting, (jobs[i].due, i, jobs[i].amount))
            nxt += 1
        while waiting and room > _EPSILON:
            due, i, left = waiting[0]
            if due < t:
                heapq.heappop(waiting)
                continue
            take = min(room, left)
            per_slot[t] += take
            room -= take
            if take >= left - _EPSILON:
                heapq.heappop(waiting)
            else:
                heapq.heapreplace(waiting, (due, i, left - take))
    return per_slot


def _served(jobs: Sequence[_Job], capacity: Sequence[float]) -> float:
    """The most work the slots' capacities serve within every job's window."""
    return sum(_served_per_slot(jobs, capacity))


def _greedy(
    jobs: Sequence[_Job],
    floor_cap: Sequence[float],
    extra_cap: Sequence[float],
    intensity: Sequence[float],
    work: float,
) -> tuple[list[float], list[float]]:
    """Work per slot, (on the floor's replicas, on the replicas above it).

    The floor's capacity is taken first, slot by slot in time order (those replicas run
    anyway); then the capacity above it, from the cleanest slot to the dirtiest. Each slot
    is planned what the rank of the capacity taken so far grows by when it is added."""
    capacity = list(floor_cap)
    on_floor = _served_per_slot(jobs, capacity)
    above = [0.0] * len(capacity)
    rank = sum(on_floor)
    for t in sorted(range(len(capacity)), key=lambda i: (intensity[i], i)):
        if rank >= work - _EPSILON * max(1.0, work):
            break
        if extra_cap[t] <= 0:
            continue
        capacity[t] += extra_cap[t]
        grown = _served(jobs, capacity)
        above[t] = max(0.0, grown - rank)
        rank = grown
    return on_floor, above
