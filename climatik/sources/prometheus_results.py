"""What a Prometheus query comes back as: typed results and typed failures, never a bare number.

An instant query yields a `Vector` or `NoData`, a range query a `Matrix` or `NoData`, a grouped
query `PodSamples`; `NaN`, `±Inf`, an empty result and samples too old (or from the future) are
`NoData` with a reason, never zero. A query that cannot be answered raises a `PrometheusError`
whose `reason` is ready for a status condition and whose message says what to fix. Pure values:
the parser (`climatik.sources.prometheus_parse`) makes them, the client
(`climatik.sources.prometheus`) returns them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, assert_never

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


MAX_FUTURE_SKEW_S: Final = 60.0
"""How far ahead of our clock a sample time may be (clock skew); beyond it the sample is
implausible: a source stamping the future would keep its readings fresh after it died."""


def future_detail(ahead_s: float) -> str:
    return (
        f"sample time {ahead_s:.0f} s ahead of the controller's clock "
        f"(at most {MAX_FUTURE_SKEW_S:g} s of skew is accepted)"
    )


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
