"""Leader election between real `climatik run` processes on the dev cluster.

Two (then three) controller processes run the probe controller
(tests/integration/helpers/runtime_probe.py) in the test's namespace. The test watches the probe
ConfigMap with our own informer, so any write from a replica that is not the leader would be
seen, and reads each process's /metrics.
Failover times are printed and attached to the report (``record_property``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from climatik.devcluster.cluster import ClusterInfo
from climatik.kube.client import ApiError, KubeClient
from climatik.kube.informer import EventHandlers, Informer
from climatik.kube.resources import CONFIGMAPS, LEASES
from tests.integration.conftest import Kubectl
from tests.integration.helpers.runtime_probe import PROBE_LABEL

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

REPO_ROOT = Path(__file__).resolve().parents[2]
LEASE_NAME = "climatik-controller"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunProcess:
    identity: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
        return lines

    def logged(self, event: str) -> bool:
        return any(line.get("event") == event for line in self.log_lines())


@dataclass
class Runs:
    cluster: ClusterInfo
    namespace: str
    directory: Path
    started: list[RunProcess] = field(default_factory=list)

    def start(self, identity: str) -> RunProcess:
        port = _free_port()
        log_path = self.directory / f"run-{identity}.log"
        env = {
            **{k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
            "PYTHONPATH": str(REPO_ROOT),
            "CLIMATIK_EXTRA_CONTROLLERS": json.dumps(
                ["tests.integration.helpers.runtime_probe:factory"]
            ),
            "CLIMATIK_LOGGING__FORMAT": "json",
            "CLIMATIK_HTTP__HOST": "127.0.0.1",
        }
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "climatik",
                    "run",
                    f"--kubeconfig={self.cluster.kubeconfig}",
                    f"--namespace={self.namespace}",
                    f"--identity={identity}",
                    f"--http-port={port}",
                ],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        run = RunProcess(identity, proc, log_path, port)
        self.started.append(run)
        return run


@pytest.fixture
def runs(dev_cluster: ClusterInfo, namespace: str, tmp_path: Path) -> Iterator[Runs]:
    runs = Runs(dev_cluster, namespace, tmp_path)
    yield runs
    for run in runs.started:
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGCONT)
            run.proc.kill()
        run.proc.wait(timeout=10)
    for run in runs.started:
        print(f"--- {run.identity} log tail ---")
        print("\n".join(run.log_path.read_text(errors="replace").splitlines()[-15:]))


async def _holder(client: KubeClient, namespace: str) -> str:
    try:
        lease = await client.get(LEASES, LEASE_NAME, namespace)
    except ApiError as error:
        if error.is_not_found:
            return ""
        raise
    return str(lease.get("spec", {}).get("holderIdentity") or "")


async def _wait_holder(
    client: KubeClient, namespace: str, identity: str, timeout_s: float
) -> float:
    """Poll the lease every 100 ms until `identity` holds it; return the seconds waited."""
    started = time.monotonic()
    while (holder := await _holder(client, namespace)) != identity:
        if time.monotonic() - started > timeout_s:
            pytest.fail(
                f"{identity} did not take the lease within {timeout_s}s (holder={holder!r})"
            )
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def _wait_for(what: str, check: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.1)


async def _is_leader_metric(run: RunProcess) -> float:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{run.port}/metrics") as response,
    ):
        text = await response.text()
    for line in text.splitlines():
        if line.startswith("climatik_leader_is_leader "):
            return float(line.split()[1])
    raise AssertionError("climatik_leader_is_leader missing from /metrics")


async def test_one_leader_failover_on_freeze_and_fast_handover_on_sigterm(
    runs: Runs,
    client: KubeClient,
    kubectl: Kubectl,
    namespace: str,
    record_property: Any,
) -> None:
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "probe", "labels": {PROBE_LABEL: "true"}},
            "data": {},
        }
    )
    # Every write to the probe object, as the test's own watch sees it: (time, writer, seq).
    writes: list[tuple[float, str, int]] = []

    def on_update(_old: Any, new: Any) -> None:
        data = new.get("data") or {}
        if "writer" in data:
            writes.append((time.monotonic(), data["writer"], int(data["seq"])))

    watcher = Informer(client, CONFIGMAPS, namespace=namespace)
    watcher.add_handlers(EventHandlers(on_update=on_update))
    watch_task = asyncio.create_task(watcher.run())
    try:
        a = runs.start("a")
        await _wait_holder(client, namespace, "a", timeout_s=60)
        b = runs.start("b")
        await _wait_for("b's caches to sync", lambda: b.logged("cache_synced"), 60)
        await _wait_for("a to write", lambda: any(w[1] == "a" for w in writes), 30)
        await asyncio.sleep(2)
        # Exactly one leads: the lease, the metrics and the writes agree.
        assert await _holder(client, namespace) == "a"
        assert [await _is_leader_metric(a), await _is_leader_metric(b)] == [1.0, 0.0]
        assert {w[1] for w in writes} == {"a"}

        # Freeze the leader: the standby takes over once the lease is 15 s stale.
        a.proc.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        failover_after_stop_s = await _wait_holder(client, namespace, "b", timeout_s=40)
        record_property("failover_after_sigstop_s", round(failover_after_stop_s, 2))
        print(f"failover after SIGSTOP: {failover_after_stop_s:.2f} s")
        await _wait_for("b to write", lambda: any(w[1] == "b" for w in writes), 10)

        # Thaw the old leader: it must not write again, and must exit non-zero.
        a.proc.send_signal(signal.SIGCONT)
        thawed_at = time.monotonic()
        await _wait_for("the thawed leader to exit", lambda: a.proc.poll() is not None, 30)
        await asyncio.sleep(1.5)  # let any late write reach our watch
        assert a.proc.returncode == 1
        assert a.logged("leadership_lost_exiting")
        # (a write already in flight when SIGSTOP landed may still arrive just after it)
        late = [w for w in writes if w[0] > frozen_at + 1.0 and w[1] == "a"]
        assert late == [], f"the frozen leader wrote after losing the lease: {late}"
        assert any(w[1] == "b" and w[0] > thawed_at for w in writes)
        assert await _holder(client, namespace) == "b"

        # A clean stop releases the lease: a warm standby takes over within seconds.
        c = runs.start("c")
        await _wait_for("c's caches to sync", lambda: c.logged("cache_synced"), 60)
        await asyncio.sleep(1)
        b.proc.send_signal(signal.SIGTERM)
        term_at = time.monotonic()
        failover_after_term_s = await _wait_holder(client, namespace, "c", timeout_s=20)
        record_property("failover_after_sigterm_s", round(failover_after_term_s, 2))
        print(f"failover after SIGTERM: {failover_after_term_s:.2f} s")
        await _wait_for("b to exit", lambda: b.proc.poll() is not None, 15)
        assert b.proc.returncode == 0
        assert b.logged("lease_released")
        await _wait_for("c to write", lambda: any(w[1] == "c" for w in writes), 10)
        assert not [w for w in writes if w[1] == "b" and w[0] > term_at + 1.0]

        # The standby tries the moment the lease it last saw change runs out: at worst 15 s after
        # its poll that saw the frozen leader's last renewal, a jittered 2 s period (x 2.2)
        # after it; 2 s for the API calls on a busy machine.
        assert failover_after_stop_s < 15 + 2 * (1 + 1.2) + 2
        assert failover_after_term_s < 5
    finally:
        watch_task.cancel()
        await asyncio.gather(watch_task, return_exceptions=True)
