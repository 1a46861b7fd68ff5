"""Parsing Prometheus API responses: typed results, "no data" never zero, typed errors."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from climatik.sources.prometheus_parse import (
    PROMETHEUS_ERROR_TYPES,
    apply_max_age,
    parse_instant_response,
    parse_pod_response,
    parse_range_response,
)
from climatik.sources.prometheus_results import (
    InstantResult,
    Matrix,
    NoData,
    NoDataReason,
    PrometheusError,
    PrometheusHTTPError,
    PrometheusMalformedResponseError,
    Sample,
    Vector,
    describe,
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


def test_samples_from_the_future_are_implausible() -> None:
    """A source stamping its samples ahead of our clock would stay fresh for ever after it died;
    a minute of clock skew is tolerated."""
    ahead = parse_instant_response(
        200, vector(({}, 1500.0, "5")), query=Q, now_s=1200.0, max_sample_age_s=120.0
    )
    assert isinstance(ahead, NoData)
    assert ahead.reason is NoDataReason.IMPLAUSIBLE
    assert "300 s ahead" in ahead.message
    skewed = parse_instant_response(
        200, vector(({}, 1230.0, "5")), query=Q, now_s=1200.0, max_sample_age_s=120.0
    )
    assert isinstance(skewed, Vector)
    kept = apply_max_age(
        Vector(samples=(Sample(labels={}, value=1.0, timestamp_s=1500.0),)),
        query=Q,
        now_s=1200.0,
        max_sample_age_s=120.0,
    )
    assert isinstance(kept, NoData)
    assert kept.reason is NoDataReason.IMPLAUSIBLE


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


def test_proxy_error_page_is_an_http_error_without_its_body() -> None:
    page = b"<html>Bad Gateway; upstream secret-token-42</html>"
    with pytest.raises(PrometheusHTTPError) as caught:
        parse_instant_response(502, page, query=Q, origin="10.0.0.9:8080")
    assert caught.value.message == "HTTP 502 from 10.0.0.9:8080 (body not shown)"
    assert caught.value.error_type is None


@pytest.mark.parametrize(
    ("status", "document"),
    [
        (500, {"token": "secret-token-42"}),
        (500, ["secret-token-42"]),
        (503, {"status": "error", "errorType": "vault", "error": "secret-token-42"}),
        (200, {"status": "error", "errorType": "vault", "error": "secret-token-42"}),
        (404, {"status": "success", "data": "secret-token-42"}),
    ],
)
def test_json_that_is_not_a_prometheus_error_is_not_quoted(status: int, document: Any) -> None:
    with pytest.raises(PrometheusHTTPError) as caught:
        parse_instant_response(status, body(document), query=Q, origin="vault:8200")
    assert caught.value.message == f"HTTP {status} from vault:8200 (body not shown)"
    assert caught.value.error is None


def test_prometheus_error_is_cleaned_and_cut_to_200_characters() -> None:
    error = "parse error\n\x1b[31mforged log line\r\n" + "x" * 1000
    raw = body({"status": "error", "errorType": "bad_data", "error": error})
    with pytest.raises(PrometheusHTTPError) as caught:
        parse_instant_response(400, raw, query=Q)
    cleaned = caught.value.error
    assert cleaned is not None
    assert len(cleaned) <= 200
    assert cleaned.startswith("parse error")
    assert cleaned.isprintable()
    assert caught.value.message.isprintable()
    assert "x" * 200 not in caught.value.message


_TOKEN = "zq-secret-7f3a"
_JSON_LEAF = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
_JSON = st.recursive(
    _JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    status=st.integers(min_value=200, max_value=599),
    document=st.dictionaries(
        st.sampled_from(["status", "errorType", "error", "data", "message", "x"]), _JSON
    ),
    where=st.sampled_from(["status", "errorType", "error", "data", "message", "x"]),
    prometheus_status=st.sampled_from(["error", "success", None]),
    error_type=st.sampled_from([*sorted(PROMETHEUS_ERROR_TYPES), "vault", None]),
)
def test_no_message_quotes_an_answer_except_a_prometheus_api_error(
    status: int,
    document: dict[str, Any],
    where: str,
    prometheus_status: str | None,
    error_type: str | None,
) -> None:
    """Whatever a server answers, a message quotes it only as Prometheus's own `error` of a
    documented `errorType` (the one thing a config author is meant to read)."""
    document = {**document, where: f"before {_TOKEN} after"}
    if prometheus_status is not None and where != "status":
        document["status"] = prometheus_status
    if error_type is not None and where != "errorType":
        document["errorType"] = error_type
    raw = json.dumps(document).encode()
    outcome: InstantResult | PrometheusError
    try:
        outcome = parse_instant_response(status, raw, query=Q, origin="svc:80")
    except PrometheusError as error:
        outcome = error
    quoted_api_error = (
        document.get("status") == "error"
        and str(document.get("errorType")) in PROMETHEUS_ERROR_TYPES
        and where == "error"
    )
    if not quoted_api_error:
        assert _TOKEN not in describe(outcome)


@pytest.mark.parametrize("stamp", [b"NaN", b"Infinity", b"-Infinity"])
def test_a_sample_time_that_is_no_finite_number_is_malformed(stamp: bytes) -> None:
    # Python's json reads these literals; a grid or an age computed from them would raise.
    envelope = b'{"status":"success","data":{"resultType":"%s","result":[{"metric":{},%s}]}}'
    raw = envelope % (b"vector", b'"value":[' + stamp + b',"1"]')
    with pytest.raises(PrometheusMalformedResponseError, match="time is not a number"):
        parse_instant_response(200, raw, query=Q)
    ranged = envelope % (b"matrix", b'"values":[[' + stamp + b',"1"]]')
    with pytest.raises(PrometheusMalformedResponseError, match="time is not a number"):
        parse_range_response(200, ranged, query=Q)


def test_malformed_answers_are_not_quoted() -> None:
    raw = body(
        {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [{"metric": {"secret-token-42": 1}, "value": [1, "2"]}],
            },
        }
    )
    with pytest.raises(PrometheusMalformedResponseError) as caught:
        parse_instant_response(200, raw, query=Q)
    assert "secret-token-42" not in caught.value.message


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


def test_grouped_answer_is_indexed_by_pod_and_keeps_unusable_samples() -> None:
    raw = vector(
        ({"pod_namespace": "llm", "pod_name": "a"}, 1000.0, "NaN"),
        ({"pod_namespace": "llm", "pod_name": "b"}, 1000.0, "3"),
        ({"pod_namespace": "other", "pod_name": "a"}, 1000.0, "5"),
        ({"pod_namespace": "llm"}, 1000.0, "7"),  # no pod: belongs to nobody
    )
    grouped = parse_pod_response(
        200, raw, query=Q, namespace_label="pod_namespace", pod_label="pod_name"
    )
    assert set(grouped.by_pod) == {("llm", "a"), ("llm", "b"), ("other", "a")}
    values = [s.value for s in grouped.of("llm", ["a", "b", "gone"])]
    assert math.isnan(values[0])
    assert values[1:] == [3.0]
    assert grouped.of("other", ["b"]) == []


def test_kept_answers_are_judged_with_the_callers_clock() -> None:
    fresh = Sample(labels={"pod": "a"}, value=1.0, timestamp_s=1100.0)
    old = Sample(labels={"pod": "b"}, value=2.0, timestamp_s=1000.0)
    both = Vector(samples=(fresh, old))
    assert apply_max_age(both, query=Q, now_s=1110.0, max_sample_age_s=120.0) == both
    assert apply_max_age(both, query=Q, now_s=1150.0, max_sample_age_s=120.0) == Vector(
        samples=(fresh,), dropped=1
    )
    stale = apply_max_age(both, query=Q, now_s=1300.0, max_sample_age_s=120.0)
    assert isinstance(stale, NoData)
    assert stale.reason is NoDataReason.STALE
    assert "300 s old, maximum 120 s" in stale.message


def test_implausible_is_its_own_no_data_reason() -> None:
    nodata = NoData(NoDataReason.IMPLAUSIBLE, Q, "-50 W is below 0 W")
    assert nodata.message == "query 'sum(x)' returned an implausible value (-50 W is below 0 W)"
