"""Leader election on a ``coordination.k8s.io/v1`` Lease, with client-go's semantics, our own code.

kubernetes-asyncio ships a leader elector, but it judges expiry on the wall clock and makes untimed
calls; a controller that writes to other people's objects cannot afford either. Rules (client-go's
``leaderelection.go``):

- A candidate may take the lease when it is free (no holder) or when the record it last saw has not
  changed for ``lease_duration_s`` *of its own monotonic clock* (never the timestamps written in
  the record: clocks differ between nodes).
- Every write carries the resourceVersion read just before; a 409 means another candidate won the
  race, and we simply try again later.
- The leader renews every ``retry_period_s``; each attempt runs under a timeout. If it has not
  renewed successfully for ``renew_deadline_s`` it has lost: ``may_write()`` turns false at that
  instant (the write gate of :class:`KubeClient` consults it before every write, so no write can
  leave after the deadline even if the event loop was frozen, e.g. by SIGSTOP), and
  ``run`` returns ``LOST`` so the process can stop its workers and exit non-zero.
- A candidate that knows exactly when the holder's lease expires sleeps until then rather than its
  next jittered retry, so failover after a frozen leader stays under lease + one poll.
- On clean shutdown the leader releases: empty holder, ``leaseDurationSeconds: 1``, so a standby
  takes over at its next retry (client-go's ``ReleaseOnCancel``); a standby that watches the Lease
  calls ``nudge()`` when it sees the release and tries at once instead of at its next poll.

The Lease I/O sits behind the small :class:`LeaseClient` protocol, so the state machine is
unit-tested with a fake clock and an in-memory lease; :class:`KubeLeaseClient` is the real one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import structlog

from climatik.kube.client import ApiError, KubeClient
from climatik.kube.resources import LEASES

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class LeaseRecord:
    """The fields of a Lease that election reads and writes."""

    holder_identity: str = ""
    lease_duration_s: int = 15
    acquire_time: str | None = None
    renew_time: str | None = None
    leader_transitions: int = 0
    resource_version: str | None = None


class LeaseConflictError(Exception):
    """Another candidate wrote the lease first (HTTP 409, or already exists on create)."""


class LeaseClient(Protocol):
    async def get(self) -> LeaseRecord | None: ...

    async def create(self, record: LeaseRecord) -> LeaseRecord: ...

    async def update(self, record: LeaseRecord) -> LeaseRecord: ...


@dataclass(frozen=True)
class LeaderElectionConfig:
    identity: str
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0
    jitter: float = 1.2
    release_on_cancel: bool = True

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError("leader election needs a non-empty identity")
        if not self.lease_duration_s > self.renew_deadline_s > self.retry_period_s * self.jitter:
            # client-go's own validation: the leader must be able to retry before its deadline,
            # and give up before anyone else may take over.
            raise ValueError(
                "need lease_duration_s > renew_deadline_s > retry_period_s * jitter, got "
                f"{self.lease_duration_s} / {self.renew_deadline_s} / {self.retry_period_s}"
            )


class Outcome(enum.Enum):
    LOST = "lost"  # leadership was lost: stop writing, exit non-zero
    RELEASED = "released"  # cancelled cleanly after leading (or before ever leading)


def _now_rfc3339_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Acquire, hold and release one lease; tell the process when it leads and when it lost."""

    def __init__(
        self,
        config: LeaderElectionConfig,
        lease_client: LeaseClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
        rng: random.Random | None = None,
        wall_time: Callable[[], str] = _now_rfc3339_micro,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        on_new_leader: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.lease_client = lease_client
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._wall_time = wall_time
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._on_new_leader = on_new_leader
        self.observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._leading = False
        self._last_renew_started_at: float | None = None
        self.leading_event = asyncio.Event()
        self._nudged = asyncio.Event()
        self.observed_leader = ""

    # -- the write gate ---------------------------------------------------------------------

    def may_write(self) -> bool:
        """True only while we lead and our last successful renew started < renew_deadline ago."""
        return (
            self._leading
            and self._last_renew_started_at is not None
            and self._clock() - self._last_renew_started_at < self.config.renew_deadline_s
        )

    @property
    def is_leader(self) -> bool:
        return self._leading

    # -- one attempt ------------------------------------------------------------------------

    async def try_acquire_or_renew(self) -> bool:
        """One round of client-go's ``tryAcquireOrRenew``; API calls bounded by the retry period."""
        started_at = self._clock()
        timeout_s = self.config.retry_period_s
        if self._leading and self._last_renew_started_at is not None:
            # A renew that cannot finish before the deadline is worthless: bound it by what is left.
            left_s = self._last_renew_started_at + self.config.renew_deadline_s - started_at
            timeout_s = max(min(left_s, self.config.renew_deadline_s), 0.001)
        me = self.config.identity
        try:
            async with asyncio.timeout(timeout_s):
                current = await self.lease_client.get()
                if current is None:
                    now = self._wall_time()
                    fresh = LeaseRecord(
                        holder_identity=me,
                        lease_duration_s=round(self.config.lease_duration_s),
                        acquire_time=now,
                        renew_time=now,
                    )
                    written = await self.lease_client.create(fresh)
                    self._record_success(written, started_at)
                    return True
                self._observe(current)
                holder = current.holder_identity
                if holder and holder != me and not self._observed_expired():
                    return False
                now = self._wall_time()
                if holder == me:
                    desired = replace(
                        current,
                        renew_time=now,
                        lease_duration_s=round(self.config.lease_duration_s),
                    )
                else:
                    desired = replace(
                        current,
                        holder_identity=me,
                        lease_duration_s=round(self.config.lease_duration_s),
                        acquire_time=now,
                        renew_time=now,
                        leader_transitions=current.leader_transitions + 1,
                    )
                written = await self.lease_client.update(desired)
        except LeaseConflictError:
            log.debug("lease_race_lost", identity=me)
            return False
        except (TimeoutError, ApiError, OSError) as error:
            log.warning(
                "lease_update_failed", identity=me, error=str(error) or type(error).__name__
            )
            return False
        self._record_success(written, started_at)
        return True

    def _observe(self, record: LeaseRecord) -> None:
        comparable = replace(record, resource_version=None)
        previous = replace(self.observed, resource_version=None) if self.observed else None
        if comparable != previous:
            self.observed = record
            self._observed_at = self._clock()
        else:
            self.observed = record
        if record.holder_identity != self.observed_leader:
            self.observed_leader = record.holder_identity
            if record.holder_identity and self._on_new_leader is not None:
                self._on_new_leader(record.holder_identity)

    def _observed_expired(self) -> bool:
        assert self.observed is not None
        return self._observed_at + self.observed.lease_duration_s <= self._clock()

    def _seconds_until_observed_expiry(self) -> float | None:
        if self.observed is None or not self.observed.holder_identity:
            return None
        return self._observed_at + self.observed.lease_duration_s - self._clock()

    def _record_success(self, written: LeaseRecord, started_at: float) -> None:
        self.observed = written
        self._observed_at = self._clock()
        self._last_renew_started_at = started_at
        self.observed_leader = written.holder_identity

    # -- loops ------------------------------------------------------------------------------

    def _jittered_retry_s(self) -> float:
        return self.config.retry_period_s * (1.0 + self.config.jitter * self._rng.random())

    def nudge(self) -> None:
        """Someone saw the lease released: a waiting candidate tries now instead of at its poll."""
        self._nudged.set()

    async def _sleep_or_nudge(self, delay_s: float) -> None:
        if self._nudged.is_set():
            self._nudged.clear()
            return
        sleeper = asyncio.ensure_future(self._sleep(delay_s))
        nudged = asyncio.ensure_future(self._nudged.wait())
        try:
            await asyncio.wait({sleeper, nudged}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, nudged):
                task.cancel()
            await asyncio.gather(sleeper, nudged, return_exceptions=True)
            self._nudged.clear()

    async def acquire(self) -> None:
        """Retry until we hold the lease."""
        log.info("lease_acquiring", identity=self.config.identity)
        while not await self.try_acquire_or_renew():
            delay_s = self._jittered_retry_s()
            until_expiry_s = self._seconds_until_observed_expiry()
            if until_expiry_s is not None and 0 <= until_expiry_s < delay_s:
                # We know when the holder's lease runs out: try right then, not at a random later
                # poll (small margin so the check sees it expired).
                delay_s = until_expiry_s + 0.05
            await self._sleep_or_nudge(delay_s)
        self._leading = True
        self.leading_event.set()
        log.info("lease_acquired", identity=self.config.identity)
        if self._on_started is not None:
            self._on_started()

    async def renew_until_lost(self) -> None:
        """Renew every retry period; return when the renew deadline has passed without success."""
        while True:
            await self._sleep(self.config.retry_period_s)
            while True:
                assert self._last_renew_started_at is not None
                if self._clock() - self._last_renew_started_at >= self.config.renew_deadline_s:
                    self._lose()
                    return
                if await self.try_acquire_or_renew():
                    break
                if self.observed and self.observed.holder_identity not in (
                    "",
                    self.config.identity,
                ):
                    self._lose()
                    return
                await self._sleep(self.config.retry_period_s)

    def _lose(self) -> None:
        was_leading = self._leading
        self._leading = False
        self.leading_event.clear()
        if was_leading:
            log.error("lease_lost", identity=self.config.identity)
            if self._on_stopped is not None:
                self._on_stopped()

    async def run(self) -> Outcome:
        """Acquire, then renew until lost (``LOST``) or cancelled (release, then re-raise)."""
        try:
            await self.acquire()
            await self.renew_until_lost()
        except asyncio.CancelledError:
            await self.release()
            raise
        return Outcome.LOST

    async def release(self) -> bool:
        """Give the lease up if we still hold it, so a standby takes over within seconds."""
        if not self._leading or not self.config.release_on_cancel:
            self._leading = False
            return False
        self._leading = False
        self.leading_event.clear()
        if self.observed is None or self.observed.holder_identity != self.config.identity:
            return False
        now = self._wall_time()
        released = replace(
            self.observed, holder_identity="", lease_duration_s=1, acquire_time=now, renew_time=now
        )
        try:
            async with asyncio.timeout(self.config.retry_period_s):
                await self.lease_client.update(released)
        except (LeaseConflictError, TimeoutError, ApiError, OSError) as error:
            log.warning("lease_release_failed", error=str(error) or type(error).__name__)
            return False
        log.info("lease_released", identity=self.config.identity)
        if self._on_stopped is not None:
            self._on_stopped()
        return True


class KubeLeaseClient:
    """The real :class:`LeaseClient` on ``coordination.k8s.io/v1``; its writes skip the gate."""

    def __init__(self, client: KubeClient, name: str, namespace: str) -> None:
        self.client = client
        self.name = name
        self.namespace = namespace

    async def get(self) -> LeaseRecord | None:
        try:
            body = await self.client.get(LEASES, self.name, self.namespace)
        except ApiError as error:
            if error.is_not_found:
                return None
            raise
        return _record_from_lease(body)

    async def create(self, record: LeaseRecord) -> LeaseRecord:
        body = {
            "apiVersion": LEASES.api_version,
            "kind": LEASES.kind,
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": _spec_from_record(record),
        }
        try:
            written = await self.client.create(LEASES, body, self.namespace, ungated=True)
        except ApiError as error:
            if error.is_conflict:
                raise LeaseConflictError(str(error)) from error
            raise
        return _record_from_lease(written)

    async def update(self, record: LeaseRecord) -> LeaseRecord:
        body = {
            "apiVersion": LEASES.api_version,
            "kind": LEASES.kind,
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": record.resource_version,
            },
            "spec": _spec_from_record(record),
        }
        try:
            written = await self.client.replace(
                LEASES, self.name, body, self.namespace, ungated=True
            )
        except ApiError as error:
            if error.is_conflict:
                raise LeaseConflictError(str(error)) from error
            raise
        return _record_from_lease(written)


def _spec_from_record(record: LeaseRecord) -> dict[str, Any]:
    return {
        "holderIdentity": record.holder_identity,
        "leaseDurationSeconds": record.lease_duration_s,
        "acquireTime": record.acquire_time,
        "renewTime": record.renew_time,
        "leaseTransitions": record.leader_transitions,
    }


def _record_from_lease(body: dict[str, Any]) -> LeaseRecord:
    spec = body.get("spec") or {}
    return LeaseRecord(
        holder_identity=spec.get("holderIdentity") or "",
        lease_duration_s=int(spec.get("leaseDurationSeconds") or 15),
        acquire_time=spec.get("acquireTime"),
        renew_time=spec.get("renewTime"),
        leader_transitions=int(spec.get("leaseTransitions") or 0),
        resource_version=body.get("metadata", {}).get("resourceVersion"),
    )
