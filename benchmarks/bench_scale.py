"""The controller at scale: thousands of PowerCappingConfigs on the dev cluster (issue 15).

Brings up a dev cluster (real kube-apiserver, etcd, controller-manager, scheduler, kwok), a real
Prometheus scraping the metrics exporter, and creates `--configs` namespaced sets of a
Deployment (one kwok pod), its KEDA ScaledObject and a PowerCappingConfig capping it, spread over
`--namespaces` namespaces. A fifth of the configs have a cap below what their pod draws, so they
hold a lowered ceiling; the rest are within their cap. Every pod's watts move by a few percent
every scrape (real meters are noisy; the exporter jitters them itself). The controller then runs
in this process with every built-in controller, cluster-wide, as `climatik run` runs them, and
the benchmark reports over a steady-state window:

- RSS of the controller's process: each measurement runs in a process of its own, started
  for it (the no-op baseline's heap would otherwise stay in the measured process, and the
  benchmark's cluster bookkeeping would count as the controller's);
- reconcile latency p50/p99 per controller (each reconcile timed around the reconciler);
- rounds: the longest gap between two reconciles of one power-cap key (every config must be
  reconciled at least once per control interval, 15 s), and how long the first full round took;
- API requests per second by verb and resource, and status writes per config per minute;
- Prometheus queries per second (Prometheus's own `prometheus_engine_query_duration_seconds`).

The baseline measured in the same run is the same manager with a no-op reconciler on the same
keys: the floor of what the runtime (queue, workers, metrics, logging context) costs per key.

Run:  PYTHONPATH=. .venv/bin/python benchmarks/bench_scale.py [--configs 5000] [--namespaces 100]
          [--window-s 120] [--json out.json] [--profile out.prof] [--cluster-dir DIR --keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from climatik.devcluster.cluster import ClusterInfo, down, up
from climatik.devcluster.topology import Rack, Topology
from climatik.kube.client import KubeClient
from climatik.runtime.controllers import controller_factories
from climatik.runtime.logging import configure_logging
from climatik.runtime.manager import Manager
from climatik.runtime.reconcile import Controller, Result
from climatik.runtime.settings import ControllerSettings, RuntimeSettings
from tests.integration.helpers.prometheus import (
    ExporterHandle,
    PrometheusServer,
    find_prometheus,
    start_exporter,
    start_prometheus,
)

# The controller's own logging (no frame locals in tracebacks), errors only.
configure_logging("error")

API = "powercapping.climatik-project.ai/v1"
WATTS_PER_POD = 300.0
NOISE = 0.03
SCRAPE_INTERVAL_S = 5.0
"""Prometheus's scrape interval (and timeout) here: what an exporter of 5,000 pods can keep."""


# -- the objects ------------------------------------------------------------------------------


def _objects(namespace: str, index: int, tight: bool) -> list[dict[str, Any]]:
    name = f"svc-{index:05d}"
    labels = {"app": name}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [{"name": "vllm", "image": "vllm/vllm-openai:latest"}],
                        "nodeSelector": {"type": "kwok"},
                        # A kwok node whose heartbeat is late on a loaded machine must not have
                        # its pods evicted mid-measurement (new names Prometheus never saw).
                        "tolerations": [
                            {"key": "kwok.x-k8s.io/node", "operator": "Exists"},
                            {"key": "node.kubernetes.io/not-ready", "operator": "Exists"},
                            {"key": "node.kubernetes.io/unreachable", "operator": "Exists"},
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "scaleTargetRef": {"name": name},
                "minReplicaCount": 1,
                "maxReplicaCount": 4,
                "triggers": [
                    {
                        "type": "prometheus",
                        "metadata": {
                            "serverAddress": "http://prometheus.monitoring:9090",
                            "query": f'sum(vllm:num_requests_waiting{{pod=~"{name}.*"}})',
                            "threshold": "5",
                        },
                    }
                ],
            },
        },
        {
            "apiVersion": API,
            "kind": "PowerCappingConfig",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                # Tight: one replica's draw is over the cap, so the ceiling is held at min.
                "powerCapLimit": 250 if tight else 2000,
                "scaleObjectRef": [
                    {
                        "apiVersion": "keda.sh/v1alpha1",
                        "kind": "ScaledObject",
                        "metadata": {"name": name},
                    }
                ],
                "powerMeasurement": {"preset": "KeplerPod"},
            },
        },
    ]


def _kubectl(cluster: ClusterInfo, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(cluster.kubectl), f"--kubeconfig={cluster.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr[-2000:]}")
    return result.stdout


