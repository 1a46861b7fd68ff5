#!/usr/bin/env python3
"""A scrape target that serves Kepler, DCGM and vLLM metrics for pods you choose, for tests and
demos. It is a real HTTP server scraped by a real Prometheus; nothing here imitates Prometheus.

Metric names and labels are the exporters' own (see docs FACTS.md):

- `/metrics/kepler`   Kepler >= 0.10: `kepler_pod_cpu_{watts,joules_total}` per zone (package,
  core, uncore, dram; zones overlap like RAPL's, so summing zones double counts on purpose),
  `kepler_pod_gpu_{watts,joules_total}` for pods with GPU watts, `kepler_node_cpu_watts`,
  `kepler_node_gpu_watts`.
- `/metrics/kepler07` Kepler 0.7: `kepler_container_joules_total` split into `mode="dynamic"` and
  `mode="idle"`, plus `kepler_container_{package,dram,gpu}_joules_total`.
- `/metrics/dcgm`     DCGM exporter: `DCGM_FI_DEV_POWER_USAGE`,
  `DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION` (mJ), `DCGM_FI_DEV_GPU_TEMP`, with the exporter's own
  `pod`/`namespace`/`container` labels; a scrape job that attaches target labels of the same
  names makes Prometheus rename them
  `exported_pod`/`exported_namespace`, exactly as behind a ServiceMonitor.
- `/metrics/vllm`     vLLM: `vllm:generation_tokens_total`, `vllm:prompt_tokens_total`,
  `vllm:num_requests_running`, `vllm:num_requests_waiting` and the finished requests' count
  `vllm:e2e_request_latency_seconds_count` (`tokens_per_s / tokens_per_request` per second)
  with `model_name`, plus `namespace`/`pod` labels that a real setup gets from its scrape
  config (scrape this path with `honor_labels: true`).
- `/metrics/node`     `ipmi_temperature_celsius{name="Inlet Temp",node=...}` per node.
- `/metrics`          all of the above.

Counters integrate their rates over real time, so `rate()` of a counter returns the watts or
tokens per second that were set. Control endpoints (JSON):

- `POST /pods` `{"pods": [{"namespace", "name", "node", "cpu_watts", "gpu_watts",
  "tokens_per_s", "waiting_requests", "tokens_per_request", "model_name", "noise"}]}` adds or
  updates pods (omitted fields keep their values; `noise` 0.03 jitters the CPU power gauge
  within +-3 % at each scrape);
- `POST /set` `{"<namespace>/<name>": {"cpu_watts": 120, "tokens_per_s": 40, "frozen": true}}`
  changes values; `"NaN"`/`"+Inf"` strings (or bare NaN) serve NaN/Inf. A pod created with
  `"timestamped": true` is served with explicit sample timestamps (the time of each scrape);
  `frozen: true` then keeps serving its values with the timestamp of that moment, so Prometheus
  holds samples that grow old without being marked stale (Prometheus tracks staleness only for
  series without explicit timestamps: switching a series to explicit timestamps mid-way would
  write a staleness marker instead, so freezing is refused for other pods);
- `POST /nodes` `{"<node>": {"idle_cpu_watts": 40, "inlet_c": 24.5}}`;
- `DELETE /pods/<namespace>/<name>`, `POST /reset`, `GET /state`.

Run: `python hack/metrics_exporter.py --port 0` prints `listening on http://HOST:PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from aiohttp import web

# Kepler 0.10 zones as fractions of the package zone's power. Core and uncore are inside the
# package zone; dram is separate. A query that sums zones gets 2.05x the package power.
ZONE_FRACTIONS: Final = {"package": 1.0, "core": 0.8, "uncore": 0.1, "dram": 0.15}
KEPLER07_IDLE_FRACTION: Final = 0.1
GPU_MODEL: Final = "NVIDIA H100 80GB HBM3"
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


def parse_number(value: object) -> float | None:
    """JSON numbers, null, or the strings Prometheus uses for special values."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("booleans are not numbers")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        special = {"nan": math.nan, "+inf": math.inf, "inf": math.inf, "-inf": -math.inf}
        lowered = value.strip().lower()
        if lowered in special:
            return special[lowered]
        return float(value)
    raise ValueError(f"{value!r} is not a number")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


E2E_LATENCY_S = 5.0
"""The end-to-end latency every finished request is said to take (only the count is read)."""


