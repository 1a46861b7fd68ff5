"""Parsing Prometheus API responses: typed results, "no data" never zero, typed errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from climatik.sources.prometheus import (
    Matrix,
    NoData,
    NoDataReason,
    PrometheusHTTPError,
    PrometheusMalformedResponseError,
    Sample,
    Vector,
    describe,
    parse_instant_response,
    parse_range_response,
)

Q = "sum(x)"


def body(document: Any) -> bytes:
    return json.dumps(document).encode()


def vector(*samples: tuple[dict[str, str], float, str]) -> bytes:
    return body(
        {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [{"metric": m, "value": [ts, v]} for m, ts, v in samples],
            },
        }
    )


def test_vector_samples_are_typed() -> None:
    result = parse_instant_response(
        200, vector(({"pod": "a"}, 1000.5, "12.5"), ({"pod": "b"}, 1000.5, "0")), query=Q
    )
    assert isinstance(result, Vector)
    assert [(dict(s.labels), s.value, s.timestamp_s) for s in result.samples] == [
        ({"pod": "a"}, 12.5, 1000.5),
        ({"pod": "b"}, 0.0, 1000.5),
    ]
    assert result.dropped == 0


def test_a_real_zero_is_data() -> None:
    result = parse_instant_response(200, vector(({}, 1.0, "0")), query=Q)
    assert isinstance(result, Vector)
    assert result.single_value() == 0.0


def test_empty_vector_is_no_data_not_zero() -> None:
    result = parse_instant_response(200, vector(), query=Q)
    assert result == NoData(NoDataReason.EMPTY, Q)
    assert "returned no series" in result.message


@pytest.mark.parametrize(
    ("raw", "reason"),
    [("NaN", NoDataReason.NAN), ("+Inf", NoDataReason.INFINITE), ("-Inf", NoDataReason.INFINITE)],
)
def test_special_values_are_no_data(raw: str, reason: NoDataReason) -> None:
    result = parse_instant_response(200, vector(({}, 1.0, raw)), query=Q)
    assert isinstance(result, NoData)
    assert result.reason is reason


def test_bad_samples_are_dropped_and_counted() -> None:
    result = parse_instant_response(
        200, vector(({"pod": "a"}, 1.0, "NaN"), ({"pod": "b"}, 1.0, "3")), query=Q
    )
    assert isinstance(result, Vector)
    assert [s.value for s in result.samples] == [3.0]
    assert result.dropped == 1


def test_samples_older_than_max_age_are_stale() -> None:
    result = parse_instant_response(
        200, vector(({}, 1000.0, "5")), query=Q, now_s=1200.0, max_sample_age_s=120.0
    )
    assert isinstance(result, NoData)
    assert result.reason is NoDataReason.STALE
    assert "200 s old" in result.message


def test_samples_within_max_age_are_kept() -> None:
    result = parse_instant_response(
        200, vector(({}, 1000.0, "5")), query=Q, now_s=1119.0, max_sample_age_s=120.0
    )
    assert isinstance(result, Vector)


def test_scalar_becomes_one_unlabelled_sample() -> None:
    raw = body({"status": "success", "data": {"resultType": "scalar", "result": [5.0, "2"]}})
    result = parse_instant_response(200, raw, query=Q)
    assert isinstance(result, Vector)
    assert result.single_value() == 2.0
    assert dict(result.samples[0].labels) == {}


def test_bad_query_carries_prometheus_error_type_and_message() -> None:
    raw = body(
        {
            "status": "error",
            "errorType": "bad_data",
            "error": 'invalid parameter "query": 1:5: parse error: unexpected "}"',
        }
    )
    with pytest.raises(PrometheusHTTPError) as caught:
        parse_instant_response(400, raw, query="sum(}")
    error = caught.value
    assert error.status == 400
    assert error.error_type == "bad_data"
    assert error.error is not None
    assert "parse error" in error.error
    assert error.reason == "PrometheusQueryFailed"
    assert "bad_data" in error.message
    assert "sum(}" in error.message


def test_proxy_error_page_is_an_http_error() -> None:
    with pytest.raises(PrometheusHTTPError, match=r"HTTP 502.*Bad Gateway") as caught:
        parse_instant_response(502, b"<html>Bad Gateway</html>", query=Q)
    assert caught.value.error_type is None


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        body({"status": "success"}),
        body({"status": "success", "data": {"resultType": "vector"}}),
        body({"status": "success", "data": {"resultType": "vector", "result": {}}}),
        body({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}}),
        body(
            {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, 2]}]},
            }
        ),
        body(
            {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "x"]}]},
            }
        ),
        body({"status": "success", "data": {"resultType": "string", "result": [1, "s"]}}),
        body({"status": "success", "data": {"resultType": "matrix", "result": []}}),
    ],
)
def test_malformed_responses_are_typed_errors(raw: bytes) -> None:
    with pytest.raises(PrometheusMalformedResponseError):
        parse_instant_response(200, raw, query=Q)


def matrix(*series: tuple[dict[str, str], list[tuple[float, str]]]) -> bytes:
    return body(
        {
            "status": "success",
            "data": {
                "resultType": "matrix",
                "result": [{"metric": m, "values": [[t, v] for t, v in pts]} for m, pts in series],
            },
        }
    )


def test_matrix_series_keep_finite_points() -> None:
    result = parse_range_response(
        200,
        matrix(({"pod": "a"}, [(1.0, "1"), (2.0, "NaN"), (3.0, "3")]), ({"pod": "b"}, [])),
        query=Q,
    )
    assert isinstance(result, Matrix)
    assert len(result.series) == 1
    assert result.series[0].points == ((1.0, 1.0), (3.0, 3.0))
    assert result.dropped_points == 1


def test_matrix_with_only_nan_is_no_data() -> None:
    result = parse_range_response(200, matrix(({}, [(1.0, "NaN")])), query=Q)
    assert isinstance(result, NoData)
    assert result.reason is NoDataReason.NAN


def test_empty_matrix_is_no_data() -> None:
    result = parse_range_response(200, matrix(), query=Q)
    assert isinstance(result, NoData)
    assert result.reason is NoDataReason.EMPTY


def test_range_query_returning_vector_is_malformed() -> None:
    with pytest.raises(PrometheusMalformedResponseError):
        parse_range_response(200, vector(({}, 1.0, "1")), query=Q)


def test_describe_covers_each_outcome() -> None:
    sample = Sample(labels={}, value=1.0, timestamp_s=1.0)
    assert describe(Vector(samples=(sample,), dropped=1)) == "1 sample(s), 1 dropped"
    assert describe(Matrix(series=(), dropped_points=2)) == "0 series, 2 point(s) dropped"
    assert describe(NoData(NoDataReason.NAN, Q)) == "query 'sum(x)' returned NaN"
    assert describe(PrometheusHTTPError("boom", status=500)) == "boom"
