"""Placement's wiring: the webhook service (a certificate problem is reported and retried, never
fatal, and the webhook starts serving when a valid pair appears, without a restart) and the live
source factories (a Prometheus rack source and a cooling controller per config)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from climatik.api.convert import config_from_object
from climatik.kube.client import KubeClient
from climatik.reconcilers.settings import PlacementSettings
from climatik.runtime import placement
from climatik.runtime.manager import Manager
from climatik.runtime.placement import CoolingControllers, PrometheusRackSources
from climatik.runtime.settings import LeaderElectionSettings, RuntimeSettings
from climatik.sources.cooling import DryRunCoolingController, HttpCoolingController
from climatik.sources.racks import PrometheusRackSignalSource, StaticRackSignalSource
from tests.certificates import self_signed
from tests.unit.helpers.placement_objects import config


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _healthz(port: int, cafile: Path) -> int:
    trust = ssl.create_default_context(cafile=str(cafile))
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"https://127.0.0.1:{port}/healthz", ssl=trust) as resp,
    ):
        return resp.status


async def _until(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Wait for `predicate` by a deadline, not by a count of sleeps (a loaded machine polls
    late)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_garbage_certificate_is_reported_and_serving_starts_once_the_pair_is_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _free_port()
    monkeypatch.setenv("CLIMATIK_PLACEMENT__WEBHOOK_CERT_DIR", str(tmp_path))
    monkeypatch.setenv("CLIMATIK_PLACEMENT__WEBHOOK_PORT", str(port))
    monkeypatch.setattr(placement, "CERTIFICATE_POLL_S", 0.02)
    manager = Manager(
        RuntimeSettings(leader_election=LeaderElectionSettings(enabled=False)),
        KubeClient(api_client=None),
        install_signal_handlers=False,
    )
    manager.add_controller(placement.placement_controller)
    registry = manager.metrics.registry

    def certificate_ok() -> float | None:
        return registry.get_sample_value("climatik_placement_webhook_certificate_ok")

    with structlog.testing.capture_logs() as logs:
        service = asyncio.create_task(manager._services["placement-webhook"]())
        try:
            await _until(lambda: certificate_ok() == 0)
            await asyncio.sleep(0.2)  # several polls without the files (not mounted yet)
            assert not service.done(), "a missing certificate must not end the service"
            # Then a pair that is there but garbage.
            (tmp_path / "tls.crt").write_text("-----BEGIN CERTIFICATE-----\ngarbage\n")
            (tmp_path / "tls.key").write_text("not a key")

            def problems() -> list[str]:
                return [e["error"] for e in logs if e["event"] == "webhook_certificate_unavailable"]

            await _until(lambda: len(problems()) >= 2)
            await asyncio.sleep(0.2)  # several polls of the same garbage
            assert not service.done(), "a bad certificate must not end the service (or process)"
            assert certificate_ok() == 0
            unavailable = problems()
            assert len(unavailable) == 2, "said once per problem, not once per poll"
            assert "cannot read" in unavailable[0]
            assert "cannot load tls.crt/tls.key" in unavailable[1]
            with pytest.raises(ConnectionRefusedError):  # nothing listens yet
                await asyncio.open_connection("127.0.0.1", port)

            cert, key = self_signed(tmp_path, "fresh")
            cert.replace(tmp_path / "tls.crt")
            key.replace(tmp_path / "tls.key")
            await _until(lambda: certificate_ok() == 1)
            # The gauge says the pair loaded; the listener opens right after it.
            deadline = asyncio.get_running_loop().time() + 20.0
            while True:
                try:
                    assert await _healthz(port, tmp_path / "tls.crt") == 200
                    break
                except aiohttp.ClientConnectorError:
                    assert asyncio.get_running_loop().time() < deadline, "never served"
                    await asyncio.sleep(0.02)
            assert not service.done()
        finally:
            service.cancel()
            with pytest.raises(asyncio.CancelledError):
                await service


async def test_live_factories_pick_prometheus_and_the_cooling_webhook() -> None:
    async def no_session() -> Any:
        return object()  # never used: building sources does no I/O

    settings = PlacementSettings()
    sources = PrometheusRackSources(no_session, settings)
    assert isinstance(await sources(config_from_object(config())), StaticRackSignalSource)
    with_prom = config(powerMeasurement={"prometheusAddress": "http://prom:9090"})
    assert isinstance(await sources(config_from_object(with_prom)), PrometheusRackSignalSource)
    coolers = CoolingControllers(no_session, settings)
    assert isinstance(await coolers(config_from_object(config())), DryRunCoolingController)
    webhook = await coolers(config_from_object(config(cooling="Webhook")))
    assert isinstance(webhook, HttpCoolingController)
