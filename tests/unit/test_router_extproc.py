"""The Endpoint Picker over a real gRPC stream: a grpclib client on a local TCP port plays Envoy's
part of the ext_proc protocol, message by message, as the Gateway API Inference Extension's
Endpoint Picker Protocol describes it (no Envoy binary here)."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from envoy_data_plane.envoy.config.core.v3 import (
    HeaderMap,
    HeaderValue,
    HeaderValueOptionHeaderAppendAction,
    Metadata,
)
from envoy_data_plane.envoy.extensions.filters.http.ext_proc.v3 import (
    ProcessingModeBodySendMode as BodySendMode,
)
from envoy_data_plane.envoy.service.ext_proc.v3 import (
    ExternalProcessorAsyncStub,
    HttpBody,
    HttpHeaders,
    ProcessingRequest,
    ProcessingResponse,
    ProtocolConfiguration,
)
from envoy_data_plane.google.protobuf import ListValue, Struct, Value
from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from hypothesis import given, settings
from hypothesis import strategies as st

from climatik.domain.routing import EndpointReading, Pick, PickReason, RoutingSettings
from climatik.policies.routing import pick_endpoint
from climatik.router.extproc import (
    EndpointPicker,
    address_from_name,
    choose_destinations,
    running_ext_proc,
    server_tls,
)
from tests.certificates import self_signed

SETTINGS = RoutingSettings()
OLD_GPU = "10.0.0.1:8000"
NEW_GPU = "10.0.0.2:8000"


def _endpoint(
    name: str, tpj: float | None, running: float = 4, *, age_s: float = 2.0, healthy: bool = True
) -> EndpointReading:
    return EndpointReading(
        name=name,
        healthy=healthy,
        tokens_per_joule=tpj,
        running=running,
        waiting=0.0,
        age_s=age_s,
    )


class Readings:
    """What the picker reads, replaced by each test as discovery and scores would."""

    def __init__(self, readings: Sequence[EndpointReading]) -> None:
        self.now = list(readings)

    def __call__(self) -> Sequence[EndpointReading]:
        return self.now


class CountedRequests:
    """The picker's open-request seam, as a log of calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def opened(self, name: str) -> None:
        self.calls.append(("opened", name))

    def closed(self, name: str) -> None:
        self.calls.append(("closed", name))


@asynccontextmanager
async def _envoy(picker: EndpointPicker) -> AsyncIterator[ExternalProcessorAsyncStub]:
    """A client of `picker` served on a free port of 127.0.0.1."""
    async with running_ext_proc("127.0.0.1", 0, picker) as (host, port):
        channel = Channel(host, port)
        try:
            yield ExternalProcessorAsyncStub(channel)
        finally:
            channel.close()


async def _exchange(
    stub: ExternalProcessorAsyncStub, messages: Iterable[ProcessingRequest]
) -> list[ProcessingResponse]:
    """One HTTP request's stream: every message sent, then every answer until the server ends."""
    return [response async for response in stub.process(list(messages), timeout=10)]


def _headers(
    *,
    end_of_stream: bool = True,
    extra: dict[str, str] | None = None,
    metadata: Metadata | None = None,
    body_mode: BodySendMode | None = None,
) -> ProcessingRequest:
    entries = {":method": "POST", ":path": "/v1/chat/completions", **(extra or {})}
    headers = HeaderMap(
        headers=[HeaderValue(key=k, raw_value=v.encode()) for k, v in entries.items()]
    )
    config = (
        ProtocolConfiguration(request_body_mode=body_mode, response_body_mode=body_mode)
        if body_mode is not None
        else None
    )
    return ProcessingRequest(
        request_headers=HttpHeaders(headers=headers, end_of_stream=end_of_stream),
        metadata_context=metadata,
        protocol_config=config,
    )


