"""What the live controller knows of a deferrable target between plans, from its measurements.

vLLM exports what a target finishes per second and what waits in its pods; from those, at each
observation, this module infers what arrived (finished in the interval + waiting now - waiting
before), keeps the arrivals of the last deadlines by five minutes, learns what one replica serves
while work waits (its throughput), counts what is done in the current slot, and counts deadline
misses: work is served first in first out, so what still waits past the deadline of its arrival
is a miss, counted once. It turns that into the planner's `DeferrableTarget`. Pure: the caller
passes the time and the readings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from climatik.policies.deferrable import DeferrableTarget, QueuedWork, queued_by_arrival

ADMITTED_MEMORY = timedelta(minutes=25)
"""Time constant of the replicas the power admits at an hour of day: an hour's figure is
mostly its last day's, however often the plan runs (each observation weighs the time since
the last one)."""
THROUGHPUT_LEARNING = 0.1
"""Weight of a new saturated sample in the learned throughput per replica."""
MAX_GAP = timedelta(minutes=10)
"""A longer gap between observations says nothing about arrivals in between: start afresh."""
BUCKET = timedelta(minutes=5)
"""Arrivals are kept per five minutes (a twelfth of the deadline when that is shorter); each
counts from its bucket's start (ages are over-, never under-stated)."""


@dataclass(frozen=True, slots=True)
class DeferrableReading:
    """One observation of a deferrable target."""

    at: datetime
    slot_start: datetime
    """Start of the carbon slot `at` lies in (arrivals and done work are kept per slot)."""
    finished_per_s: float
    waiting: float
    replicas: int


