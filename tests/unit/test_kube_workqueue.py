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


class Waits:
    """Records the queue-wait metric."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def added(self, queue: str) -> None:
        pass

    def depth(self, queue: str, depth: int) -> None:
        pass

    def retried(self, queue: str) -> None:
        pass

    def waited(self, queue: str, seconds: float) -> None:
        self.seconds.append(seconds)


def test_a_delayed_key_waits_from_when_it_was_due() -> None:
    clock, waits = FakeClock(), Waits()
    queue: WorkQueue[str] = WorkQueue(clock=clock, metrics=waits)
    queue.add_after("a", 10)
    clock.advance(12)  # every worker was busy when it fell due
    assert queue.get_nowait() == "a"
    assert waits.seconds == [2.0]


def test_a_key_in_processing_knows_how_long_it_waited() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("a", 10)
    queue.add("b")
    clock.advance(13)
    assert queue.get_nowait() == "b"
    assert queue.get_nowait() == "a"
    assert (queue.waited_s("b"), queue.waited_s("a")) == (13.0, 3.0)
    clock.advance(0.5)  # processing counts towards how long ago it was due, not its wait
    assert (queue.since_due_s("a"), queue.waited_s("a")) == (3.5, 3.0)
    queue.done("a")
    assert queue.waited_s("a") == 0.0  # done: nothing remembered
    assert queue.since_due_s("a") == 0.0


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


def test_ready_keys_are_handed_out_round_robin_across_namespaces() -> None:
    """Twenty keys of one tenant do not make another tenant's key wait behind all of them."""
    queue: WorkQueue[str] = WorkQueue(clock=FakeClock())
    for index in range(5):
        queue.add(f"a/{index}")
    queue.add("b/0")
    queue.add("b/1")
    queue.add("c/0")
    handed = [queue.get_nowait() for _ in range(9)]
    assert handed == ["a/0", "b/0", "c/0", "a/1", "b/1", "a/2", "a/3", "a/4", None]


def test_the_fairness_key_is_the_callers_choice_for_cluster_scoped_keys() -> None:
    queue: WorkQueue[str] = WorkQueue(
        clock=FakeClock(), fairness_key=lambda key: key.partition("-")[0]
    )
    for key in ["rack1-n1", "rack1-n2", "rack1-n3", "rack2-n1"]:
        queue.add(key)
    handed = [queue.get_nowait() for _ in range(4)]
    assert handed == ["rack1-n1", "rack2-n1", "rack1-n2", "rack1-n3"]
    assert len(queue) == 0


_NAMESPACES = ["a", "b", "c"]
_queue_ops = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(_NAMESPACES), st.integers(0, 3)),
    st.tuples(st.just("add_after"), st.sampled_from(_NAMESPACES), st.integers(0, 3)),
    st.tuples(st.just("advance"), st.just(""), st.integers(1, 5)),
    st.tuples(st.just("get"), st.just(""), st.just(0)),
    st.tuples(st.just("done"), st.just(""), st.integers(0, 7)),
)