def _subset_hint(addresses: list[str]) -> Metadata:
    listed = ListValue(values=[Value(string_value=a) for a in addresses])
    hint = Struct(fields={"x-gateway-destination-endpoint-subset": Value(list_value=listed)})
    return Metadata(filter_metadata={"envoy.lb.subset_hint": hint})


def _destination(response: ProcessingResponse) -> str:
    """The endpoint list an answer sends the request to, checked to be the same in the header
    and in the `envoy.lb` metadata (the protocol leaves two different values undefined)."""
    assert response.request_headers is not None
    common = response.request_headers.response
    assert common is not None
    assert common.clear_route_cache
    assert common.header_mutation is not None
    (option,) = common.header_mutation.set_headers
    assert option.header is not None
    assert option.header.key == "x-gateway-destination-endpoint"
    assert option.append_action == HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
    header = option.header.raw_value.decode()
    assert _metadata(response, "envoy.lb", "x-gateway-destination-endpoint") == header
    return header


def _metadata(response: ProcessingResponse, namespace: str, key: str) -> str | None:
    if response.dynamic_metadata is None or namespace not in response.dynamic_metadata.fields:
        return None
    inner = response.dynamic_metadata.fields[namespace].struct_value
    assert inner is not None
    value = inner.fields.get(key)
    return value.string_value if value is not None else None


def _reason(response: ProcessingResponse) -> str | None:
    return _metadata(response, "climatik.router", "pick-reason")


def _status(response: ProcessingResponse) -> int | None:
    immediate = response.immediate_response
    if immediate is None or immediate.status is None:
        return None
    return int(immediate.status.code)


async def test_the_headers_answer_sends_the_request_to_the_most_efficient_endpoint() -> None:
    readings = Readings([_endpoint(OLD_GPU, 0.8), _endpoint(NEW_GPU, 1.4)])
    async with _envoy(EndpointPicker(readings, SETTINGS)) as envoy:
        (answer,) = await _exchange(envoy, [_headers()])
    assert _destination(answer) == NEW_GPU
    assert _reason(answer) == "efficient"


async def test_a_streamed_body_is_echoed_chunk_by_chunk_after_the_pick() -> None:
    """FULL_DUPLEX_STREAMED (the GIE gateways' mode): Envoy forwards only what comes back."""
    readings = Readings([_endpoint(OLD_GPU, 0.8), _endpoint(NEW_GPU, 1.4)])
    chunks = [b'{"model": "llama", ', b'"prompt": "hi"}']
    async with _envoy(EndpointPicker(readings, SETTINGS)) as envoy:
        answers = await _exchange(
            envoy,
            [
                _headers(end_of_stream=False),
                ProcessingRequest(request_body=HttpBody(body=chunks[0])),
                ProcessingRequest(request_body=HttpBody(body=chunks[1], end_of_stream=True)),
            ],
        )
    assert len(answers) == 3
    assert _destination(answers[0]) == NEW_GPU
    echoed = []
    for answer in answers[1:]:
        assert answer.request_body is not None
        assert answer.request_body.response is not None
        mutation = answer.request_body.response.body_mutation
        assert mutation is not None
        assert mutation.streamed_response is not None
        echoed.append((mutation.streamed_response.body, mutation.streamed_response.end_of_stream))
    assert echoed == [(chunks[0], False), (chunks[1], True)]


async def test_a_buffered_body_announced_by_envoy_is_let_through_unchanged() -> None:
    readings = Readings([_endpoint(NEW_GPU, 1.4)])
    async with _envoy(EndpointPicker(readings, SETTINGS)) as envoy:
        answers = await _exchange(
            envoy,
            [
                _headers(end_of_stream=False, body_mode=BodySendMode.BUFFERED),
                ProcessingRequest(request_body=HttpBody(body=b"{}", end_of_stream=True)),
            ],
        )
    assert _destination(answers[0]) == NEW_GPU
    body = answers[1].request_body
    assert body is not None
    assert body.response is not None
    assert body.response.body_mutation is None


