"""Real local HTTP servers that answer like the carbon-intensity providers.

Each route answers from a script: a queue of responses (payload, status, delay, raw body) that a
test sets up, falling back to a default. The payloads are the providers' documented shapes
(see FACTS.md); the servers are real aiohttp servers on 127.0.0.1, not mocks of our client.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.loopback import serving


@dataclass
class Answer:
    """One scripted HTTP answer."""

    payload: Any = None
    status: int = 200
    delay_s: float = 0.0
    raw_body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ProviderServer:
    """A running provider server; `url` is its base address."""

    url: str
    defaults: dict[str, Answer]
    scripts: dict[str, deque[Answer]]
    requests: list[web.Request]
    required_headers: dict[str, str] = field(default_factory=dict)

    def accept_only(self, header: str, value: str) -> None:
        """Answer 401 (a wrong or revoked key) to requests whose `header` is not `value`."""
        self.required_headers[header.lower()] = value

    def script(self, path: str, *answers: Answer) -> None:
        """Answer the next requests to `path` with `answers`, then with the default."""
        self.scripts[path].extend(answers)

    def set_default(self, path: str, answer: Answer) -> None:
        self.defaults[path] = answer

    def hits(self, path: str) -> int:
        return sum(1 for request in self.requests if request.path == path)


@asynccontextmanager
async def provider_server(defaults: dict[str, Answer]) -> AsyncIterator[ProviderServer]:
    """Serve `defaults` (path -> answer) on a free loopback port until the block ends."""
    scripts: dict[str, deque[Answer]] = defaultdict(deque)
    requests: list[web.Request] = []
    server = ProviderServer("", dict(defaults), scripts, requests)

    handlers: set[asyncio.Task[object]] = set()

    async def handle(request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            handlers.add(task)
            task.add_done_callback(handlers.discard)
        requests.append(request)
        if any(request.headers.get(h) != v for h, v in server.required_headers.items()):
            return web.json_response({"message": "Invalid authentication token"}, status=401)
        queue = scripts.get(request.path)
        answer = queue.popleft() if queue else server.defaults.get(request.path)
        if answer is None:
            return web.json_response({"error": "not found"}, status=404)
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        body = (
            answer.raw_body if answer.raw_body is not None else json.dumps(answer.payload).encode()
        )
        return web.Response(
            body=body, status=answer.status, content_type="application/json", headers=answer.headers
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with serving(app, shutdown_timeout_s=0.1) as server.url:
        try:
            yield server
        finally:
            # A handler still sleeping on a scripted delay would outlive the server otherwise.
            for task in list(handlers):
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
