"""The tokens-per-watt picker as a Gateway API Inference Extension Endpoint Picker (EPP).

A Gateway (Envoy Gateway, kgateway, Istio) that routes to an `InferencePool` asks the pool's
Endpoint Picker, over Envoy's ext_proc gRPC stream, which model server gets each request. This
server answers with `policies.routing.pick_endpoint`, the picker `climatik router` uses, as the
Endpoint Picker Protocol says (docs/proposals/004-endpoint-picker-protocol, v1.0.0 of
2025-07-29, as in gateway-api-inference-extension at commit 84436a9, after v1.6.0):

- the picked endpoint goes back on the request-headers response twice, with the same value: the
  `x-gateway-destination-endpoint` header and dynamic metadata `envoy.lb` /
  `x-gateway-destination-endpoint`; with `fallbacks`, further endpoints follow the first,
  comma-separated, in the picker's order, for the proxy's retries;
- a subset hint (request metadata `envoy.lb.subset_hint` / `x-gateway-destination-endpoint-subset`,
  a list of `ip:port`) limits the pick to those endpoints, matched by IP as the reference EPP does;
- no eligible endpoint (none healthy, or none in the hint, or an empty hint) is an
  ImmediateResponse 503;
- the endpoint that served the request (response metadata `envoy.lb` /
  `x-gateway-destination-endpoint-served`, when the proxy sends it) is the one charged with the
  open request from then on;
- the gRPC health service answers `liveness`, `readiness` and the ext_proc service's own name;
  the port speaks TLS when given a context (`server_tls`), as the gateways' generated clusters
  expect of an Endpoint Picker.

The pick is made on the request headers, not after the body as the reference EPP does: the
picker reads no model name (an InferencePool serves one model), so waiting for the body would
only add its upload time to every request. Bodies are passed back unchanged, echoed chunk by chunk
under FULL_DUPLEX_STREAMED (the mode the GIE gateways configure, and the default here) and let
through under the other modes; the mode Envoy announces in `protocol_config` wins.

Endpoint names map to addresses through `address_of`; by default a name is its own address,
`ip:port` (`[ipv6]:port`), and an endpoint whose name is no such address is never picked. The
pick's reason is also set as dynamic metadata `climatik.router` / `pick-reason`, for Envoy's
access log (`%DYNAMIC_METADATA(climatik.router:pick-reason)%`).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

import structlog
from envoy_data_plane.envoy.config.core.v3 import (
    HeaderValue,
    HeaderValueOption,
    HeaderValueOptionHeaderAppendAction,
    Metadata,
)
from envoy_data_plane.envoy.extensions.filters.http.ext_proc.v3 import (
    ProcessingModeBodySendMode as BodySendMode,
)
from envoy_data_plane.envoy.service.ext_proc.v3 import (
    BodyMutation,
    BodyResponse,
    CommonResponse,
    ExternalProcessorBase,
    HeaderMutation,
    HeadersResponse,
    HttpBody,
    HttpHeaders,
    ImmediateResponse,
    ProcessingRequest,
    ProcessingResponse,
    StreamedBodyResponse,
    TrailersResponse,
)
from envoy_data_plane.envoy.type.v3 import HttpStatus, StatusCode
from envoy_data_plane.google.protobuf import Struct, Value
from grpclib.health.check import CheckBase
from grpclib.health.service import Health
from grpclib.server import Server

from climatik.domain.routing import EndpointReading, Pick, PickReason, RoutingSettings
from climatik.policies.routing import pick_endpoint

log = structlog.get_logger(__name__)

DESTINATION_NAMESPACE = "envoy.lb"
DESTINATION_KEY = "x-gateway-destination-endpoint"
SERVED_KEY = "x-gateway-destination-endpoint-served"
SUBSET_NAMESPACE = "envoy.lb.subset_hint"
SUBSET_KEY = "x-gateway-destination-endpoint-subset"
PICK_NAMESPACE = "climatik.router"
PICK_REASON_KEY = "pick-reason"
DEFAULT_SESSION_HEADER = "x-session-id"
LIVENESS_SERVICE = "liveness"
READINESS_SERVICE = "readiness"


class OpenRequests(Protocol):
    """Where the picker's own count of open requests lives (the router's endpoint table): one
    `opened` when an endpoint is picked, one `closed` when Envoy ends the stream."""

    def opened(self, name: str) -> None: ...

    def closed(self, name: str) -> None: ...


@functools.lru_cache(maxsize=4096)
def address_from_name(name: str) -> str | None:
    """`name` itself when it is an `ip:port` (or `[ipv6]:port`) address, else None. Cached:
    every request asks it of every endpoint, and parsing an IP costs more than the pick."""
    host, sep, port = name.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        return None
    return name if (ip.version == 6) == bracketed else None


def choose_destinations(
    readings: Sequence[EndpointReading],
    settings: RoutingSettings,
    *,
    address_of: Callable[[str], str | None] = address_from_name,
    subset: frozenset[str] | None = None,
    session_key: str | None = None,
    fallbacks: int = 0,
) -> tuple[Pick, dict[str, str]]:
    """The pick for one request and the addresses to send it to, primary first, each with its
    endpoint's name (empty when the pick found no endpoint). `subset` holds the hosts the proxy
    allows (None: every endpoint); endpoints without an address are not candidates."""
    addresses = {r.name: a for r in readings if (a := address_of(r.name)) is not None}
    candidates = [r for r in readings if r.name in addresses]
    if subset is not None:
        candidates = [r for r in candidates if _host(addresses[r.name]) in subset]
    first = pick_endpoint(candidates, settings, session_key=session_key)
    chosen: dict[str, str] = {}
    pick = first
    while pick.endpoint is not None:
        chosen[addresses[pick.endpoint]] = pick.endpoint
        if len(chosen) > fallbacks:
            break
        candidates = [r for r in candidates if r.name != pick.endpoint]
        pick = pick_endpoint(candidates, settings, session_key=session_key)
    return first, chosen


class EndpointPicker(ExternalProcessorBase):
    """The ext_proc service: one stream per HTTP request (see the module docstring)."""

    def __init__(
        self,
        readings: Callable[[], Sequence[EndpointReading]],
        settings: RoutingSettings,
        *,
        address_of: Callable[[str], str | None] = address_from_name,
        open_requests: OpenRequests | None = None,
        on_pick: Callable[[Pick], None] | None = None,
        session_header: str | None = DEFAULT_SESSION_HEADER,
        fallbacks: int = 0,
        body_mode: BodySendMode = BodySendMode.FULL_DUPLEX_STREAMED,
    ) -> None:
        self._readings = readings
        self._settings = settings
        self._address_of = address_of
        self._open_requests = open_requests
        self._on_pick = on_pick
        self._session_header = session_header.lower() if session_header else None
        self._fallbacks = fallbacks
        self._body_mode = body_mode

    async def process(
        self, messages: AsyncIterator[ProcessingRequest]
    ) -> AsyncIterator[ProcessingResponse]:
        request_mode = response_mode = self._body_mode
        charged: str | None = None
        sent_to: dict[str, str] = {}
        try:
            async for message in messages:
                if message.protocol_config is not None:
                    request_mode = message.protocol_config.request_body_mode
                    response_mode = message.protocol_config.response_body_mode
                if message.request_headers is not None:
                    pick, sent_to = self._choose(message.request_headers, message.metadata_context)
                    if self._on_pick is not None:
                        self._on_pick(pick)
                    if pick.endpoint is None:
                        yield _unavailable(pick.reason)
                        return
                    charged = self._charge(charged, pick.endpoint)
                    yield _destination(list(sent_to), pick.reason)
                elif message.request_body is not None:
                    yield ProcessingResponse(
                        request_body=_body_reply(message.request_body, request_mode)
                    )
                elif message.request_trailers is not None:
                    yield ProcessingResponse(request_trailers=TrailersResponse())
                elif message.response_headers is not None:
                    served = sent_to.get(_served(message.metadata_context) or "")
                    if served is not None and served != charged:
                        charged = self._charge(charged, served)
                    yield ProcessingResponse(
                        response_headers=HeadersResponse(response=CommonResponse())
                    )
                elif message.response_body is not None:
                    yield ProcessingResponse(
                        response_body=_body_reply(message.response_body, response_mode)
                    )
                elif message.response_trailers is not None:
                    yield ProcessingResponse(response_trailers=TrailersResponse())
        finally:
            self._charge(charged, None)

    def _choose(
        self, headers: HttpHeaders, metadata: Metadata | None
    ) -> tuple[Pick, dict[str, str]]:
        session_key = (
            _header(headers, self._session_header) if self._session_header is not None else None
        )
        return choose_destinations(
            self._readings(),
            self._settings,
            address_of=self._address_of,
            subset=_subset(metadata),
            session_key=session_key or None,
            fallbacks=self._fallbacks,
        )

    def _charge(self, previous: str | None, name: str | None) -> str | None:
        """Move this stream's open request from `previous` to `name` (either may be None)."""
        if self._open_requests is not None:
            if previous is not None:
                self._open_requests.closed(previous)
            if name is not None:
                self._open_requests.opened(name)
        return name


