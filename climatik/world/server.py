"""Serving the scrape target until SIGINT/SIGTERM, on a port the kernel may choose.

`--port 0` binds a free port; the first line printed, `listening on http://HOST:PORT`, is how a
test or the demo learns it.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web


@asynccontextmanager
async def serving(app: web.Application, host: str, port: int) -> AsyncIterator[str]:
    """Serve `app` for the duration of the block; yields the URL it listens on."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # Bind the socket ourselves so `--port 0` can report the port the kernel chose.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    try:
        await web.SockSite(runner, sock).start()
        yield f"http://{host}:{bound}"
    finally:
        await runner.cleanup()


async def until_signalled() -> None:
    """Return on the first SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