@dataclass
class PodState:
    namespace: str
    name: str
    node: str = "node-1"
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    cpu_watts: float = 0.0
    gpu_watts: float | None = None
    tokens_per_s: float = 0.0
    waiting_requests: float = 0.0
    tokens_per_request: float = 256.0
    model_name: str = "meta-llama/Llama-3.1-8B-Instruct"
    gpu_index: int = 0
    # Counters, integrated from the rates above.
    cpu_joules: float = 0.0
    gpu_joules: float = 0.0
    tokens_total: float = 0.0
    prompt_tokens_total: float = 0.0
    requests_total: float = 0.0
    timestamped: bool = False
    frozen_at_ms: int | None = None
    noise: float = 0.0
    """Relative jitter of the CPU power gauge at each scrape (0.03: within +-3 %), as real
    meters show; counters integrate the steady value."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class NodeState:
    idle_cpu_watts: float = 0.0
    inlet_c: float | None = None


def _finite_or_zero(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) else 0.0


class Exporter:
    """The state behind the endpoints; `clock` is monotonic seconds (injectable for tests)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None
    ) -> None:
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._last_s = clock()
        self.pods: dict[str, PodState] = {}
        self.nodes: dict[str, NodeState] = {}

    # -- integration ---------------------------------------------------------------------

    def advance(self) -> None:
        """Integrate every unfrozen counter up to now (NaN/Inf rates add nothing)."""
        now_s = self._clock()
        dt_s = max(0.0, now_s - self._last_s)
        self._last_s = now_s
        for pod in self.pods.values():
            if pod.frozen_at_ms is not None:
                continue
            pod.cpu_joules += _finite_or_zero(pod.cpu_watts) * dt_s
            pod.gpu_joules += _finite_or_zero(pod.gpu_watts) * dt_s
            pod.tokens_total += _finite_or_zero(pod.tokens_per_s) * dt_s
            pod.prompt_tokens_total += _finite_or_zero(pod.tokens_per_s) * 0.5 * dt_s
            if pod.tokens_per_request > 0:
                pod.requests_total += (
                    _finite_or_zero(pod.tokens_per_s) / pod.tokens_per_request * dt_s
                )

    # -- control -------------------------------------------------------------------------

    def upsert(self, spec: Mapping[str, Any]) -> PodState:
        self.advance()
        namespace, name = str(spec["namespace"]), str(spec["name"])
        key = f"{namespace}/{name}"
        pod = self.pods.get(key)
        if pod is None:
            pod = PodState(namespace=namespace, name=name)
            on_node = sum(1 for p in self.pods.values() if p.node == spec.get("node", pod.node))
            pod.gpu_index = on_node
            self.pods[key] = pod
        self._apply(pod, spec)
        self.nodes.setdefault(pod.node, NodeState())
        return pod

    def set_values(self, key: str, values: Mapping[str, Any]) -> PodState:
        self.advance()
        pod = self.pods.get(key)
        if pod is None:
            raise KeyError(key)
        self._apply(pod, values)
        return pod

    def _apply(self, pod: PodState, values: Mapping[str, Any]) -> None:
        if "node" in values:
            pod.node = str(values["node"])
        if "uid" in values:
            pod.uid = str(values["uid"])
        if "model_name" in values:
            pod.model_name = str(values["model_name"])
        if "cpu_watts" in values:
            pod.cpu_watts = parse_number(values["cpu_watts"]) or 0.0
        if "gpu_watts" in values:
            pod.gpu_watts = parse_number(values["gpu_watts"])
        if "tokens_per_s" in values:
            pod.tokens_per_s = parse_number(values["tokens_per_s"]) or 0.0
        if "waiting_requests" in values:
            pod.waiting_requests = parse_number(values["waiting_requests"]) or 0.0
        if "tokens_per_request" in values:
            pod.tokens_per_request = parse_number(values["tokens_per_request"]) or 0.0
        if "noise" in values:
            pod.noise = abs(parse_number(values["noise"]) or 0.0)
        if "timestamped" in values:
            pod.timestamped = bool(values["timestamped"])
        if "frozen" in values:
            frozen = bool(values["frozen"])
            if frozen and not pod.timestamped:
                raise ValueError(f"{pod.key}: only pods created with timestamped=true can freeze")
            if frozen and pod.frozen_at_ms is None:
                pod.frozen_at_ms = int(time.time() * 1000)
            elif not frozen:
                pod.frozen_at_ms = None

    def set_node(self, name: str, values: Mapping[str, Any]) -> NodeState:
        node = self.nodes.setdefault(name, NodeState())
        if "idle_cpu_watts" in values:
            node.idle_cpu_watts = parse_number(values["idle_cpu_watts"]) or 0.0
        if "inlet_c" in values:
            node.inlet_c = parse_number(values["inlet_c"])
        return node

    def delete(self, key: str) -> None:
        self.advance()
        self.pods.pop(key, None)

    def reset(self) -> None:
        self.pods.clear()
        self.nodes.clear()
        self._last_s = self._clock()

    def state(self) -> dict[str, Any]:
        self.advance()
        return {
            "pods": {key: asdict(pod) for key, pod in self.pods.items()},
            "nodes": {name: asdict(node) for name, node in self.nodes.items()},
        }

    # -- exposition ----------------------------------------------------------------------

    def render(self, family: str) -> str:
        self.advance()
        renderers: dict[str, Callable[[], Iterable[str]]] = {
            "kepler": self._kepler,
            "kepler07": self._kepler07,
            "dcgm": self._dcgm,
            "vllm": self._vllm,
            "node": self._node,
        }
        if family == "all":
            lines = [line for render in renderers.values() for line in render()]
        else:
            lines = list(renderers[family]())
        return "\n".join(lines) + "\n"

    def _kepler(self) -> Iterable[str]:
        pods = sorted(self.pods.values(), key=lambda p: p.key)
        yield from _header("kepler_pod_cpu_watts", "gauge", "Power of the pod's CPU by zone")
        for pod in pods:
            watts = self._jittered(pod)
            for zone, fraction in ZONE_FRACTIONS.items():
                labels = {**_kepler_pod_labels(pod), "zone": zone}
                yield _line("kepler_pod_cpu_watts", labels, watts * fraction, pod)
        yield from _header("kepler_pod_cpu_joules_total", "counter", "Energy of the pod's CPU")
        for pod in pods:
            for zone, fraction in ZONE_FRACTIONS.items():
                labels = {**_kepler_pod_labels(pod), "zone": zone}
                yield _line("kepler_pod_cpu_joules_total", labels, pod.cpu_joules * fraction, pod)
        gpu_pods = [p for p in pods if p.gpu_watts is not None]
        if gpu_pods:
            yield from _header("kepler_pod_gpu_watts", "gauge", "Power of the pod's GPUs")
            for pod in gpu_pods:
                labels = {**_kepler_pod_labels(pod), **_kepler_gpu_labels(pod)}
                yield _line("kepler_pod_gpu_watts", labels, pod.gpu_watts or 0.0, pod)
            yield from _header("kepler_pod_gpu_joules_total", "counter", "Energy of the GPUs")
            for pod in gpu_pods:
                labels = {**_kepler_pod_labels(pod), **_kepler_gpu_labels(pod)}
                yield _line("kepler_pod_gpu_joules_total", labels, pod.gpu_joules, pod)
        yield from _header("kepler_node_cpu_watts", "gauge", "Power of the node's CPU by zone")
        for name in sorted(self.nodes):
            cpu_w = self.nodes[name].idle_cpu_watts + sum(
                _finite_or_zero(p.cpu_watts) for p in pods if p.node == name
            )
            for zone, fraction in ZONE_FRACTIONS.items():
                labels = {
                    "zone": zone,
                    "path": f"/sys/class/powercap/intel-rapl/intel-rapl:0/{zone}",
                    "node_name": name,
                }
                yield _line("kepler_node_cpu_watts", labels, cpu_w * fraction)
        if gpu_pods:
            yield from _header("kepler_node_gpu_watts", "gauge", "Power of the node's GPUs")
            for pod in gpu_pods:
                labels = {**_kepler_gpu_labels(pod), "node_name": pod.node}
                yield _line("kepler_node_gpu_watts", labels, pod.gpu_watts or 0.0)

    def _jittered(self, pod: PodState) -> float:
        if not pod.noise or not math.isfinite(pod.cpu_watts):
            return pod.cpu_watts
        return pod.cpu_watts * (1 + self._rng.uniform(-pod.noise, pod.noise))

    def _kepler07(self) -> Iterable[str]:
        pods = sorted(self.pods.values(), key=lambda p: p.key)
        yield from _header("kepler_container_joules_total", "counter", "Container energy")
        for pod in pods:
            total = pod.cpu_joules + pod.gpu_joules
            for mode, fraction in (
                ("dynamic", 1 - KEPLER07_IDLE_FRACTION),
                ("idle", KEPLER07_IDLE_FRACTION),
            ):
                labels = {**_kepler07_labels(pod), "mode": mode}
                yield _line("kepler_container_joules_total", labels, total * fraction, pod)
        components: dict[str, Callable[[PodState], float]] = {
            "package": lambda p: p.cpu_joules,
            "dram": lambda p: p.cpu_joules * ZONE_FRACTIONS["dram"],
            "gpu": lambda p: p.gpu_joules,
        }
        for component, joules in components.items():
            metric = f"kepler_container_{component}_joules_total"
            yield from _header(metric, "counter", f"Container {component} energy")
            for pod in pods:
                for mode, fraction in (
                    ("dynamic", 1 - KEPLER07_IDLE_FRACTION),
                    ("idle", KEPLER07_IDLE_FRACTION),
                ):
                    labels = {**_kepler07_labels(pod), "mode": mode}
                    yield _line(metric, labels, joules(pod) * fraction, pod)

    def _dcgm(self) -> Iterable[str]:
        gpu_pods = sorted(
            (p for p in self.pods.values() if p.gpu_watts is not None), key=lambda p: p.key
        )
        metrics: tuple[tuple[str, str, Callable[[PodState], float]], ...] = (
            ("DCGM_FI_DEV_POWER_USAGE", "gauge", lambda p: p.gpu_watts or 0.0),
            ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter", lambda p: p.gpu_joules * 1000),
            ("DCGM_FI_DEV_GPU_TEMP", "gauge", lambda p: 35 + _finite_or_zero(p.gpu_watts) / 20),
        )
        for metric, kind, value in metrics:
            yield from _header(metric, kind, f"DCGM field {metric}")
            for pod in gpu_pods:
                labels = {
                    "gpu": str(pod.gpu_index),
                    "UUID": _gpu_uuid(pod),
                    "device": f"nvidia{pod.gpu_index}",
                    "modelName": GPU_MODEL,
                    "Hostname": pod.node,
                    "DCGM_FI_DRIVER_VERSION": "580.65.06",
                    "container": "vllm",
                    "namespace": pod.namespace,
                    "pod": pod.name,
                }
                yield _line(metric, labels, value(pod), pod)

    def _vllm(self) -> Iterable[str]:
        pods = sorted(self.pods.values(), key=lambda p: p.key)
        metrics: tuple[tuple[str, str, Callable[[PodState], float]], ...] = (
            ("vllm:generation_tokens_total", "counter", lambda p: p.tokens_total),
            ("vllm:prompt_tokens_total", "counter", lambda p: p.prompt_tokens_total),
            (
                "vllm:num_requests_running",
                "gauge",
                lambda p: float(math.ceil(_finite_or_zero(p.tokens_per_s) / 30)),
            ),
            ("vllm:num_requests_waiting", "gauge", lambda p: p.waiting_requests),
        )
        for metric, kind, value in metrics:
            yield from _header(metric, kind, f"vLLM {metric}")
            for pod in pods:
                labels = {
                    "model_name": pod.model_name,
                    "engine": "0",
                    "namespace": pod.namespace,
                    "pod": pod.name,
                }
                yield _line(metric, labels, value(pod), pod)
        # The finished requests, as vLLM's end-to-end latency histogram counts them (one bucket:
        # the count is what is read; each request is said to take E2E_LATENCY_S).
        histogram = "vllm:e2e_request_latency_seconds"
        yield from _header(histogram, "histogram", "Histogram of end to end request latency")
        for pod in pods:
            labels = {
                "model_name": pod.model_name,
                "engine": "0",
                "namespace": pod.namespace,
                "pod": pod.name,
            }
            yield _line(f"{histogram}_bucket", {**labels, "le": "+Inf"}, pod.requests_total, pod)
            yield _line(f"{histogram}_sum", labels, pod.requests_total * E2E_LATENCY_S, pod)
            yield _line(f"{histogram}_count", labels, pod.requests_total, pod)

    def _node(self) -> Iterable[str]:
        yield from _header("ipmi_temperature_celsius", "gauge", "Temperature sensor reading")
        for name in sorted(self.nodes):
            inlet_c = self.nodes[name].inlet_c
            if inlet_c is not None:
                labels = {"id": "4", "name": "Inlet Temp", "node": name}
                yield _line("ipmi_temperature_celsius", labels, inlet_c)


