"""The work queue between informers and reconcile workers, with client-go's guarantees.

- **Fair across tenants**: ready keys are handed out round-robin across their namespaces (the
  part before ``/``; ``fairness_key`` chooses another grouping), FIFO within one namespace. With
  k namespaces holding ready keys, a namespace waits for at most k - 1 other keys, however many
  keys another namespace piles up: one tenant's slow configs cannot starve the others.
- **A share of the workers**: with ``max_in_flight_per_group``, no namespace holds more than that
  many keys in processing at once, so one tenant's slow reconciles (a Prometheus that answers
  after seconds) cannot occupy every worker while other tenants' keys wait; a group at its limit
  keeps its turn and goes first once one of its keys is done.
- **Dedup**: a key waiting in the queue is there once, however often it is added.
- **Exclusive**: a key handed to a worker is in ``processing`` until ``done(key)``; it is never
  handed to a second worker meanwhile.
- **Coalescing**: adds during processing mark the key ``dirty``; ``done`` requeues it once, so the
  worker sees the latest state once more instead of once per event.
- **Delays**: ``add_after`` (for polling, ``Result(requeue_after=...)``) keeps the earliest
  deadline per key; ``add_rate_limited`` asks the rate limiter how long (backoff after failures);
  ``forget`` clears a key's failure history.
- **Waits**: how long a key being processed waited for a worker, counted from when it was due
  (``waited_s``), and how long since it was due including its processing so far
  (``since_due_s``), so a caller that polls at a fixed rate can queue it again one period after
  it was *due*, not after it was handed out or finished.
- **Shutdown**: ``shut_down`` stops handing out keys (queued keys are dropped: the next leader's
  informers list everything again, so nothing is lost); ``drain`` waits for in-flight keys to be
  ``done`` so no reconcile is cut in half.

Single event loop, no locks. ``add`` is synchronous so informer handlers can call it. Time comes
from an injected clock; ``get_nowait`` lets tests drive delayed keys with a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

from climatik.kube.ratelimit import RateLimiter, default_controller_rate_limiter

K = TypeVar("K", bound=Hashable)


def namespace_of(key: Hashable) -> Hashable:
    """The namespace of a ``namespace/name`` key (client-go's ``SplitMetaNamespaceKey``).

    Cluster-scoped ``name`` keys and keys that are not strings all share the group ``""``: among
    themselves they are plain FIFO.
    """
    if isinstance(key, str):
        namespace, sep, _ = key.partition("/")
        return namespace if sep else ""
    return ""


class ShutDownError(Exception):
    """The queue is shutting down: the worker should return."""


class WorkQueueMetrics(Protocol):
    """Hooks for the runtime's Prometheus metrics."""

    def added(self, queue: str) -> None: ...

    def depth(self, queue: str, depth: int) -> None: ...

    def retried(self, queue: str) -> None: ...

    def waited(self, queue: str, seconds: float) -> None: ...


class _NoMetrics:
    def added(self, queue: str) -> None:
        pass

    def depth(self, queue: str, depth: int) -> None:
        pass

    def retried(self, queue: str) -> None:
        pass

    def waited(self, queue: str, seconds: float) -> None:
        pass


class WorkQueue(Generic[K]):
    """A rate-limited, delaying, deduplicating queue of keys."""

    def __init__(
        self,
        name: str = "",
        *,
        rate_limiter: RateLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
        metrics: WorkQueueMetrics | None = None,
        fairness_key: Callable[[K], Hashable] = namespace_of,
        max_in_flight_per_group: int | None = None,
    ) -> None:
        if max_in_flight_per_group is not None and max_in_flight_per_group < 1:
            raise ValueError("max_in_flight_per_group must be at least 1")
        self.name = name
        self._fairness_key = fairness_key
        self._max_in_flight = max_in_flight_per_group
        self._in_flight: dict[Hashable, int] = {}
        self._clock = clock
        self.rate_limiter: RateLimiter = rate_limiter or default_controller_rate_limiter(
            clock=clock
        )
        self.metrics: WorkQueueMetrics = metrics or _NoMetrics()
        # Ready keys, FIFO per fairness group, and the groups holding ready keys in turn order.
        self._ready: dict[Hashable, deque[K]] = {}
        self._turns: deque[Hashable] = deque()
        self._ready_count = 0
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._added_at: dict[K, float] = {}
        self._delayed: list[tuple[float, int, K]] = []
        self._delayed_until: dict[K, float] = {}
        self._seq = itertools.count()
        self._waiters: list[asyncio.Future[None]] = []
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._shutting_down = False
        self._waited_s: dict[K, float] = {}
        self._due_at: dict[K, float] = {}
        """When each key being processed was due (or added)."""

    # -- adding -----------------------------------------------------------------------------

    def add(self, key: K) -> None:
        """Queue ``key`` unless it is already waiting; if it is being processed, mark it dirty."""
        if self._shutting_down or key in self._dirty:
            return
        self.metrics.added(self.name)
        self._dirty.add(key)
        if key in self._processing:
            return
        self._push(key)

    def add_after(self, key: K, delay_s: float) -> None:
        """Queue ``key`` after ``delay_s`` seconds (the earliest of several requests wins)."""
        if self._shutting_down:
            return
        if delay_s <= 0:
            self.add(key)
            return
        ready_at = self._clock() + delay_s
        current = self._delayed_until.get(key)
        if current is not None and current <= ready_at:
            return
        self._delayed_until[key] = ready_at
        heapq.heappush(self._delayed, (ready_at, next(self._seq), key))
        self._wake_all()

    def add_rate_limited(self, key: K) -> None:
        """Queue ``key`` after the rate limiter's delay (records one more failure)."""
        self.metrics.retried(self.name)
        self.add_after(key, self.rate_limiter.when(key))

    def forget(self, key: K) -> None:
        """The key succeeded: clear its failure history."""
        self.rate_limiter.forget(key)

    def num_requeues(self, key: K) -> int:
        return self.rate_limiter.num_requeues(key)

    # -- taking -----------------------------------------------------------------------------

    def get_nowait(self) -> K | None:
        """The next ready key (now marked processing), or None; due delayed keys are promoted."""
        if self._shutting_down:
            raise ShutDownError(self.name)
        self._promote_due()
        group = self._next_group()
        if group is None:
            return None
        keys = self._ready[group]
        key = keys.popleft()
        if keys:
            self._turns.append(group)  # its next key waits for every other group's turn
        else:
            del self._ready[group]
        self._ready_count -= 1
        self._in_flight[group] = self._in_flight.get(group, 0) + 1
        self._processing.add(key)
        self._dirty.discard(key)
        added_at = self._added_at.pop(key, None)
        if added_at is not None:
            waited_s = self._clock() - added_at
            self.metrics.waited(self.name, waited_s)
            self._waited_s[key] = waited_s
            self._due_at[key] = added_at
        self.metrics.depth(self.name, self._ready_count)
        return key

    async def get(self) -> K:
        """Wait for a key to process; raise ShutDownError once the queue is shut down."""
        loop = asyncio.get_running_loop()
        while True:
            key = self.get_nowait()
            if key is not None:
                return key
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                next_due_s = self._seconds_to_next_due()
                if next_due_s is None:
                    await waiter
                else:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(next_due_s):
                            await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def done(self, key: K) -> None:
        """The worker finished ``key``; if it was re-added meanwhile, queue it again."""
        if key in self._processing:
            self._processing.discard(key)
            self._waited_s.pop(key, None)
            self._due_at.pop(key, None)
            group = self._fairness_key(key)
            left = self._in_flight.get(group, 0) - 1
            if left > 0:
                self._in_flight[group] = left
            else:
                self._in_flight.pop(group, None)
            if self._max_in_flight is not None:
                self._wake_all()  # its group may have a free slot again
        if key in self._dirty:
            self._push(key)
        if not self._processing:
            for waiter in self._idle_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._idle_waiters.clear()

    # -- shutdown ---------------------------------------------------------------------------

    def shut_down(self) -> None:
        """Stop handing out keys; waiting workers get ShutDownError."""
        self._shutting_down = True
        self._ready.clear()
        self._turns.clear()
        self._ready_count = 0
        self._dirty.clear()
        self._delayed.clear()
        self._delayed_until.clear()
        self.metrics.depth(self.name, 0)
        self._wake_all()

    async def drain(self) -> None:
        """Shut down and wait until every key being processed is done."""
        self.shut_down()
        if not self._processing:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(waiter)
        await waiter

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    # -- introspection ----------------------------------------------------------------------

    def __len__(self) -> int:
        """Keys ready to be handed out (not delayed, not processing)."""
        return self._ready_count

    @property
    def processing(self) -> frozenset[K]:
        return frozenset(self._processing)

    @property
    def delayed(self) -> int:
        return len(self._delayed_until)

    def waited_s(self, key: K) -> float:
        """How long ``key``, now being processed, waited for a worker since it was due (or
        added); 0 when it is not being processed."""
        return self._waited_s.get(key, 0.0)

    def since_due_s(self, key: K) -> float:
        """How long ago ``key``, now being processed, was due (or added): its wait for a worker
        and its processing so far; 0 when it is not being processed."""
        due_at = self._due_at.get(key)
        return 0.0 if due_at is None else self._clock() - due_at

    # -- internals --------------------------------------------------------------------------

    def _next_group(self) -> Hashable | None:
        """The first group in turn order with a ready key and, under a per-group limit, a free
        slot; it leaves the turn order (`get_nowait` puts it back if it has more keys). A group
        at its limit keeps its place, so it goes first once one of its keys is done."""
        limit = self._max_in_flight
        for index, group in enumerate(self._turns):
            if limit is None or self._in_flight.get(group, 0) < limit:
                del self._turns[index]
                return group
        return None

    def _push(self, key: K) -> None:
        group = self._fairness_key(key)
        keys = self._ready.get(group)
        if keys is None:
            keys = self._ready[group] = deque()
            self._turns.append(group)  # a newly ready group queues behind the others' turns
        keys.append(key)
        self._ready_count += 1
        self._added_at.setdefault(key, self._clock())
        self.metrics.depth(self.name, self._ready_count)
        self._wake_all()

    def _promote_due(self) -> None:
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            ready_at, _, key = heapq.heappop(self._delayed)
            if self._delayed_until.get(key) == ready_at:
                del self._delayed_until[key]
                if key not in self._processing:
                    # It has waited since it was due, not since a worker came to look.
                    self._added_at.setdefault(key, ready_at)
                self.add(key)

    def _seconds_to_next_due(self) -> float | None:
        while self._delayed:
            ready_at, _, key = self._delayed[0]
            if self._delayed_until.get(key) != ready_at:
                heapq.heappop(self._delayed)  # superseded by an earlier request
                continue
            return max(ready_at - self._clock(), 0.0)
        return None

    def _wake_all(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