@pytest.mark.parametrize(
    "endpoints",
    [
        [],
        [_endpoint(OLD_GPU, 0.8, healthy=False), _endpoint(NEW_GPU, 1.4, healthy=False)],
        [_endpoint("vllm-0", 1.4), _endpoint("10.0.0.3", 1.4)],  # no address to send to
    ],
    ids=["none", "none-healthy", "no-address"],
)
async def test_no_endpoint_is_an_immediate_503(endpoints: list[EndpointReading]) -> None:
    picks: list[Pick] = []
    picker = EndpointPicker(Readings(endpoints), SETTINGS, on_pick=picks.append)
    async with _envoy(picker) as envoy:
        answers = await _exchange(
            envoy,
            [_headers(end_of_stream=False), ProcessingRequest(request_body=HttpBody(body=b"{}"))],
        )
    # The 503 ends the stream: the body that followed gets no answer.
    assert [_status(a) for a in answers] == [503]
    assert answers[0].request_headers is None
    assert _reason(answers[0]) == "no_endpoint"
    assert picks == [Pick(None, PickReason.NO_ENDPOINT)]


async def test_stale_readings_fall_back_to_the_endpoint_with_the_fewest_open_requests() -> None:
    stale = SETTINGS.max_reading_age_s + 1
    readings = Readings(
        [
            dataclasses.replace(_endpoint(NEW_GPU, 1.4, age_s=stale), open_requests=3),
            dataclasses.replace(_endpoint(OLD_GPU, 0.8, age_s=stale), open_requests=1),
        ]
    )
    async with _envoy(EndpointPicker(readings, SETTINGS)) as envoy:
        (answer,) = await _exchange(envoy, [_headers()])
        readings.now = [dataclasses.replace(r, age_s=1.0) for r in readings.now]
        (fresh,) = await _exchange(envoy, [_headers()])
    assert (_destination(answer), _reason(answer)) == (OLD_GPU, "no_data")
    assert (_destination(fresh), _reason(fresh)) == (NEW_GPU, "efficient")


async def test_the_session_header_keeps_a_session_on_its_own_endpoint() -> None:
    """Two endpoints within the affinity tolerance: without a session the more efficient one;
    with one, whichever the session's hash favours, every time."""
    endpoints = [_endpoint(OLD_GPU, 1.35), _endpoint(NEW_GPU, 1.4)]
    async with _envoy(EndpointPicker(Readings(endpoints), SETTINGS)) as envoy:
        (anonymous,) = await _exchange(envoy, [_headers()])
        sessions = {}
        for key in (f"user-{i}" for i in range(8)):
            answers = [
                (await _exchange(envoy, [_headers(extra={"x-session-id": key})]))[0]
                for _ in range(3)
            ]
            sessions[key] = {(_destination(a), _reason(a)) for a in answers}
    assert _destination(anonymous) == NEW_GPU
    assert all(len(seen) == 1 for seen in sessions.values()), sessions
    kept_on_old = [key for key, seen in sessions.items() if seen == {(OLD_GPU, "affinity")}]
    assert kept_on_old, sessions
    for key in kept_on_old:
        assert pick_endpoint(endpoints, SETTINGS, session_key=key).endpoint == OLD_GPU


async def test_the_subset_hint_limits_the_pick_and_an_empty_one_is_a_503() -> None:
    readings = Readings([_endpoint(OLD_GPU, 0.8), _endpoint(NEW_GPU, 1.4)])
    async with _envoy(EndpointPicker(readings, SETTINGS)) as envoy:
        (only_old,) = await _exchange(envoy, [_headers(metadata=_subset_hint([OLD_GPU]))])
        (empty,) = await _exchange(envoy, [_headers(metadata=_subset_hint([]))])
        (elsewhere,) = await _exchange(envoy, [_headers(metadata=_subset_hint(["10.9.9.9:8000"]))])
    assert _destination(only_old) == OLD_GPU
    assert _status(empty) == 503
    assert _status(elsewhere) == 503


