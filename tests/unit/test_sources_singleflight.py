"""Coalescing reads in flight and keeping answers for a short time."""

from __future__ import annotations

import asyncio

import pytest

from climatik.sources.singleflight import SingleFlight


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Reads:
    """A fetch that counts its calls and can be held open."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.release.set()
        self.fail = False

    async def __call__(self) -> int:
        self.calls += 1
        await self.release.wait()
        if self.fail:
            raise RuntimeError(f"read {self.calls} failed")
        return self.calls


async def test_concurrent_askers_share_one_read() -> None:
    flights: SingleFlight[str, int] = SingleFlight(clock=Clock())
    reads = Reads()
    reads.release.clear()
    askers = [asyncio.create_task(flights.get("q", reads, ttl_s=5.0)) for _ in range(10)]
    await asyncio.sleep(0)
    reads.release.set()
    assert await asyncio.gather(*askers) == [1] * 10
    assert reads.calls == 1


async def test_an_answer_is_kept_for_its_ttl_only() -> None:
    clock = Clock()
    flights: SingleFlight[str, int] = SingleFlight(clock=clock)
    reads = Reads()
    assert await flights.get("q", reads, ttl_s=5.0) == 1
    clock.now = 4.9
    assert await flights.get("q", reads, ttl_s=5.0) == 1
    clock.now = 5.0
    assert await flights.get("q", reads, ttl_s=5.0) == 2
    assert await flights.get("other", reads, ttl_s=0.0) == 3
    assert await flights.get("other", reads, ttl_s=0.0) == 4  # ttl 0: coalesce only


async def test_failures_are_shared_but_not_kept() -> None:
    flights: SingleFlight[str, int] = SingleFlight(clock=Clock())
    reads = Reads()
    reads.fail = True
    reads.release.clear()
    askers = [asyncio.create_task(flights.get("q", reads, ttl_s=5.0)) for _ in range(3)]
    await asyncio.sleep(0)
    reads.release.set()
    results = await asyncio.gather(*askers, return_exceptions=True)
    assert [str(r) for r in results] == ["read 1 failed"] * 3
    reads.fail = False
    assert await flights.get("q", reads, ttl_s=5.0) == 2


async def test_a_cancelled_asker_does_not_cancel_the_read_of_the_others() -> None:
    flights: SingleFlight[str, int] = SingleFlight(clock=Clock())
    reads = Reads()
    reads.release.clear()
    impatient = asyncio.create_task(flights.get("q", reads, ttl_s=5.0))
    patient = asyncio.create_task(flights.get("q", reads, ttl_s=5.0))
    await asyncio.sleep(0)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    reads.release.set()
    assert await patient == 1


async def test_at_most_max_entries_answers_are_kept() -> None:
    flights: SingleFlight[int, int] = SingleFlight(max_entries=3, clock=Clock())
    reads = Reads()
    for key in range(5):
        await flights.get(key, reads, ttl_s=60.0)
    assert len(flights) == 3
    assert await flights.get(0, reads, ttl_s=60.0) == 6  # the oldest went first


async def test_close_cancels_reads_in_flight() -> None:
    flights: SingleFlight[str, int] = SingleFlight(clock=Clock())
    reads = Reads()
    reads.release.clear()
    asker = asyncio.create_task(flights.get("q", reads, ttl_s=5.0))
    await asyncio.sleep(0)
    assert flights.in_flight == 1
    await flights.close()
    with pytest.raises(asyncio.CancelledError):
        await asker
    assert flights.in_flight == 0


async def test_peek_hands_over_a_fresh_answer_without_asking() -> None:
    clock = Clock()
    flights: SingleFlight[str, int] = SingleFlight(clock=clock)
    reads = Reads()
    assert flights.peek("q") is None
    assert await flights.get("q", reads, ttl_s=5.0) == 1
    assert flights.peek("q") == 1
    clock.now = 5.0
    assert flights.peek("q") is None  # expired: the caller must ask
    assert reads.calls == 1


async def test_a_stale_answer_is_handed_over_while_one_read_refreshes_it() -> None:
    clock = Clock()
    flights: SingleFlight[str, int] = SingleFlight(clock=clock)
    reads = Reads()
    assert await flights.get("q", reads, ttl_s=5.0, stale_s=5.0) == 1
    clock.now = 6.0
    reads.release.clear()  # the refresh hangs: askers must not wait for it
    askers = [flights.get("q", reads, ttl_s=5.0, stale_s=5.0) for _ in range(5)]
    assert await asyncio.gather(*askers) == [1] * 5
    assert reads.calls == 2  # one refresh for all of them
    assert flights.in_flight == 1
    reads.release.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert await flights.get("q", reads, ttl_s=5.0, stale_s=5.0) == 2
    assert flights.peek("q") == 2


async def test_past_its_stale_window_an_answer_is_waited_for_again() -> None:
    clock = Clock()
    flights: SingleFlight[str, int] = SingleFlight(clock=clock)
    reads = Reads()
    assert await flights.get("q", reads, ttl_s=5.0, stale_s=5.0) == 1
    clock.now = 10.0
    assert flights.peek("q") is None  # peek hands over fresh answers only
    assert await flights.get("q", reads, ttl_s=5.0, stale_s=5.0) == 2
    assert reads.calls == 2
