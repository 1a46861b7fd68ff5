"""A small, strict client for the Prometheus HTTP API (`/api/v1/query`, `/api/v1/query_range`).

Why our own: the controller needs exactly two endpoints, and it needs them with guarantees that
general clients do not give together:

- every request runs under a deadline (`asyncio.timeout` around the whole exchange, and the
  same deadline as aiohttp's `ClientTimeout` and Prometheus's own `timeout` parameter), and the
  body is read up to a size limit, so a slow or hostile server cannot stall or exhaust us;
- the configured address is validated at request time (`AddressPolicy`) and redirects are
  not followed;
- results are typed: an instant query yields a `Vector` or `NoData`; `NaN`, `±Inf`, an empty
  result and samples older than the configured age are `NoData` with a reason, never zero;
- failures are typed `PrometheusError`s with a `reason` (a status-condition reason) and a
  message that says what to fix, including Prometheus's own `errorType`/`error` for a bad query.

Parsing is a pure function of the response (`parse_response`), so it is unit-tested without a
server. Staleness is enforced on both sides: the client sends `lookback_delta` so Prometheus
itself ignores raw samples older than the maximum age, and checks the returned timestamps.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Literal, assert_never

import aiohttp
import yarl

from climatik.sources.address import AddressPolicy, AddressRejectedError

DEFAULT_TIMEOUT_S: Final = 10.0
DEFAULT_MAX_RESPONSE_BYTES: Final = 8 * 1024 * 1024
_READ_CHUNK_BYTES: Final = 64 * 1024

Labels = Mapping[str, str]


# --------------------------------------------------------------------------------------------
# Errors


class PrometheusError(Exception):
    """A query could not be answered. `reason` is CamelCase, ready for a status condition."""

    reason: str = "PrometheusError"

    def __init__(self, message: str, *, query: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.query = query

    def __str__(self) -> str:
        return self.message


class PrometheusAddressRejectedError(PrometheusError):
    """The configured address is refused by the address policy (scheme, metadata, allow-list)."""

    reason = "PrometheusAddressRejected"


class PrometheusUnreachableError(PrometheusError):
    """No HTTP exchange happened: connection refused, DNS failure, TLS failure, reset."""

    reason = "PrometheusUnreachable"


class PrometheusTimeoutError(PrometheusError):
    """The exchange did not finish within the deadline."""

    reason = "PrometheusTimeout"


class PrometheusHTTPError(PrometheusError):
    """Prometheus (or a proxy in front of it) answered with an error status.

    For API errors `error_type` and `error` are Prometheus's own (`bad_data` with the parser's
    message for a bad query, `execution`, `timeout`, ...).
    """

    reason = "PrometheusQueryFailed"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error_type: str | None = None,
        error: str | None = None,
        query: str | None = None,
    ) -> None:
        super().__init__(message, query=query)
        self.status = status
        self.error_type = error_type
        self.error = error


class PrometheusMalformedResponseError(PrometheusError):
    """The answer is not a Prometheus API response we understand."""

    reason = "PrometheusMalformedResponse"


class PrometheusResponseTooLargeError(PrometheusMalformedResponseError):
    """The body exceeded the configured size limit; narrow the query or raise the limit."""

    reason = "PrometheusResponseTooLarge"


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True, slots=True)
class Sample:
    """One instant-vector element: its labels, value and timestamp (Unix seconds)."""

    labels: Labels
    value: float
    timestamp_s: float


@dataclass(frozen=True, slots=True)
class Vector:
    """A usable instant result: only finite, fresh samples. `dropped` counts the samples left
    out (NaN, infinite or stale) so a caller can tell a partial answer from a whole one."""

    samples: tuple[Sample, ...]
    dropped: int = 0

    def single_value(self) -> float:
        """The value of a one-element result (an aggregated query)."""
        if len(self.samples) != 1:
            raise ValueError(f"expected one sample, got {len(self.samples)}")
        return self.samples[0].value


@dataclass(frozen=True, slots=True)
class Series:
    """One range-vector series: its labels and finite `(timestamp_s, value)` points in order."""

    labels: Labels
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class Matrix:
    """A usable range result; series left with no finite point are dropped and counted."""

    series: tuple[Series, ...]
    dropped_points: int = 0


class NoDataReason(StrEnum):
    EMPTY = "Empty"
    NAN = "NaN"
    INFINITE = "Infinite"
    STALE = "Stale"


@dataclass(frozen=True, slots=True)
class NoData:
    """The query ran but gave nothing usable. This is not zero: callers hold their decision."""

    reason: NoDataReason
    query: str
    detail: str = ""

    @property
    def message(self) -> str:
        base = {
            NoDataReason.EMPTY: "returned no series",
            NoDataReason.NAN: "returned NaN",
            NoDataReason.INFINITE: "returned an infinite value",
            NoDataReason.STALE: "returned only samples older than the maximum age",
        }[self.reason]
        suffix = f" ({self.detail})" if self.detail else ""
        return f"query {self.query!r} {base}{suffix}"


InstantResult = Vector | NoData
RangeResult = Matrix | NoData


# --------------------------------------------------------------------------------------------
# Parsing (pure)


def _parse_value(raw: object, query: str) -> float:
    # Prometheus encodes sample values as strings ("1.5", "NaN", "+Inf", "-Inf").
    if not isinstance(raw, str):
        raise PrometheusMalformedResponseError(f"sample value {raw!r} is not a string", query=query)
    try:
        return float(raw)
    except ValueError as exc:
        raise PrometheusMalformedResponseError(
            f"sample value {raw!r} is not a number", query=query
        ) from exc


def _parse_point(raw: object, query: str) -> tuple[float, float]:
    if not isinstance(raw, list) or len(raw) != 2:
        raise PrometheusMalformedResponseError(f"sample {raw!r} is not [time, value]", query=query)
    ts, value = raw
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise PrometheusMalformedResponseError(f"timestamp {ts!r} is not a number", query=query)
    return float(ts), _parse_value(value, query)


def _parse_labels(raw: object, query: str) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise PrometheusMalformedResponseError(f"labels {raw!r} are not a map", query=query)
    return dict(raw)


def _classify(value: float) -> NoDataReason | None:
    if math.isnan(value):
        return NoDataReason.NAN
    if math.isinf(value):
        return NoDataReason.INFINITE
    return None


def _envelope(status: int, body: bytes, query: str) -> object:
    """Check the JSON envelope and return its `data`, raising the typed error for failures."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        if status >= 400:
            snippet = body[:200].decode("utf-8", "replace").strip()
            raise PrometheusHTTPError(
                f"HTTP {status} from Prometheus: {snippet or 'empty body'}",
                status=status,
                query=query,
            ) from exc
        raise PrometheusMalformedResponseError(f"response is not JSON: {exc}", query=query) from exc
    if not isinstance(document, dict):
        raise PrometheusMalformedResponseError("response is not a JSON object", query=query)
    if document.get("status") == "error" or status >= 400:
        error_type = document.get("errorType")
        error = document.get("error")
        detail = f"{error_type}: {error}" if error_type or error else "no error message"
        raise PrometheusHTTPError(
            f"Prometheus refused query {query!r} (HTTP {status}): {detail}",
            status=status,
            error_type=str(error_type) if error_type is not None else None,
            error=str(error) if error is not None else None,
            query=query,
        )
    if document.get("status") != "success" or "data" not in document:
        raise PrometheusMalformedResponseError(
            "response has neither status=success with data nor an error", query=query
        )
    return document["data"]


