"""A real Prometheus scraping the world's metrics exporter (`python -m climatik.world`), for tests.

Loaded as a pytest plugin by the test modules that need it
(`pytest_plugins = ["tests.integration.helpers.prometheus"]`); such a module must import names
from here only under `TYPE_CHECKING` (pytest imports plugins itself, to rewrite their asserts).
What it guarantees:

- `metrics_exporter` (session): the exporter process on a free loopback port; tests set pods
  and values through its control endpoints (`ExporterHandle`), using their own namespaces so
  they never see each other's series.
- `prometheus` (session): a Prometheus on a free loopback port, scraping every exporter family
  each second into a temporary TSDB, returned once every target is up.
- `prometheus_factory` (function): more Prometheus servers a test may stop and restart
  (`stop()`, `start()`, `restart()` keep the port and the TSDB directory).

The binary is found through `CLIMATIK_PROMETHEUS_BIN`, then the control-plane build
(`hack/control-plane/build.sh --print`), then any cached build, then `PATH`; when none exists
the test fails with the command that builds it (a missing Prometheus is not a reason to skip).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from climatik.demo.scrape import JOBS, scrape_config

REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO_ROOT / "hack" / "control-plane" / "build.sh"
EXPORTER_COMMAND = ("-m", "climatik.world")
"""Run from the repository root, so the checkout's package is the one imported."""
ENV_PROMETHEUS_BIN = "CLIMATIK_PROMETHEUS_BIN"
SCRAPE_INTERVAL_S = 1.0


class PrometheusMissingError(RuntimeError):
    pass


