"""The fake vLLM replica streams at the twin's pace and its `/metrics` say what it did: a
request's tokens all arrive, in about the prefill plus its decode steps, and the router's
parser reads counters whose window gives the twin's time per output token and draw."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from climatik.router.scores import parse_load
from climatik.sim.routing_replica import prefill_seconds, replica_physics
from climatik.sim.routing_scenario import load_routing_scenario
from climatik.world.vllm_replica import LiveReplica, ReplicaServer
from tests.loopback import serving

OUTPUT_TOKENS = 20


async def test_a_request_streams_at_the_models_pace_and_the_metrics_count_it() -> None:
    scenario = load_routing_scenario("hetero-routing")
    group = next(g for g in scenario.replicas if g.name == "h100")
    step_s, gpu_w, _, _, _ = replica_physics(group, scenario)
    server = ReplicaServer(LiveReplica("h100-0", group, scenario))
    async with serving(server.app()) as url, aiohttp.ClientSession() as session:
        async with session.get(url + "/metrics") as response:
            before = parse_load(await response.text()).counters
        started = time.monotonic()
        body = {"prompt": "w " * 256, "max_tokens": OUTPUT_TOKENS, "stream": True}
        async with session.post(url + "/v1/completions", json=body) as response:
            assert response.headers["x-backend"] == "h100-0"
            text = await response.read()
        took = time.monotonic() - started
        await asyncio.sleep(0.05)
        async with session.get(url + "/metrics") as response:
            scores = parse_load(await response.text())
    assert text.endswith(b"data: [DONE]\n\n")
    assert text.count(b" t") == OUTPUT_TOKENS
    expected = prefill_seconds(group, scenario, [256])[0] + (OUTPUT_TOKENS - 1) * step_s[1]
    # Never faster than the model; later only by the event loop's delays (a loaded machine).
    assert expected - 0.05 <= took < expected + 1.0
    assert before is not None
    assert scores.counters is not None
    counters = scores.counters
    assert counters.decode_tokens - before.decode_tokens == pytest.approx(OUTPUT_TOKENS - 1)
    tpot_s = (counters.decode_s - before.decode_s) / (counters.decode_tokens - before.decode_tokens)
    assert tpot_s == pytest.approx(step_s[1], rel=1e-6)
    assert counters.prefills == 1
    assert counters.gpu_joules > gpu_w[1] * (OUTPUT_TOKENS - 1) * step_s[1]
    assert scores.running == 0
    assert server.served == 1
