"""What the scrape target serves: each pod's and node's current readings, and their changes.

Readings are set whole or in part through the control endpoints (JSON) or by the world's driver;
counters are never set, only integrated from the rates (see ``counters.py``). A reading may be
NaN or infinite on purpose, to show what the controller does with a broken exporter.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

from climatik.domain.gpu import H100
from climatik.kube.json import JsonValue
from climatik.world.counters import integrate_counters
from climatik.world.tally import SiteFigures

DEFAULT_MODEL_NAME = "meta-llama/Llama-3.1-8B-Instruct"


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


@dataclass
class PodReadings:
    """One pod's gauges as set, and the counters integrated from them."""

    namespace: str
    name: str
    node: str = "node-1"
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    cpu_watts: float = 0.0
    gpu_watts: float | None = None
    """All of the pod's GPUs together; None: the pod has no GPU series at all."""
    gpus: int = 1
    """GPUs the pod holds; each gets its own DCGM and Kepler series with an equal share."""
    tokens_per_s: float = 0.0
    waiting_requests: float = 0.0
    running_requests: float | None = None
    """None: derived from the token rate (one running request per 30 tokens/s)."""
    tokens_per_request: float = 256.0
    prompt_tokens_per_output_token: float = 0.5
    model_name: str = DEFAULT_MODEL_NAME
    gpu_index: int = 0
    """The first of the pod's GPU indices on its node."""
    sm_clock_mhz: float = H100.max_clock_mhz
    """Its GPUs' SM clock (DCGM's `DCGM_FI_DEV_SM_CLOCK`): an H100's highest unless set."""
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
class NodeReadings:
    idle_cpu_watts: float = 0.0
    inlet_c: float | None = None


Values = Mapping[str, JsonValue]


class Readings:
    """Every pod's and node's readings; `clock` is monotonic seconds, `wall_clock` the epoch
    seconds a frozen series is stamped with (both injectable for tests)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self.wall_clock = wall_clock
        self._last_s = clock()
        self.pods: dict[str, PodReadings] = {}
        self.nodes: dict[str, NodeReadings] = {}
        self.site: SiteFigures | None = None
        """The world's own figures when it plays a scenario (served at `/metrics/world`)."""

    def advance(self) -> None:
        """Integrate every counter up to now (before any rate changes, and at each scrape)."""
        now_s = self._clock()
        dt_s = max(0.0, now_s - self._last_s)
        self._last_s = now_s
        integrate_counters(self.pods.values(), dt_s)

    def upsert(self, spec: Values) -> PodReadings:
        """Add a pod or update one; omitted fields keep their values."""
        self.advance()
        namespace, name = str(spec["namespace"]), str(spec["name"])
        key = f"{namespace}/{name}"
        pod = self.pods.get(key)
        if pod is None:
            pod = PodReadings(namespace=namespace, name=name)
            node = str(spec.get("node", pod.node))
            pod.gpu_index = sum(p.gpus for p in self.pods.values() if p.node == node)
            self.pods[key] = pod
        self._apply(pod, spec)
        self.nodes.setdefault(pod.node, NodeReadings())
        return pod

    def set_values(self, key: str, values: Values) -> PodReadings:
        self.advance()
        pod = self.pods.get(key)
        if pod is None:
            raise KeyError(key)
        self._apply(pod, values)
        return pod

    def _apply(self, pod: PodReadings, values: Values) -> None:
        for name in ("node", "uid", "model_name"):
            if name in values:
                setattr(pod, name, str(values[name]))
        for name in (
            "cpu_watts",
            "tokens_per_s",
            "waiting_requests",
            "tokens_per_request",
            "prompt_tokens_per_output_token",
            "sm_clock_mhz",
        ):
            if name in values:
                setattr(pod, name, parse_number(values[name]) or 0.0)
        if "gpu_watts" in values:
            pod.gpu_watts = parse_number(values["gpu_watts"])
        if "running_requests" in values:
            pod.running_requests = parse_number(values["running_requests"])
        if "gpus" in values:
            gpus = parse_number(values["gpus"])
            if gpus is None or not math.isfinite(gpus) or gpus < 1:
                raise ValueError(f"{pod.key}: gpus must be a whole number >= 1")
            pod.gpus = int(gpus)
        if "noise" in values:
            pod.noise = abs(parse_number(values["noise"]) or 0.0)
        if "timestamped" in values:
            pod.timestamped = bool(values["timestamped"])
        if "frozen" in values:
            frozen = bool(values["frozen"])
            if frozen and not pod.timestamped:
                raise ValueError(f"{pod.key}: only pods created with timestamped=true can freeze")
            if frozen and pod.frozen_at_ms is None:
                pod.frozen_at_ms = int(self.wall_clock() * 1000)
            elif not frozen:
                pod.frozen_at_ms = None

    def set_node(self, name: str, values: Values) -> NodeReadings:
        node = self.nodes.setdefault(name, NodeReadings())
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

    def state(self) -> dict[str, dict[str, object]]:
        """Everything, as `GET /state` answers it (`site` only while playing a scenario)."""
        self.advance()
        state: dict[str, dict[str, object]] = {
            "pods": {key: asdict(pod) for key, pod in self.pods.items()},
            "nodes": {name: asdict(node) for name, node in self.nodes.items()},
        }
        if self.site is not None:
            state["site"] = asdict(self.site)
        return state
