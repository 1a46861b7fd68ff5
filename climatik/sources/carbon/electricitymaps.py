"""Electricity Maps API v3: carbon intensity of a zone, with its forecast.

Authenticated by the `auth-token` header (the key comes from a Secret and is never logged);
hourly values in gCO2eq/kWh (average, lifecycle or direct as the account is set up).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from climatik.domain.carbon import CarbonReading, CarbonSignal
from climatik.sources.carbon.base import (
    DEFAULT_TIMEOUT_S,
    CarbonSource,
    CarbonSourceError,
    fetch_json,
    make_reading,
    parse_time,
    require,
    require_number,
)
from climatik.sources.carbon.provider import ProviderDefinition, ProviderRequest

DEFAULT_BASE_URL = "https://api.electricitymap.org"
SLOT = timedelta(hours=1)


class ElectricityMapsSource:
    """Carbon intensity of one Electricity Maps zone (e.g. `DE`, `FR`, `US-CAL-CISO`)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        zone: str,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._session = session
        self._zone = zone
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s

    @property
    def name(self) -> str:
        return f"electricitymaps/{self._zone}"

    def __repr__(self) -> str:  # keeps the API key out of logs and tracebacks
        return f"ElectricityMapsSource(zone={self._zone!r})"

    async def _get(self, path: str) -> Any:
        return await fetch_json(
            self._session,
            self._base_url + path,
            params={"zone": self._zone},
            headers={"auth-token": self._api_key},
            timeout_s=self._timeout_s,
        )

    async def current(self, now: datetime) -> CarbonReading:
        del now  # the provider answers for the latest hour it has
        path = "/v3/carbon-intensity/latest"
        payload = require(await self._get(path), dict, path)
        start = parse_time(payload.get("datetime"), f"{path}: datetime")
        return make_reading(
            path,
            intensity_g_per_kwh=require_number(
                payload.get("carbonIntensity"), f"{path}: carbonIntensity"
            ),
            slot_start=start,
            slot_end=start + SLOT,
            signal=CarbonSignal.AVERAGE,
            is_forecast=bool(payload.get("isEstimated", False)),
            region=self.name,
        )

    async def forecast(self, now: datetime) -> Sequence[CarbonReading]:
        path = "/v3/carbon-intensity/forecast"
        payload = require(await self._get(path), dict, path)
        points = require(payload.get("forecast"), list, f"{path}: forecast")
        readings = []
        for i, point in enumerate(points):
            where = f"{path}: forecast[{i}]"
            if not isinstance(point, dict):
                raise CarbonSourceError("Malformed", f"{where}: expected an object")
            start = parse_time(point.get("datetime"), f"{where}.datetime")
            readings.append(
                make_reading(
                    where,
                    intensity_g_per_kwh=require_number(
                        point.get("carbonIntensity"), f"{where}.carbonIntensity"
                    ),
                    slot_start=start,
                    slot_end=start + SLOT,
                    signal=CarbonSignal.AVERAGE,
                    is_forecast=True,
                    region=self.name,
                )
            )
        return [r for r in readings if r.slot_end > now]


async def _build(request: ProviderRequest) -> CarbonSource:
    return ElectricityMapsSource(
        await request.session(),
        zone=request.carbon.zone or "",
        api_key=request.require_key(),
        base_url=request.base_url or DEFAULT_BASE_URL,
        timeout_s=request.timeout_s,
    )


PROVIDER = ProviderDefinition(build=_build, needs_key=True)