@dataclass(slots=True)
class DeferrableTracker:
    """One deferrable target's arrivals, backlog, done work and deadline misses."""

    deadline: timedelta
    bucket: timedelta | None = None
    """How finely arrivals are kept (default `BUCKET`, or a twelfth of a shorter deadline);
    the planner gets one piece of work per bucket that waits."""
    arrivals: dict[datetime, float] = field(default_factory=dict)
    """Requests that arrived per `BUCKET` (by its start), over the last two deadlines: the
    ages of the backlog."""
    observed: dict[datetime, float] = field(default_factory=dict)
    """The part of `arrivals` seen arriving between two observations: the arrival rate."""
    observed_since: datetime | None = None
    last: DeferrableReading | None = None
    per_replica_rps: float | None = None
    """Learned from observations with work waiting on every replica (full batches)."""
    seen_per_replica_rps: float = 0.0
    """The most one replica was seen to finish per second: a floor until one is learned."""
    done_slot: datetime | None = None
    done: float = 0.0
    """Requests finished in the slot `done_slot` so far."""
    admitted_by_hour: list[float | None] = field(default_factory=lambda: [None] * 24)
    """Replicas the measured power has left room for at each hour of the day (UTC)."""
    admitted_now: int | None = None
    """What it leaves room for at the last observation; `None`: not measured then."""
    admitted_at: datetime | None = None
    overdue: float = 0.0
    """Requests waiting past their deadline at the last observation."""
    misses: float = 0.0
    """Requests counted as missing their deadline so far."""

    def observe(self, reading: DeferrableReading) -> float:
        """Take one observation; returns the deadline misses it newly counted."""
        last = self.last
        gap = reading.at - last.at if last is not None else timedelta(0)
        elapsed_s = min(gap, MAX_GAP).total_seconds()
        finished = max(0.0, reading.finished_per_s) * max(0.0, elapsed_s)
        if last is not None and timedelta(0) < gap <= MAX_GAP:
            # Arrived since the last observation: counted from then (never a later deadline).
            # Signed: the difference of two noisy readings of a long queue is often below zero,
            # and cut at zero every time its noise only adds (three times the true arrivals
            # behind a 200,000-request queue read to 1 %: the backlog then looked younger
            # than it was, and its deadlines passed while the plan waited). Summed over a
            # bucket the noise cancels; a bucket's sum is cut at zero where it is read.
            arrived = finished + reading.waiting - last.waiting
            bucket = self._bucket(last.at)
            self.observed[bucket] = self.observed.get(bucket, 0.0) + arrived
            if self.observed_since is None:
                self.observed_since = last.at
        else:
            # What waits at a first look (or after a gap) and no arrival explains is of unknown
            # age: counted from the carbon slot's start. It is backlog, not an arrival rate.
            known = sum(q.amount for q in self.queued(reading.waiting))
            arrived, bucket = max(0.0, reading.waiting - known), self._bucket(reading.slot_start)
        self.arrivals[bucket] = self.arrivals.get(bucket, 0.0) + arrived
        if self.done_slot != reading.slot_start:
            self.done_slot, self.done = reading.slot_start, 0.0
        self.done += finished
        if reading.replicas > 0:
            self.seen_per_replica_rps = max(
                self.seen_per_replica_rps, reading.finished_per_s / reading.replicas
            )
        if reading.replicas > 0 and reading.waiting >= reading.replicas:
            sample = reading.finished_per_s / reading.replicas
            learned = self.per_replica_rps
            self.per_replica_rps = (
                sample if learned is None else learned + THROUGHPUT_LEARNING * (sample - learned)
            )
        oldest = reading.at - self.deadline - self.deadline  # arrivals older cannot wait still
        for kept in (self.arrivals, self.observed):
            for start in [s for s in kept if s < oldest]:
                del kept[start]
        self.last = reading
        overdue = sum(q.amount for q in self.queued(reading.waiting) if q.deadline <= reading.at)
        # First in, first out: what the interval finished came off the overdue work first.
        still = max(0.0, self.overdue - finished)
        new = max(0.0, overdue - still)
        self.overdue = overdue
        self.misses += new
        return new

    def learn_admitted(self, at: datetime, replicas: int | None) -> None:
        """Note how many replicas the measured power leaves room for now (at the maximum):
        the current slot counts it, and the same hour of later days learns from it. `None`
        (no measurement) teaches nothing."""
        self.admitted_now = replicas
        if replicas is None:
            return
        hour = at.astimezone(UTC).hour
        known = self.admitted_by_hour[hour]
        last, self.admitted_at = self.admitted_at, at
        if known is None:
            self.admitted_by_hour[hour] = float(replicas)
            return
        # The time this observation stands for: since the last, at most a gap's worth.
        elapsed = min(at - last, MAX_GAP) if last is not None else MAX_GAP
        weight = 1.0 - math.exp(-max(0.0, elapsed / ADMITTED_MEMORY))
        self.admitted_by_hour[hour] = known + weight * (replicas - known)

    def _bucket(self, moment: datetime) -> datetime:
        """The start of the bucket holding `moment`."""
        size_s = (self.bucket or min(BUCKET, self.deadline / 12)).total_seconds()
        return datetime.fromtimestamp(moment.timestamp() // size_s * size_s, tz=moment.tzinfo)

    def queued(self, waiting: float) -> tuple[QueuedWork, ...]:
        """The backlog with the deadline of each part (the newest arrivals wait)."""
        history = sorted(self.arrivals.items())
        return queued_by_arrival(history, waiting, self.deadline)

    def expected_arrivals_per_s(self, now: datetime) -> float:
        """The mean arrival rate seen over the last deadline (0 before two observations)."""
        since = self.observed_since
        if since is None:
            return 0.0
        span_s = min(self.deadline, now - since).total_seconds()
        recent = sum(a for s, a in self.observed.items() if s >= now - self.deadline)
        return max(0.0, recent) / span_s if span_s > 0 else 0.0

    def target(
        self,
        name: str,
        *,
        min_replicas: int,
        max_replicas: int,
        nominal_per_replica_rps: float | None = None,
        horizon_end: datetime | None = None,
    ) -> DeferrableTarget | None:
        """The planner's view of the target; None before anything is known of its throughput
        (until a full batch is measured, `nominal_per_replica_rps` stands in where known, else
        the most a replica was seen to serve)."""
        last = self.last
        rate = self.per_replica_rps or nominal_per_replica_rps or self.seen_per_replica_rps
        if last is None or rate <= 0:
            return None
        return DeferrableTarget(
            name=name,
            queued=self.queued(last.waiting),
            arrivals_per_s=self.expected_arrivals_per_s(last.at),
            deadline=self.deadline,
            requests_per_replica_s=rate,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            horizon_end=horizon_end,
            admitted_now=self.admitted_now,
            admitted_by_hour=tuple(self.admitted_by_hour),
        )
