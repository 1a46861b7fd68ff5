"""How `up` launches the dev cluster's processes: ports, logs, the state file, waiting on
each component, and applying manifests with the built kubectl.

Shared by the control plane (`cluster`) and the add-ons (`addon_launch`); a failure anywhere
raises DevClusterError with the failing component's log tail.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from climatik.devcluster.apiclient import ApiClient
from climatik.devcluster.binaries import ControlPlaneBinaries
from climatik.devcluster.processes import ProcessRecord, exit_code, is_alive, spawn, tail

STATE_FILE = "cluster.json"


class DevClusterError(RuntimeError):
    """`up` or `down` failed; `str()` names the component and includes its log tail."""

    def __init__(self, message: str, *, component: str | None = None, log_tail: str = "") -> None:
        """Keep the component and its log tail for callers that print them separately."""
        self.component = component
        self.log_tail = log_tail
        text = message
        if component is not None:
            text = f"{component}: {message}"
        if log_tail:
            text += f"\n--- last lines of {component} log ---\n{log_tail}"
        super().__init__(text)


def free_ports(count: int) -> list[int]:
    """Ask the kernel for distinct free loopback ports (held together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def write_yaml(path: Path, data: object) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    path.chmod(0o600)


class Launch:
    """One `up` in progress: started processes, their logs and the state file."""

    def __init__(
        self,
        directory: Path,
        binaries: ControlPlaneBinaries,
        progress: Callable[[str], None] | None,
    ) -> None:
        self.dir = directory
        self.binaries = binaries
        self.records: list[ProcessRecord] = []
        self.state: dict[str, Any] = {"status": "starting", "processes": [], "timings_s": {}}
        self._progress = progress
        self._started = time.monotonic()

    def note(self, step: str) -> None:
        """Record how long into `up` a step finished, and report it."""
        elapsed = round(time.monotonic() - self._started, 2)
        self.state["timings_s"][step] = elapsed
        if self._progress is not None:
            self._progress(f"[{elapsed:5.1f}s] {step}")

    def log_path(self, component: str) -> Path:
        return self.dir / "logs" / f"{component}.log"

    def save(self) -> None:
        self.state["processes"] = [asdict(r) for r in self.records]
        tmp = self.dir / f"{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(self.state, indent=2), encoding="utf-8")
        tmp.replace(self.dir / STATE_FILE)

    def start(
        self,
        component: str,
        binary: str | Path,
        args: Sequence[str],
        env: dict[str, str] | None = None,
    ) -> None:
        """Start a control-plane binary by name, or any executable by path."""
        executable = binary if isinstance(binary, Path) else self.binaries.path(binary)
        record = spawn(
            component,
            [str(executable), *args],
            log_path=self.log_path(component),
            cwd=self.dir,
            env={**component_env(), **(env or {})},
        )
        self.records.append(record)
        self.save()

    def fail(self, component: str, message: str) -> DevClusterError:
        return DevClusterError(
            message, component=component, log_tail=tail(self.log_path(component))
        )

    def check_running(self) -> None:
        """Raise for the first component that exited early, with its log."""
        for record in self.records:
            if not is_alive(record):
                code = exit_code(record)
                status = f" with status {code}" if code is not None else ""
                raise self.fail(record.component, f"exited during start-up{status}")

    def wait_for(
        self, component: str, what: str, ready: Callable[[], bool], deadline: float
    ) -> None:
        """Poll `ready` until true; fail on timeout or when any component dies."""
        last_error = ""
        while True:
            self.check_running()
            try:
                if ready():
                    self.note(f"{component}: {what}")
                    return
            except OSError as exc:  # not listening yet, connection reset, TLS not ready
                last_error = f" (last error: {exc})"
            if time.monotonic() > deadline:
                raise self.fail(component, f"timed out waiting for {what}{last_error}")
            time.sleep(0.25)


def component_env() -> dict[str, str]:
    # A KUBECONFIG from the caller's shell must never steer a component to another cluster.
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.setdefault("HOME", str(Path.home()))
    return env


def healthz_ok(port: int) -> Callable[[], bool]:
    probe = ApiClient("127.0.0.1", port, ca=None)
    return lambda: probe.get("/healthz").status == 200


def plain_http_get(port: int) -> Callable[[str], str]:
    def get(path: str) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", path)
            return conn.getresponse().read().decode("utf-8", errors="replace")
        finally:
            conn.close()

    return get


def apply_manifests(launch: Launch, kubeconfig: Path, files: Sequence[Path]) -> list[str]:
    """Apply manifests with the built kubectl and return the names of the CRDs among them.

    Server-side, because KServe's CRD is too big for a client-side apply's last-applied
    annotation; kubectl rather than Python because parsing that 2 MB of YAML in Python takes
    tens of seconds on a small machine.
    """
    if not files:
        return []
    argv = [str(launch.binaries.path("kubectl")), f"--kubeconfig={kubeconfig}", "apply", "-o=name"]
    argv += ["--server-side", "--force-conflicts", "--field-manager=climatik-dev-cluster"]
    for path in files:
        argv += ["-f", str(path)]
    remaining = 120.0
    result = subprocess.run(argv, capture_output=True, text=True, timeout=remaining, check=False)
    if result.returncode != 0:
        raise DevClusterError(
            f"kubectl apply of {', '.join(p.name for p in files)} failed",
            component="kubectl",
            log_tail=(result.stdout + result.stderr).strip(),
        )
    prefix = "customresourcedefinition.apiextensions.k8s.io/"
    return [line[len(prefix) :] for line in result.stdout.split() if line.startswith(prefix)]