async def test_fallbacks_follow_the_primary_in_the_pickers_order() -> None:
    third = "10.0.0.3:8000"
    readings = Readings([_endpoint(OLD_GPU, 0.8), _endpoint(NEW_GPU, 1.4), _endpoint(third, 1.0)])
    async with _envoy(EndpointPicker(readings, SETTINGS, fallbacks=1)) as envoy:
        (answer,) = await _exchange(envoy, [_headers()])
    assert _destination(answer) == f"{NEW_GPU},{third}"


async def test_the_open_request_is_charged_to_the_served_endpoint_until_the_stream_ends() -> None:
    counted = CountedRequests()
    readings = Readings([_endpoint(OLD_GPU, 0.8), _endpoint(NEW_GPU, 1.4)])
    picker = EndpointPicker(readings, SETTINGS, open_requests=counted, fallbacks=1)
    answered = asyncio.Event()
    served = Struct(fields={"x-gateway-destination-endpoint-served": Value(string_value=OLD_GPU)})

    async def envoy_side() -> AsyncIterator[ProcessingRequest]:
        """Headers; once answered, the response's headers, served by the fallback; once
        answered, the end of the stream."""
        yield _headers()
        await answered.wait()
        answered.clear()
        yield ProcessingRequest(
            response_headers=HttpHeaders(end_of_stream=True),
            metadata_context=Metadata(filter_metadata={"envoy.lb": served}),
        )
        await answered.wait()

    seen: list[list[tuple[str, str]]] = []
    async with _envoy(picker) as envoy:
        async for _answer in envoy.process(envoy_side(), timeout=10):
            seen.append(list(counted.calls))
            answered.set()
        ended = list(counted.calls)
    assert seen == [
        [("opened", NEW_GPU)],
        [("opened", NEW_GPU), ("closed", NEW_GPU), ("opened", OLD_GPU)],
    ]
    assert ended == [*seen[-1], ("closed", OLD_GPU)]


async def test_every_open_request_is_closed_whatever_the_stream_carried() -> None:
    """A stream that (against the protocol) carries two requests' headers still leaves no
    request counted open once it ends."""
    counted = CountedRequests()
    readings = Readings([_endpoint(OLD_GPU, 0.8), _endpoint(NEW_GPU, 1.4)])
    picker = EndpointPicker(readings, SETTINGS, open_requests=counted)
    async with _envoy(picker) as envoy:
        await _exchange(envoy, [_headers(), _headers(extra={"x-session-id": "s"})])
    opened = [name for call, name in counted.calls if call == "opened"]
    closed = [name for call, name in counted.calls if call == "closed"]
    assert len(opened) == 2
    assert sorted(opened) == sorted(closed)


async def test_endpoints_named_by_pod_are_sent_to_by_address() -> None:
    pods = {"vllm-h100-0": NEW_GPU, "vllm-a100-0": OLD_GPU}
    readings = Readings([_endpoint("vllm-a100-0", 0.8), _endpoint("vllm-h100-0", 1.4)])
    picker = EndpointPicker(readings, SETTINGS, address_of=pods.get)
    async with _envoy(picker) as envoy:
        (answer,) = await _exchange(envoy, [_headers()])
    assert _destination(answer) == NEW_GPU


@pytest.mark.parametrize(
    ("name", "address"),
    [
        ("10.0.0.1:8000", "10.0.0.1:8000"),
        ("[fd00::1]:8000", "[fd00::1]:8000"),
        ("fd00::1:8000", None),  # IPv6 without brackets: host and port cannot be told apart
        ("[10.0.0.1]:8000", None),
        ("10.0.0.1", None),
        ("10.0.0.1:0", None),
        ("10.0.0.1:65536", None),
        ("vllm-0:8000", None),
    ],
)
def test_a_name_is_its_own_address_only_when_it_is_ip_and_port(
    name: str, address: str | None
) -> None:
    assert address_from_name(name) == address


ADDRESSES = [f"10.0.0.{i}:8000" for i in range(1, 6)]


