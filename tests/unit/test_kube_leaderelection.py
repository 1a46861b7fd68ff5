"""Leader election state machine on an in-memory lease with optimistic concurrency."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import pytest

from climatik.kube.leaderelection import (
    LeaderElectionConfig,
    LeaderElector,
    LeaseRecord,
    Outcome,
)
from tests.unit.fakeclock import FakeClock
from tests.unit.fakelease import MemoryLease


def _elector(identity: str, lease: MemoryLease, clock: FakeClock, **kw: object) -> LeaderElector:
    return LeaderElector(
        LeaderElectionConfig(identity=identity),
        lease,
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(0),
        **kw,  # type: ignore[arg-type]
    )


async def test_first_candidate_creates_the_lease() -> None:
    clock, lease = FakeClock(), MemoryLease()
    a = _elector("a", lease, clock)
    assert await a.try_acquire_or_renew()
    assert lease.record is not None
    assert lease.record.holder_identity == "a"
    assert lease.record.lease_duration_s == 15


async def test_a_held_lease_is_respected_until_it_stops_changing_for_a_lease_duration() -> None:
    clock, lease = FakeClock(), MemoryLease()
    a, b = _elector("a", lease, clock), _elector("b", lease, clock)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()  # b observes a's record now
    clock.advance(10)
    assert await a.try_acquire_or_renew()  # a renews: the record changes
    clock.advance(10)
    assert not await b.try_acquire_or_renew()  # changed 10 s ago by b's own clock
    clock.advance(14.9)
    assert not await b.try_acquire_or_renew()
    clock.advance(0.2)
    assert await b.try_acquire_or_renew()
    assert lease.record is not None
    assert lease.record.holder_identity == "b"
    assert lease.record.leader_transitions == 1


async def test_a_stale_write_loses_the_race() -> None:
    clock, lease = FakeClock(), MemoryLease()
    a, b = _elector("a", lease, clock), _elector("b", lease, clock)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    clock.advance(20)  # a looks dead to b...
    original_update = lease.update

    async def a_renews_between_read_and_write(record: LeaseRecord) -> LeaseRecord:
        lease.update = original_update  # type: ignore[method-assign]
        assert await a.try_acquire_or_renew()  # ...but renews after b read the lease
        return await original_update(record)

    lease.update = a_renews_between_read_and_write  # type: ignore[method-assign]
    assert not await b.try_acquire_or_renew()  # b's resourceVersion is stale: 409
    assert lease.record is not None
    assert lease.record.holder_identity == "a"


async def test_may_write_turns_false_at_the_renew_deadline_even_without_a_renew_attempt() -> None:
    clock, lease = FakeClock(), MemoryLease()
    a = _elector("a", lease, clock)
    await a.acquire()
    assert a.may_write()
    clock.advance(9.99)
    assert a.may_write()
    clock.advance(0.02)  # e.g. the process was frozen (SIGSTOP) past the deadline
    assert not a.may_write()


async def test_leader_that_cannot_renew_loses_within_the_deadline() -> None:
    clock, lease = FakeClock(), MemoryLease()
    stopped: list[float] = []
    started: list[float] = []

    def apiserver_goes_away() -> None:
        started.append(clock())
        lease.fail = True

    a = _elector(
        "a",
        lease,
        clock,
        on_started_leading=apiserver_goes_away,
        on_stopped_leading=lambda: stopped.append(clock()),
    )
    assert await asyncio.wait_for(a.run(), 1) is Outcome.LOST
    acquired_at = started[0]
    assert not a.is_leader
    assert not a.may_write()
    assert len(stopped) == 1
    assert stopped[0] - acquired_at <= 10 + 2  # deadline plus at most one retry period


async def test_leader_that_sees_another_holder_loses_at_once() -> None:
    clock, lease = FakeClock(), MemoryLease()
    a = _elector("a", lease, clock)
    await a.acquire()
    assert lease.record is not None
    lease.record = replace(lease.record, holder_identity="intruder", resource_version="999")
    await asyncio.wait_for(a.renew_until_lost(), 1)
    assert not a.is_leader


async def test_release_lets_a_standby_take_over_at_its_next_try() -> None:
    clock, lease = FakeClock(), MemoryLease()
    a, b = _elector("a", lease, clock), _elector("b", lease, clock)
    await a.acquire()
    assert not await b.try_acquire_or_renew()
    assert await a.release()
    assert lease.record is not None
    assert lease.record.holder_identity == ""
    assert lease.record.lease_duration_s == 1
    assert await b.try_acquire_or_renew()  # no need to wait out the 15 s lease


async def test_run_releases_on_cancel() -> None:
    clock, lease = FakeClock(), MemoryLease()
    a = _elector("a", lease, clock)
    task = asyncio.create_task(a.run())
    await asyncio.wait_for(a.leading_event.wait(), 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert lease.record is not None
    assert lease.record.holder_identity == ""


async def test_standby_tries_exactly_when_the_observed_lease_expires() -> None:
    clock, lease = FakeClock(), MemoryLease()
    a, b = _elector("a", lease, clock), _elector("b", lease, clock)
    await a.acquire()
    frozen_at = clock()  # a stops renewing from here (as if SIGSTOPped)
    await asyncio.wait_for(b.acquire(), 1)
    assert b.is_leader
    # b saw a's last renew at frozen_at; it must take over 15 s later, not at a random later poll.
    assert 15 <= clock() - frozen_at <= 15.2


def test_config_is_validated_like_client_go() -> None:
    with pytest.raises(ValueError, match="lease_duration_s > renew_deadline_s"):
        LeaderElectionConfig(identity="a", lease_duration_s=10, renew_deadline_s=10)
    with pytest.raises(ValueError, match="identity"):
        LeaderElectionConfig(identity="")


async def test_a_nudge_makes_a_waiting_candidate_try_at_once() -> None:
    clock, lease = FakeClock(), MemoryLease()
    a = _elector("a", lease, clock)
    await a.acquire()
    real_sleeps: list[float] = []

    async def slow_sleep(seconds: float) -> None:
        real_sleeps.append(seconds)
        await asyncio.sleep(3600)  # a poll that would come far too late

    b = LeaderElector(LeaderElectionConfig(identity="b"), lease, clock=clock, sleep=slow_sleep)
    acquiring = asyncio.create_task(b.acquire())
    await asyncio.sleep(0.01)
    assert not b.leading_event.is_set()
    assert await a.release()
    b.nudge()
    await asyncio.wait_for(acquiring, 1)
    assert b.leading_event.is_set()
    assert len(real_sleeps) == 1
