"""WattTime API v3: the marginal operating emissions rate (MOER) of a balancing authority.

WattTime logs in with HTTP Basic for a bearer token that lives about 30 minutes; on a 401 we log
in again once. Its values are marginal, in lbs CO2/MWh: they are converted to g/kWh and labelled
`MARGINAL`, never mixed with average intensities.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from climatik.domain.carbon import LBS_PER_MWH_TO_G_PER_KWH, CarbonReading, CarbonSignal
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

DEFAULT_BASE_URL = "https://api.watttime.org"
TOKEN_LIFETIME = timedelta(minutes=25)
"""Refresh a little before WattTime's 30-minute expiry."""
POINT = timedelta(minutes=5)


class WattTimeSource:
    """Marginal emissions of one WattTime region (e.g. `CAISO_NORTH`)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        region: str,
        username: str,
        password: str,
        clock: Callable[[], datetime],
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._session = session
        self._region = region
        # Built by hand: aiohttp deprecates BasicAuth in favour of a helper older versions lack.
        credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._login_headers = {"Authorization": f"Basic {credentials}"}
        self._clock = clock
        self._base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._token: str | None = None
        self._token_expires: datetime | None = None

    @property
    def name(self) -> str:
        return f"watttime/{self._region}"

    def __repr__(self) -> str:  # keeps credentials out of logs and tracebacks
        return f"WattTimeSource(region={self._region!r})"

    async def _login(self) -> str:
        payload = await fetch_json(
            self._session,
            self._base_url + "/login",
            headers=self._login_headers,
            timeout_s=self._timeout_s,
        )
        token: str = require(
            payload.get("token") if isinstance(payload, dict) else None, str, "/login: token"
        )
        self._token = token
        self._token_expires = self._clock() + TOKEN_LIFETIME
        return token

    async def _get(self, path: str) -> Any:
        expired = self._token_expires is None or self._clock() >= self._token_expires
        token = await self._login() if self._token is None or expired else self._token
        params = {"region": self._region, "signal_type": "co2_moer"}
        try:
            return await fetch_json(
                self._session,
                self._base_url + path,
                params=params,
                headers={"Authorization": f"Bearer {token}"},
                timeout_s=self._timeout_s,
            )
        except CarbonSourceError as error:
            if error.reason != "Unauthorized":
                raise
        # The token expired early or was revoked: log in again once.
        token = await self._login()
        return await fetch_json(
            self._session,
            self._base_url + path,
            params=params,
            headers={"Authorization": f"Bearer {token}"},
            timeout_s=self._timeout_s,
        )

    async def current(self, now: datetime) -> CarbonReading:
        points = await self.forecast(now)
        if not points:
            raise CarbonSourceError("NoData", f"{self.name}: the forecast has no point from now on")
        return points[0]

    async def forecast(self, now: datetime) -> Sequence[CarbonReading]:
        path = "/v3/forecast"
        payload = require(await self._get(path), dict, path)
        units = require(payload.get("meta"), dict, f"{path}: meta").get("units")
        if units != "lbs_co2_per_mwh":
            raise CarbonSourceError(
                "Malformed", f"{path}: meta.units is {units!r}, expected 'lbs_co2_per_mwh'"
            )
        readings = []
        for i, point in enumerate(require(payload.get("data"), list, f"{path}: data")):
            where = f"{path}: data[{i}]"
            if not isinstance(point, dict):
                raise CarbonSourceError("Malformed", f"{where}: expected an object")
            start = parse_time(point.get("point_time"), f"{where}.point_time")
            lbs_per_mwh = require_number(point.get("value"), f"{where}.value")
            readings.append(
                make_reading(
                    where,
                    intensity_g_per_kwh=lbs_per_mwh * LBS_PER_MWH_TO_G_PER_KWH,
                    slot_start=start,
                    slot_end=start + POINT,
                    signal=CarbonSignal.MARGINAL,
                    is_forecast=True,
                    region=self.name,
                )
            )
        return [r for r in readings if r.slot_end > now]

    async def percentile(self) -> float:
        """WattTime's signal index: where now sits among recent MOER values (0-100)."""
        path = "/v3/signal-index"
        payload = require(await self._get(path), dict, path)
        data = require(payload.get("data"), list, f"{path}: data")
        if not data or not isinstance(data[0], dict):
            raise CarbonSourceError("Malformed", f"{path}: data is empty")
        return require_number(data[0].get("value"), f"{path}: data[0].value")


def _key_problem(key: str) -> str | None:
    username, _, password = key.partition(":")
    if not username or not password:
        return "WattTime needs `user:password` there (user, one ':', password)"
    return None


async def _build(request: ProviderRequest) -> CarbonSource:
    # `user:password` in one key; `_key_problem` checked the shape when it was read.
    username, _, password = request.require_key().partition(":")
    return WattTimeSource(
        await request.session(),
        region=request.carbon.region or "",
        username=username,
        password=password,
        clock=request.wall_clock,
        base_url=request.base_url or DEFAULT_BASE_URL,
        timeout_s=request.timeout_s,
    )


PROVIDER = ProviderDefinition(build=_build, needs_key=True, key_problem=_key_problem)