def find_prometheus() -> Path:
    """Locate the prometheus binary (see the module docstring for the order)."""
    env = os.environ.get(ENV_PROMETHEUS_BIN)
    if env:
        path = Path(env)
        if not os.access(path, os.X_OK):
            raise PrometheusMissingError(f"{ENV_PROMETHEUS_BIN}={env} is not an executable")
        return path
    if BUILD_SCRIPT.is_file() and shutil.which("go"):
        try:
            printed = subprocess.run(
                ["bash", str(BUILD_SCRIPT), "--print"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
        except (subprocess.SubprocessError, OSError):
            printed = ""
        for line in printed.splitlines():
            if line.startswith("bin_dir="):
                candidate = Path(line.removeprefix("bin_dir=")) / "prometheus"
                if os.access(candidate, os.X_OK):
                    return candidate
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "climatik" / "bin"
    built = sorted(
        (p for p in cache.glob("*/prometheus") if os.access(p, os.X_OK)),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    if built:
        return built[0]
    on_path = shutil.which("prometheus")
    if on_path:
        return Path(on_path)
    raise PrometheusMissingError(
        "no prometheus binary: run `bash hack/control-plane/build.sh` (or set "
        f"{ENV_PROMETHEUS_BIN}, or `apt-get install prometheus`)"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _http(method: str, url: str, payload: Any = None, timeout_s: float = 5.0) -> tuple[int, bytes]:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status: int = response.status
            return status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# ---------------------------------------------------------------------------------------------
# The exporter process


@dataclass
class ExporterHandle:
    """The running exporter and its control endpoints (blocking calls run in a thread)."""

    process: subprocess.Popen[str]
    url: str

    @property
    def hostport(self) -> str:
        return self.url.removeprefix("http://")

    async def _call(self, method: str, path: str, payload: Any = None) -> Any:
        status, body = await asyncio.to_thread(_http, method, self.url + path, payload)
        if status != 200:
            raise AssertionError(f"exporter {method} {path} -> {status}: {body!r}")
        return json.loads(body)

    async def add_pods(self, pods: Sequence[Mapping[str, Any]]) -> None:
        await self._call("POST", "/pods", {"pods": list(pods)})

    async def set(self, namespace: str, name: str, **values: Any) -> None:
        await self._call("POST", "/set", {f"{namespace}/{name}": values})

    async def set_node(self, node: str, **values: Any) -> None:
        await self._call("POST", "/nodes", {node: values})

    async def delete_pod(self, namespace: str, name: str) -> None:
        await self._call("DELETE", f"/pods/{namespace}/{name}")

    def stop(self) -> None:
        _terminate(self.process)


def start_exporter(
    log_path: Path, timeout_s: float = 20.0, extra_args: Sequence[str] = ()
) -> ExporterHandle:
    """Start the exporter on a free port; its output goes to `log_path` (a pipe nobody reads
    would block it once full), where it first prints the address it listens on. `extra_args`
    go to `climatik world` (`--scenario ...` makes it play the datacenter for a cluster)."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, *EXPORTER_COMMAND, "--host", "127.0.0.1", "--port", "0", *extra_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO_ROOT,
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        first = log_path.read_text().partition("\n")
        if first[1] and first[0].startswith("listening on "):
            return ExporterHandle(process=process, url=first[0].removeprefix("listening on "))
        if process.poll() is not None:
            break
        time.sleep(0.05)
    _terminate(process)
    raise RuntimeError(f"metrics exporter did not start:\n{log_path.read_text()[-2000:]}")


def _terminate(process: subprocess.Popen[Any], timeout_s: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)


# ---------------------------------------------------------------------------------------------
# Prometheus


@dataclass
class PrometheusServer:
    """One Prometheus process; `start`/`stop`/`restart` keep its port and TSDB directory."""

    binary: Path
    workdir: Path
    exporter_hostport: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    scrape_interval_s: float = SCRAPE_INTERVAL_S
    """Also each scrape's timeout: an exporter slower than this loses the scrape."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def start(self, *, ready_timeout_s: float = 60.0) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(scrape_config(self.exporter_hostport, self.scrape_interval_s))
        )
        self.starts += 1
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        self._wait_ready(ready_timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                status, _ = _http("GET", f"{self.url}/-/ready", timeout_s=1.0)
            except OSError:
                status = 0
            if status == 200 and self._all_targets_up():
                return
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready within {timeout_s:g} s:\n{self.log_tail()}")

    def _all_targets_up(self) -> bool:
        status, body = _http("GET", f"{self.url}/api/v1/targets?state=active", timeout_s=2.0)
        if status != 200:
            return False
        targets = json.loads(body)["data"]["activeTargets"]
        jobs_up = {t["labels"]["job"] for t in targets if t["health"] == "up"}
        return jobs_up == {job for job, *_ in JOBS}

    def stop(self) -> None:
        if self.process is not None:
            _terminate(self.process)
            self.process = None

    def pause(self, timeout_s: float = 5.0) -> None:
        """SIGSTOP the server and wait until every thread has stopped: its socket still accepts
        connections (the kernel does that) but nothing answers, like a hung server."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        stat = Path(f"/proc/{self.process.pid}/stat")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # Field 3 is the state; "T" once the stop has reached the whole process.
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "T":
                return
            time.sleep(0.01)
        raise RuntimeError("prometheus did not stop on SIGSTOP")

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start_prometheus(
    binary: Path,
    workdir: Path,
    exporter_hostport: str,
    *,
    scrape_interval_s: float = SCRAPE_INTERVAL_S,
) -> PrometheusServer:
    # A free port can be taken between our probe and Prometheus's bind: retry with another.
    last_error: Exception | None = None
    for _ in range(3):
        server = PrometheusServer(
            binary, workdir, exporter_hostport, scrape_interval_s=scrape_interval_s
        )
        try:
            server.start()
        except RuntimeError as exc:
            server.stop()
            last_error = exc
            continue
        return server
    raise RuntimeError(f"prometheus did not start: {last_error}")


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def prometheus_binary() -> Path:
    try:
        return find_prometheus()
    except PrometheusMissingError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def metrics_exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExporterHandle]:
    handle = start_exporter(tmp_path_factory.mktemp("exporter") / "exporter.log")
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def prometheus(
    prometheus_binary: Path,
    metrics_exporter: ExporterHandle,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PrometheusServer]:
    server = start_prometheus(
        prometheus_binary, tmp_path_factory.mktemp("prometheus"), metrics_exporter.hostport
    )
    try:
        yield server
    finally:
        server.stop()


PrometheusFactory = Callable[[], PrometheusServer]


@pytest.fixture
def prometheus_factory(
    prometheus_binary: Path, metrics_exporter: ExporterHandle, tmp_path: Path
) -> Iterator[PrometheusFactory]:
    """Start extra Prometheus servers a test may stop and restart; all stopped at the end."""
    servers: list[PrometheusServer] = []

    def make() -> PrometheusServer:
        server = start_prometheus(
            prometheus_binary, tmp_path / f"prometheus-{len(servers)}", metrics_exporter.hostport
        )
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


ExporterFactory = Callable[[Sequence[str]], ExporterHandle]


@pytest.fixture
def exporter_factory(tmp_path: Path) -> Iterator[ExporterFactory]:
    """Start more exporters with extra `climatik world` arguments (`--scenario ...` makes one
    play the datacenter for a cluster's pods); all stopped at the end."""
    handles: list[ExporterHandle] = []

    def make(extra_args: Sequence[str]) -> ExporterHandle:
        handle = start_exporter(tmp_path / f"exporter-{len(handles)}.log", extra_args=extra_args)
        handles.append(handle)
        return handle

    try:
        yield make
    finally:
        for handle in handles:
            handle.stop()


ScrapingFactory = Callable[[ExporterHandle], PrometheusServer]


@pytest.fixture
def prometheus_scraping(prometheus_binary: Path, tmp_path: Path) -> Iterator[ScrapingFactory]:
    """Start a Prometheus scraping a given exporter (not the session's); stopped at the end."""
    servers: list[PrometheusServer] = []

    def make(exporter: ExporterHandle) -> PrometheusServer:
        server = start_prometheus(
            prometheus_binary, tmp_path / f"prometheus-of-{len(servers)}", exporter.hostport
        )
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()