def _populate(cluster: ClusterInfo, configs: int, namespaces: int) -> float:
    started = time.perf_counter()
    names = [f"scale-{n:03d}" for n in range(namespaces)]
    _kubectl(
        cluster,
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
                    for n in names
                ],
            }
        ),
    )
    rng = random.Random(15)
    batch: list[dict[str, Any]] = []
    for index in range(configs):
        batch += _objects(names[index % namespaces], index, rng.random() < 0.2)
        if len(batch) >= 600 or index == configs - 1:
            _kubectl(
                cluster,
                "apply",
                "--server-side",
                "-f",
                "-",
                stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": batch}),
            )
            batch = []
    return time.perf_counter() - started


_POD_FIELDS = (
    "{range .items[*]}{.metadata.namespace} {.metadata.name} {.spec.nodeName} "
    '{.status.phase}{"\\n"}{end}'
)


def _benchmark_pods(cluster: ClusterInfo) -> list[tuple[str, str, str, str]]:
    """(namespace, name, node, phase) of every benchmark pod. Only these fields reach this
    process: thousands of whole pods parsed here would swell its memory."""
    listed = _kubectl(
        cluster,
        "get",
        "pods",
        "-A",
        "-l",
        "app",
        "-o",
        f"jsonpath={_POD_FIELDS}",
        "--chunk-size=1000",
    )
    pods = []
    for line in listed.splitlines():
        fields = line.split()
        if len(fields) == 4:
            pods.append((fields[0], fields[1], fields[2], fields[3]))
        elif len(fields) == 3:  # not scheduled yet
            pods.append((fields[0], fields[1], "", fields[2]))
    return pods


def _running_pods(cluster: ClusterInfo) -> list[tuple[str, str, str]]:
    """(namespace, name, node) of every Running benchmark pod."""
    pods = _benchmark_pods(cluster)
    return [(ns, name, node) for ns, name, node, phase in pods if phase == "Running"]


async def _wait_for_pods(cluster: ClusterInfo, count: int, timeout_s: float = 2400) -> float:
    """Until exactly `count` benchmark pods exist, all Running (a rollout is over)."""
    started = time.perf_counter()
    while True:
        pods = await asyncio.to_thread(_benchmark_pods, cluster)
        running = [p for p in pods if p[3] == "Running"]
        print(f"  {len(running)}/{count} pods running, {len(pods)} in all", flush=True)
        if len(running) == len(pods) == count:
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout_s:
            raise TimeoutError(f"only {len(running)} of {count} pods running")
        await asyncio.sleep(10)


async def _serve_noisy_watts(exporter: ExporterHandle, pods: list[tuple[str, str, str]]) -> None:
    """Every pod draws about `WATTS_PER_POD`, jittered by the exporter by up to `NOISE` at each
    scrape (the benchmark process itself does no work for it during the measurement)."""
    specs = [
        {
            "namespace": namespace,
            "name": name,
            "node": node,
            "cpu_watts": WATTS_PER_POD,
            "gpu_watts": None,
            "tokens_per_s": WATTS_PER_POD / 10,
            "noise": NOISE,
        }
        for namespace, name, node in pods
    ]
    # Small batches: on a loaded machine a batch of 500 outlasted the exporter call's timeout.
    for start in range(0, len(specs), 100):
        await exporter.add_pods(specs[start : start + 100])


# -- instruments ------------------------------------------------------------------------------


class CountingClient(KubeClient):
    """The controller's client, counting the requests it sends by verb and resource."""

    counts: Counter[tuple[str, str]]

    def start_counting(self) -> None:
        self.counts = Counter()

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        counts = getattr(self, "counts", None)
        if counts is not None:
            counts[(method, _resource_of(path))] += 1
        return await super().request(method, path, **kwargs)


def _resource_of(path: str) -> str:
    parts = [p for p in path.split("?", maxsplit=1)[0].split("/") if p]
    if "namespaces" in parts:
        at = parts.index("namespaces")
        parts = parts[:at] + parts[at + 2 :]
    core = parts[2:] if parts[:1] == ["api"] else parts[3:]
    return "/".join(p for i, p in enumerate(core) if i != 1) or path