def server_tls(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """TLS for the picker's port from a PEM pair: the GIE charts' gateways (Envoy Gateway's
    generated cluster, Istio's DestinationRule) reach the Endpoint Picker over TLS. Reads files:
    call it before serving or through `asyncio.to_thread`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["h2"])
    return context


class _HealthName:
    """A service name the gRPC health service answers for: grpclib keys its checks by the
    service of an object's first method, and `liveness` and `readiness` have no methods."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __mapping__(self) -> Mapping[str, None]:
        return {f"/{self._name}/Check": None}


class _Readiness(CheckBase):
    """Ready as `ready()` says, read at each check (a cheap, synchronous answer)."""

    def __init__(self, ready: Callable[[], bool]) -> None:
        self._ready = ready

    def __status__(self) -> bool:
        return self._ready()

    async def __check__(self) -> bool:
        return self._ready()

    async def __subscribe__(self) -> asyncio.Event:
        return asyncio.Event()

    async def __unsubscribe__(self, event: asyncio.Event) -> None:
        return None


def _health(picker: EndpointPicker, ready: Callable[[], bool]) -> Health:
    """The protocol's gRPC health services: `liveness` serves while the process answers;
    `readiness` and the ext_proc service itself while `ready()`."""
    readiness = _Readiness(ready)
    return Health(
        {
            _HealthName(LIVENESS_SERVICE): [],
            _HealthName(READINESS_SERVICE): [readiness],
            picker: [readiness],
        }
    )


@asynccontextmanager
async def running_ext_proc(
    host: str,
    port: int,
    picker: EndpointPicker,
    *,
    tls: ssl.SSLContext | None = None,
    ready: Callable[[], bool] = lambda: True,
) -> AsyncIterator[tuple[str, int]]:
    """`picker` and the gRPC health service served on `host:port` (0: a free port), over
    `tls` when given, for the length of the block; yields the address it listens on."""
    sock = _listening_socket(host, port)
    server = Server([picker, _health(picker, ready)])
    try:
        await server.start(sock=sock, ssl=tls)
    except BaseException:
        sock.close()
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    log.info("ext_proc_serving", host=bound_host, port=bound_port)
    try:
        yield bound_host, bound_port
    finally:
        server.close()
        await server.wait_closed()
        log.info("ext_proc_stopped", host=bound_host, port=bound_port)


def _listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket whose port is known before serving (port 0 picks one). Its protocol
    is named, not left 0 as `socket.create_server` leaves it: asyncio turns Nagle's algorithm off
    only on connections whose socket says IPPROTO_TCP, and with it on every answer waited ~40 ms
    for the client's delayed ACK (benchmarks/bench_extproc.py measured 44 ms against 1.5)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_ext_proc(
    host: str,
    port: int,
    readings: Callable[[], Sequence[EndpointReading]],
    settings: RoutingSettings,
    *,
    address_of: Callable[[str], str | None] = address_from_name,
    open_requests: OpenRequests | None = None,
    on_pick: Callable[[Pick], None] | None = None,
    session_header: str | None = DEFAULT_SESSION_HEADER,
    fallbacks: int = 0,
    body_mode: BodySendMode = BodySendMode.FULL_DUPLEX_STREAMED,
    tls: ssl.SSLContext | None = None,
    ready: Callable[[], bool] = lambda: True,
) -> None:
    """Serve the Endpoint Picker on `host:port` until cancelled (the arguments are
    `EndpointPicker`'s and `running_ext_proc`'s)."""
    picker = EndpointPicker(
        readings,
        settings,
        address_of=address_of,
        open_requests=open_requests,
        on_pick=on_pick,
        session_header=session_header,
        fallbacks=fallbacks,
        body_mode=body_mode,
    )
    async with running_ext_proc(host, port, picker, tls=tls, ready=ready):
        await asyncio.Event().wait()


