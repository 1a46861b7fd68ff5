"""The informer survives what the API server does to it: a restart, and a 410 Gone after an outage.

These tests restart kube-apiserver, so they bring up their own small cluster (not the session's).
The 410 test puts a TCP cutter (a local forwarder that can drop every connection: a network-failure
injector, not an API server) between the informer and the API server; while the informer is cut
off, objects are deleted and the API server restarts, so its fresh watch cache no longer holds the
informer's resourceVersion. On reconnect the server answers 410, the reflector relists, and the
objects deleted meanwhile must leave the cache with delete events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from climatik.devcluster.cluster import ClusterInfo, down, up
from climatik.devcluster.processes import ProcessRecord, spawn, stop
from climatik.devcluster.topology import Rack, Topology
from climatik.kube.client import KubeClient
from climatik.kube.informer import EventHandlers, Informer
from climatik.kube.resources import CONFIGMAPS, NAMESPACES
from climatik.kube.store import object_key
from climatik.kube.watchstate import WatchSettings
from climatik.runtime.metrics import RuntimeMetrics
from tests.json_paths import text_at

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

# Our objects only (each namespace also gets kube-root-ca.crt from the controller-manager).
LABELS = {"climatik.test/set": "runtime"}
SELECTOR = "climatik.test/set=runtime"


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterInfo]:
    directory = tmp_path_factory.mktemp("runtime-cluster")
    try:
        info = up(directory, Topology(racks=(Rack(name="rack-a", nodes=1),)))
    except Exception:
        down(directory)
        raise
    try:
        yield info
    finally:
        down(directory)


def restart_apiserver(info: ClusterInfo) -> None:
    """Stop kube-apiserver and start it again with the same command line; wait until ready."""
    state_path = info.dir / "cluster.json"
    state = json.loads(state_path.read_text(encoding="utf-8"))
    old = next(ProcessRecord(**p) for p in state["processes"] if p["component"] == "kube-apiserver")
    argv = [a.decode() for a in Path(f"/proc/{old.pid}/cmdline").read_bytes().split(b"\0") if a]
    stop([old])
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    new = spawn(
        "kube-apiserver",
        argv,
        log_path=info.logs_dir / "kube-apiserver.log",
        cwd=info.dir,
        env=env,
    )
    state["processes"] = [
        asdict(new) if p["component"] == "kube-apiserver" else p for p in state["processes"]
    ]
    state_path.write_text(json.dumps(state, indent=2), encoding="utf-8")
    deadline = time.monotonic() + 90
    while True:
        ready = subprocess.run(
            [str(info.kubectl), f"--kubeconfig={info.kubeconfig}", "get", "--raw", "/readyz"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        if ready.returncode == 0:
            return
        assert time.monotonic() < deadline, (
            f"kube-apiserver not ready after restart: {ready.stderr}"
        )
        time.sleep(0.5)


class TcpCutter:
    """Forwards 127.0.0.1:<port> to a target port; ``cut`` drops and refuses every connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connected = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.connected:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)
        self._tasks.difference_update(pumps)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)

    def cut(self) -> None:
        self.connected = False
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.connected = True

    async def close(self) -> None:
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def _kubeconfig_via(info: ClusterInfo, port: int, path: Path) -> Path:
    config = yaml.safe_load(info.kubeconfig.read_text(encoding="utf-8"))
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture
async def direct(own_cluster: ClusterInfo) -> AsyncIterator[KubeClient]:
    kube = await KubeClient.from_config(str(own_cluster.kubeconfig), request_timeout_s=10)
    yield kube
    await kube.close()


async def _fresh_namespace(client: KubeClient, name: str) -> str:
    await client.create(NAMESPACES, {"metadata": {"name": name}})
    return name


async def _server_view(client: KubeClient, namespace: str) -> dict[str, str]:
    listed = await client.list(CONFIGMAPS, namespace, label_selector=SELECTOR)
    return {
        f"{namespace}/{i['metadata']['name']}": i["metadata"]["resourceVersion"]
        for i in listed["items"]
    }


def _cache_view(informer: Informer) -> dict[str, str]:
    return {
        object_key(o): text_at(o, "metadata", "resourceVersion") for o in informer.store.objects()
    }


