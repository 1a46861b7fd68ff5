"""A fake vLLM server whose latency and GPU energy follow the routing twin's physics.

The routing twin's replica (`sim.routing_replica.Replica`: continuous batching, prefills one at
a time, decode steps and draws from `sim.physics`) is driven here by the wall clock instead of
an event queue, behind an OpenAI-compatible aiohttp server: a request joins the replica when it
arrives, its first token comes when its prefill ends, and the rest stream at the decode step of
the batch it shares. `/metrics` exports what a vLLM pod and a DCGM exporter beside it would:
`vllm:num_requests_running`, `_waiting`, `kv_cache_usage_perc`, `generation_tokens_total`, the
`vllm:inter_token_latency_seconds` and `vllm:request_prefill_time_seconds` histograms' `_sum`
and `_count` (one `+Inf` bucket), and `DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION` in millijoules per
GPU, from the replica's exact integrals. So a router in front of several of these, of different
GPU generations, can be measured end to end on a laptop, tokens per joule included.

It lives in the world (the live stand-in for a datacenter) rather than under tests/ because the
issue's live demo serves the same endpoints from its pods; the end-to-end router test is its
first user.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from climatik.sim.routing_replica import Replica, Requests, prefill_seconds
from climatik.sim.routing_scenario import ReplicaGroup, RoutingScenario

TICK_S = 0.02
"""The longest the replica's clock waits between two looks at its state: the streaming grain."""


class LiveReplica:
    """One twin replica on the wall clock: `submit` a request, then follow its tokens."""

    def __init__(
        self,
        name: str,
        group: ReplicaGroup,
        scenario: RoutingScenario,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.gpus = scenario.server.gpus
        self._requests = Requests([], [], [])
        self._prefill_s: list[float] = []
        self._group, self._scenario = group, scenario
        self.replica = Replica(name, group, scenario, self._requests, self._prefill_s)
        self._clock = clock
        self._start = clock()
        self._v0: dict[int, float] = {}
        """The batch's token clock when each decoding request got its first token."""
        self._pending: set[int] = set()
        """Requests still before their first token."""
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()

    def now(self) -> float:
        return self._clock() - self._start

    async def run(self) -> None:
        """Advance the replica with the wall clock, handling its events when due."""
        replica = self.replica
        while True:
            self._step(self.now())
            async with self._changed:
                self._changed.notify_all()
            wait = min(max(replica.next_event - self.now(), 0.0), TICK_S)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def _step(self, t: float) -> None:
        """Every event due by `t` at its own time (a prefill's end notes the batch's token
        clock, from which its request's tokens count), then the integrals up to `t`."""
        replica, req = self.replica, self._requests
        while replica.next_event <= t:
            replica.handle(replica.next_event)
            started = {rid for rid in self._pending if req.first_token[rid] < math.inf}
            for rid in started:
                self._v0[rid] = replica.v
            self._pending -= started
        replica.advance(t)

    def submit(self, prompt_tokens: int, output_tokens: int) -> int:
        """A request arriving now; its id to follow with `tokens`."""
        req = self._requests
        rid = len(req.arrival)
        t = self.now()
        self._step(t)
        req.arrival.append(t)
        req.prompt.append(max(prompt_tokens, 1))
        req.output.append(max(output_tokens, 1))
        req.first_token.append(math.inf)
        req.finish.append(math.inf)
        req.served.append(False)
        req.timed_out.append(False)
        self._prefill_s.extend(prefill_seconds(self._group, self._scenario, [req.prompt[rid]]))
        self._pending.add(rid)
        self.replica.arrive(rid, t)
        self._wake.set()
        return rid

    def generated(self, rid: int) -> int:
        """Tokens the request has so far (0 before its prefill ends)."""
        req = self._requests
        if req.served[rid]:
            return req.output[rid]
        v0 = self._v0.get(rid)
        if v0 is None:
            return 0
        return min(1 + int(self.replica.v - v0 + 1e-6), req.output[rid] - 1)

    def timed_out(self, rid: int) -> bool:
        return self._requests.timed_out[rid]

    def done(self, rid: int) -> bool:
        return self._requests.finish[rid] < math.inf

    async def tokens(self, rid: int) -> AsyncIterator[int]:
        """New token counts as they come, until the request is finished."""
        sent = 0
        while True:
            async with self._changed:
                await self._changed.wait()
            have = self.generated(rid)
            if have > sent:
                yield have - sent
                sent = have
            if self.done(rid):
                self._v0.pop(rid, None)
                return

    def metrics_text(self) -> str:
        """vLLM's series (model `fake`) and DCGM's energy counter, per GPU."""
        self._step(self.now())
        r = self.replica
        model = 'model_name="fake"'
        lines = [
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{model}}} {r.running}",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{model}}} {len(r.waiting)}",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc{{{model}}} {r.kv_cache_usage}",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{{{model}}} {r.tokens}",
        ]
        for name, total, count in (
            ("vllm:inter_token_latency_seconds", r.decode_s, r.decode_tokens),
            ("vllm:request_prefill_time_seconds", r.prefill_sum_s, float(r.prefill_count)),
        ):
            lines += [
                f"# TYPE {name} histogram",
                f'{name}_bucket{{{model},le="+Inf"}} {count}',
                f"{name}_sum{{{model}}} {total}",
                f"{name}_count{{{model}}} {count}",
            ]
        lines.append("# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter")
        per_gpu_mj = r.gpu_j * 1000.0 / self.gpus
        lines += [
            f'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{gpu="{gpu}"}} {per_gpu_mj}'
            for gpu in range(self.gpus)
        ]
        return "\n".join(lines) + "\n"

    @property
    def gpu_joules(self) -> float:
        self._step(self.now())
        return self.replica.gpu_j

    @property
    def generated_tokens(self) -> float:
        return self.replica.tokens