def _gpu_uuid(pod: PodState) -> str:
    return f"GPU-{uuid.uuid5(uuid.NAMESPACE_DNS, f'{pod.node}/{pod.gpu_index}')}"


def _kepler_pod_labels(pod: PodState) -> dict[str, str]:
    return {
        "pod_id": pod.uid,
        "pod_name": pod.name,
        "pod_namespace": pod.namespace,
        "state": "running",
        "node_name": pod.node,
    }


def _kepler_gpu_labels(pod: PodState) -> dict[str, str]:
    return {
        "gpu": str(pod.gpu_index),
        "gpu_uuid": _gpu_uuid(pod),
        "gpu_name": GPU_MODEL,
        "vendor": "nvidia",
    }


def _kepler07_labels(pod: PodState) -> dict[str, str]:
    return {
        "container_namespace": pod.namespace,
        "pod_name": pod.name,
        "container_name": "vllm",
        "container_id": uuid.uuid5(uuid.NAMESPACE_OID, pod.uid).hex,
    }


def _header(metric: str, kind: str, help_text: str) -> Iterable[str]:
    yield f"# HELP {metric} {help_text}"
    yield f"# TYPE {metric} {kind}"


def _line(metric: str, labels: Mapping[str, str], value: float, pod: PodState | None = None) -> str:
    rendered = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items())
    suffix = ""
    if pod is not None and pod.frozen_at_ms is not None:
        suffix = f" {pod.frozen_at_ms}"
    elif pod is not None and pod.timestamped:
        suffix = f" {int(time.time() * 1000)}"
    return f"{metric}{{{rendered}}} {format_value(value)}{suffix}"