async def _converged(
    informer: Informer, client: KubeClient, namespace: str, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        server = await _server_view(client, namespace)
        if _cache_view(informer) == server:
            return
        assert time.monotonic() < deadline, f"cache {_cache_view(informer)} != server {server}"
        await asyncio.sleep(0.2)


def _settings() -> WatchSettings:
    # Faster reconnects keep the test short; the logic is the production one.
    return WatchSettings(backoff_initial_s=0.2, backoff_max_s=2.0)


async def test_informer_reconnects_after_an_apiserver_restart_and_converges(
    own_cluster: ClusterInfo, direct: KubeClient
) -> None:
    namespace = await _fresh_namespace(direct, "restart")
    for i in range(5):
        await direct.create(
            CONFIGMAPS, {"metadata": {"name": f"cm-{i}", "labels": LABELS}}, namespace
        )
    metrics = RuntimeMetrics()
    informer = Informer(
        direct,
        CONFIGMAPS,
        namespace=namespace,
        label_selector=SELECTOR,
        settings=_settings(),
        metrics=metrics,
    )
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.wait_synced(), 30)
        assert len(informer.store) == 5
        opened_before = informer.reflector.watches_opened
        await asyncio.to_thread(restart_apiserver, own_cluster)
        await direct.create(
            CONFIGMAPS, {"metadata": {"name": "after", "labels": LABELS}}, namespace
        )
        await direct.delete(CONFIGMAPS, "cm-0", namespace)
        await direct.merge_patch(CONFIGMAPS, "cm-1", {"data": {"k": "v"}}, namespace)
        await _converged(informer, direct, namespace, timeout_s=60)
        assert informer.reflector.watches_opened > opened_before
        assert "restart/after" in informer.store
        assert "restart/cm-0" not in informer.store
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_gone_after_an_outage_relists_and_drops_objects_deleted_meanwhile(
    own_cluster: ClusterInfo, direct: KubeClient, tmp_path: Path
) -> None:
    namespace = await _fresh_namespace(direct, "gone")
    for i in range(10):
        await direct.create(
            CONFIGMAPS, {"metadata": {"name": f"cm-{i}", "labels": LABELS}}, namespace
        )
    cutter = TcpCutter(own_cluster.ports["kube-apiserver"])
    await cutter.start()
    via = await KubeClient.from_config(
        str(_kubeconfig_via(own_cluster, cutter.port, tmp_path / "kubeconfig")),
        request_timeout_s=5,
    )
    metrics = RuntimeMetrics()
    informer = Informer(
        via,
        CONFIGMAPS,
        namespace=namespace,
        label_selector=SELECTOR,
        settings=_settings(),
        metrics=metrics,
    )
    deleted: list[str] = []
    informer.add_handlers(
        EventHandlers(on_delete=lambda o: deleted.append(text_at(o, "metadata", "name")))
    )
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.wait_synced(), 30)
        assert len(informer.store) == 10
        cutter.cut()
        for i in range(5):
            await direct.delete(CONFIGMAPS, f"cm-{i}", namespace)
        await direct.merge_patch(CONFIGMAPS, "cm-5", {"data": {"k": "v"}}, namespace)
        await direct.create(CONFIGMAPS, {"metadata": {"name": "new", "labels": LABELS}}, namespace)
        # A fresh watch cache starts at the current revision: our version is now too old.
        await asyncio.to_thread(restart_apiserver, own_cluster)
        cutter.restore()
        await _converged(informer, direct, namespace, timeout_s=60)
        relists = metrics.registry.get_sample_value(
            "climatik_watch_relists_total", {"resource": informer.name}
        )
        gone = metrics.registry.get_sample_value(
            "climatik_watch_restarts_total", {"resource": informer.name, "reason": "gone"}
        )
        print(f"relists={relists} gone={gone} deleted={sorted(deleted)}")
        assert relists is not None
        assert relists >= 1
        assert sorted(deleted) == [f"cm-{i}" for i in range(5)]
        assert "gone/new" in informer.store
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await via.close()
        with contextlib.suppress(Exception):
            await cutter.close()