class ReplicaServer:
    """`LiveReplica` behind `/v1/completions`, `/v1/chat/completions` (streamed or not),
    `/v1/models` and `/metrics`. A prompt's tokens are its words (or `prompt_tokens` in the
    body); the output's, `max_tokens`. A request the replica times out gets 503."""

    def __init__(self, replica: LiveReplica) -> None:
        self.replica = replica
        self.served = 0
        self.failed = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self._complete)
        app.router.add_post("/v1/chat/completions", self._complete)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        app.cleanup_ctx.append(self._driver)
        return app

    async def _driver(self, _app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self.replica.run(), name=f"replica-{self.replica.name}")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(text=self.replica.metrics_text(), content_type="text/plain")

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        prompt = body.get("prompt") or json.dumps(body.get("messages", ""))
        prompt_tokens = int(body.get("prompt_tokens") or len(str(prompt).split()))
        output_tokens = int(body.get("max_tokens") or 16)
        replica = self.replica
        rid = replica.submit(prompt_tokens, output_tokens)
        headers = {"x-backend": replica.name}
        if not body.get("stream"):
            async for _ in replica.tokens(rid):
                pass
            return self._finished(rid, headers, prompt_tokens)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **headers})
        await response.prepare(request)
        async for new in replica.tokens(rid):
            chunk = {"object": "text_completion", "choices": [{"index": 0, "text": " t" * new}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        if replica.timed_out(rid):
            self.failed += 1
            await response.write(b'data: {"error": {"type": "timeout"}}\n\n')
        else:
            self.served += 1
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _finished(self, rid: int, headers: dict[str, str], prompt_tokens: int) -> web.Response:
        if self.replica.timed_out(rid):
            self.failed += 1
            return web.json_response({"error": {"type": "timeout"}}, status=503, headers=headers)
        self.served += 1
        tokens = self.replica.generated(rid)
        return web.json_response(
            {
                "object": "text_completion",
                "choices": [{"index": 0, "text": " t" * tokens, "finish_reason": "length"}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens},
            },
            headers=headers,
        )
