"""The reconcile worker: results become queue operations; errors are logged with the key."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
from collections.abc import Iterator

import pytest
import structlog

from climatik.kube.client import NotLeaderError
from climatik.kube.ratelimit import ItemExponentialFailureRateLimiter
from climatik.kube.workqueue import WorkQueue
from climatik.runtime.lateness import Lateness
from climatik.runtime.logging import configure_logging
from climatik.runtime.metrics import RuntimeMetrics
from climatik.runtime.reconcile import Controller, Result, TerminalError, process_one
from tests.unit.fakeclock import FakeClock

log = structlog.get_logger("test")


HANG = object()
"""A scripted outcome: wait for something that never comes."""


class Scripted:
    """A reconciler that answers from a script and logs one line per call."""

    def __init__(self, *outcomes: Result | Exception | object) -> None:
        self.outcomes = list(outcomes)
        self.cancelled = 0

    async def reconcile(self, key: str) -> Result:
        log.info("probe_reconciled", seen_key=key)
        outcome = self.outcomes.pop(0)
        if outcome is HANG:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if isinstance(outcome, Exception):
            raise outcome
        assert isinstance(outcome, Result)
        return outcome


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    yield stream
    structlog.reset_defaults()


def _controller(reconciler: Scripted, clock: FakeClock) -> Controller:
    queue: WorkQueue[str] = WorkQueue(
        "probe", clock=clock, rate_limiter=ItemExponentialFailureRateLimiter()
    )
    return Controller("probe", reconciler, queue)


def _value(metrics: RuntimeMetrics, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "climatik_reconcile_total", {"controller": "probe", "result": result}
    )
    return value or 0.0


async def test_results_map_to_queue_operations(log_stream: io.StringIO) -> None:
    clock, metrics = FakeClock(), RuntimeMetrics()
    controller = _controller(
        Scripted(
            Result(),
            Result(requeue_after=30),
            RuntimeError("boom"),
            TerminalError("bad"),
            NotLeaderError("gate closed"),
        ),
        clock,
    )
    queue = controller.queue
    assert await process_one(controller, "ns/a", metrics) == "success"
    assert queue.delayed == 0
    assert await process_one(controller, "ns/a", metrics) == "requeue_after"
    assert queue.delayed == 1
    assert await process_one(controller, "ns/a", metrics) == "error"
    assert queue.num_requeues("ns/a") == 1
    assert await process_one(controller, "ns/a", metrics) == "terminal_error"
    assert queue.num_requeues("ns/a") == 0
    assert await process_one(controller, "ns/a", metrics) == "not_leader"
    assert queue.num_requeues("ns/a") == 0
    for result in ("success", "requeue_after", "error", "terminal_error", "not_leader"):
        assert _value(metrics, result) == 1


class Slow:
    """A reconciler that takes the next of `seconds` on the fake clock, polling every
    `interval_s`."""

    def __init__(self, clock: FakeClock, seconds: list[float], interval_s: float) -> None:
        self.clock, self.seconds, self.interval_s = clock, seconds, interval_s

    async def reconcile(self, key: str) -> Result:
        del key
        self.clock.advance(self.seconds.pop(0))
        return Result(requeue_after=self.interval_s)


async def test_a_requeue_counts_from_when_the_key_was_due() -> None:
    """A control interval is a rate: a key that waited 2 s for a worker behind others due at
    the same moment, and took 0.5 s, is due again 15 s after it was due, not 15 s after it was
    taken or finished (without the lead, which the next test covers)."""
    clock, metrics = FakeClock(), RuntimeMetrics()
    queue: WorkQueue[str] = WorkQueue(
        "probe", clock=clock, rate_limiter=ItemExponentialFailureRateLimiter()
    )
    controller = Controller(
        "probe", Slow(clock, [0.5], 15), queue, lateness=Lateness(max_lead_fraction=0)
    )
    queue.add("ns/a")
    clock.advance(2)
    assert queue.get_nowait() == "ns/a"
    await process_one(controller, "ns/a", metrics)
    queue.done("ns/a")
    clock.advance(12.4)
    assert queue.get_nowait() is None
    clock.advance(0.1)
    assert queue.get_nowait() == "ns/a"


async def test_keys_are_queued_early_by_the_recent_lateness_so_no_gap_exceeds_the_interval() -> (
    None
):
    """Two reconciles of one key are the interval apart plus how much later the second was
    than the first; queued early by the recent high lateness, a key is reconciled at least
    once per interval even when its lateness swings from round to round."""
    clock, metrics = FakeClock(), RuntimeMetrics()
    queue: WorkQueue[str] = WorkQueue(
        "probe", clock=clock, rate_limiter=ItemExponentialFailureRateLimiter()
    )
    # How late each round finishes: its wait behind other keys plus its own work.
    lateness = [0.0, 0.8, 0.1, 0.9, 0.0, 0.8, 0.2, 0.9] * 4
    # The lead at once (its gradual rise is `Lateness`'s own test).
    at_once = Lateness(clock=clock, max_rise=float("inf"))
    controller = Controller("probe", Slow(clock, list(lateness), 15), queue, lateness=at_once)
    finished: list[float] = []
    queue.add("ns/a")
    for _ in lateness:
        while queue.get_nowait() is None:
            clock.advance(0.01)
        await process_one(controller, "ns/a", metrics)
        queue.done("ns/a")
        finished.append(clock())
    gaps = [b - a for a, b in itertools.pairwise(finished)]
    assert max(gaps) > 15.5  # while the lateness is being learned
    assert max(gaps[8:]) <= 15.0 + 0.01  # once it is (the clock's step)
    assert min(gaps[8:]) >= 15.0 - 1.5 - 0.9  # early by at most a tenth of the interval
    lead = metrics.registry.get_sample_value(
        "climatik_requeue_lead_seconds", {"controller": "probe"}
    )
    assert lead == pytest.approx(controller.lateness.lead_s(15))
    assert controller.lateness.lead_s(15) == pytest.approx(0.9, abs=0.06)


async def test_every_log_line_of_one_reconcile_carries_its_id(log_stream: io.StringIO) -> None:
    controller = _controller(Scripted(RuntimeError("boom"), Result()), FakeClock())
    metrics = RuntimeMetrics()
    await process_one(controller, "ns/a", metrics)
    await process_one(controller, "ns/b", metrics)
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    probe = [line for line in lines if line["event"] == "probe_reconciled"]
    failed = [line for line in lines if line["event"] == "reconcile_failed"]
    assert [(p["key"], p["controller"]) for p in probe] == [("ns/a", "probe"), ("ns/b", "probe")]
    assert failed[0]["reconcile_id"] == probe[0]["reconcile_id"]
    assert failed[0]["key"] == "ns/a"
    assert "boom" in json.dumps(failed[0]["exception"])
    assert probe[0]["reconcile_id"] != probe[1]["reconcile_id"]
    # Nothing stays bound after the reconcile.
    assert structlog.contextvars.get_contextvars() == {}


async def test_a_reconcile_past_its_deadline_is_cancelled_logged_counted_and_retried(
    log_stream: io.StringIO,
) -> None:
    reconciler = Scripted(HANG, TimeoutError("the reconciler's own"), Result())
    queue: WorkQueue[str] = WorkQueue(
        "probe", clock=FakeClock(), rate_limiter=ItemExponentialFailureRateLimiter()
    )
    controller = Controller("probe", reconciler, queue, reconcile_timeout_s=0.05)
    metrics = RuntimeMetrics()

    outcome = await asyncio.wait_for(process_one(controller, "ns/slow", metrics), 5)
    assert outcome == "timed_out"
    assert reconciler.cancelled == 1, "the reconcile itself was cancelled, not left running"
    assert queue.num_requeues("ns/slow") == 1  # retried with the per-key backoff
    assert queue.delayed == 1
    assert _value(metrics, "timed_out") == 1
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    timed_out = [line for line in lines if line["event"] == "reconcile_timed_out"]
    assert len(timed_out) == 1
    assert timed_out[0]["key"] == "ns/slow"
    assert timed_out[0]["timeout_s"] == 0.05
    assert "exception" not in timed_out[0]

    # A TimeoutError the reconciler raises itself is an ordinary failure, not the deadline.
    assert await process_one(controller, "ns/slow", metrics) == "error"
    assert _value(metrics, "timed_out") == 1
    assert await process_one(controller, "ns/slow", metrics) == "success"
    assert queue.num_requeues("ns/slow") == 0
