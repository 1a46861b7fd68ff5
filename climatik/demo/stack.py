"""The demo's processes, started in order and stopped in reverse whatever happens: the dev
cluster with KEDA, the world, a Prometheus scraping it, the demo's objects, the controller.

Every process writes its log under `DIR/logs/`; a component that does not start raises a
`DemoError` with its log's tail. Progress comes from Prometheus (power) and the API server
(replicas, ceilings), read the way a user would.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from climatik.demo.compare import LiveSample
from climatik.demo.live import WorldTotals
from climatik.demo.manifests import (
    IN_CLUSTER_PROMETHEUS,
    SITE_POWER_QUERY,
    demo_objects,
    site_cap_w,
)
from climatik.demo.progress import ServedFigures, ServiceState, Snapshot, summary_lines
from climatik.demo.scrape import scrape_config
from climatik.devcluster.binaries import locate_binaries
from climatik.devcluster.cluster import ClusterInfo, down, up
from climatik.devcluster.components import HPA_SYNC_PERIOD_S
from climatik.devcluster.processes import ProcessRecord, is_alive, spawn, stop, tail
from climatik.devcluster.service_proxy import connect_to_rule, local_service
from climatik.domain.errors import UserError
from climatik.kube.json import (
    JsonDict,
    JsonValue,
    as_array,
    as_integer,
    as_object,
    child,
    items,
    text,
)
from climatik.sim.scenario import Scenario

SCRAPE_INTERVAL_S = 1.0
START_TIMEOUT_S = 60.0
MIN_CONTROL_INTERVAL_S = 1.0
MIN_TOKENS_WINDOW_S = 4 * SCRAPE_INTERVAL_S
"""rate() needs two samples in its window; four leave room for a late scrape."""
TUNING_NAMESPACE = "climatik-gpu-tuning"
"""Where the controller creates its GPU-tuning Jobs (its default, as installed)."""
TUNING_SERVICE_ACCOUNT = "climatik-gpu-tuner"
TUNING_INTERVAL_S = 60.0
"""The GPU-tuning reconciler's period in simulated seconds (its default in wall seconds)."""
TUNING_GRACE_S = 60.0
"""The power-cap reconciler's hold after a tuning result, in simulated seconds (its default)."""


class DemoError(UserError):
    """A part of the demo did not start; the message carries its log's tail."""

    exit_status = 1


@dataclass(frozen=True)
class DemoSettings:
    scenario_name: str
    """As given: a built-in name or a YAML file (the world loads it too)."""
    scenario: Scenario
    directory: Path
    speed: float = 10.0
    minutes: float = 5.0
    start_hour: float = 0.0
    namespace: str = "demo"
    progress_every_s: float = 10.0
    kserve: bool = False
    """One InferenceService per service (KServe makes its Deployment and ScaledObject)."""
    gpu_tuning: str = "Disabled"
    """The config's `spec.gpuTuning.mode`: Recommend or Apply run tuning Jobs, which the world
    plays on the nodes they name."""
    clocks_under_cap: bool = False
    """With Apply, `spec.gpuTuning.clocksUnderCap`: lock Jobs move the clocks under the cap."""


def _service_account(name: str) -> JsonDict:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_line(record: ProcessRecord, log: Path, prefix: str) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                return line.removeprefix(prefix)
        if not is_alive(record):
            break
        time.sleep(0.1)
    raise DemoError(f"{record.component} did not start; its log ends:\n{tail(log)}")


def _http_json(url: str, timeout_s: float = 5.0) -> JsonValue:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - loopback
        body: JsonValue = json.loads(response.read())
        return body