def _destination(addresses: list[str], reason: PickReason) -> ProcessingResponse:
    """The request-headers answer: header and metadata carry the same list (the protocol calls
    two different values undefined behaviour); the header replaces any the client sent."""
    value = ",".join(addresses)
    header = HeaderValueOption(
        header=HeaderValue(key=DESTINATION_KEY, raw_value=value.encode()),
        append_action=HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
    )
    common = CommonResponse(
        header_mutation=HeaderMutation(set_headers=[header]), clear_route_cache=True
    )
    return ProcessingResponse(
        request_headers=HeadersResponse(response=common),
        dynamic_metadata=_metadata({DESTINATION_NAMESPACE: {DESTINATION_KEY: value}}, reason),
    )


def _unavailable(reason: PickReason) -> ProcessingResponse:
    return ProcessingResponse(
        immediate_response=ImmediateResponse(
            status=HttpStatus(code=StatusCode.ServiceUnavailable),
            body=b"no model server endpoint is available\n",
            details="climatik_no_endpoint",
        ),
        dynamic_metadata=_metadata({}, reason),
    )


def _metadata(namespaces: dict[str, dict[str, str]], reason: PickReason) -> Struct:
    entries = {**namespaces, PICK_NAMESPACE: {PICK_REASON_KEY: reason.value}}
    return Struct(
        fields={
            namespace: Value(
                struct_value=Struct(fields={k: Value(string_value=v) for k, v in values.items()})
            )
            for namespace, values in entries.items()
        }
    )


