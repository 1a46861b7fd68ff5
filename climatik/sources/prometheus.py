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
  Messages reach status conditions and Events that the config's author reads, and the author
  chooses the address: so no message ever carries an answer's body. Only a Prometheus API error
  (a documented `errorType`) is quoted, its `error` cleaned and cut to 200 characters; any other
  failure reads `HTTP 503 from host:port (body not shown)`.
- Prometheus is asked to give up on a query a little before our own deadline, so an expensive
  query comes back as Prometheus's `timeout` error (an answer), and a client-side timeout means
  the server itself did not answer.

Parsing is a pure function of the response (`parse_response`), so it is unit-tested without a
server. Staleness is enforced on both sides: the client sends `lookback_delta` so Prometheus
itself ignores raw samples older than the maximum age, and checks the returned timestamps.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final, Literal, TypeVar, assert_never

import aiohttp
import yarl

from climatik.sources.address import AddressPolicy, AddressRejectedError

DEFAULT_TIMEOUT_S: Final = 10.0
DEFAULT_MAX_RESPONSE_BYTES: Final = 8 * 1024 * 1024
GROUPED_RESPONSE_FACTOR: Final = 4
"""A grouped answer (`query_by_pod`) covers every pod of the server: at about 100 bytes a pod,
4 x 8 MiB holds some 300,000 pods."""
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
    IMPLAUSIBLE = "Implausible"
    """A finite value no real system produces (negative watts, more than the servers can
    draw): measurements are untrusted input, so it is no data rather than a decision."""


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
            NoDataReason.IMPLAUSIBLE: "returned an implausible value",
        }[self.reason]
        suffix = f" ({self.detail})" if self.detail else ""
        return f"query {self.query!r} {base}{suffix}"


InstantResult = Vector | NoData
RangeResult = Matrix | NoData

PodKey = tuple[str, str]
"""(namespace, pod)."""


@dataclass(frozen=True, slots=True)
class PodSamples:
    """A grouped instant result (`sum by (namespace_label, pod_label) (...)`) indexed by pod.

    Unlike a `Vector` it keeps NaN and infinite samples (a caller summing one target's pods must
    know that one of *them* is unusable) and judges no age (each caller judges its own pods with
    its own clock, which is what lets one answer serve many callers). Samples lacking either
    label belong to no pod and are left out.
    """

    query: str
    by_pod: Mapping[PodKey, tuple[Sample, ...]]
    asked_at_s: float = 0.0
    """When the question was sent (wall clock): an answer asked before a pod's first samples
    cannot hold them, however young it is."""

    def of(self, namespace: str, pods: Sequence[str]) -> list[Sample]:
        """The samples of `pods` in `namespace`, and of nothing else."""
        found: list[Sample] = []
        for pod in pods:
            found.extend(self.by_pod.get((namespace, pod), ()))
        return found


# --------------------------------------------------------------------------------------------
# Parsing (pure)


def _parse_value(raw: object, query: str) -> float:
    # Prometheus encodes sample values as strings ("1.5", "NaN", "+Inf", "-Inf"). Messages name
    # no part of the answer: whoever chose the address must not read other services' answers.
    if not isinstance(raw, str):
        raise PrometheusMalformedResponseError("a sample value is not a string", query=query)
    try:
        return float(raw)
    except ValueError as exc:
        raise PrometheusMalformedResponseError(
            "a sample value is not a number", query=query
        ) from exc


def _parse_point(raw: object, query: str) -> tuple[float, float]:
    if not isinstance(raw, list) or len(raw) != 2:
        raise PrometheusMalformedResponseError("a sample is not [time, value]", query=query)
    ts, value = raw
    # json.loads reads NaN and Infinity too: a time must be a finite number (grids and ages
    # are computed from it).
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise PrometheusMalformedResponseError("a sample time is not a number", query=query)
    return float(ts), _parse_value(value, query)


def _parse_labels(raw: object, query: str) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise PrometheusMalformedResponseError("a series' labels are not a map", query=query)
    return dict(raw)


def _classify(value: float) -> NoDataReason | None:
    if math.isnan(value):
        return NoDataReason.NAN
    if math.isinf(value):
        return NoDataReason.INFINITE
    return None


# Prometheus's documented API error types (`errorType`); only these are quoted in messages.
PROMETHEUS_ERROR_TYPES: Final = frozenset(
    {
        "bad_data",
        "execution",
        "timeout",
        "canceled",
        "internal",
        "unavailable",
        "not_found",
        "not_acceptable",
    }
)
MAX_QUOTED_ERROR_CHARS: Final = 200