class Stack:
    """The running demo: what `run` needs to read its progress."""

    def __init__(
        self,
        settings: DemoSettings,
        cluster: ClusterInfo,
        prometheus_url: str,
        control_interval_s: float,
    ) -> None:
        self.settings = settings
        self.control_interval_s = control_interval_s
        """How often the controller decides (wall seconds)."""
        self.cluster = cluster
        self.prometheus_url = prometheus_url
        self.cap_w = site_cap_w(settings.scenario)

    def query(self, promql: str) -> float | None:
        """One instant value, or None when Prometheus has none (yet)."""
        url = f"{self.prometheus_url}/api/v1/query?query={urllib.parse.quote(promql)}"
        try:
            body = as_object(_http_json(url))
        except (OSError, ValueError):
            return None
        for series in items(child(body, "data"), "result"):
            value = items(as_object(series), "value")
            if len(value) == 2 and isinstance(value[1], str):
                return float(value[1])
        return None

    def by_service(self, metric: str) -> dict[str, float]:
        url = f"{self.prometheus_url}/api/v1/query?query={urllib.parse.quote(metric)}"
        try:
            body = as_object(_http_json(url))
        except (OSError, ValueError):
            return {}
        found: dict[str, float] = {}
        for series in items(child(body, "data"), "result"):
            service = text(child(as_object(series), "metric"), "service")
            value = items(as_object(series), "value")
            if service and len(value) == 2 and isinstance(value[1], str):
                found[service] = float(value[1])
        return found

    def series(self, promql: str, start: float, end: float) -> list[tuple[float, float]]:
        """(wall time, value) of one series every scrape interval from `start` to `end`."""
        query = urllib.parse.urlencode(
            {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": "1s"}
        )
        try:
            body = as_object(_http_json(f"{self.prometheus_url}/api/v1/query_range?{query}"))
        except (OSError, ValueError):
            return []
        points: list[tuple[float, float]] = []
        for series in items(child(body, "data"), "result")[:1]:
            for pair in items(as_object(series), "values"):
                t, v = (*as_array(pair), None, None)[:2]
                if isinstance(t, (int, float)) and isinstance(v, str):
                    points.append((float(t), float(v)))
        return points

    def totals(self) -> WorldTotals | None:
        """The world's running totals as Prometheus last scraped them (None: none yet)."""
        simulated_s = self.query("climatik_world_simulated_seconds_total")
        if simulated_s is None:
            return None
        return WorldTotals(
            simulated_s=simulated_s,
            energy_j=self.query("climatik_world_it_energy_joules_total") or 0.0,
            cap_violation_ws=self.query("climatik_world_cap_violation_watt_seconds_total") or 0.0,
            max_overshoot_w=self.query("climatik_world_max_overshoot_watts") or 0.0,
            tokens=self.by_service("climatik_world_tokens_total"),
            arrived=self.by_service("climatik_world_requests_arrived_total"),
            met_slo=self.by_service("climatik_world_requests_met_slo_total"),
        )

    def summary(self) -> list[str]:
        """The world's figures for the run so far (what `simulate` reports per policy)."""
        totals = self.totals()
        if totals is None:
            return summary_lines(None, None, {})
        served = {
            name: ServedFigures(
                tokens, totals.arrived.get(name, 0.0), totals.met_slo.get(name, 0.0)
            )
            for name, tokens in totals.tokens.items()
        }
        return summary_lines(totals.simulated_s, totals.energy_j, served)

    def sample(self, snap: Snapshot) -> LiveSample | None:
        """The snapshot in the world's simulated time, with its site power (None: the world
        has not been scraped yet)."""
        simulated_s = self.query("climatik_world_simulated_seconds_total")
        site_w = self.query("climatik_world_site_power_watts")
        if simulated_s is None or site_w is None:
            return None
        return LiveSample(
            wall_s=snap.elapsed_s,
            simulated_s=simulated_s,
            site_w=site_w,
            serving={name: state.ready for name, state in snap.services.items()},
            ceilings={
                name: state.ceiling
                for name, state in snap.services.items()
                if state.ceiling is not None
            },
        )

    def _service(self, name: str) -> str:
        """The scenario service of a Deployment or ScaledObject (KServe's: `<isvc>-predictor`)."""
        return name.removesuffix("-predictor") if self.settings.kserve else name

    def snapshot(self, elapsed_s: float) -> Snapshot:
        ns = self.settings.namespace
        pods_w = self.query(
            f'sum(kepler_pod_cpu_watts{{pod_namespace="{ns}",zone="package"}})'
            f' + sum(kepler_pod_gpu_watts{{pod_namespace="{ns}"}})'
        )
        site_w = self.query(SITE_POWER_QUERY)
        api = self.cluster.admin_client()
        deployments = api.get(f"/apis/apps/v1/namespaces/{ns}/deployments")
        scaled = api.get(f"/apis/keda.sh/v1alpha1/namespaces/{ns}/scaledobjects")
        ceilings: dict[str, int | None] = {}
        for obj in items(as_object(scaled.body), "items") if scaled.status == 200 else ():
            so = as_object(obj)
            name = self._service(text(child(so, "metadata"), "name") or "")
            ceilings[name] = as_integer(child(so, "spec").get("maxReplicaCount"))
        services: dict[str, ServiceState] = {}
        for obj in items(as_object(deployments.body), "items") if deployments.status == 200 else ():
            dep = as_object(obj)
            name = self._service(text(child(dep, "metadata"), "name") or "")
            services[name] = ServiceState(
                ready=as_integer(child(dep, "status").get("readyReplicas")) or 0,
                wanted=as_integer(child(dep, "spec").get("replicas")) or 0,
                ceiling=ceilings.get(name),
            )
        s = self.settings
        return Snapshot(
            elapsed_s=elapsed_s,
            simulated_h=s.start_hour + elapsed_s * s.speed / 3600.0,
            pods_w=pods_w,
            cap_w=self.cap_w,
            site_w=site_w,
            services=services,
        )


@contextmanager
def running_stack(settings: DemoSettings, say: Callable[[str], None]) -> Iterator[Stack]:
    """Bring everything up, yield, and take it all down again (also on errors and Ctrl-C)."""
    directory = settings.directory.resolve()
    logs = directory / "logs"
    cluster_dir = directory / "cluster"
    with ExitStack() as stack:
        say("starting the dev cluster with KEDA ...")
        stack.callback(down, cluster_dir)
        cluster = up(
            cluster_dir,
            addons=("keda", "kserve") if settings.kserve else ("keda",),
            # The HPA acts as often per simulated second as on a real site.
            hpa_sync_period_s=max(1.0, HPA_SYNC_PERIOD_S / settings.speed),
        )
        kubeconfig = str(cluster.kubeconfig)

        def start(
            component: str, argv: list[str], env: dict[str, str] | None = None
        ) -> ProcessRecord:
            log_path = logs / f"{component}.log"
            record = spawn(component, argv, log_path=log_path, cwd=directory, env=env)
            stack.callback(stop, [record])
            return record

        s = settings
        world_argv = [sys.executable, "-m", "climatik.world", "--host", "127.0.0.1"]
        world_argv += ["--port", "0", "--scenario", s.scenario_name, "--speed", f"{s.speed:g}"]
        # Every namespace: a workload applied beside the demo's (an example) is served too.
        world_argv += ["--start-hour", f"{s.start_hour:g}"]
        world_argv += ["--kubeconfig", kubeconfig]
        world = start("world", world_argv)
        world_url = _wait_for_line(world, logs / "world.log", "listening on ")
        say(f"world: {world_url} ({s.scenario.name} at {s.speed:g}x)")

        prometheus_dir = directory / "prometheus"
        prometheus_dir.mkdir(parents=True, exist_ok=True)
        config = prometheus_dir / "prometheus.yml"
        hostport = world_url.removeprefix("http://")
        config.write_text(yaml.safe_dump(scrape_config(hostport, SCRAPE_INTERVAL_S)))
        port = _free_port()
        binary = locate_binaries().path("prometheus")
        prometheus = start(
            "prometheus",
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={prometheus_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
        )
        prometheus_url = f"http://127.0.0.1:{port}"
        _wait_ready(prometheus, logs / "prometheus.log", f"{prometheus_url}/-/ready")
        # Where the examples (and most sites) have Prometheus: through the dev cluster's
        # service proxy for KEDA, by a connect-to rule for the controller.
        namespace, name, service_port = IN_CLUSTER_PROMETHEUS
        _, service = local_service(namespace, name, service_port, port)
        _apply(cluster, namespace, [service])
        in_cluster_url = f"http://{name}.{namespace}.svc:{service_port}"
        say(f"prometheus: {prometheus_url} ({in_cluster_url})")

        racks = sorted(cluster.nodes_by_rack)
        # The demo's own objects name it as the examples do, so every run goes that way.
        objects = demo_objects(
            s.scenario,
            s.namespace,
            in_cluster_url,
            racks,
            kserve=s.kserve,
            speed=s.speed,
            gpu_tuning=s.gpu_tuning,
            clocks_under_cap=s.clocks_under_cap,
        )
        _apply(cluster, s.namespace, objects)
        say(f"applied {len(s.scenario.services)} services and their ScaledObjects in {s.namespace}")
        tuning_env: dict[str, str] = {}
        if s.gpu_tuning != "Disabled":
            _apply(cluster, TUNING_NAMESPACE, [_service_account(TUNING_SERVICE_ACCOUNT)])
            tuning_env = {
                "CLIMATIK_GPU_TUNING__ALLOWED_NAMESPACES": json.dumps([s.namespace]),
                "CLIMATIK_GPU_TUNING__JOB_NAMESPACE": TUNING_NAMESPACE,
                "CLIMATIK_GPU_TUNING__SERVICE_ACCOUNT": TUNING_SERVICE_ACCOUNT,
                # kwok's nodes have no NVIDIA runtime; the world plays the Jobs anyway.
                "CLIMATIK_GPU_TUNING__RUNTIME_CLASS": "",
                "CLIMATIK_GPU_TUNING__INTERVAL_S": f"{max(1.0, TUNING_INTERVAL_S / s.speed):g}",
            }
            say(f"GPU tuning: {s.gpu_tuning}, Jobs in {TUNING_NAMESPACE}, played by the world")
        controller_argv = [sys.executable, "-m", "climatik", "run", "--kubeconfig", kubeconfig]
        # Decide as often in simulated time as the twin's controller does, within reason on a
        # laptop: the scenario's control interval compressed by the speed, at least a second.
        interval_s = max(MIN_CONTROL_INTERVAL_S, s.scenario.control_interval_s / s.speed)
        # Rates over the twin's measurement window in simulated time, not 5 wall minutes (50
        # simulated at 10x): long windows set new replicas' watts against old tokens.
        window_s = max(MIN_TOKENS_WINDOW_S, s.scenario.measurement.window_s / s.speed)
        env = {
            **os.environ,
            "CLIMATIK_CAPPING__INTERVAL_S": f"{interval_s:g}",
            "CLIMATIK_CAPPING__TOKENS_WINDOW_S": f"{window_s:g}",
            # After a tuning result, ceilings hold while readings at the old clocks age out of
            # the (compressed) rate windows: the default minute, in simulated time.
            "CLIMATIK_CAPPING__TUNING_GRACE_S": f"{max(window_s, TUNING_GRACE_S / s.speed):g}",
            "CLIMATIK_OUTBOUND__CONNECT_TO": json.dumps(
                [connect_to_rule(namespace, name, service_port, port)]
            ),
            **tuning_env,
        }
        start("controller", [*controller_argv, "--http-port", "0", "--no-leader-elect"], env)
        say(f"controller: climatik run (logs in {logs})")
        yield Stack(settings, cluster, prometheus_url, interval_s)
        say("stopping ...")


def _wait_ready(record: ProcessRecord, log: Path, url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not is_alive(record):
            break
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise DemoError(f"{record.component} did not become ready; its log ends:\n{tail(log)}")


def _apply(cluster: ClusterInfo, namespace: str, objects: list[JsonDict]) -> None:
    kubectl = [str(cluster.kubectl), f"--kubeconfig={cluster.kubeconfig}"]
    listing: JsonDict = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    for argv, stdin in (
        ([*kubectl, "create", "namespace", namespace], None),
        ([*kubectl, "apply", "-n", namespace, "-f", "-"], json.dumps(listing)),
    ):
        result = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode != 0 and "AlreadyExists" not in result.stderr:
            raise DemoError(f"{' '.join(argv[2:5])} failed: {result.stderr.strip()}")