# ---------------------------------------------------------------------------------------------
# HTTP


def build_app(exporter: Exporter) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        family = request.match_info.get("family", "all")
        if family not in {"all", "kepler", "kepler07", "dcgm", "vllm", "node"}:
            raise web.HTTPNotFound(text=f"unknown family {family}\n")
        return web.Response(
            body=exporter.render(family).encode(),
            content_type=None,
            headers={"Content-Type": CONTENT_TYPE},
        )

    async def read_json(request: web.Request) -> Any:
        try:
            return json.loads(await request.text())
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"body is not JSON: {exc}\n") from exc

    async def post_pods(request: web.Request) -> web.Response:
        body = await read_json(request)
        specs = body.get("pods", []) if isinstance(body, dict) else body
        try:
            pods = [exporter.upsert(spec) for spec in specs]
        except (KeyError, ValueError, TypeError) as exc:
            raise web.HTTPBadRequest(text=f"bad pod spec: {exc}\n") from exc
        return web.json_response({"pods": [p.key for p in pods]})

    async def post_set(request: web.Request) -> web.Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="expected an object of pod keys\n")
        try:
            for key, values in body.items():
                exporter.set_values(key, values)
        except KeyError as exc:
            raise web.HTTPNotFound(text=f"no pod {exc}\n") from exc
        except (ValueError, TypeError) as exc:
            raise web.HTTPBadRequest(text=f"bad value: {exc}\n") from exc
        return web.json_response({"updated": sorted(body)})

    async def post_nodes(request: web.Request) -> web.Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="expected an object of node names\n")
        try:
            for name, values in body.items():
                exporter.set_node(name, values)
        except (ValueError, TypeError) as exc:
            raise web.HTTPBadRequest(text=f"bad value: {exc}\n") from exc
        return web.json_response({"updated": sorted(body)})

    async def delete_pod(request: web.Request) -> web.Response:
        exporter.delete(f"{request.match_info['namespace']}/{request.match_info['name']}")
        return web.json_response({"deleted": True})

    async def post_reset(request: web.Request) -> web.Response:
        exporter.reset()
        return web.json_response({"reset": True})

    async def get_state(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(exporter.state()), content_type="application/json")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/metrics/{family}", metrics)
    app.router.add_post("/pods", post_pods)
    app.router.add_post("/set", post_set)
    app.router.add_post("/nodes", post_nodes)
    app.router.add_delete("/pods/{namespace}/{name}", delete_pod)
    app.router.add_post("/reset", post_reset)
    app.router.add_get("/state", get_state)
    return app


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(build_app(Exporter()), access_log=None)
    await runner.setup()
    # Bind the socket ourselves so `--port 0` can report the port the kernel chose.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    site = web.SockSite(runner, sock)
    await site.start()
    print(f"listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9400, help="0 picks a free port")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
