"""Cooling controllers: the posted document, timeouts, HTTP errors, the address guard, dry run.

The server is a plain loopback aiohttp app standing in for a site's cooling gateway.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from climatik.domain.placement import SupplySetpoint
from climatik.sources.address import AddressPolicy
from climatik.sources.cooling import (
    CoolingError,
    DryRunCoolingController,
    HttpCoolingController,
    setpoints_document,
)

SETPOINT = SupplySetpoint(
    group="zone-1",
    hottest_place_id="rack-a",
    hottest_inlet_c=25.04,
    change_c=1.5,
    supply_c=21.5,
    cop=3.6,
    cooling_watts=None,
    reason="raise",
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(handler: Handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/setpoints", handler)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/setpoints"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def test_document_shape() -> None:
    doc = setpoints_document("llm/cap", [SETPOINT])
    assert doc == {
        "source": "climatik",
        "config": "llm/cap",
        "setpoints": [
            {
                "group": "zone-1",
                "supplyCelsius": 21.5,
                "changeCelsius": 1.5,
                "hottestRack": "rack-a",
                "hottestInletCelsius": 25.04,
                "reason": "raise",
            }
        ],
    }


async def test_posts_setpoints_and_reports_success(session: aiohttp.ClientSession) -> None:
    received: list[Any] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        received.append(await request.json())
        return web.json_response({"ok": True})

    runner, url = await serve(handler)
    try:
        outcome = await HttpCoolingController(session, url).apply("llm/cap", [SETPOINT])
    finally:
        await runner.cleanup()
    assert outcome.sent
    assert received == [setpoints_document("llm/cap", [SETPOINT])]


async def test_http_error_and_timeout_raise_cooling_error(session: aiohttp.ClientSession) -> None:
    async def refuse(request: web.Request) -> web.StreamResponse:
        del request
        return web.Response(status=503, text="internal secret: db password hunter2")

    release = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        del request
        await release.wait()
        return web.Response()

    runner, url = await serve(refuse)
    try:
        with pytest.raises(CoolingError, match=r"HTTP 503 \(body not shown\)") as caught:
            await HttpCoolingController(session, url).apply("llm/cap", [SETPOINT])
        # Whoever wrote the URL reads Events: an internal service's answer must not reach them.
        assert "hunter2" not in str(caught.value)
    finally:
        await runner.cleanup()
    runner, url = await serve(hang)
    try:
        with pytest.raises(CoolingError, match=r"within 0\.2 s"):
            await HttpCoolingController(session, url, timeout_s=0.2).apply("k", [SETPOINT])
    finally:
        release.set()
        await asyncio.sleep(0.05)  # let the released handler finish before shutdown
        await runner.cleanup()


async def test_guarded_addresses_are_refused_without_a_request(
    session: aiohttp.ClientSession,
) -> None:
    with pytest.raises(CoolingError, match="metadata"):
        await HttpCoolingController(session, "http://169.254.169.254/x").apply("k", [SETPOINT])
    allow = AddressPolicy.from_hosts(["cooling.example"])
    with pytest.raises(CoolingError, match="refused"):
        await HttpCoolingController(session, "http://other.example/x", address_policy=allow).apply(
            "k", [SETPOINT]
        )


async def test_messages_never_repeat_the_urls_credentials_or_query(
    session: aiohttp.ClientSession,
) -> None:
    async def ok(request: web.Request) -> web.StreamResponse:
        del request
        return web.json_response({})

    runner, url = await serve(ok)
    await runner.cleanup()  # now nothing listens there
    secret_url = url + "?token=hunter2"
    with pytest.raises(CoolingError, match="unreachable") as caught:
        await HttpCoolingController(session, secret_url).apply("k", [SETPOINT])
    assert "hunter2" not in str(caught.value)
    with pytest.raises(CoolingError, match="credentials") as refused:
        await HttpCoolingController(session, "http://ops:hunter2@cooling/x").apply("k", [SETPOINT])
    assert "hunter2" not in str(refused.value)


async def test_unreachable_and_dry_run(session: aiohttp.ClientSession) -> None:
    async def ok(request: web.Request) -> web.StreamResponse:
        del request
        return web.json_response({})

    runner, url = await serve(ok)
    await runner.cleanup()  # now nothing listens there
    with pytest.raises(CoolingError, match="unreachable"):
        await HttpCoolingController(session, url).apply("k", [SETPOINT])
    dry = DryRunCoolingController()
    outcome = await dry.apply("k", [SETPOINT])
    assert not outcome.sent
    assert dry.last["k"] == (SETPOINT,)
