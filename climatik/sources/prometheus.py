"""A small, strict client for the Prometheus HTTP API (`/api/v1/query`, `/api/v1/query_range`).

Why our own: the controller needs exactly two endpoints, and it needs them with guarantees that
general clients do not give together:

- every request runs under a deadline (`asyncio.timeout` around the whole exchange, and the
  same deadline as aiohttp's `ClientTimeout` and Prometheus's own `timeout` parameter), and the
  body is read up to a size limit, so a slow or hostile server cannot stall or exhaust us;
- the configured address is validated at request time (`AddressPolicy`) and redirects are
  not followed;
- results are typed (`climatik.sources.prometheus_results`): an instant query yields a `Vector`
  or `NoData`; `NaN`, `±Inf`, an empty result and samples older than the configured age are
  `NoData` with a reason, never zero;
- failures are typed `PrometheusError`s with a `reason` (a status-condition reason) and a
  message that says what to fix, including Prometheus's own `errorType`/`error` for a bad query.
  Messages reach status conditions and Events that the config's author reads, and the author
  chooses the address: so no message ever carries an answer's body. Only a Prometheus API error
  (a documented `errorType`) is quoted, its `error` cleaned and cut to 200 characters; any other
  failure reads `HTTP 503 from host:port (body not shown)`.
- Prometheus is asked to give up on a query a little before our own deadline, so an expensive
  query comes back as Prometheus's `timeout` error (an answer), and a client-side timeout means
  the server itself did not answer.

Parsing is a pure function of the response (`climatik.sources.prometheus_parse`), so it is
unit-tested without a server. Staleness is enforced on both sides: the client sends
`lookback_delta` so Prometheus itself ignores raw samples older than the maximum age, and checks
the returned timestamps.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final, Literal, TypeVar

import aiohttp
import yarl

from climatik.sources.address import AddressPolicy, AddressRejectedError
from climatik.sources.prometheus_parse import (
    parse_instant_response,
    parse_pod_response,
    parse_range_response,
)
from climatik.sources.prometheus_results import (
    InstantResult,
    PodSamples,
    PrometheusAddressRejectedError,
    PrometheusHTTPError,
    PrometheusMalformedResponseError,
    PrometheusResponseTooLargeError,
    PrometheusTimeoutError,
    PrometheusUnreachableError,
    RangeResult,
)

DEFAULT_TIMEOUT_S: Final = 10.0
DEFAULT_MAX_RESPONSE_BYTES: Final = 8 * 1024 * 1024
GROUPED_RESPONSE_FACTOR: Final = 4
"""A grouped answer (`query_by_pod`) covers every pod of the server: at about 100 bytes a pod,
4 x 8 MiB holds some 300,000 pods."""
_READ_CHUNK_BYTES: Final = 64 * 1024


OFF_LOOP_PARSE_BYTES: Final = 256 * 1024
"""Answers larger than this are decoded in a worker thread: tens of megabytes of JSON parsed on
the event loop would stall every controller (and the lease renewal) meanwhile."""

_Parsed = TypeVar("_Parsed")


async def _decoded(body: bytes, parse: Callable[[], _Parsed]) -> _Parsed:
    if len(body) > OFF_LOOP_PARSE_BYTES:
        return await asyncio.to_thread(parse)
    return parse()


# --------------------------------------------------------------------------------------------
# Client


def _duration(seconds: float) -> str:
    # Whole milliseconds: every Prometheus version parses `1500ms`, while fractional duration
    # strings such as `1.5s` are refused by 2.x.
    return f"{max(1, round(seconds * 1000))}ms"


def server_timeout_s(timeout_s: float) -> float:
    """The `timeout` Prometheus is given: a little under our own deadline, so that a query too
    expensive to finish comes back as Prometheus's `timeout` error, an answer, and only a server
    that does not answer at all runs into our deadline (what the pool's breaker counts)."""
    return max(0.8 * timeout_s, timeout_s - 1.0)


@dataclass(frozen=True, slots=True)
class PrometheusSettings:
    """Per-address client behaviour. `max_sample_age_s=None` disables the age check and leaves
    Prometheus's own lookback (5 min by default) in force."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    max_sample_age_s: float | None = 120.0
    address_policy: AddressPolicy = field(default_factory=AddressPolicy)

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if self.max_response_bytes <= 0:
            raise ValueError("max_response_bytes must be positive")
        if self.max_sample_age_s is not None and self.max_sample_age_s <= 0:
            raise ValueError("max_sample_age_s must be positive")


class PrometheusClient:
    """Queries one Prometheus server over a shared session.

    Cheap to construct (one per configured address); the session belongs to the caller
    (see `climatik.sources.address.HTTPSession`). `clock` returns Unix seconds and is only used
    to judge sample age, so tests can inject it.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        address: str,
        settings: PrometheusSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._address = address
        self._settings = settings if settings is not None else PrometheusSettings()
        self._clock = clock

    @property
    def address(self) -> str:
        return self._address

    @property
    def settings(self) -> PrometheusSettings:
        return self._settings

    async def query(
        self,
        promql: str,
        *,
        at_s: float | None = None,
        lookback_delta_s: float | Literal["default"] | None = "default",
        check_age: bool = True,
    ) -> InstantResult:
        """Evaluate `promql` at `at_s` (server time now when None).

        `lookback_delta_s` overrides how far back Prometheus looks for raw samples; by default
        it is the maximum sample age. `check_age=False` skips the client-side age check, for
        queries whose value is itself a timestamp or whose evaluation time is in the past.
        """
        max_age_s = self._settings.max_sample_age_s
        lookback_s = max_age_s if lookback_delta_s == "default" else lookback_delta_s
        status, body, origin = await self._post(
            "api/v1/query", self._instant_form(promql, at_s, lookback_s), promql
        )
        judge_age = check_age and at_s is None and max_age_s is not None
        return await _decoded(
            body,
            functools.partial(
                parse_instant_response,
                status,
                body,
                query=promql,
                now_s=self._clock() if judge_age else None,
                max_sample_age_s=max_age_s if judge_age else None,
                origin=origin,
            ),
        )

    async def query_by_pod(
        self,
        promql: str,
        *,
        namespace_label: str,
        pod_label: str,
        lookback_delta_s: float | Literal["default"] | None = "default",
        asked_after_s: float | None = None,
        at_s: float | None = None,
    ) -> PodSamples:
        """Evaluate a grouped `promql` at `at_s` (server time now when None) and index its
        samples by (namespace, pod).

        No age is judged and no NaN dropped (see `PodSamples`). One answer covers every pod of
        the server, so it may be `GROUPED_RESPONSE_FACTOR` times the usual size limit. Always
        asked now, so `asked_after_s` (the shared layer's refresh bound) holds by construction.
        `at_s` reads the past, as a replay of a recorded trace does (`climatik.sim.trace`).
        """
        del asked_after_s
        asked_at_s = self._clock()
        lookback_s = (
            self._settings.max_sample_age_s if lookback_delta_s == "default" else lookback_delta_s
        )
        status, body, origin = await self._post(
            "api/v1/query",
            self._instant_form(promql, at_s, lookback_s),
            promql,
            max_bytes=self._settings.max_response_bytes * GROUPED_RESPONSE_FACTOR,
        )
        answer = await _decoded(
            body,
            functools.partial(
                parse_pod_response,
                status,
                body,
                query=promql,
                namespace_label=namespace_label,
                pod_label=pod_label,
                origin=origin,
            ),
        )
        return replace(answer, asked_at_s=asked_at_s)

    def _instant_form(
        self, promql: str, at_s: float | None, lookback_s: float | None
    ) -> dict[str, str]:
        form = {"query": promql, "timeout": _duration(server_timeout_s(self._settings.timeout_s))}
        if at_s is not None:
            form["time"] = f"{at_s:.3f}"
        if lookback_s is not None:
            form["lookback_delta"] = _duration(lookback_s)
        return form

    async def query_range(
        self,
        promql: str,
        *,
        start_s: float,
        end_s: float,
        step_s: float,
        lookback_delta_s: float | Literal["default"] | None = "default",
        grouped: bool = False,
    ) -> RangeResult:
        """Evaluate `promql` over `[start_s, end_s]` every `step_s` seconds. `grouped`: one
        answer for every pod of the server, allowed `GROUPED_RESPONSE_FACTOR` times the size."""
        if end_s < start_s:
            raise ValueError("end_s must not be before start_s")
        if step_s <= 0:
            raise ValueError("step_s must be positive")
        lookback_s = (
            self._settings.max_sample_age_s if lookback_delta_s == "default" else lookback_delta_s
        )
        form = {
            "query": promql,
            "start": f"{start_s:.3f}",
            "end": f"{end_s:.3f}",
            "step": _duration(step_s),
            "timeout": _duration(server_timeout_s(self._settings.timeout_s)),
        }
        if lookback_s is not None:
            form["lookback_delta"] = _duration(lookback_s)
        status, body, origin = await self._post(
            "api/v1/query_range",
            form,
            promql,
            max_bytes=(
                self._settings.max_response_bytes * GROUPED_RESPONSE_FACTOR if grouped else None
            ),
        )
        return await _decoded(
            body,
            functools.partial(parse_range_response, status, body, query=promql, origin=origin),
        )

    def _endpoint(self, path: str, promql: str) -> yarl.URL:
        try:
            base = self._settings.address_policy.validate(self._address)
        except AddressRejectedError as exc:
            raise PrometheusAddressRejectedError(str(exc), query=promql) from exc
        # Keep a path prefix (Prometheus behind `--web.route-prefix` or a proxy path).
        prefix = base.path.rstrip("/")
        return base.with_path(f"{prefix}/{path}")

    async def _post(
        self, path: str, form: dict[str, str], promql: str, *, max_bytes: int | None = None
    ) -> tuple[int, bytes, str]:
        """POST `form`; the answer's status, body, and `host:port` to name the server by."""
        # POST with a form body: long pod regexes would overflow URL limits in a GET.
        url = self._endpoint(path, promql)
        timeout_s = self._settings.timeout_s
        where = f"{url.scheme}://{url.host}:{url.port}"
        origin = f"{url.host}:{url.port}"
        try:
            async with asyncio.timeout(timeout_s):
                async with self._session.post(
                    url,
                    data=form,
                    timeout=aiohttp.ClientTimeout(total=timeout_s),
                    allow_redirects=False,
                    headers={"Accept": "application/json"},
                ) as response:
                    if 300 <= response.status < 400:
                        raise PrometheusHTTPError(
                            f"Prometheus at {where} answered with a redirect (HTTP "
                            f"{response.status}) to {_origin_of(response.headers.get('Location'))}"
                            "; configure the final address, redirects are not followed",
                            status=response.status,
                            query=promql,
                        )
                    body = await self._read_limited(response, promql, max_bytes)
                    return response.status, body, origin
        except TimeoutError as exc:
            raise PrometheusTimeoutError(
                f"Prometheus at {where} did not answer within {timeout_s:g} s", query=promql
            ) from exc
        except aiohttp.ClientResponseError as exc:
            raise PrometheusMalformedResponseError(
                f"Prometheus at {where} sent an invalid HTTP response: {exc.message}",
                query=promql,
            ) from exc
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            raise PrometheusUnreachableError(
                f"connection to Prometheus at {where} broke: {exc}", query=promql
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise PrometheusUnreachableError(
                f"cannot reach Prometheus at {where}: {exc}", query=promql
            ) from exc

    async def _read_limited(
        self, response: aiohttp.ClientResponse, promql: str, max_bytes: int | None
    ) -> bytes:
        limit = self._settings.max_response_bytes if max_bytes is None else max_bytes
        declared = response.content_length
        if declared is not None and declared > limit:
            raise PrometheusResponseTooLargeError(
                f"response of {declared} bytes exceeds the {limit}-byte limit", query=promql
            )
        chunks: list[bytes] = []
        total = 0
        async for chunk in response.content.iter_chunked(_READ_CHUNK_BYTES):
            total += len(chunk)
            if total > limit:
                raise PrometheusResponseTooLargeError(
                    f"response exceeds the {limit}-byte limit", query=promql
                )
            chunks.append(chunk)
        return b"".join(chunks)


def _origin_of(location: str | None) -> str:
    # Where a redirect points, without its path and query: those are another server's words
    # (a signed URL, a session), not something to copy into a status message.
    try:
        url = yarl.URL(location or "")
    except (ValueError, TypeError):
        return "an unreadable location"
    if not url.is_absolute() or url.host is None:
        return "another path on the same server"
    return f"{url.scheme}://{url.host}:{url.port}"