class TimedReconciler:
    """Wraps a reconciler: every reconcile's duration and finish time, per key."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.durations: list[float] = []
        self.finished: dict[str, list[float]] = defaultdict(list)

    async def reconcile(self, key: str) -> Result:
        started = time.perf_counter()
        try:
            result: Result = await self.inner.reconcile(key)
            return result
        finally:
            now = time.perf_counter()
            self.durations.append(now - started)
            self.finished[key].append(now)

    def reset(self) -> None:
        self.durations.clear()
        self.finished.clear()


class NoOpReconciler:
    """The baseline: the runtime's own cost per key, nothing reconciled."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s

    async def reconcile(self, key: str) -> Result:
        del key
        return Result(requeue_after=self.interval_s)


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class GcPauses:
    """The garbage collector's pauses while counting, by generation: every one stops the event
    loop, and a full collection walks every tracked object the caches hold."""

    def __init__(self) -> None:
        self.pauses_s: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started: float | None = None
        self.counting = False

    def __call__(self, phase: str, info: Mapping[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None and self.counting:
            self.pauses_s[info["generation"]].append(time.perf_counter() - self._started)

    def report(self) -> dict[str, Any]:
        every = [p for pauses in self.pauses_s.values() for p in pauses]
        return {
            "count": len(every),
            "total_s": round(sum(every), 2),
            "max_ms": round(max(every, default=0.0) * 1000, 1),
            "by_generation": {
                str(g): {
                    "count": len(pauses),
                    "total_s": round(sum(pauses), 3),
                    "max_ms": round(max(pauses, default=0.0) * 1000, 1),
                }
                for g, pauses in self.pauses_s.items()
            },
        }


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _prometheus_queries(prometheus_url: str) -> float:
    """Queries the Prometheus engine has run so far (its own counter)."""
    with urllib.request.urlopen(f"{prometheus_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("prometheus_engine_query_duration_seconds_count") and (
            'slice="inner_eval"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- the run ----------------------------------------------------------------------------------


async def _measure(
    kubeconfig: Path,
    *,
    configs: int,
    window_s: float,
    prometheus_url: str,
    wrap: Callable[[Controller], Any],
    profile: Path | None = None,
) -> dict[str, Any]:
    """Run every built-in controller in this process, as `climatik run` does, and measure it."""
    settings = RuntimeSettings(
        kube={"kubeconfig": str(kubeconfig)},
        leader_election={"enabled": False},
        http={"host": "127.0.0.1", "port": 0},
    )
    client = await CountingClient.from_config(str(kubeconfig))
    assert isinstance(client, CountingClient)
    controllers = ControllerSettings()
    manager = Manager(
        settings, client, install_signal_handlers=False, controller_settings=controllers
    )
    for factory in controller_factories(controllers):
        manager.add_controller(factory)
    timed: dict[str, TimedReconciler] = {}
    for controller in manager.controllers:
        controller.reconciler = wrap(controller)
        timed[controller.name] = TimedReconciler(controller.reconciler)
        controller.reconciler = timed[controller.name]
    started = time.perf_counter()
    task = asyncio.create_task(manager.run())
    try:
        power = timed["power-cap"]
        while len(power.finished) < configs:
            if task.done():
                raise RuntimeError("the manager stopped") from task.exception()
            await asyncio.sleep(1)
        first_round_s = time.perf_counter() - started
        await asyncio.sleep(30)  # settle: first writes done
        for t in timed.values():
            t.reset()
        client.start_counting()
        queries_before = await asyncio.to_thread(_prometheus_queries, prometheus_url)
        gc_pauses = GcPauses()
        gc.callbacks.append(gc_pauses)
        gc_pauses.counting = True
        window_start = time.perf_counter()
        cpu_start = time.process_time()
        if profile is not None:
            profiler = cProfile.Profile()
            profiler.enable()
        await asyncio.sleep(window_s)
        if profile is not None:
            profiler.disable()
            profiler.dump_stats(str(profile))
        window = time.perf_counter() - window_start
        cpu_s = time.process_time() - cpu_start
        lead_s = next(c for c in manager.controllers if c.name == "power-cap").lateness.lead_s(15.0)
        gc_pauses.counting = False
        gc.callbacks.remove(gc_pauses)
        queries = await asyncio.to_thread(_prometheus_queries, prometheus_url) - queries_before
        counts = dict(client.counts)
        rss = _rss_mib()
    finally:
        manager.request_stop()
        await asyncio.wait_for(task, 60)
        await client.close()

    gaps: list[float] = []
    unreconciled = 0
    for key in (k for k in power.finished if "/" in k):
        times = [window_start, *power.finished[key], window_start + window]
        gaps.append(max(b - a for a, b in itertools.pairwise(times)))
    unreconciled = configs - len(power.finished)
    status_writes = sum(
        n for (verb, res), n in counts.items() if verb == "PATCH" and res.endswith("/status")
    )
    return {
        "rss_mib": round(rss, 1),
        "first_round_s": round(first_round_s, 1),
        "window_s": round(window, 1),
        # Busy share of one core: an asyncio process near 100 % has no time left to be punctual.
        "cpu_share_of_one_core": round(cpu_s / window, 3),
        "gc_pauses": gc_pauses.report(),
        "reconcile": {
            name: {
                "count": len(t.durations),
                "per_s": round(len(t.durations) / window, 1),
                "p50_ms": round(_percentile(t.durations, 0.5) * 1000, 2),
                "p99_ms": round(_percentile(t.durations, 0.99) * 1000, 2),
                "max_ms": round(max(t.durations, default=0) * 1000, 1),
            }
            for name, t in timed.items()
        },
        "power_cap_round": {
            "longest_gap_s": round(max(gaps, default=float("nan")), 2),
            "median_gap_s": round(statistics.median(gaps), 2) if gaps else None,
            "keys_not_reconciled_in_window": unreconciled,
            "keys_with_a_gap_over_15_s": sum(1 for g in gaps if g > 15.0),
            "requeue_lead_s": round(lead_s, 3),
        },
        "api_requests_per_s": round(sum(counts.values()) / window, 2),
        "api_requests_by_verb_resource": {
            f"{verb} {res}": round(n / window, 3) for (verb, res), n in sorted(counts.items())
        },
        "status_writes_per_config_per_min": round(status_writes / configs / (window / 60), 3),
        "prometheus_queries_per_s": round(queries / window, 2),
    }


def _no_op(interval_s: float) -> Callable[[Controller], Any]:
    return lambda controller: (
        NoOpReconciler(interval_s) if controller.name == "power-cap" else controller.reconciler
    )


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        work = args.cluster_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        nodes_needed = max(4, args.configs // 250 + 1)
        topology = Topology(
            racks=(
                Rack(name="rack-a", nodes=nodes_needed // 2 + 1, pods=300),
                Rack(name="rack-b", nodes=nodes_needed // 2 + 1, pods=300),
            )
        )
        print("bringing up the dev cluster (reused when --cluster-dir holds one)", flush=True)
        cluster = up(work / "cluster", topology)
        exporter = start_exporter(work / "exporter.log")
        # Kepler is scraped every 15-30 s in production. The tests' 1 s interval is also each
        # scrape's timeout, and the exporter cannot render 5,000 pods' series within 1 s while
        # the controller busies both cores: lost scrapes made the pods' series vanish and
        # flip thousands of configs to MetricsUnavailable and back, which measured the
        # harness, not the controller.
        prometheus = start_prometheus(
            find_prometheus(),
            work / f"prometheus-{time.time_ns()}",
            exporter.hostport,
            scrape_interval_s=SCRAPE_INTERVAL_S,
        )
        # The configs name no Prometheus: the controller's default is this run's.
        os.environ["CLIMATIK_CAPPING__PROMETHEUS_ADDRESS"] = prometheus.url
        try:
            # A kept cluster keeps its objects: applying them again would take back the ceilings
            # the controller holds (a server-side apply conflict on maxReplicaCount).
            populate_s = 0.0
            if await asyncio.to_thread(_config_count, cluster) < args.configs:
                populate_s = await asyncio.to_thread(
                    _populate, cluster, args.configs, args.namespaces
                )
                print(f"applied {3 * args.configs} objects in {populate_s:.0f} s", flush=True)
            pods_s = await _wait_for_pods(cluster, args.configs)
            pods = await asyncio.to_thread(_running_pods, cluster)
            await _serve_noisy_watts(exporter, pods)
            await asyncio.sleep(4 * SCRAPE_INTERVAL_S)  # a few scrapes
            print("baseline: the same manager with a no-op power-cap reconciler", flush=True)
            baseline = await _measure_in_own_process(
                "baseline",
                cluster,
                prometheus,
                configs=args.configs,
                window_s=min(args.window_s, 60),
                profile=None,
            )
            print(json.dumps(baseline), flush=True)
            print("climatik", flush=True)
            measured = await _measure_in_own_process(
                "climatik",
                cluster,
                prometheus,
                configs=args.configs,
                window_s=args.window_s,
                profile=args.profile,
            )
        finally:
            prometheus.stop()
            exporter.stop()
            if not args.keep:
                down(work / "cluster")
    return {
        "configs": args.configs,
        "namespaces": args.namespaces,
        "populate_s": round(populate_s, 1),
        "pods_running_s": round(pods_s, 1),
        "climatik": measured,
        "baseline_no_op": baseline,
    }


_HERE = Path(__file__).resolve()


def _config_count(cluster: ClusterInfo) -> int:
    listed = _kubectl(cluster, "get", "pcc", "-A", "--no-headers", "--chunk-size=1000")
    return len([line for line in listed.splitlines() if line.strip()])


async def _measure_in_own_process(
    which: str,
    cluster: ClusterInfo,
    prometheus: PrometheusServer,
    *,
    configs: int,
    window_s: float,
    profile: Path | None,
) -> dict[str, Any]:
    """`_measure` in a fresh interpreter, as the controller runs in production: its RSS is the
    controller's alone."""
    command = [
        sys.executable,
        str(_HERE),
        "--measure",
        which,
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--prometheus-url",
        prometheus.url,
        "--configs",
        str(configs),
        "--window-s",
        str(window_s),
    ]
    if profile is not None:
        command += ["--profile", str(profile)]
    env = {**os.environ, "PYTHONPATH": str(_HERE.parents[1])}
    done = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {which} measurement failed:\n{done.stderr[-4000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def _print(report: Mapping[str, Any]) -> None:
    ours, base = report["climatik"], report["baseline_no_op"]
    power, power_base = ours["reconcile"]["power-cap"], base["reconcile"]["power-cap"]
    rows = [
        ("RSS (MiB)", ours["rss_mib"], base["rss_mib"]),
        ("power-cap reconciles/s", power["per_s"], power_base["per_s"]),
        ("power-cap reconcile p50 (ms)", power["p50_ms"], power_base["p50_ms"]),
        ("power-cap reconcile p99 (ms)", power["p99_ms"], power_base["p99_ms"]),
        (
            "longest gap between reconciles of a key (s)",
            ours["power_cap_round"]["longest_gap_s"],
            base["power_cap_round"]["longest_gap_s"],
        ),
        (
            "keys with a gap over 15 s",
            ours["power_cap_round"]["keys_with_a_gap_over_15_s"],
            base["power_cap_round"]["keys_with_a_gap_over_15_s"],
        ),
        (
            "requeue lead at the end (s)",
            ours["power_cap_round"]["requeue_lead_s"],
            base["power_cap_round"]["requeue_lead_s"],
        ),
        (
            "median over keys of their longest gap (s)",
            ours["power_cap_round"]["median_gap_s"],
            base["power_cap_round"]["median_gap_s"],
        ),
        ("first full round (s)", ours["first_round_s"], base["first_round_s"]),
        (
            "controller CPU, share of one core",
            ours["cpu_share_of_one_core"],
            base["cpu_share_of_one_core"],
        ),
        (
            "GC pauses in the window, longest (ms)",
            ours["gc_pauses"]["max_ms"],
            base["gc_pauses"]["max_ms"],
        ),
        (
            "GC pauses in the window, total (s)",
            ours["gc_pauses"]["total_s"],
            base["gc_pauses"]["total_s"],
        ),
        ("API requests/s", ours["api_requests_per_s"], base["api_requests_per_s"]),
        (
            "status writes per config per minute",
            ours["status_writes_per_config_per_min"],
            base["status_writes_per_config_per_min"],
        ),
        (
            "Prometheus queries/s",
            ours["prometheus_queries_per_s"],
            base["prometheus_queries_per_s"],
        ),
    ]
    print(f"\n{report['configs']} configs in {report['namespaces']} namespaces")
    print(f"{'':46} {'climatik':>12} {'no-op baseline':>16}")
    for label, value, baseline in rows:
        print(f"{label:46} {value!s:>12} {baseline!s:>16}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=5000)
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--window-s", type=float, default=120.0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--cluster-dir",
        type=Path,
        default=None,
        help="keep the dev cluster here (a running one with its objects is reused)",
    )
    parser.add_argument("--keep", action="store_true", help="leave the dev cluster running")
    parser.add_argument(
        "--profile", type=Path, default=None, help="cProfile the measured window into this file"
    )
    # One measurement in this process, on a cluster another run brought up (used by the run).
    parser.add_argument("--measure", choices=("climatik", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prometheus-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        wrap = _no_op(15.0) if args.measure == "baseline" else (lambda c: c.reconciler)
        measured = asyncio.run(
            _measure(
                args.kubeconfig,
                configs=args.configs,
                window_s=args.window_s,
                prometheus_url=args.prometheus_url,
                wrap=wrap,
                profile=args.profile,
            )
        )
        print(json.dumps(measured))
        return
    report = asyncio.run(main_async(args))
    _print(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
