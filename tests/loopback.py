"""An aiohttp application served on a free port of 127.0.0.1 for the length of a block: the
scripted Prometheus, carbon APIs and API servers the tests talk to, set up and torn down once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web


@asynccontextmanager
async def serving(app: web.Application, *, shutdown_timeout_s: float = 1.0) -> AsyncIterator[str]:
    """`app` listening on 127.0.0.1; yields its base URL (`http://127.0.0.1:PORT`)."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout_s)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
