"""The carbon reconciler: moves a config's effective cap with the grid's carbon intensity.

For each PowerCappingConfig with a `carbon` section it asks the configured provider (through a
`ResilientCarbonSource`: one fetch per slot, last-known-good for `maxAgeSeconds`), turns the
intensity into a cap with the pure carbon policy, and writes `effectiveCapWatts` and
`effectiveCapSource: Carbon` into the status, which the power-cap reconciler then enforces. With
no usable reading the configured fallback applies (the static cap, or the floor). It is time
driven: it wakes again at the next slot boundary.

API keys are read by `get` on the one named Secret (RBAC grants nothing else), again at most
every `secret_refresh_s` and at once when the provider refuses the key; a changed key rebuilds
the provider and keeps its last good reading. A Secret that cannot be read is never terminal:
`CarbonAvailable=False` (`SecretUnreadable`) says what to fix, the cap follows the fallback (or
the last good reading while fresh), and the read is retried with a growing delay. Keys never
reach logs, status or Events; the reconciler remembers their digest, only the provider the key.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
import structlog

from climatik.api.status import find_condition, peer_status, set_condition, status_from_wire
from climatik.api.status_models import (
    Condition,
    ConditionStatus,
    ConditionType,
    EffectiveCapSource,
    PowerCappingConfigStatus,
    TargetStatus,
)
from climatik.domain.carbon import CarbonCap, CarbonReading
from climatik.domain.config import CarbonConfig, CarbonFallback, PowerCappingConfig
from climatik.kube.cache import Cache, EventSink
from climatik.kube.client import ApiError, KubeClient
from climatik.kube.json import JsonObject, ObjectMeta
from climatik.kube.resources import SECRETS
from climatik.kube.store import FrozenMapping, object_key
from climatik.policies.carbon import cap_for_carbon, emissions_g
from climatik.policies.deferrable import PLANNED_WORK_MARGIN
from climatik.reconcilers.carbon_deferrable import (
    DeferrablePlanning,
    PlannedTarget,
    PowerRoom,
    summary,
)
from climatik.reconcilers.carbon_secret import (
    Credential,
    SecretUnreadableError,
    credential_from_secret,
    missing_ref,
    needs_secret,
    retry_delay_s,
    unreachable,
    unreadable_from_status,
)
from climatik.reconcilers.metrics import CappingMetrics
from climatik.reconcilers.opening import ConfigOpening
from climatik.reconcilers.result import Result
from climatik.reconcilers.settings import CarbonSettings
from climatik.reconcilers.status_writer import with_fields, write_status
from climatik.sources.carbon import (
    CarbonOutcome,
    CarbonSource,
    CarbonSourceError,
    Freshness,
    ProviderRequest,
    ResilientCarbonSource,
    build_source,
)

log = structlog.get_logger(__name__)

MIN_REQUEUE_S = 5.0
MAX_REQUEUE_S = 300.0
MIN_SECRET_WAKE_S = 1.0
SECRET_UNREADABLE = "SecretUnreadable"  # noqa: S105 - a condition reason, not a secret
"""The `CarbonAvailable` reason while the provider's key cannot be read from its Secret."""


class _KeyRead(enum.Enum):
    NOT_DUE = enum.auto()
    UNCHANGED = enum.auto()
    REBUILT = enum.auto()
    FAILED = enum.auto()


@dataclass
class _Memory:
    carbon: CarbonConfig
    source: ResilientCarbonSource | None = None
    """None until the provider could be built (a provider with a key: until its Secret was read)."""
    key_digest: str | None = None
    secret_next_read_s: float | None = None
    secret_failures: int = 0
    secret_problem: SecretUnreadableError | None = None
    problem_reported: str | None = None
    """The Secret problem last sent as a `CarbonSecretUnreadable` Event (one per problem)."""
    last_accounted_s: float | None = None
    planning: DeferrablePlanning = field(default_factory=DeferrablePlanning)
    """The config's deferrable targets with a deadline, tracked between plan rounds."""


