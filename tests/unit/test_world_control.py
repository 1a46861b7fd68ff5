"""The world's control endpoints over real HTTP on loopback: what a test or the driver sets is
what the next scrape serves, and a bad body says what is wrong instead of failing later."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from climatik.world.control import build_app
from climatik.world.readings import Readings
from tests.unit.fakeclock import FakeClock
from tests.unit.world_helpers import value_of

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    readings = Readings(clock=FakeClock())
    async with TestClient(TestServer(build_app(readings, random.Random(1)))) as test_client:
        yield test_client


async def test_pods_set_nodes_and_delete_reach_the_exposition(
    client: Client,
) -> None:
    pods = [{"namespace": "llm", "name": "vllm-0", "node": "n1", "gpu_watts": 300}]
    response = await client.post("/pods", json={"pods": pods})
    assert response.status == 200
    assert await response.json() == {"pods": ["llm/vllm-0"]}
    assert (await client.post("/set", json={"llm/vllm-0": {"gpu_watts": 450}})).status == 200
    assert (await client.post("/nodes", json={"n1": {"inlet_c": 26}})).status == 200
    text = await (await client.get("/metrics")).text()
    assert value_of(text, "DCGM_FI_DEV_POWER_USAGE", pod="vllm-0") == 450
    assert value_of(text, "ipmi_temperature_celsius", node="n1") == 26
    response = await client.get("/metrics/vllm")
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    state = await (await client.get("/state")).json()
    assert state["pods"]["llm/vllm-0"]["gpu_watts"] == 450
    assert (await client.delete("/pods/llm/vllm-0")).status == 200
    assert "vllm-0" not in await (await client.get("/metrics/dcgm")).text()
    assert (await client.post("/reset")).status == 200
    assert (await (await client.get("/state")).json()) == {"pods": {}, "nodes": {}}


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/pods", "{", 400, "not JSON"),
        ("/pods", '{"pods": [{"name": "x"}]}', 400, "bad pod spec"),
        ("/pods", '{"pods": [1]}', 400, "expected"),
        ("/set", '{"llm/nobody": {"cpu_watts": 1}}', 404, "no pod"),
        ("/set", "[]", 400, "expected an object"),
        ("/nodes", '{"n1": {"inlet_c": "hot"}}', 400, "bad value"),
    ],
)
async def test_bad_bodies_say_what_is_wrong(
    client: Client, path: str, body: str, status: int, says: str
) -> None:
    response = await client.post(path, data=body)
    assert response.status == status
    assert says in await response.text()


async def test_an_unknown_family_is_not_found(client: Client) -> None:
    assert (await client.get("/metrics/kepler08")).status == 404
