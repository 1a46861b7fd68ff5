"""Fake OpenAI-compatible model servers for the router's tests and benchmark: real aiohttp
servers on local ports answering fixed small completions, a streaming (SSE) variant, and a
vLLM-style `/metrics`. `kill()` plays a pod dying: open streams are cut mid-body and the port
stops answering."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

COMPLETION = {
    "id": "cmpl-fake",
    "object": "text_completion",
    "model": "fake",
    "choices": [{"index": 0, "text": "hello", "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}
COMPLETION_BODY = json.dumps(COMPLETION).encode()
CHAT_BODY = json.dumps(
    {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}],
    }
).encode()


def sse_chunk(index: int) -> bytes:
    delta = {"choices": [{"index": 0, "delta": {"content": f"t{index} "}}]}
    return b"data: " + json.dumps(delta).encode() + b"\n\n"


class FakeBackend:
    """One fake model server. `served` counts requests per path; `chunk_delay_s` paces the
    streaming variant; `name` is echoed in the `x-backend` response header."""

    def __init__(self, name: str, *, stream_chunks: int = 5, chunk_delay_s: float = 0.0) -> None:
        self.name = name
        self.stream_chunks = stream_chunks
        self.chunk_delay_s = chunk_delay_s
        self.served = 0
        self.running = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._streams: dict[int, web.Request] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def kill(self) -> None:
        """Cut every open stream mid-body and stop listening."""
        for request in list(self._streams.values()):
            if request.transport is not None:
                request.transport.abort()
        await self.stop()

    def _headers(self) -> dict[str, str]:
        return {"x-backend": self.name}

    async def _completions(self, request: web.Request) -> web.Response:
        await request.read()
        self.served += 1
        return web.Response(
            body=COMPLETION_BODY, content_type="application/json", headers=self._headers()
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        self.served += 1
        if not payload.get("stream"):
            return web.Response(
                body=CHAT_BODY, content_type="application/json", headers=self._headers()
            )
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", **self._headers()}
        )
        await response.prepare(request)
        self._streams[id(request)] = request
        self.running += 1
        try:
            for index in range(self.stream_chunks):
                await response.write(sse_chunk(index))
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        finally:
            self.running -= 1
            self._streams.pop(id(request), None)
        return response

    async def _models(self, request: web.Request) -> web.Response:
        del request
        self.served += 1
        return web.json_response(
            {"object": "list", "data": [{"id": "fake", "object": "model"}]},
            headers=self._headers(),
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        del request
        text = (
            "# HELP vllm:num_requests_running Requests running.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{model_name="fake"}} {self.running}\n'
            "# HELP vllm:num_requests_waiting Requests waiting.\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            'vllm:num_requests_waiting{model_name="fake"} 0\n'
            "# HELP vllm:kv_cache_usage_perc KV cache usage.\n"
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            'vllm:kv_cache_usage_perc{model_name="fake"} 0.1\n'
        )
        return web.Response(text=text, content_type="text/plain")
