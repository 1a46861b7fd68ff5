"""What the controller asks of any carbon source: a reading, and how much to trust it.

One fetch per slot (providers publish per slot, and some bill per call); after a failure, the
last good reading is used for at most `max_age`, then the configured fallback intensity; retries
back off exponentially so a provider in trouble is not hammered. A provider rebuilt with a new
key (`replace_source`) keeps the last good reading, so a key rotation causes no fallback.
"""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from climatik.domain.carbon import CarbonReading
from climatik.sources.carbon.base import CarbonSource, CarbonSourceError

MIN_RETRY = timedelta(seconds=15)
MAX_RETRY = timedelta(minutes=5)


class Freshness(enum.StrEnum):
    """How the reading in a `CarbonOutcome` was obtained."""

    LIVE = "Live"
    LAST_KNOWN_GOOD = "LastKnownGood"
    FALLBACK = "Fallback"


@dataclass(frozen=True, slots=True)
class CarbonOutcome:
    """A reading with its provenance; `error` says why it is not live."""

    reading: CarbonReading
    freshness: Freshness
    fetched_at: datetime
    error: CarbonSourceError | None = None


class ResilientCarbonSource:
    """Wraps a `CarbonSource` with per-slot caching, last-known-good and a fallback."""

    def __init__(
        self,
        source: CarbonSource,
        *,
        max_age: timedelta,
        fallback_intensity_g_per_kwh: float | None = None,
    ) -> None:
        self._source = source
        self._max_age = max_age
        self._fallback = fallback_intensity_g_per_kwh
        self._last_good: CarbonOutcome | None = None
        self._last_error: CarbonSourceError | None = None
        self._failures = 0
        self._next_attempt: datetime | None = None
        self._failed_at: datetime | None = None
        self._forecast: tuple[CarbonReading, ...] = ()
        self._forecast_asked: datetime | None = None

    @property
    def name(self) -> str:
        return self._source.name

    @property
    def failed_at(self) -> datetime | None:
        """When the provider was last asked and failed (None after a success)."""
        return self._failed_at

    def replace_source(self, source: CarbonSource) -> None:
        """Ask `source` from now on (a rotated key): at once, keeping the last good reading."""
        self._source = source
        self._failures = 0
        self._next_attempt = None
        self._failed_at = None

    async def current(self, now: datetime) -> CarbonOutcome:
        """The best reading for `now`; raises only when there is neither data nor fallback."""
        good = self._last_good
        if good is not None and good.reading.covers(now):
            return good
        if self._next_attempt is None or now >= self._next_attempt:
            try:
                reading = await self._source.current(now)
            except CarbonSourceError as error:
                self._record_failure(error, now)
            else:
                self._failures = 0
                self._next_attempt = None
                self._failed_at = None
                self._last_error = None
                self._last_good = CarbonOutcome(reading, Freshness.LIVE, fetched_at=now)
                return self._last_good
        return self._degraded(now)

    async def forecast(self, now: datetime, every: timedelta) -> tuple[CarbonReading, ...]:
        """The provider's forecast from `now` on, asked at most once per `every` (forecasts
        are reissued per slot); after a failure, what is left of the last good one."""
        asked = self._forecast_asked
        if asked is None or now - asked >= every or now < asked:
            self._forecast_asked = now
            # After a failure the last good forecast stands; `current` reports the trouble.
            with contextlib.suppress(CarbonSourceError):
                self._forecast = tuple(
                    sorted(await self._source.forecast(now), key=lambda r: r.slot_start)
                )
        return tuple(r for r in self._forecast if r.slot_end > now)

    def _record_failure(self, error: CarbonSourceError, now: datetime) -> None:
        self._last_error = error
        self._failed_at = now
        self._failures += 1
        delay = min(MAX_RETRY, MIN_RETRY * 2 ** (self._failures - 1))
        self._next_attempt = now + delay

    def _degraded(self, now: datetime) -> CarbonOutcome:
        error = self._last_error or CarbonSourceError("NoData", f"{self.name} has no reading")
        good = self._last_good
        if good is not None and now - good.fetched_at <= self._max_age:
            return CarbonOutcome(good.reading, Freshness.LAST_KNOWN_GOOD, good.fetched_at, error)
        if self._fallback is not None:
            reading = CarbonReading(
                self._fallback, now, now + MIN_RETRY, region=f"{self.name} (fallback)"
            )
            return CarbonOutcome(reading, Freshness.FALLBACK, fetched_at=now, error=error)
        raise error