@st.composite
def _readings(draw: st.DrawFn) -> list[EndpointReading]:
    names = draw(st.lists(st.sampled_from([*ADDRESSES, "vllm-0"]), unique=True, max_size=6))
    maybe = st.none() | st.floats(0, 300)
    return [
        EndpointReading(
            name=name,
            healthy=draw(st.booleans()),
            tokens_per_joule=draw(st.none() | st.floats(0, 5)),
            running=draw(maybe),
            waiting=draw(maybe),
            kv_cache_usage=draw(st.none() | st.floats(0, 1)),
            age_s=draw(st.none() | st.floats(0, 60)),
            open_requests=draw(st.integers(0, 50)),
        )
        for name in names
    ]


async def test_the_picked_address_is_always_one_of_the_healthy_endpoints_given() -> None:
    """A property over the wire: whatever the readings, the answer is a 503 exactly when no
    healthy endpoint has an address, else a healthy endpoint's address in header and metadata."""
    readings = Readings([])
    loop = asyncio.get_running_loop()
    async with _envoy(EndpointPicker(readings, SETTINGS)) as envoy:

        @settings(max_examples=60, deadline=None)
        @given(_readings(), st.none() | st.text(max_size=8))
        def check(endpoints: list[EndpointReading], session: str | None) -> None:
            readings.now = endpoints
            extra = {"x-session-id": session} if session else None
            exchange = _exchange(envoy, [_headers(extra=extra)])
            (answer,) = asyncio.run_coroutine_threadsafe(exchange, loop).result(timeout=10)
            healthy = {e.name for e in endpoints if e.healthy and e.name in ADDRESSES}
            if healthy:
                assert _destination(answer) in healthy
            else:
                assert _status(answer) == 503

        await asyncio.to_thread(check)


def test_choosing_fallbacks_never_repeats_an_endpoint() -> None:
    endpoints = [_endpoint(a, 1.0 + i / 10) for i, a in enumerate(ADDRESSES)]
    pick, chosen = choose_destinations(endpoints, SETTINGS, fallbacks=10)
    assert pick.endpoint == ADDRESSES[-1]
    assert list(chosen) == list(reversed(ADDRESSES))


async def test_the_health_services_answer_liveness_always_and_readiness_when_ready() -> None:
    """The protocol's gRPC health checks: Kubernetes probes `liveness` and `readiness`; the
    gateway may check the ext_proc service itself."""
    ready = False
    picker = EndpointPicker(Readings([]), SETTINGS)
    async with running_ext_proc("127.0.0.1", 0, picker, ready=lambda: ready) as (host, port):
        channel = Channel(host, port)
        health = HealthStub(channel)
        services = ["liveness", "readiness", "envoy.service.ext_proc.v3.ExternalProcessor"]
        try:
            before = [
                (await health.Check(HealthCheckRequest(service=name))).status for name in services
            ]
            ready = True
            after = [
                (await health.Check(HealthCheckRequest(service=name))).status for name in services
            ]
        finally:
            channel.close()
    serving, not_serving = HealthCheckResponse.SERVING, HealthCheckResponse.NOT_SERVING
    assert before == [serving, not_serving, not_serving]
    assert after == [serving, serving, serving]


async def test_the_picker_answers_over_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    readings = Readings([_endpoint(OLD_GPU, 0.8), _endpoint(NEW_GPU, 1.4)])
    picker = EndpointPicker(readings, SETTINGS)
    trusting = ssl.create_default_context(cafile=str(cert))
    trusting.set_alpn_protocols(["h2"])
    tls = server_tls(cert, key)
    async with running_ext_proc("127.0.0.1", 0, picker, tls=tls) as (host, port):
        channel = Channel(host, port, ssl=trusting)
        try:
            (answer,) = await _exchange(ExternalProcessorAsyncStub(channel), [_headers()])
        finally:
            channel.close()
    assert _destination(answer) == NEW_GPU