@settings(max_examples=400, deadline=None)
@given(ops=st.lists(_queue_ops, max_size=80))
def test_model_fair_across_namespaces_exclusive_and_lossless(
    ops: list[tuple[str, str, int]],
) -> None:
    """Any interleaving of adds, delayed adds, clock moves, gets and dones, against a model.

    - a key is never handed out while it is in flight, and only when the model has it ready;
    - nothing is lost: after the in-flight keys are done and every delay has passed, exactly
      the keys the model still owes are handed out;
    - fairness: a namespace that joins the ready ones when k namespaces hold ready keys is
      served before more than k - 1 keys of other namespaces are handed out.
    """
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    ready: set[str] = set()
    dirty: set[str] = set()
    in_flight: list[str] = []
    delayed: dict[str, float] = {}
    waiting: dict[str, tuple[int, int]] = {}  # namespace -> (k when it joined, others served)

    def namespaces_ready() -> set[str]:
        return {key.partition("/")[0] for key in ready}

    def model_add(key: str) -> None:
        if key in ready or key in dirty:
            return
        if key in in_flight:
            dirty.add(key)
        else:
            ready.add(key)

    def note_joined() -> None:
        current = namespaces_ready()
        for namespace in current - waiting.keys():
            waiting[namespace] = (len(current), 0)

    for op, namespace, number in ops:
        key = f"{namespace}/{number}"
        if op == "add":
            queue.add(key)
            model_add(key)
        elif op == "add_after":
            queue.add_after(key, number)
            if number <= 0:
                model_add(key)
            else:
                delayed[key] = min(delayed.get(key, float("inf")), clock() + number)
        elif op == "advance":
            clock.advance(number)
        elif op == "done":
            if not in_flight:
                continue
            done = in_flight.pop(number % len(in_flight))
            queue.done(done)
            if done in dirty:
                dirty.discard(done)
                ready.add(done)
        else:
            for due in [k for k, at in delayed.items() if at <= clock()]:
                del delayed[due]
                model_add(due)
            note_joined()
            got = queue.get_nowait()
            if got is None:
                assert not ready
                continue
            assert got in ready
            assert got not in in_flight
            ready.discard(got)
            in_flight.append(got)
            served = got.partition("/")[0]
            del waiting[served]
            for other, (k, others_served) in list(waiting.items()):
                assert others_served + 1 <= k - 1, f"{other} waited past {k - 1} other keys"
                waiting[other] = (k, others_served + 1)
            if served in namespaces_ready():
                waiting[served] = (len(namespaces_ready()), 0)
        note_joined()

    for done in in_flight:
        queue.done(done)
        if done in dirty:
            ready.add(done)
    clock.advance(1000)
    owed = ready | delayed.keys()
    handed: list[str] = []
    while (got := queue.get_nowait()) is not None:
        handed.append(got)
        queue.done(got)
    assert sorted(handed) == sorted(owed)


def test_a_namespace_holds_at_most_its_share_of_the_workers() -> None:
    """A reviewer's finding: fair hand-outs alone let a tenant whose reconciles each wait 5 s on
    a slow Prometheus hold all eight workers, leaving others 1.6 reconciles a second."""
    queue: WorkQueue[str] = WorkQueue(clock=FakeClock(), max_in_flight_per_group=2)
    for i in range(5):
        queue.add(f"slow/{i}")
    queue.add("b/0")
    assert [queue.get_nowait() for _ in range(4)] == ["slow/0", "b/0", "slow/1", None]
    queue.add("b/1")
    assert queue.get_nowait() == "b/1"  # slow is at its share; b is not
    queue.done("slow/0")
    assert queue.get_nowait() == "slow/2"  # a free slot: slow kept its turn
    assert queue.get_nowait() is None


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.sampled_from(_NAMESPACES), st.integers(0, 5)),
            st.tuples(st.just("get"), st.just(""), st.just(0)),
            st.tuples(st.just("done"), st.just(""), st.integers(0, 9)),
        ),
        max_size=80,
    ),
    limit=st.integers(1, 3),
)
def test_model_no_namespace_exceeds_its_share_and_nothing_is_lost(
    ops: list[tuple[str, str, int]], limit: int
) -> None:
    queue: WorkQueue[str] = WorkQueue(clock=FakeClock(), max_in_flight_per_group=limit)
    in_flight: list[str] = []
    owed: set[str] = set()
    for op, namespace, number in ops:
        if op == "add":
            key = f"{namespace}/{number}"
            queue.add(key)
            owed.add(key)
        elif op == "done" and in_flight:
            queue.done(in_flight.pop(number % len(in_flight)))
        elif op == "get":
            handed_out = queue.get_nowait()
            if handed_out is None:
                # Nothing handed out only when every namespace with owed keys is at its share.
                waiting = {k.partition("/")[0] for k in owed - set(in_flight)}
                busy = {n: sum(k.startswith(f"{n}/") for k in in_flight) for n in waiting}
                assert all(count >= limit for count in busy.values()), (waiting, in_flight)
                continue
            assert handed_out not in in_flight
            in_flight.append(handed_out)
            owed.discard(handed_out)
            group = namespace_of_key(handed_out)
            assert sum(k.startswith(f"{group}/") for k in in_flight) <= limit
    while in_flight:
        queue.done(in_flight.pop())
    handed: set[str] = set()
    while (last := queue.get_nowait()) is not None:
        handed.add(last)
        queue.done(last)
    assert owed <= handed


def namespace_of_key(key: str) -> str:
    return key.partition("/")[0]