def _result_of(data: object, query: str) -> tuple[str, object]:
    if not isinstance(data, dict):
        raise PrometheusMalformedResponseError("data is not an object", query=query)
    result_type = data.get("resultType")
    if not isinstance(result_type, str) or "result" not in data:
        raise PrometheusMalformedResponseError("data lacks resultType or result", query=query)
    return result_type, data["result"]


def parse_instant_response(
    status: int,
    body: bytes,
    *,
    query: str,
    now_s: float | None = None,
    max_sample_age_s: float | None = None,
) -> InstantResult:
    """Turn an `/api/v1/query` response into a `Vector` or `NoData` (or raise).

    A scalar result becomes a one-sample vector with no labels. Samples that are NaN, infinite,
    or (when `now_s` and `max_sample_age_s` are given) older than the maximum age are dropped;
    when nothing remains the result is `NoData` naming why.
    """
    result_type, result = _result_of(_envelope(status, body, query), query)
    raw_samples: list[tuple[dict[str, str], tuple[float, float]]]
    if result_type == "vector":
        if not isinstance(result, list):
            raise PrometheusMalformedResponseError("vector result is not a list", query=query)
        raw_samples = []
        for element in result:
            if not isinstance(element, dict) or "value" not in element:
                # Native-histogram samples carry "histogram" instead of "value": not a number
                # we can use for power or tokens.
                raise PrometheusMalformedResponseError(
                    f"vector element {element!r} has no scalar value", query=query
                )
            labels = _parse_labels(element.get("metric", {}), query)
            raw_samples.append((labels, _parse_point(element["value"], query)))
    elif result_type == "scalar":
        raw_samples = [({}, _parse_point(result, query))]
    else:
        raise PrometheusMalformedResponseError(
            f"instant query returned a {result_type}, expected a vector or scalar", query=query
        )
    if not raw_samples:
        return NoData(NoDataReason.EMPTY, query)

    kept: list[Sample] = []
    reasons: list[NoDataReason] = []
    oldest_age_s = 0.0
    for labels, (ts, value) in raw_samples:
        bad = _classify(value)
        if bad is None and now_s is not None and max_sample_age_s is not None:
            age_s = now_s - ts
            if age_s > max_sample_age_s:
                bad = NoDataReason.STALE
                oldest_age_s = max(oldest_age_s, age_s)
        if bad is None:
            kept.append(Sample(labels=labels, value=value, timestamp_s=ts))
        else:
            reasons.append(bad)
    if kept:
        return Vector(samples=tuple(kept), dropped=len(reasons))
    reason = reasons[0]
    detail = ""
    if reason is NoDataReason.STALE:
        detail = f"newest sample is {oldest_age_s:.0f} s old, maximum {max_sample_age_s:g} s"
    return NoData(reason, query, detail)


