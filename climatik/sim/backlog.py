"""The queue of a deferrable service, by age: who waits how long, and who misses a deadline.

The twin's fluid queue (`steps_serve`) drops what exceeds the current capacity times the queue
timeout, and estimates the wait as the queue over the current capacity: right for work served
as it comes, wrong for work held back on purpose, whose capacity is low now and high later.
Deferrable services keep their waiting requests in buckets by arrival time instead, served
first in first out: a request meets its objective when it is served within its time to first
token of its arrival, and is dropped (missed) once it has waited its queue timeout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from climatik.sim.world import FloatArray

BUCKET_S = 60.0
"""Arrivals are grouped by the minute; every request of a bucket counts as arrived at its
start, so ages are over-, never under-, stated."""


@dataclass(slots=True, eq=False)
class AgedQueue:
    """Waiting requests of one deferrable service per policy, in a ring of arrival buckets."""

    ttft_s: float
    timeout_s: float
    bucket_s: float
    waiting: FloatArray
    """Requests per policy and bucket (policies x buckets), the ring indexed by bucket number."""
    born_s: FloatArray
    """Start of each ring position's bucket (simulated seconds)."""

    @classmethod
    def empty(cls, n_pol: int, ttft_s: float, timeout_s: float, dt: float) -> AgedQueue:
        """A queue whose ring holds every bucket a request may wait in."""
        bucket_s = max(BUCKET_S, dt)
        size = math.ceil(max(ttft_s, timeout_s) / bucket_s) + 2
        return cls(
            ttft_s=ttft_s,
            timeout_s=timeout_s,
            bucket_s=bucket_s,
            waiting=np.zeros((n_pol, size)),
            born_s=np.full(size, -np.inf),
        )

    def step(
        self, arrived: FloatArray, served: FloatArray, now_s: float
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Add `arrived`, serve `served` oldest first, drop what waited its timeout.

        Returns (requests still waiting, requests served within their TTFT objective,
        requests dropped), per policy.
        """
        size = self.born_s.size
        number = math.floor(now_s / self.bucket_s)
        here = number % size
        if self.born_s[here] != number * self.bucket_s:
            self.waiting[:, here] = 0.0  # long expired: the ring holds more than the timeout
            self.born_s[here] = number * self.bucket_s
        self.waiting[:, here] += arrived
        order = (here + 1 + np.arange(size)) % size  # oldest first
        queue = self.waiting[:, order]
        before = np.cumsum(queue, axis=1) - queue
        take = np.clip(served[:, None] - before, 0.0, queue)
        age = now_s - self.born_s[order]
        met = (take * (age <= self.ttft_s)[None, :]).sum(axis=1)
        queue = queue - take
        expired = age > self.timeout_s
        dropped = queue[:, expired].sum(axis=1)
        queue[:, expired] = 0.0
        self.waiting[:, order] = queue
        return queue.sum(axis=1), met, dropped
