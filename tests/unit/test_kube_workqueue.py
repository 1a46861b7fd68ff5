"""The work queue: dedup, one worker per key, coalescing, delays, rate limiting, shutdown."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from climatik.kube.ratelimit import ItemExponentialFailureRateLimiter
from climatik.kube.workqueue import ShutDownError, WorkQueue
from tests.unit.fakeclock import FakeClock


def test_adds_of_a_waiting_key_are_deduplicated() -> None:
    queue: WorkQueue[str] = WorkQueue(clock=FakeClock())
    for key in ["a", "b", "a", "a", "b", "c"]:
        queue.add(key)
    assert len(queue) == 3
    assert [queue.get_nowait() for _ in range(4)] == ["a", "b", "c", None]


def test_a_key_being_processed_is_not_handed_out_again_until_done() -> None:
    queue: WorkQueue[str] = WorkQueue(clock=FakeClock())
    queue.add("a")
    assert queue.get_nowait() == "a"
    queue.add("a")
    queue.add("a")
    assert queue.get_nowait() is None  # dirty, but still processing
    assert queue.processing == {"a"}
    queue.done("a")
    assert queue.get_nowait() == "a"  # the re-adds coalesced into one
    queue.done("a")
    assert queue.get_nowait() is None


def test_done_without_readd_does_not_requeue() -> None:
    queue: WorkQueue[str] = WorkQueue(clock=FakeClock())
    queue.add("a")
    assert queue.get_nowait() == "a"
    queue.done("a")
    assert len(queue) == 0
    assert queue.processing == frozenset()


def test_add_after_waits_for_the_clock_and_keeps_the_earliest() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("a", 10)
    queue.add_after("a", 30)  # later request: ignored
    queue.add_after("b", 5)
    assert queue.get_nowait() is None
    clock.advance(5)
    assert queue.get_nowait() == "b"
    clock.advance(4.9)
    assert queue.get_nowait() is None
    clock.advance(0.1)
    assert queue.get_nowait() == "a"
    queue.done("a")
    clock.advance(100)
    assert queue.get_nowait() is None  # the superseded 30 s request does not fire again


def test_an_earlier_add_after_replaces_a_later_one() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("a", 30)
    queue.add_after("a", 1)
    clock.advance(1)
    assert queue.get_nowait() == "a"
    queue.done("a")
    clock.advance(60)
    assert queue.get_nowait() is None


def test_add_rate_limited_backs_off_and_forget_resets() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock, rate_limiter=ItemExponentialFailureRateLimiter())
    for expected_delay_s in [0.005, 0.01, 0.02]:
        queue.add_rate_limited("a")
        clock.advance(expected_delay_s * 0.99)
        assert queue.get_nowait() is None
        clock.advance(expected_delay_s * 0.02)
        assert queue.get_nowait() == "a"
        queue.done("a")
    assert queue.num_requeues("a") == 3
    queue.forget("a")
    assert queue.num_requeues("a") == 0


async def test_get_waits_for_an_add() -> None:
    queue: WorkQueue[str] = WorkQueue()
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    queue.add("a")
    assert await asyncio.wait_for(getter, 1) == "a"


async def test_get_wakes_for_a_delayed_key_on_the_real_clock() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("a", 0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await asyncio.wait_for(queue.get(), 2) == "a"
    assert loop.time() - started >= 0.04


async def test_shutdown_wakes_waiting_workers() -> None:
    queue: WorkQueue[str] = WorkQueue()
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.shut_down()
    with pytest.raises(ShutDownError):
        await asyncio.wait_for(getter, 1)
    queue.add("ignored")
    assert len(queue) == 0


async def test_drain_waits_for_in_flight_keys() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    key = await queue.get()
    drainer = asyncio.create_task(queue.drain())
    await asyncio.sleep(0.01)
    assert not drainer.done()
    queue.done(key)
    await asyncio.wait_for(drainer, 1)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["add", "get", "done"]), st.integers(0, 3))))
def test_model_no_key_twice_in_flight_and_readds_coalesce(ops: list[tuple[str, int]]) -> None:
    """Against a simple model: a key is handed out at most once at a time, never lost."""
    queue: WorkQueue[int] = WorkQueue(clock=FakeClock())
    in_flight: set[int] = set()
    pending: set[int] = set()  # keys added and not yet handed out after their last add
    for op, key in ops:
        if op == "add":
            queue.add(key)
            pending.add(key)
        elif op == "get":
            got = queue.get_nowait()
            if got is None:
                assert pending <= in_flight  # only keys still in flight may wait
            else:
                assert got not in in_flight
                assert got in pending
                pending.discard(got)
                in_flight.add(got)
        elif key in in_flight:
            queue.done(key)
            in_flight.discard(key)
    # Everything added is eventually handed out exactly once more.
    for key in list(in_flight):
        queue.done(key)
    handed: list[int] = []
    while (got := queue.get_nowait()) is not None:
        handed.append(got)
    assert sorted(handed) == sorted(pending)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    workers=st.integers(2, 6),
    adds=st.lists(st.integers(0, 4), min_size=1, max_size=60),
)
async def test_concurrent_workers_never_process_one_key_twice(
    seed: int, workers: int, adds: list[int]
) -> None:
    rng = random.Random(seed)
    queue: WorkQueue[int] = WorkQueue()
    active: set[int] = set()
    overlaps: list[int] = []
    processed_after_last_add: dict[int, int] = {}
    add_serial: dict[int, int] = {}

    async def worker() -> None:
        while True:
            try:
                key = await queue.get()
            except ShutDownError:
                return
            if key in active:
                overlaps.append(key)
            active.add(key)
            seen_serial = add_serial[key]
            await asyncio.sleep(rng.random() * 0.002)
            active.discard(key)
            processed_after_last_add[key] = seen_serial
            queue.done(key)

    async def producer() -> None:
        for serial, key in enumerate(adds, start=1):
            add_serial[key] = serial
            queue.add(key)
            if rng.random() < 0.5:
                await asyncio.sleep(rng.random() * 0.001)

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    await producer()
    while len(queue) or queue.processing:  # noqa: ASYNC110 - polling the queue under test
        await asyncio.sleep(0.001)
    await queue.drain()
    await asyncio.gather(*tasks)
    assert overlaps == []
    # Coalescing never loses the last add: each key was processed after its final add.
    assert processed_after_last_add == add_serial