def _body_reply(body: HttpBody, mode: BodySendMode) -> BodyResponse:
    """Under FULL_DUPLEX_STREAMED Envoy forwards only what the processor sends back, so each
    chunk is echoed; under the other modes an empty answer lets the body through unchanged."""
    if mode != BodySendMode.FULL_DUPLEX_STREAMED:
        return BodyResponse(response=CommonResponse())
    echoed = StreamedBodyResponse(body=body.body, end_of_stream=body.end_of_stream)
    mutation = BodyMutation(streamed_response=echoed)
    return BodyResponse(response=CommonResponse(body_mutation=mutation))


def _header(headers: HttpHeaders, name: str) -> str | None:
    """A request header's value (Envoy sends names lower-cased, values in `raw_value`)."""
    if headers.headers is None:
        return None
    for entry in headers.headers.headers:
        if entry.key.lower() == name:
            return entry.raw_value.decode(errors="replace") if entry.raw_value else entry.value
    return None


def _subset(metadata: Metadata | None) -> frozenset[str] | None:
    """The hosts of the proxy's subset hint; None when it sent none (every endpoint may be
    picked), empty when it sent an empty list (none may)."""
    namespace = metadata.filter_metadata.get(SUBSET_NAMESPACE) if metadata is not None else None
    listed = namespace.fields.get(SUBSET_KEY) if namespace is not None else None
    if listed is None:
        return None
    values = listed.list_value.values if listed.list_value is not None else []
    return frozenset(_host(v.string_value) for v in values if v.string_value)


def _served(metadata: Metadata | None) -> str | None:
    namespace = (
        metadata.filter_metadata.get(DESTINATION_NAMESPACE) if metadata is not None else None
    )
    served = namespace.fields.get(SERVED_KEY) if namespace is not None else None
    return served.string_value if served is not None else None


def _host(address: str) -> str:
    """The IP of an `ip:port` or `[ipv6]:port` address (the whole text when it has no port)."""
    host, sep, _port = address.rpartition(":")
    return (host if sep else address).removeprefix("[").removesuffix("]")
