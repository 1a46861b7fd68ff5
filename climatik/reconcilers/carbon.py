"""The carbon reconciler: moves a config's effective cap with the grid's carbon intensity.

For each PowerCappingConfig with a `carbon` section it asks the configured provider (through a
`ResilientCarbonSource`: one fetch per slot, last-known-good for `maxAgeSeconds`), turns the
intensity into a cap with the pure carbon policy, and writes `effectiveCapWatts` and
`effectiveCapSource: Carbon` into the status, which the power-cap reconciler then enforces. With
no usable reading the configured fallback applies (the static cap, or the floor). It is time
driven: it wakes again at the next slot boundary. API keys are read by `get` on the one named
Secret and never logged.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import structlog

from climatik.api.convert import InvalidConfigError, config_from_object
from climatik.api.models import (
    Condition,
    ConditionStatus,
    ConditionType,
    EffectiveCapSource,
    PowerCappingConfigStatus,
)
from climatik.api.status import set_condition, status_from_wire
from climatik.domain.carbon import CarbonCap, CarbonReading
from climatik.domain.config import CarbonConfig, CarbonFallback, CarbonProvider
from climatik.kube.client import ApiError, KubeClient, Resource
from climatik.policies.carbon import cap_for_carbon, emissions_g
from climatik.reconcilers.metrics import CappingMetrics
from climatik.reconcilers.result import Result, TerminalError
from climatik.reconcilers.settings import CarbonSettings
from climatik.reconcilers.status_writer import with_fields, write_status
from climatik.sources.carbon import (
    CarbonOutcome,
    CarbonSource,
    CarbonSourceError,
    ElectricityMapsSource,
    Freshness,
    ResilientCarbonSource,
    StaticCarbonSource,
    UKNationalGridSource,
    WattTimeSource,
)

log = structlog.get_logger(__name__)

SECRETS = Resource("", "v1", "secrets")
MIN_REQUEUE_S = 5.0
MAX_REQUEUE_S = 300.0


@dataclass
class _Memory:
    carbon: CarbonConfig
    source: ResilientCarbonSource
    last_accounted_s: float | None = None


class CarbonReconciler:
    """Reconciles the effective cap of one PowerCappingConfig key from grid intensity."""

    def __init__(
        self,
        client: KubeClient,
        *,
        configs: Any,
        events: Any,
        metrics: CappingMetrics,
        settings: CarbonSettings,
        session_factory: Callable[[], Awaitable[aiohttp.ClientSession]],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self._configs = configs
        self._events = events
        self._metrics = metrics
        self._settings = settings
        self._session_factory = session_factory
        self._clock = clock
        self._wall_clock = wall_clock
        self._memory: dict[str, _Memory] = {}

    async def reconcile(self, key: str) -> Result:
        obj = self._configs.store.get(key)
        if obj is None:
            self._memory.pop(key, None)
            return Result()
        try:
            config = config_from_object(obj)
        except InvalidConfigError as error:
            raise TerminalError(f"{key}: {error}") from error
        if config.carbon is None:
            self._memory.pop(key, None)
            await self._clear_carbon_cap(obj)
            return Result()

        memory = self._memory.get(key)
        if memory is None or memory.carbon != config.carbon:
            source = await self._build_source(obj, config.carbon)
            memory = self._memory[key] = _Memory(
                config.carbon,
                ResilientCarbonSource(source, max_age=timedelta(seconds=config.carbon.max_age_s)),
            )
        now = self._wall_clock()
        carbon = config.carbon
        outcome: CarbonOutcome | None = None
        failure: CarbonSourceError | None = None
        try:
            outcome = await memory.source.current(now)
        except CarbonSourceError as error:
            failure = error
        if outcome is not None:
            cap = cap_for_carbon(outcome.reading, config.power_cap_w, carbon.floor_w, carbon.target)
            failure = outcome.error
        else:
            fallback_w = (
                config.power_cap_w
                if carbon.fallback is CarbonFallback.STATIC_CAP
                else carbon.floor_w
            )
            cap = CarbonCap(
                fallback_w,
                f"no carbon reading within {carbon.max_age_s:.0f} s: fallback {carbon.fallback} "
                f"{fallback_w:.0f} W",
            )
        self._account(key, obj, outcome, carbon.pue, memory)
        await self._write(
            obj,
            config.generation,
            cap=cap,
            outcome=outcome,
            failure=failure,
            provider=memory.source.name,
        )
        return Result(requeue_after=_next_wake_s(outcome, now))

    async def _build_source(self, obj: Mapping[str, Any], carbon: CarbonConfig) -> CarbonSource:
        settings = self._settings
        match carbon.provider:
            case CarbonProvider.STATIC:
                assert carbon.static_intensity_g_per_kwh is not None  # the CRD requires it
                return StaticCarbonSource.constant(carbon.static_intensity_g_per_kwh)
            case CarbonProvider.UK_NATIONAL_GRID:
                return UKNationalGridSource(
                    await self._session_factory(),
                    base_url=settings.uk_national_grid_url,
                    region_id=carbon.region_id,
                    postcode=carbon.postcode,
                    timeout_s=settings.timeout_s,
                )
            case CarbonProvider.ELECTRICITY_MAPS:
                return ElectricityMapsSource(
                    await self._session_factory(),
                    zone=carbon.zone or "",
                    api_key=await self._secret(obj, carbon, _secret_key(carbon)),
                    base_url=settings.electricity_maps_url,
                    timeout_s=settings.timeout_s,
                )
            case CarbonProvider.WATT_TIME:
                # WattTime logs in with a user and password, kept as `user:password` in one key.
                credentials = await self._secret(obj, carbon, _secret_key(carbon))
                username, _, password = credentials.partition(":")
                if not password:
                    raise TerminalError(
                        "the WattTime secret key must hold `user:password` (no ':' found)"
                    )
                return WattTimeSource(
                    await self._session_factory(),
                    region=carbon.region or "",
                    username=username,
                    password=password,
                    clock=self._wall_clock,
                    base_url=settings.watttime_url,
                    timeout_s=settings.timeout_s,
                )

    async def _secret(self, obj: Mapping[str, Any], carbon: CarbonConfig, key: str) -> str:
        """One key of the referenced Secret (same namespace; `get` only, never listed)."""
        ref = carbon.api_key_secret
        if ref is None:
            raise TerminalError("carbon.apiKeySecretRef is required for this provider")
        namespace = obj["metadata"].get("namespace")
        try:
            secret = await self._client.get(SECRETS, ref.name, namespace)
        except ApiError as error:
            await self._events.record(
                obj, "Warning", "CarbonSecretUnreadable", f"Secret {ref.name}: {error.reason}"
            )
            raise TerminalError(
                f"cannot read Secret {namespace}/{ref.name}: {error.reason}"
            ) from None
        encoded = (secret.get("data") or {}).get(key)
        if encoded is None:
            message = f"Secret {namespace}/{ref.name} has no key {key!r}"
            await self._events.record(obj, "Warning", "CarbonSecretUnreadable", message)
            raise TerminalError(message)
        return base64.b64decode(encoded).decode().strip()

    def _account(
        self,
        key: str,
        obj: Mapping[str, Any],
        outcome: CarbonOutcome | None,
        pue: float,
        memory: _Memory,
    ) -> None:
        now_s = self._clock()
        status = obj.get("status") or {}
        watts = status.get("measuredPowerWatts")
        if outcome is not None:
            self._metrics.carbon_intensity.labels(key, str(outcome.reading.signal)).set(
                outcome.reading.intensity_g_per_kwh
            )
            if memory.last_accounted_s is not None and isinstance(watts, int | float):
                seconds = now_s - memory.last_accounted_s
                grams = emissions_g(watts, outcome.reading.intensity_g_per_kwh, seconds, pue)
                self._metrics.emissions.labels(key).inc(grams)
        memory.last_accounted_s = now_s

    async def _write(
        self,
        obj: Mapping[str, Any],
        generation: int,
        *,
        cap: CarbonCap,
        outcome: CarbonOutcome | None,
        failure: CarbonSourceError | None,
        provider: str,
    ) -> None:
        key = f"{obj['metadata'].get('namespace')}/{obj['metadata']['name']}"
        live = outcome is not None and outcome.freshness is Freshness.LIVE
        self._metrics.effective_cap_watts.labels(key).set(cap.cap_w)
        self._metrics.carbon_available.labels(key).set(1 if live else 0)
        if live and outcome is not None:
            reading = outcome.reading
            kind = "forecast" if reading.is_forecast else "measured"
            message = (
                f"{provider}: {reading.intensity_g_per_kwh:.0f} g/kWh "
                f"({str(reading.signal).lower()}, {kind} for "
                f"{reading.slot_start:%H:%M}-{reading.slot_end:%H:%M} UTC); {cap.reason}"
            )
            state = (ConditionStatus.TRUE, "Live", message)
        else:
            why = failure.message if failure is not None else "no reading"
            reason = "LastKnownGood" if outcome is not None else "Fallback"
            state = (ConditionStatus.FALSE, reason, f"{provider}: {why}; {cap.reason}")
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
            )

        if not await write_status(self._client, obj, desire):
            return
        if previous_cap is None or abs(previous_cap - round(cap.cap_w, 1)) >= 1:
            await self._events.record(obj, "Normal", "CarbonCapChanged", state[2][:1000])
        if not live:
            await self._events.record(obj, "Warning", "CarbonUnavailable", state[2][:1000])
        log.info("carbon_cap_applied", cap_w=round(cap.cap_w, 1), reason=cap.reason)

    async def _clear_carbon_cap(self, obj: Mapping[str, Any]) -> None:
        """A config whose carbon section was removed goes back to its static cap."""
        previous = status_from_wire(obj)
        if previous is None or previous.effective_cap_source != EffectiveCapSource.CARBON:
            return
        static_w = float(obj["spec"]["powerCapLimit"])

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
            )

        await write_status(self._client, obj, desire)


def _secret_key(carbon: CarbonConfig) -> str:
    return carbon.api_key_secret.key if carbon.api_key_secret is not None else ""


def _next_wake_s(outcome: CarbonOutcome | None, now: datetime) -> float:
    """Wake at the next slot boundary (providers publish per slot), retry sooner on failure."""
    if outcome is None or outcome.freshness is not Freshness.LIVE:
        return 30.0
    reading: CarbonReading = outcome.reading
    until_end = (reading.slot_end - now).total_seconds()
    return min(MAX_REQUEUE_S, max(MIN_REQUEUE_S, until_end + 1.0))
