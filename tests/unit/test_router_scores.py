"""Tokens per joule and vLLM's load from a scripted Prometheus, per pod, and the router's
settings: a missing Service refused by name, nested variables read."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from climatik.cli import build_parser, main
from climatik.domain.config import MeasurementPreset
from climatik.router.cli import _overrides
from climatik.router.scores import PrometheusScores
from climatik.router.settings import RouterSettingsError, load_router_settings
from climatik.router.slices import Upstream
from climatik.router.table import Scores
from climatik.sources.power_queries import PowerQueryConfig
from climatik.sources.prometheus import PrometheusClient
from tests.loopback import serving


def answer(query: str) -> dict[str, float]:
    """Per pod of namespace `llm`: a 100 W, 300 tokens/s; b 200 W (+ 50 W of GPU), NaN
    tokens; c no watts at all."""
    if "kepler_pod_gpu_watts" in query:
        return {"b": 50.0}
    if "kepler_pod_cpu_watts" in query:
        return {"a": 100.0, "b": 200.0}
    if "generation_tokens_total" in query:
        return {"a": 300.0, "b": math.nan, "c": 10.0}
    if "num_requests_running" in query:
        return {"a": 4.0, "b": 2.0, "c": 1.0}
    if "num_requests_waiting" in query:
        return {"a": 0.0, "b": 1.0}
    return {"a": 0.5}  # kv cache


@pytest.fixture
async def prometheus() -> AsyncIterator[tuple[str, list[str]]]:
    asked: list[str] = []

    async def query(request: web.Request) -> web.Response:
        promql = str((await request.post())["query"])
        asked.append(promql)
        kepler = "kepler" in promql
        ns, pod = ("pod_namespace", "pod_name") if kepler else ("namespace", "pod")
        result = [
            {"metric": {ns: "llm", pod: name}, "value": [time.time(), str(value)]}
            for name, value in answer(promql).items()
        ]
        return web.json_response(
            {"status": "success", "data": {"resultType": "vector", "result": result}}
        )

    app = web.Application()
    app.router.add_post("/api/v1/query", query)
    async with serving(app) as url:
        yield url, asked


async def test_tokens_per_joule_and_load_per_pod(prometheus: tuple[str, list[str]]) -> None:
    url, asked = prometheus
    upstreams = [Upstream(name, "llm", "10.0.0.1", 8000) for name in ("a", "b", "c", "d")]
    async with aiohttp.ClientSession() as session:
        source = PrometheusScores(PrometheusClient(session, url), "llm")
        scores = await source.read(upstreams)
    assert scores["a"] == Scores(tokens_per_joule=3.0, running=4.0, waiting=0.0, kv_cache_usage=0.5)
    # NaN tokens and missing watts are no efficiency, never zero.
    assert scores["b"] == Scores(running=2.0, waiting=1.0)
    assert scores["c"] == Scores(running=1.0)
    assert scores["d"] == Scores()
    # One grouped question per quantity, vLLM's scoped to the router's namespace.
    assert len(asked) == 6
    assert all('namespace="llm"' in q for q in asked if "vllm:" in q)


async def test_without_load_only_efficiency_is_asked(prometheus: tuple[str, list[str]]) -> None:
    url, asked = prometheus
    async with aiohttp.ClientSession() as session:
        source = PrometheusScores(PrometheusClient(session, url), "llm", with_load=False)
        scores = await source.read([Upstream("a", "llm", "10.0.0.1", 8000)])
    assert scores["a"] == Scores(tokens_per_joule=3.0)
    assert len(asked) == 3  # tokens, CPU watts, GPU watts


def test_a_custom_power_query_is_refused() -> None:
    with pytest.raises(ValueError, match="power preset"):
        PrometheusScores(
            PrometheusClient(None, "http://p:9090"),  # type: ignore[arg-type]
            "llm",
            PowerQueryConfig(preset=MeasurementPreset.CUSTOM, custom_query="up"),
        )


def test_settings_need_a_service_and_read_nested_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(RouterSettingsError, match="CLIMATIK_ROUTER__SERVICE"):
        load_router_settings()
    monkeypatch.setenv("CLIMATIK_ROUTER__SERVICE", "vllm")
    monkeypatch.setenv("CLIMATIK_ROUTER__PROMETHEUS__ADDRESS", "http://p:9090")
    monkeypatch.setenv("CLIMATIK_ROUTER__ROUTING__MAX_BATCH", "64")
    settings = load_router_settings()
    assert settings.prometheus.address == "http://p:9090"
    assert settings.routing.picker().max_batch == 64
    monkeypatch.setenv("CLIMATIK_ROUTER__PORT", "99999")
    with pytest.raises(RouterSettingsError, match="CLIMATIK_ROUTER__PORT"):
        load_router_settings()


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIMATIK_ROUTER__SERVICE", "from-env")
    monkeypatch.setenv("CLIMATIK_ROUTER__PROMETHEUS__TIMEOUT_S", "7")
    args = build_parser().parse_args(["router", "--service", "vllm", "--prometheus", "http://p"])
    settings = load_router_settings(**_overrides(args))
    assert settings.service == "vllm"
    assert settings.prometheus.address == "http://p"
    assert settings.prometheus.timeout_s == 7  # the rest of the group still from the environment


def test_the_command_refuses_a_missing_service_with_status_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLIMATIK_ROUTER__SERVICE", raising=False)
    assert main(["router"]) == 2
    assert "CLIMATIK_ROUTER__SERVICE or --service" in capsys.readouterr().err
