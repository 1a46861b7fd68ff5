"""UK National Grid ESO Carbon Intensity API: national, by region id or by outward postcode.

No authentication; half-hour slots; gCO2/kWh (average, location based). The national current
slot carries `actual` once metered (null before); regional data carries forecasts only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
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

DEFAULT_BASE_URL = "https://api.carbonintensity.org.uk"


class UKNationalGridSource:
    """Carbon intensity for Great Britain, or one of its 17 DNO regions."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str = DEFAULT_BASE_URL,
        region_id: int | None = None,
        postcode: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if region_id is not None and postcode is not None:
            msg = "choose a region id or a postcode, not both"
            raise ValueError(msg)
        if region_id is not None and not 1 <= region_id <= 17:
            msg = f"UK region id must be 1..17, got {region_id}"
            raise ValueError(msg)
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._region_id = region_id
        self._postcode = postcode
        self._timeout_s = timeout_s

    @property
    def name(self) -> str:
        if self._region_id is not None:
            return f"uk-national-grid/region-{self._region_id}"
        if self._postcode is not None:
            return f"uk-national-grid/postcode-{self._postcode}"
        return "uk-national-grid"

    async def current(self, now: datetime) -> CarbonReading:
        if self._region_id is not None:
            slots = await self._regional(f"/regional/regionid/{self._region_id}")
        elif self._postcode is not None:
            slots = await self._regional(f"/regional/postcode/{self._postcode}")
        else:
            slots = await self._national("/intensity")
        for slot in slots:
            if slot.covers(now):
                return slot
        if slots:
            return slots[0]
        raise CarbonSourceError("NoData", f"{self.name} returned no slot")

    async def forecast(self, now: datetime) -> Sequence[CarbonReading]:
        start = now.strftime("%Y-%m-%dT%H:%MZ")
        if self._region_id is not None:
            slots = await self._regional(
                f"/regional/intensity/{start}/fw24h/regionid/{self._region_id}"
            )
        elif self._postcode is not None:
            slots = await self._regional(
                f"/regional/intensity/{start}/fw24h/postcode/{self._postcode}"
            )
        else:
            slots = await self._national(f"/intensity/{start}/fw24h")
        return [slot for slot in slots if slot.slot_end > now]

    async def _get(self, path: str) -> Any:
        return await fetch_json(self._session, self._base_url + path, timeout_s=self._timeout_s)

    async def _national(self, path: str) -> list[CarbonReading]:
        payload = await self._get(path)
        entries = require(_field(payload, "data", path), list, f"{path}: data")
        return [_reading(entry, f"{path}: data[{i}]", self.name) for i, entry in enumerate(entries)]

    async def _regional(self, path: str) -> list[CarbonReading]:
        payload = await self._get(path)
        regions = _field(payload, "data", path)
        # Current-slot endpoints wrap the region in a list; the fw24h ones answer an object.
        region = regions[0] if isinstance(regions, list) and regions else regions
        where = f"{path}: data[0]"
        entries = require(_field(region, "data", where), list, f"{where}.data")
        return [_reading(entry, f"{where}.data[{i}]", self.name) for i, entry in enumerate(entries)]


def _field(container: object, key: str, where: str) -> Any:
    if not isinstance(container, dict) or key not in container:
        raise CarbonSourceError("Malformed", f"{where}: missing '{key}'")
    return container[key]


def _reading(entry: object, where: str, region: str) -> CarbonReading:
    intensity = require(_field(entry, "intensity", where), dict, f"{where}.intensity")
    actual = intensity.get("actual")
    measured = actual is not None
    value = require_number(
        actual if measured else intensity.get("forecast"),
        f"{where}.intensity.{'actual' if measured else 'forecast'}",
    )
    return make_reading(
        where,
        intensity_g_per_kwh=value,
        slot_start=parse_time(_field(entry, "from", where), f"{where}.from"),
        slot_end=parse_time(_field(entry, "to", where), f"{where}.to"),
        signal=CarbonSignal.AVERAGE,
        is_forecast=not measured,
        region=region,
    )


async def _build(request: ProviderRequest) -> CarbonSource:
    carbon = request.carbon
    return UKNationalGridSource(
        await request.session(),
        base_url=request.base_url or DEFAULT_BASE_URL,
        region_id=carbon.region_id,
        postcode=carbon.postcode,
        timeout_s=request.timeout_s,
    )


PROVIDER = ProviderDefinition(build=_build)
"""No key: the API is open."""
