"""Parse Prometheus HTTP API answers (`/api/v1/query`, `/api/v1/query_range`) into typed results.

A pure function of the response's status and body, so it is unit-tested without a server. The
author of a config chooses the address, so no message quotes an answer's body: only a Prometheus
API error (a documented `errorType`) is quoted, its `error` cleaned and cut to 200 characters;
any other failure reads `HTTP 503 from host:port (body not shown)`. Samples older than the
maximum age (judged with the caller's clock) are dropped, as are NaN and infinite ones, and
counted.
"""

from __future__ import annotations

import json
import math
from typing import Final

from climatik.sources.prometheus_results import (
    MAX_FUTURE_SKEW_S,
    InstantResult,
    Matrix,
    NoData,
    NoDataReason,
    PodKey,
    PodSamples,
    PrometheusHTTPError,
    PrometheusMalformedResponseError,
    RangeResult,
    Sample,
    Series,
    Vector,
    future_detail,
)


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
