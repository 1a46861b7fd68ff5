"""What the Endpoint Picker costs a request, over a real local gRPC stream (issue 22).

A grpclib client plays Envoy: one ext_proc stream per request, request headers (and, with
`--body`, two body chunks echoed under FULL_DUPLEX_STREAMED), answers read to the end of the
stream. Measured in the same run against a baseline processor on the same stack (grpclib,
envoy-data-plane's messages) that answers every message with an empty CONTINUE, so the
difference is the pick itself: reading `--endpoints` readings, the picker, the header mutation
and the `envoy.lb` metadata. Reported: per-stream latency p50 and p99 one stream at a time, and
streams per second with `--concurrency` streams in flight, both for the picker and the baseline.

Run:  PYTHONPATH=. .venv/bin/python benchmarks/bench_extproc.py [--streams 2000] [--body]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Sequence

import structlog
from envoy_data_plane.envoy.config.core.v3 import HeaderMap, HeaderValue
from envoy_data_plane.envoy.service.ext_proc.v3 import (
    BodyResponse,
    CommonResponse,
    ExternalProcessorAsyncStub,
    HeadersResponse,
    HttpBody,
    HttpHeaders,
    ProcessingRequest,
    ProcessingResponse,
)
from grpclib.client import Channel

from climatik.domain.routing import EndpointReading, RoutingSettings
from climatik.router.extproc import EndpointPicker, running_ext_proc


class ContinueProcessor(EndpointPicker):
    """The baseline: the same service, answering CONTINUE to everything without picking."""

    async def process(
        self, messages: AsyncIterator[ProcessingRequest]
    ) -> AsyncIterator[ProcessingResponse]:
        async for message in messages:
            if message.request_headers is not None:
                yield ProcessingResponse(request_headers=HeadersResponse(response=CommonResponse()))
            elif message.request_body is not None:
                yield ProcessingResponse(request_body=BodyResponse(response=CommonResponse()))


def _readings(count: int) -> Sequence[EndpointReading]:
    return [
        EndpointReading(
            name=f"10.0.{i // 250}.{i % 250 + 1}:8000",
            tokens_per_joule=0.5 + (i % 17) / 10,
            running=float(i % 40),
            waiting=0.0,
            kv_cache_usage=0.3,
            age_s=2.0,
        )
        for i in range(count)
    ]


def _messages(body: bool) -> list[ProcessingRequest]:
    headers = HeaderMap(
        headers=[
            HeaderValue(key=":method", raw_value=b"POST"),
            HeaderValue(key=":path", raw_value=b"/v1/chat/completions"),
            HeaderValue(key="content-type", raw_value=b"application/json"),
        ]
    )
    messages = [
        ProcessingRequest(request_headers=HttpHeaders(headers=headers, end_of_stream=not body))
    ]
    if body:
        chunk = b'{"model": "llama", "messages": [{"role": "user", "content": "hello"}]}'
        messages += [
            ProcessingRequest(request_body=HttpBody(body=chunk[:40])),
            ProcessingRequest(request_body=HttpBody(body=chunk[40:], end_of_stream=True)),
        ]
    return messages


async def _measure(
    picker: EndpointPicker, streams: int, concurrency: int, body: bool
) -> tuple[list[float], float]:
    """Per-stream latencies one at a time, then streams per second `concurrency` at a time."""
    messages = _messages(body)
    async with running_ext_proc("127.0.0.1", 0, picker) as (host, port):
        channel = Channel(host, port)
        stub = ExternalProcessorAsyncStub(channel)

        async def one() -> None:
            answers = [a async for a in stub.process(messages, timeout=10)]
            assert len(answers) == len(messages), answers

        try:
            for _ in range(min(200, streams)):  # warm up the connection and the code paths
                await one()
            latencies = []
            for _ in range(streams):
                start = time.perf_counter()
                await one()
                latencies.append(time.perf_counter() - start)

            async def worker(count: int) -> None:
                for _ in range(count):
                    await one()

            start = time.perf_counter()
            async with asyncio.TaskGroup() as group:
                for _ in range(concurrency):
                    group.create_task(worker(streams // concurrency))
            rate = (streams // concurrency) * concurrency / (time.perf_counter() - start)
        finally:
            channel.close()
    return latencies, rate


def _quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--endpoints", type=int, default=64)
    parser.add_argument("--body", action="store_true", help="two body chunks per request")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    readings = _readings(args.endpoints)
    settings = RoutingSettings()
    rows = []
    for label, picker in (
        ("baseline (CONTINUE)", ContinueProcessor(lambda: readings, settings)),
        ("tokens-per-watt picker", EndpointPicker(lambda: readings, settings)),
    ):
        latencies, rate = await _measure(picker, args.streams, args.concurrency, args.body)
        rows.append(
            (label, _quantile(latencies, 0.5) * 1e3, _quantile(latencies, 0.99) * 1e3, rate)
        )
    print(
        f"{args.streams} streams, {args.endpoints} endpoints, "
        f"{'headers + 2 body chunks' if args.body else 'headers only'}, "
        f"{args.concurrency} in flight for the rate"
    )
    print(f"{'processor':<24} {'p50 ms':>8} {'p99 ms':>8} {'streams/s':>10}")
    for label, p50, p99, rate in rows:
        print(f"{label:<24} {p50:8.3f} {p99:8.3f} {rate:10.0f}")
    base, picked = rows
    print(
        f"picker minus baseline: p50 +{picked[1] - base[1]:.3f} ms, "
        f"p99 +{picked[2] - base[2]:.3f} ms; rate x{picked[3] / base[3]:.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
