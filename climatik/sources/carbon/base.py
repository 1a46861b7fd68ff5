"""The protocol every carbon provider implements, and the one HTTP fetch they share.

`fetch_json` is where timeouts, retries of 429/5xx with backoff, a response size limit and the
translation of every failure into a `CarbonSourceError` with a message a user can act on live.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import aiohttp

from climatik.domain.carbon import CarbonReading

DEFAULT_TIMEOUT_S = 10.0
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class CarbonSourceError(Exception):
    """A provider could not give a usable reading; `reason` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class CarbonSource(Protocol):
    """A grid carbon-intensity provider."""

    @property
    def name(self) -> str:
        """Provider name for status, Events and metrics."""
        ...

    async def current(self, now: datetime) -> CarbonReading:
        """The intensity of the slot covering `now` (measured when the provider has it)."""
        ...

    async def forecast(self, now: datetime) -> Sequence[CarbonReading]:
        """Forecast slots from `now` on, in time order."""
        ...


async def fetch_json(
    session: aiohttp.ClientSession,
    url: str,
    *,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    retries: int = 2,
    backoff_s: float = 0.5,
) -> Any:
    """GET `url` and decode JSON, retrying rate limits and server errors a few times."""
    attempt = 0
    while True:
        try:
            return await _fetch_once(
                session, url, params=params, headers=headers, timeout_s=timeout_s
            )
        except _RetryableError as error:
            if attempt >= retries:
                raise error.final from None
            delay_s = error.retry_after_s
            if delay_s is None:
                delay_s = backoff_s * 2**attempt * (1 + random.random())  # noqa: S311
            attempt += 1
            await asyncio.sleep(min(delay_s, 30.0))


class _RetryableError(Exception):
    def __init__(self, final: CarbonSourceError, retry_after_s: float | None) -> None:
        super().__init__(final.message)
        self.final = final
        self.retry_after_s = retry_after_s


async def _fetch_once(
    session: aiohttp.ClientSession,
    url: str,
    *,
    params: Mapping[str, str] | None,
    headers: Mapping[str, str] | None,
    timeout_s: float,
) -> Any:
    try:
        async with asyncio.timeout(timeout_s):
            async with session.get(url, params=params, headers=headers) as response:
                if response.status in _RETRYABLE_STATUS:
                    final = CarbonSourceError(
                        "RateLimited" if response.status == 429 else "ProviderError",
                        f"{url} answered HTTP {response.status}",
                    )
                    raise _RetryableError(final, _retry_after_s(response.headers))
                if response.status in {401, 403}:
                    raise CarbonSourceError(
                        "Unauthorized",
                        f"{url} refused the credentials (HTTP {response.status}); "
                        "check the API key in the referenced Secret",
                    )
                if response.status >= 400:
                    raise CarbonSourceError(
                        "ProviderError", f"{url} answered HTTP {response.status}"
                    )
                body = await response.content.read(MAX_RESPONSE_BYTES + 1)
    except TimeoutError:
        raise CarbonSourceError("Timeout", f"{url} did not answer within {timeout_s:g} s") from None
    except aiohttp.ClientError as error:
        raise CarbonSourceError("Unreachable", f"{url} is unreachable: {error}") from None
    if len(body) > MAX_RESPONSE_BYTES:
        raise CarbonSourceError("Malformed", f"{url} answered more than {MAX_RESPONSE_BYTES} bytes")
    try:
        return json.loads(body)
    except ValueError as error:
        raise CarbonSourceError("Malformed", f"{url} answered invalid JSON: {error}") from None


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    try:
        return float(headers.get("Retry-After", ""))
    except ValueError:
        return None


def require_number(value: object, where: str) -> float:
    """A numeric field of a provider's payload (JSON ints and floats, not booleans)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CarbonSourceError(
            "Malformed", f"{where}: expected a number, got {type(value).__name__}"
        )
    return float(value)


def require(value: object, kind: type, where: str) -> Any:
    """Check one field of a provider's payload, naming it when it is missing or wrong."""
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CarbonSourceError(
            "Malformed", f"{where}: expected {kind.__name__}, got {type(value).__name__}"
        )
    return value


def parse_time(value: object, where: str) -> datetime:
    """Parse the ISO 8601 times providers send ('2018-01-20T12:00Z', '...+00:00')."""
    text = require(value, str, where)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CarbonSourceError("Malformed", f"{where}: {text!r} is not a time") from None
    if moment.tzinfo is None:
        raise CarbonSourceError("Malformed", f"{where}: {text!r} has no time zone")
    return moment


def make_reading(where: str, **fields: Any) -> CarbonReading:
    """Build a reading, reporting impossible values (negative, NaN, empty slot) as malformed."""
    try:
        return CarbonReading(**fields)
    except ValueError as error:
        raise CarbonSourceError("Malformed", f"{where}: {error}") from None