class CarbonReconciler:
    """Reconciles the effective cap of one PowerCappingConfig key from grid intensity."""

    def __init__(
        self,
        client: KubeClient,
        *,
        configs: Cache[FrozenMapping],
        events: EventSink,
        metrics: CappingMetrics,
        settings: CarbonSettings,
        session_factory: Callable[[], Awaitable[aiohttp.ClientSession]],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self._events = events
        self._metrics = metrics
        self._settings = settings
        self._session_factory = session_factory
        self._clock = clock
        self._wall_clock = wall_clock
        self._memory: dict[str, _Memory] = {}
        # The power-cap reconciler reports an invalid spec; the carbon cap stands aside.
        self._opening = ConfigOpening(configs, forget=self._forget)

    async def reconcile(self, key: str) -> Result:
        opened = await self._opening.open(key)
        if isinstance(opened, Result):
            return opened
        obj, config = opened.obj, opened.config
        if config.carbon is None:
            self._forget(key)
            await self._clear_carbon_cap(obj, config.power_cap_w)
            return Result()

        carbon = config.carbon
        memory = self._memory.get(key)
        if memory is None or memory.carbon != carbon:
            memory = self._memory[key] = _Memory(carbon)
        now = self._wall_clock()
        read = _KeyRead.NOT_DUE
        if needs_secret(carbon):
            read = await self._refresh_key(obj, memory)
        elif memory.source is None:
            memory.source = _resilient(await self._build_source(carbon, None), carbon)
        outcome, failure = await self._ask(memory, now)
        if (
            read is _KeyRead.NOT_DUE
            and needs_secret(carbon)
            and failure is not None
            and failure.reason == "Unauthorized"
            and memory.source is not None
            and memory.source.failed_at == now
            and await self._refresh_key(obj, memory, force=True) is _KeyRead.REBUILT
        ):
            # The provider refused the key and the Secret holds another: ask again with it.
            outcome, failure = await self._ask(memory, now)
        cap = self._cap(config, carbon, memory, outcome)
        peer = peer_status(obj)
        deadlined = [t for t in peer.targets or () if t.deadline_seconds is not None]
        room = PowerRoom(peer.measured_power_watts, config.power_cap_w * (1 - PLANNED_WORK_MARGIN))
        planned = await self._plan(key, memory, deadlined, outcome, now=now, room=room)
        if planned:
            cap = CarbonCap(
                room.budget_w,
                f"deferrable work with deadlines is planned, not capped: it may use "
                f"{1.0 - PLANNED_WORK_MARGIN:.0%} of powerCapLimit, the rest is kept for the "
                "other targets",
            )
        self._account(key, obj, outcome, carbon.pue, memory)
        await self._write(
            obj,
            config.generation,
            cap=cap,
            outcome=outcome,
            failure=failure,
            memory=memory,
            planned=planned,
        )
        wake_s = self._next_wake_s(memory, outcome, now)
        if planned:
            wake_s = min(wake_s, self._settings.plan_interval_s)
        return Result(requeue_after=wake_s)

    async def _plan(
        self,
        key: str,
        memory: _Memory,
        targets: Sequence[TargetStatus],
        outcome: CarbonOutcome | None,
        *,
        now: datetime,
        room: PowerRoom,
    ) -> list[PlannedTarget]:
        """Plan the deferrable targets with a deadline on the provider's forecast (with no
        forecast the plan runs them at the user's maximum), and publish the metrics."""
        if not targets:
            memory.planning.trackers.clear()
            return []
        interval = timedelta(seconds=self._settings.plan_interval_s)
        forecast: tuple[CarbonReading, ...] = ()
        if memory.source is not None:
            forecast = await memory.source.forecast(now, every=interval)
        if outcome is not None and outcome.reading.covers(now):
            # The current slot as measured, then the forecast after it.
            after = tuple(r for r in forecast if r.slot_start >= outcome.reading.slot_end)
            forecast = (outcome.reading, *after)
        slot_start = outcome.reading.slot_start if outcome is not None else now
        planned = memory.planning.plan(
            targets,
            forecast,
            now=now,
            slot_start=slot_start,
            valid_until=now + 3 * interval,
            power=room,
        )
        metrics = self._metrics
        for p in planned:
            name = p.status.name
            metrics.deferrable_backlog.labels(key, name).set(p.status.backlog_requests)
            metrics.deferrable_planned.labels(key, name).set(p.status.planned_requests)
            metrics.deferrable_done.labels(key, name).set(p.status.done_requests)
            metrics.deferrable_misses.labels(key, name).inc(p.new_misses)
            log.debug(
                "deferrable_planned",
                target=name,
                ceiling=p.status.planned_max_replicas,
                behind=p.status.behind,
                reason=p.reason,
            )
        return planned

    def _forget(self, key: str) -> None:
        self._memory.pop(key, None)
        self._metrics.forget_carbon(key)

    async def _ask(
        self, memory: _Memory, now: datetime
    ) -> tuple[CarbonOutcome | None, CarbonSourceError | None]:
        if memory.source is None:
            return None, None
        try:
            outcome = await memory.source.current(now)
        except CarbonSourceError as error:
            return None, error
        return outcome, outcome.error

    def _cap(
        self,
        config: PowerCappingConfig,
        carbon: CarbonConfig,
        memory: _Memory,
        outcome: CarbonOutcome | None,
    ) -> CarbonCap:
        if outcome is not None:
            return cap_for_carbon(
                outcome.reading, config.power_cap_w, carbon.floor_w, carbon.target
            )
        fallback_w = (
            config.power_cap_w if carbon.fallback is CarbonFallback.STATIC_CAP else carbon.floor_w
        )
        when = "yet" if memory.source is None else f"within {carbon.max_age_s:.0f} s"
        return CarbonCap(
            fallback_w, f"no carbon reading {when}: fallback {carbon.fallback} {fallback_w:.0f} W"
        )

    def _next_wake_s(self, memory: _Memory, outcome: CarbonOutcome | None, now: datetime) -> float:
        wake = _next_wake_s(outcome, now)
        if memory.secret_next_read_s is None:
            return wake
        until_read = max(MIN_SECRET_WAKE_S, memory.secret_next_read_s - self._clock())
        # Without a provider there is nothing to ask but the Secret.
        return until_read if memory.source is None else min(wake, until_read)

    async def _refresh_key(
        self, obj: JsonObject, memory: _Memory, *, force: bool = False
    ) -> _KeyRead:
        """Read the Secret when due (or `force`d); rebuild the provider when its key changed."""
        now_s = self._clock()
        if (
            not force
            and memory.secret_next_read_s is not None
            and now_s < memory.secret_next_read_s
        ):
            return _KeyRead.NOT_DUE
        carbon = memory.carbon
        namespace = ObjectMeta.of(obj).namespace or ""
        try:
            credential = await self._read_key(carbon, namespace)
        except SecretUnreadableError as problem:
            memory.secret_failures += 1
            memory.secret_problem = problem
            delay_s = retry_delay_s(
                memory.secret_failures,
                transient=problem.transient,
                first_s=self._settings.secret_retry_s,
                max_s=self._settings.secret_retry_max_s,
            )
            memory.secret_next_read_s = now_s + delay_s
            log.warning(
                "carbon_secret_unreadable",
                problem=problem.message,
                failures=memory.secret_failures,
                retry_in_s=round(delay_s, 1),
            )
            return _KeyRead.FAILED
        memory.secret_failures = 0
        memory.secret_problem = None
        memory.secret_next_read_s = now_s + self._settings.secret_refresh_s
        if memory.source is not None and credential.digest == memory.key_digest:
            return _KeyRead.UNCHANGED
        source = await self._build_source(carbon, credential)
        if memory.source is None:
            memory.source = _resilient(source, carbon)
            log.info(
                "carbon_provider_built", provider=source.name, key_digest=credential.digest[:12]
            )
        else:
            memory.source.replace_source(source)
            log.info(
                "carbon_key_rotated",
                provider=source.name,
                key_digest=credential.digest[:12],
                previous_key_digest=(memory.key_digest or "")[:12],
            )
        memory.key_digest = credential.digest
        return _KeyRead.REBUILT

    async def _read_key(self, carbon: CarbonConfig, namespace: str) -> Credential:
        """One `get` of the referenced Secret (same namespace; never listed, never watched)."""
        ref = carbon.api_key_secret
        if ref is None:
            raise missing_ref(carbon)
        try:
            secret = await self._client.get(SECRETS, ref.name, namespace)
        except ApiError as error:
            raise unreadable_from_status(carbon, namespace, error.status, error.reason) from None
        except TimeoutError:
            raise unreachable(
                carbon, namespace, "reading it from the API server timed out"
            ) from None
        except (aiohttp.ClientError, OSError) as error:
            raise unreachable(
                carbon, namespace, f"the API server is unreachable ({type(error).__name__})"
            ) from None
        return credential_from_secret(secret, carbon, namespace)

    async def _build_source(
        self, carbon: CarbonConfig, credential: Credential | None
    ) -> CarbonSource:
        request = ProviderRequest(
            carbon=carbon,
            session=self._session_factory,
            wall_clock=self._wall_clock,
            timeout_s=self._settings.timeout_s,
            base_url=self._settings.base_url(carbon.provider),
            key=credential.value if credential is not None else None,
        )
        return await build_source(request)

    def _account(
        self,
        key: str,
        obj: JsonObject,
        outcome: CarbonOutcome | None,
        pue: float,
        memory: _Memory,
    ) -> None:
        now_s = self._clock()
        watts = peer_status(obj).measured_power_watts  # the power-cap reconciler's reading
        if outcome is not None:
            self._metrics.set_carbon_intensity(
                key, outcome.reading.signal, outcome.reading.intensity_g_per_kwh
            )
            if memory.last_accounted_s is not None and watts is not None:
                seconds = now_s - memory.last_accounted_s
                grams = emissions_g(watts, outcome.reading.intensity_g_per_kwh, seconds, pue)
                self._metrics.emissions.labels(key).inc(grams)
        memory.last_accounted_s = now_s

    async def _write(
        self,
        obj: JsonObject,
        generation: int,
        *,
        cap: CarbonCap,
        outcome: CarbonOutcome | None,
        failure: CarbonSourceError | None,
        memory: _Memory,
        planned: Sequence[PlannedTarget] = (),
    ) -> None:
        key = object_key(obj)
        live = outcome is not None and outcome.freshness is Freshness.LIVE
        problem = memory.secret_problem
        if problem is not None and problem.transient and live:
            problem = None  # a blip re-reading a key that still works: logged, not reported
        self._metrics.effective_cap_watts.labels(key).set(cap.cap_w)
        self._metrics.carbon_available.labels(key).set(1 if live else 0)
        state = _condition(memory, problem, cap, outcome, failure)
        if planned:
            state = (state[0], state[1], f"{state[2]}; {summary(planned)}")
        previous = status_from_wire(obj)
        previous_cap = previous.effective_cap_watts if previous else None
        now = self._wall_clock()

        def desire(current: PowerCappingConfigStatus | None) -> PowerCappingConfigStatus:
            conditions: Sequence[Condition] = set_condition(
                current.conditions if current else None,
                type_=str(ConditionType.CARBON_AVAILABLE),
                status=state[0],
                reason=state[1],
                message=state[2][:4000],
                observed_generation=generation,
                now=now,
            )
            return with_fields(
                current,
                conditions=list(conditions),
                effective_cap_watts=round(cap.cap_w, 1),
                effective_cap_source=EffectiveCapSource.CARBON,
                deferrable_plans=[p.status for p in planned] or None,
            )

        await self._report_secret_problem(obj, memory, problem, previous, state[2])
        if not await write_status(self._client, obj, desire):
            return
        if previous_cap is None or abs(previous_cap - round(cap.cap_w, 1)) >= 1:
            await self._events.record(obj, "Normal", "CarbonCapChanged", state[2][:1000])
        if not live and problem is None:
            await self._events.record(obj, "Warning", "CarbonUnavailable", state[2][:1000])
        log.info("carbon_cap_applied", cap_w=round(cap.cap_w, 1), reason=cap.reason)

    async def _report_secret_problem(
        self,
        obj: JsonObject,
        memory: _Memory,
        problem: SecretUnreadableError | None,
        previous: PowerCappingConfigStatus | None,
        message: str,
    ) -> None:
        """One `CarbonSecretUnreadable` Event per distinct problem, not one per retry.

        Not re-sent after a restart or a failover when the condition already names it.
        """
        if problem is None:
            memory.problem_reported = None
            return
        if problem.message == memory.problem_reported:
            return
        memory.problem_reported = problem.message
        standing = find_condition(
            previous.conditions if previous else None, str(ConditionType.CARBON_AVAILABLE)
        )
        if standing is not None and problem.message in standing.message:
            return
        await self._events.record(obj, "Warning", "CarbonSecretUnreadable", message[:1000])

    async def _clear_carbon_cap(self, obj: JsonObject, static_w: float) -> None:
        """A config whose carbon section was removed goes back to its static cap."""
        previous = status_from_wire(obj)
        if previous is None or previous.effective_cap_source != EffectiveCapSource.CARBON:
            return

        def desire(current: PowerCappingConfigStatus | None) -> PowerCappingConfigStatus:
            kept = [
                c
                for c in (current.conditions if current else None) or ()
                if c.type != ConditionType.CARBON_AVAILABLE
            ]
            return with_fields(
                current,
                conditions=kept or None,
                effective_cap_source=EffectiveCapSource.STATIC,
                effective_cap_watts=static_w,
                deferrable_plans=None,
            )

        await write_status(self._client, obj, desire)


def _resilient(source: CarbonSource, carbon: CarbonConfig) -> ResilientCarbonSource:
    return ResilientCarbonSource(source, max_age=timedelta(seconds=carbon.max_age_s))


def _condition(
    memory: _Memory,
    problem: SecretUnreadableError | None,
    cap: CarbonCap,
    outcome: CarbonOutcome | None,
    failure: CarbonSourceError | None,
) -> tuple[ConditionStatus, str, str]:
    """`CarbonAvailable`: status, reason and a message that says what is used and why."""
    provider = memory.source.name if memory.source is not None else str(memory.carbon.provider)
    if outcome is not None and outcome.freshness is Freshness.LIVE:
        reading = outcome.reading
        kind = "forecast" if reading.is_forecast else "measured"
        message = (
            f"{provider}: {reading.intensity_g_per_kwh:.0f} g/kWh "
            f"({str(reading.signal).lower()}, {kind} for "
            f"{reading.slot_start:%H:%M}-{reading.slot_end:%H:%M} UTC); {cap.reason}"
        )
        if problem is not None:
            message += f"; {problem.message} (the key read before still works)"
        return ConditionStatus.TRUE, "Live", message
    if problem is not None:
        parts = [problem.message]
        if outcome is not None:
            expires = outcome.fetched_at + timedelta(seconds=memory.carbon.max_age_s)
            parts.append(
                f"the reading of {outcome.fetched_at:%H:%M:%S} UTC "
                f"({outcome.reading.intensity_g_per_kwh:.0f} g/kWh) holds until "
                f"{expires:%H:%M:%S} UTC"
            )
        parts.append(cap.reason)
        return ConditionStatus.FALSE, SECRET_UNREADABLE, "; ".join(parts)
    why = failure.message if failure is not None else "no reading"
    reason = "LastKnownGood" if outcome is not None else "Fallback"
    return ConditionStatus.FALSE, reason, f"{provider}: {why}; {cap.reason}"


def _next_wake_s(outcome: CarbonOutcome | None, now: datetime) -> float:
    """Wake at the next slot boundary (providers publish per slot), retry sooner on failure."""
    if outcome is None or outcome.freshness is not Freshness.LIVE:
        return 30.0
    reading: CarbonReading = outcome.reading
    until_end = (reading.slot_end - now).total_seconds()
    return min(MAX_REQUEUE_S, max(MIN_REQUEUE_S, until_end + 1.0))
