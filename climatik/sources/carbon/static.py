"""Carbon intensity from configuration: one constant value, or a series replayed from a file.

For sites without a provider, for air-gapped clusters and for demos; the file form lets a user
replay a recorded day (CSV `start,intensity_g_per_kwh`, ISO 8601 times, one row per slot).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from climatik.domain.carbon import CarbonReading, CarbonSignal
from climatik.sources.carbon.base import CarbonSource, CarbonSourceError, make_reading, parse_time
from climatik.sources.carbon.provider import ProviderDefinition, ProviderRequest

CONSTANT_SLOT = timedelta(minutes=30)


class StaticCarbonSource:
    """A constant intensity, or a recorded series that repeats with its own period."""

    def __init__(self, series: Sequence[CarbonReading], *, name: str = "static") -> None:
        if not series:
            msg = "a static carbon series needs at least one reading"
            raise ValueError(msg)
        self._series = sorted(series, key=lambda r: r.slot_start)
        self._name = name
        self._period = self._series[-1].slot_end - self._series[0].slot_start

    @classmethod
    def constant(cls, intensity_g_per_kwh: float) -> StaticCarbonSource:
        """The same intensity at every moment."""
        epoch = datetime.fromisoformat("2000-01-01T00:00:00+00:00")
        reading = CarbonReading(intensity_g_per_kwh, epoch, epoch + CONSTANT_SLOT)
        return cls([reading], name=f"static/{intensity_g_per_kwh:g}")

    @classmethod
    def from_csv(cls, path: Path) -> StaticCarbonSource:
        """Read `start,intensity_g_per_kwh` rows; each slot ends where the next begins."""
        with path.open(newline="") as handle:
            rows = [row for row in csv.reader(handle) if row and not row[0].startswith("#")]
        if rows and rows[0][0].strip().lower() == "start":
            rows = rows[1:]
        if len(rows) < 2:
            raise CarbonSourceError("Malformed", f"{path}: needs at least two rows")
        starts = [parse_time(row[0].strip(), f"{path}:{i + 1}") for i, row in enumerate(rows)]
        step = starts[1] - starts[0]
        readings = []
        for i, row in enumerate(rows):
            where = f"{path}:{i + 1}"
            try:
                value = float(row[1])
            except (IndexError, ValueError):
                raise CarbonSourceError("Malformed", f"{where}: no intensity") from None
            end = starts[i + 1] if i + 1 < len(starts) else starts[i] + step
            readings.append(
                make_reading(
                    where,
                    intensity_g_per_kwh=value,
                    slot_start=starts[i],
                    slot_end=end,
                    signal=CarbonSignal.AVERAGE,
                )
            )
        return cls(readings, name=f"file/{path.name}")

    @property
    def name(self) -> str:
        return self._name

    def _at(self, moment: datetime) -> CarbonReading:
        first = self._series[0].slot_start
        cycles = (moment - first) // self._period
        shifted = moment - cycles * self._period
        for reading in self._series:
            if reading.covers(shifted):
                offset = cycles * self._period
                return CarbonReading(
                    reading.intensity_g_per_kwh,
                    reading.slot_start + offset,
                    reading.slot_end + offset,
                    reading.signal,
                    is_forecast=False,
                    region=self._name,
                )
        msg = f"no slot covers {moment}"  # unreachable: the series tiles its period
        raise AssertionError(msg)

    async def current(self, now: datetime) -> CarbonReading:
        return self._at(now)

    async def forecast(self, now: datetime) -> Sequence[CarbonReading]:
        readings = []
        moment = now
        horizon = now + timedelta(hours=24)
        while moment < horizon:
            reading = self._at(moment)
            readings.append(reading)
            moment = reading.slot_end
        return readings


async def _build(request: ProviderRequest) -> CarbonSource:
    intensity = request.carbon.static_intensity_g_per_kwh
    if intensity is None:  # the CRD requires it for Static
        msg = "the Static provider needs staticIntensityGramsPerKWh"
        raise ValueError(msg)
    return StaticCarbonSource.constant(intensity)


PROVIDER = ProviderDefinition(build=_build)
"""A constant intensity from the spec: no key, no HTTP."""