def _clean(text: str, limit: int = MAX_QUOTED_ERROR_CHARS) -> str:
    """Printable characters only (no newlines or escapes to forge log lines), at most `limit`."""
    printable = "".join(c if c.isprintable() else " " for c in text).strip()
    return printable if len(printable) <= limit else printable[: limit - 1] + "…"


def _body_not_shown(status: int, origin: str, query: str) -> PrometheusHTTPError:
    return PrometheusHTTPError(
        f"HTTP {status} from {origin} (body not shown)", status=status, query=query
    )


def _envelope(status: int, body: bytes, query: str, origin: str) -> object:
    """Check the JSON envelope and return its `data`, raising the typed error for failures.

    `origin` (`host:port`) names the server in messages; the body is never quoted, except the
    `error` of a Prometheus API error with a documented `errorType`.
    """
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        if status >= 400:
            raise _body_not_shown(status, origin, query) from None
        raise PrometheusMalformedResponseError(
            f"the answer from {origin} is not JSON (body not shown)", query=query
        ) from None
    if not isinstance(document, dict):
        if status >= 400:
            raise _body_not_shown(status, origin, query)
        raise PrometheusMalformedResponseError("response is not a JSON object", query=query)
    if document.get("status") == "error" or status >= 400:
        error_type = document.get("errorType")
        error = document.get("error")
        if (
            document.get("status") != "error"
            or not isinstance(error_type, str)
            or error_type not in PROMETHEUS_ERROR_TYPES
        ):
            raise _body_not_shown(status, origin, query)
        cleaned = _clean(error) if isinstance(error, str) else None
        raise PrometheusHTTPError(
            f"Prometheus refused query {query!r} (HTTP {status}): "
            f"{error_type}: {cleaned or 'no error message'}",
            status=status,
            error_type=error_type,
            error=cleaned,
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


def _instant_samples(
    status: int, body: bytes, query: str, origin: str
) -> list[tuple[dict[str, str], tuple[float, float]]]:
    """Every sample of an instant answer, as labels and (time, value), NaN and all."""
    result_type, result = _result_of(_envelope(status, body, query, origin), query)
    if result_type == "scalar":
        return [({}, _parse_point(result, query))]
    if result_type != "vector":
        raise PrometheusMalformedResponseError(
            f"instant query returned a {result_type[:20]}, expected a vector or scalar",
            query=query,
        )
    if not isinstance(result, list):
        raise PrometheusMalformedResponseError("vector result is not a list", query=query)
    samples = []
    for element in result:
        if not isinstance(element, dict) or "value" not in element:
            # Native-histogram samples carry "histogram" instead of "value": not a number
            # we can use for power or tokens.
            raise PrometheusMalformedResponseError(
                "a vector element has no scalar value", query=query
            )
        labels = _parse_labels(element.get("metric", {}), query)
        samples.append((labels, _parse_point(element["value"], query)))
    return samples


def parse_instant_response(
    status: int,
    body: bytes,
    *,
    query: str,
    now_s: float | None = None,
    max_sample_age_s: float | None = None,
    origin: str = "Prometheus",
) -> InstantResult:
    """Turn an `/api/v1/query` response into a `Vector` or `NoData` (or raise).

    A scalar result becomes a one-sample vector with no labels. Samples that are NaN, infinite,
    or (when `now_s` and `max_sample_age_s` are given) older than the maximum age are dropped;
    when nothing remains the result is `NoData` naming why.
    """
    raw_samples = _instant_samples(status, body, query, origin)
    if not raw_samples:
        return NoData(NoDataReason.EMPTY, query)

    kept: list[Sample] = []
    reasons: list[NoDataReason] = []
    oldest_age_s = 0.0
    ahead_s = 0.0
    for labels, (ts, value) in raw_samples:
        bad = _classify(value)
        if bad is None and now_s is not None and max_sample_age_s is not None:
            age_s = now_s - ts
            if age_s > max_sample_age_s:
                bad = NoDataReason.STALE
                oldest_age_s = max(oldest_age_s, age_s)
            elif -age_s > MAX_FUTURE_SKEW_S:
                # A sample from the future would stay "fresh" for ever after its source died.
                bad = NoDataReason.IMPLAUSIBLE
                ahead_s = max(ahead_s, -age_s)
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
    elif reason is NoDataReason.IMPLAUSIBLE:
        detail = future_detail(ahead_s)
    return NoData(reason, query, detail)


def parse_range_response(
    status: int, body: bytes, *, query: str, origin: str = "Prometheus"
) -> RangeResult:
    """Turn an `/api/v1/query_range` response into a `Matrix` or `NoData` (or raise)."""
    result_type, result = _result_of(_envelope(status, body, query, origin), query)
    if result_type != "matrix":
        raise PrometheusMalformedResponseError(
            f"range query returned a {result_type[:20]}, expected a matrix", query=query
        )
    if not isinstance(result, list):
        raise PrometheusMalformedResponseError("matrix result is not a list", query=query)
    series: list[Series] = []
    dropped = 0
    reasons: list[NoDataReason] = []
    for element in result:
        if not isinstance(element, dict):
            raise PrometheusMalformedResponseError("a matrix element is not an object", query=query)
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


def parse_pod_response(
    status: int,
    body: bytes,
    *,
    query: str,
    namespace_label: str,
    pod_label: str,
    origin: str = "Prometheus",
) -> PodSamples:
    """Turn a grouped `/api/v1/query` response into `PodSamples` (or raise)."""
    by_pod: dict[PodKey, list[Sample]] = {}
    for labels, (ts, value) in _instant_samples(status, body, query, origin):
        namespace, pod = labels.get(namespace_label), labels.get(pod_label)
        if namespace and pod:
            by_pod.setdefault((namespace, pod), []).append(Sample(labels, value, ts))
    return PodSamples(query=query, by_pod={k: tuple(v) for k, v in by_pod.items()})


def apply_max_age(
    result: InstantResult, *, query: str, now_s: float, max_sample_age_s: float
) -> InstantResult:
    """`result` without the samples older than the maximum age, judged at `now_s`.

    For answers kept for a while (`climatik.sources.prometheus_pool`): each caller judges the
    age with its own clock, as `parse_instant_response` does for a fresh answer.
    """
    if isinstance(result, NoData):
        return result
    kept = tuple(
        s for s in result.samples if -MAX_FUTURE_SKEW_S <= now_s - s.timestamp_s <= max_sample_age_s
    )
    if len(kept) == len(result.samples):
        return result
    if kept:
        return Vector(samples=kept, dropped=result.dropped + len(result.samples) - len(kept))
    ahead_s = max(s.timestamp_s - now_s for s in result.samples)
    if ahead_s > MAX_FUTURE_SKEW_S:
        return NoData(NoDataReason.IMPLAUSIBLE, query, future_detail(ahead_s))
    oldest_age_s = max(now_s - s.timestamp_s for s in result.samples)
    return NoData(
        NoDataReason.STALE,
        query,
        f"newest sample is {oldest_age_s:.0f} s old, maximum {max_sample_age_s:g} s",
    )


OFF_LOOP_PARSE_BYTES: Final = 256 * 1024
"""Answers larger than this are decoded in a worker thread: tens of megabytes of JSON parsed on
the event loop would stall every controller (and the lease renewal) meanwhile."""

_Parsed = TypeVar("_Parsed")


async def _decoded(body: bytes, parse: Callable[[], _Parsed]) -> _Parsed:
    if len(body) > OFF_LOOP_PARSE_BYTES:
        return await asyncio.to_thread(parse)
    return parse()


MAX_FUTURE_SKEW_S: Final = 60.0
"""How far ahead of our clock a sample time may be (clock skew); beyond it the sample is
implausible: a source stamping the future would keep its readings fresh after it died."""


def future_detail(ahead_s: float) -> str:
    return (
        f"sample time {ahead_s:.0f} s ahead of the controller's clock "
        f"(at most {MAX_FUTURE_SKEW_S:g} s of skew is accepted)"
    )


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
    ) -> PodSamples:
        """Evaluate a grouped `promql` now and index its samples by (namespace, pod).

        No age is judged and no NaN dropped (see `PodSamples`). One answer covers every pod of
        the server, so it may be `GROUPED_RESPONSE_FACTOR` times the usual size limit. Always
        asked now, so `asked_after_s` (the shared layer's refresh bound) holds by construction.
        """
        del asked_after_s
        asked_at_s = self._clock()
        lookback_s = (
            self._settings.max_sample_age_s if lookback_delta_s == "default" else lookback_delta_s
        )
        status, body, origin = await self._post(
            "api/v1/query",
            self._instant_form(promql, None, lookback_s),
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