def parse_range_response(status: int, body: bytes, *, query: str) -> RangeResult:
    """Turn an `/api/v1/query_range` response into a `Matrix` or `NoData` (or raise)."""
    result_type, result = _result_of(_envelope(status, body, query), query)
    if result_type != "matrix":
        raise PrometheusMalformedResponseError(
            f"range query returned a {result_type}, expected a matrix", query=query
        )
    if not isinstance(result, list):
        raise PrometheusMalformedResponseError("matrix result is not a list", query=query)
    series: list[Series] = []
    dropped = 0
    reasons: list[NoDataReason] = []
    for element in result:
        if not isinstance(element, dict):
            raise PrometheusMalformedResponseError("matrix element is not an object", query=query)
        labels = _parse_labels(element.get("metric", {}), query)
        raw_points = element.get("values", [])
        if not isinstance(raw_points, list):
            raise PrometheusMalformedResponseError("series values are not a list", query=query)
        points: list[tuple[float, float]] = []
        for raw in raw_points:
            ts, value = _parse_point(raw, query)
            bad = _classify(value)
            if bad is None:
                points.append((ts, value))
            else:
                dropped += 1
                reasons.append(bad)
        if points:
            series.append(Series(labels=labels, points=tuple(points)))
    if series:
        return Matrix(series=tuple(series), dropped_points=dropped)
    return NoData(reasons[0] if reasons else NoDataReason.EMPTY, query)


# --------------------------------------------------------------------------------------------
# Client


def _duration(seconds: float) -> str:
    # Whole milliseconds: every Prometheus version parses `1500ms`, while fractional duration
    # strings such as `1.5s` are refused by 2.x.
    return f"{max(1, round(seconds * 1000))}ms"


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
        form = {"query": promql, "timeout": _duration(self._settings.timeout_s)}
        if at_s is not None:
            form["time"] = f"{at_s:.3f}"
        if lookback_s is not None:
            form["lookback_delta"] = _duration(lookback_s)
        status, body = await self._post("api/v1/query", form, promql)
        judge_age = check_age and at_s is None and max_age_s is not None
        return parse_instant_response(
            status,
            body,
            query=promql,
            now_s=self._clock() if judge_age else None,
            max_sample_age_s=max_age_s if judge_age else None,
        )

    async def query_range(
        self,
        promql: str,
        *,
        start_s: float,
        end_s: float,
        step_s: float,
        lookback_delta_s: float | Literal["default"] | None = "default",
    ) -> RangeResult:
        """Evaluate `promql` over `[start_s, end_s]` every `step_s` seconds."""
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
            "timeout": _duration(self._settings.timeout_s),
        }
        if lookback_s is not None:
            form["lookback_delta"] = _duration(lookback_s)
        status, body = await self._post("api/v1/query_range", form, promql)
        return parse_range_response(status, body, query=promql)

    def _endpoint(self, path: str, promql: str) -> yarl.URL:
        try:
            base = self._settings.address_policy.validate(self._address)
        except AddressRejectedError as exc:
            raise PrometheusAddressRejectedError(str(exc), query=promql) from exc
        # Keep a path prefix (Prometheus behind `--web.route-prefix` or a proxy path).
        prefix = base.path.rstrip("/")
        return base.with_path(f"{prefix}/{path}")

    async def _post(self, path: str, form: dict[str, str], promql: str) -> tuple[int, bytes]:
        # POST with a form body: long pod regexes would overflow URL limits in a GET.
        url = self._endpoint(path, promql)
        timeout_s = self._settings.timeout_s
        where = f"{url.scheme}://{url.host}:{url.port}"
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
                            f"{response.status}) to {response.headers.get('Location', '?')}; "
                            "configure the final address, redirects are not followed",
                            status=response.status,
                            query=promql,
                        )
                    body = await self._read_limited(response, promql)
                    return response.status, body
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

    async def _read_limited(self, response: aiohttp.ClientResponse, promql: str) -> bytes:
        limit = self._settings.max_response_bytes
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


def describe(outcome: InstantResult | RangeResult | PrometheusError) -> str:
    """One line for logs and status messages, whatever the outcome."""
    match outcome:
        case Vector(samples=samples, dropped=dropped):
            return f"{len(samples)} sample(s), {dropped} dropped"
        case Matrix(series=series, dropped_points=dropped):
            return f"{len(series)} series, {dropped} point(s) dropped"
        case NoData():
            return outcome.message
        case PrometheusError():
            return outcome.message
        case _:
            assert_never(outcome)
