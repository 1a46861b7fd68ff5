"""Reading a controller under test: a free loopback port for it, and one metric from its
`/metrics` as a scrape would."""

from __future__ import annotations

import asyncio
import socket
import urllib.request

from climatik.runtime.manager import Manager


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def manager_metric(manager: Manager, name: str, labels: str = "") -> float | None:
    def scrape() -> str:
        url = f"http://127.0.0.1:{manager.http.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    text = await asyncio.to_thread(scrape)
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return None
