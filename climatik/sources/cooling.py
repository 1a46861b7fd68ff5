"""Talking to the site's cooling management system (design document §10.4.3).

There is no standard API for CRAC/CRAH setpoints, so Climatik posts its recommendations to an
HTTP webhook the site operates (a BMS gateway, a small adapter in front of Modbus/BACnet, a
ticketing hook), one JSON document per decision:

    {"source": "climatik", "config": "ns/name", "setpoints": [
        {"group": "zone-1", "supplyCelsius": 22.5, "changeCelsius": 1.0,
         "hottestRack": "rack-a", "hottestInletCelsius": 25.0, "reason": "..."}]}

`supplyCelsius` is null when the current supply temperature is not measured (then only the
change is known). Guarantees: the URL passes the same address guard as Prometheus addresses (it
comes from a custom resource); every post runs under a timeout; redirects are not followed;
failures come back as `CoolingError` with a message for an Event, never as a traceback. A message
never carries the answer's body (whoever wrote the URL could point it at an internal service and
read its answers in Events) nor the URL's credentials or query (`redact`).
The dry-run controller, the default, sends nothing and only remembers what it would have sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import structlog

from climatik.domain.placement import SupplySetpoint
from climatik.sources.address import AddressPolicy, AddressRejectedError, redact

log = structlog.get_logger(__name__)

DEFAULT_TIMEOUT_S = 5.0
_LOGGED_BODY_BYTES = 512


class CoolingError(Exception):
    """The cooling system did not take the recommendation; the message says why."""


@dataclass(frozen=True, slots=True)
class CoolingOutcome:
    """What happened to one batch of recommendations."""

    sent: bool
    detail: str


class CoolingController(Protocol):
    """Where supply-air recommendations go."""

    async def apply(
        self, config_key: str, setpoints: Sequence[SupplySetpoint]
    ) -> CoolingOutcome: ...


def setpoints_document(config_key: str, setpoints: Sequence[SupplySetpoint]) -> dict[str, Any]:
    """The JSON body posted for `setpoints`."""
    return {
        "source": "climatik",
        "config": config_key,
        "setpoints": [
            {
                "group": s.group,
                "supplyCelsius": None if s.supply_c is None else round(s.supply_c, 2),
                "changeCelsius": round(s.change_c, 2),
                "hottestRack": s.hottest_place_id,
                "hottestInletCelsius": round(s.hottest_inlet_c, 2),
                "reason": s.reason,
            }
            for s in setpoints
        ],
    }


class DryRunCoolingController:
    """Sends nothing; keeps the last recommendations per config for inspection."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[SupplySetpoint, ...]] = {}

    async def apply(self, config_key: str, setpoints: Sequence[SupplySetpoint]) -> CoolingOutcome:
        self.last[config_key] = tuple(setpoints)
        return CoolingOutcome(False, f"dry run: {len(setpoints)} setpoint(s) not sent")


class HttpCoolingController:
    """POSTs recommendations to one URL; the session belongs to the caller."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        address_policy: AddressPolicy | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._session = session
        self._url = url
        self._timeout_s = timeout_s
        self._policy = address_policy or AddressPolicy()
        self._headers = dict(headers or {})

    async def apply(self, config_key: str, setpoints: Sequence[SupplySetpoint]) -> CoolingOutcome:
        if not setpoints:
            return CoolingOutcome(False, "nothing to send")
        try:
            self._policy.validate(self._url.split("?", 1)[0])
        except AddressRejectedError as error:
            raise CoolingError(f"cooling webhook refused: {error}") from error
        body = setpoints_document(config_key, setpoints)
        shown = redact(self._url)
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._session.post(
                    self._url,
                    json=body,
                    headers=self._headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                ) as response:
                    status = response.status
                    if not 200 <= status <= 299:
                        text = await response.content.read(_LOGGED_BODY_BYTES)
                        log.debug(
                            "cooling_webhook_refused",
                            url=shown,
                            status=status,
                            body=text.decode(errors="replace"),
                        )
        except TimeoutError as error:
            raise CoolingError(
                f"cooling webhook {shown} did not answer within {self._timeout_s:g} s"
            ) from error
        except aiohttp.ClientError as error:
            raise CoolingError(
                f"cooling webhook {shown} unreachable: {_client_error(error)}"
            ) from error
        if not 200 <= status <= 299:
            raise CoolingError(f"cooling webhook {shown} answered HTTP {status} (body not shown)")
        return CoolingOutcome(True, f"sent {len(setpoints)} setpoint(s), HTTP {status}")


def _client_error(error: aiohttp.ClientError) -> str:
    """What went wrong, without the URL some aiohttp errors repeat in full."""
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"cannot connect to {error.host}:{error.port} ({error.os_error})"
    return type(error).__name__
