"""One read for many askers: identical reads in flight are coalesced, answers kept briefly.

Thousands of configs ask the same few Prometheus servers the same few queries every control
interval. `SingleFlight.get(key, fetch, ttl_s=...)` runs `fetch` once per key at a time: every
caller asking while it runs waits for that one answer (Go's `singleflight`), and a successful
answer is kept for `ttl_s` seconds and handed to later callers without asking again. Failures are
shared with the callers waiting for them but never kept, so the next caller asks afresh.

With `stale_s`, an answer past its TTL is still handed over for that much longer while one
read refreshes it in the background (HTTP's stale-while-revalidate): otherwise every asker
arriving as an answer expires waits for the new read, and with thousands of configs on a few
workers each expiry stalls the whole work queue for as long as the slowest query takes.

Guarantees: a caller that is cancelled does not cancel the read others wait for (it runs as a
task of its own, awaited through `asyncio.shield`); at most `max_entries` answers are kept, the
oldest dropped first, and expired ones are dropped as new ones come; `close()` cancels reads
still running. The clock is injected.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

DEFAULT_MAX_ENTRIES = 4096


class SingleFlight(Generic[K, V]):
    """Coalesces concurrent reads of one key and keeps answers for a short time."""

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._clock = clock
        self._kept: OrderedDict[K, tuple[float, float, V]] = OrderedDict()
        """Answers by key: (fresh until, handed over until while refreshing, answer)."""
        self._flights: dict[K, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        """How many answers are kept (expired ones included until they are swept)."""
        return len(self._kept)

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    def peek(self, key: K) -> V | None:
        """The kept answer for `key` while it is young enough, without asking or waiting: a
        caller that finds every answer it needs kept does without tasks and awaits."""
        kept = self._kept.get(key)
        if kept is None or self._clock() >= kept[0]:
            return None
        return kept[2]

    async def get(
        self,
        key: K,
        fetch: Callable[[], Awaitable[V]],
        *,
        ttl_s: float,
        stale_s: float = 0.0,
        refresh: bool = False,
    ) -> V:
        """The kept answer for `key` if it is young enough, else the answer of the read in
        flight for it, else the answer of a new read (`fetch()`), kept for `ttl_s` seconds and
        handed over `stale_s` seconds longer while a read in the background refreshes it.
        `refresh` passes over the kept answer (a caller that knows it is too old to use)."""
        kept = self._kept.get(key)
        if kept is not None:
            fresh_until, serve_until, value = kept
            now = self._clock()
            if not refresh and now < fresh_until:
                return value
            if not refresh and now < serve_until:
                self._flight(key, fetch, ttl_s, stale_s)
                return value
            del self._kept[key]
        return await asyncio.shield(self._flight(key, fetch, ttl_s, stale_s))

    def _flight(
        self, key: K, fetch: Callable[[], Awaitable[V]], ttl_s: float, stale_s: float
    ) -> asyncio.Task[V]:
        """The read in flight for `key`, started if there is none."""
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.get_running_loop().create_task(
                self._fly(key, fetch, ttl_s, stale_s), name=f"singleflight-{len(self._flights)}"
            )
            flight.add_done_callback(_retrieve)
            self._flights[key] = flight
        return flight

    async def _fly(
        self, key: K, fetch: Callable[[], Awaitable[V]], ttl_s: float, stale_s: float
    ) -> V:
        try:
            value = await fetch()
            if ttl_s > 0:
                fresh_until = self._clock() + ttl_s
                self._keep(key, value, fresh_until, fresh_until + max(0.0, stale_s))
            return value
        finally:
            self._flights.pop(key, None)

    def _keep(self, key: K, value: V, fresh_until: float, serve_until: float) -> None:
        self._kept[key] = (fresh_until, serve_until, value)
        self._kept.move_to_end(key)
        # Answers are kept in the order they came; those past use go at once, so memory
        # holds one TTL's worth of answers, not `max_entries` of them.
        now = self._clock()
        while self._kept and next(iter(self._kept.values()))[1] <= now:
            self._kept.popitem(last=False)
        if len(self._kept) > self._max_entries:
            for old in [k for k, (_, until, _) in self._kept.items() if until <= now]:
                del self._kept[old]
            while len(self._kept) > self._max_entries:
                self._kept.popitem(last=False)

    async def close(self) -> None:
        """Cancel the reads still in flight and forget every kept answer."""
        flights = list(self._flights.values())
        for flight in flights:
            flight.cancel()
        await asyncio.gather(*flights, return_exceptions=True)
        self._flights.clear()
        self._kept.clear()


def _retrieve(task: asyncio.Task[object]) -> None:
    # Every waiter may have been cancelled; the failure is theirs to see, not the loop's to log.
    if not task.cancelled():
        task.exception()
