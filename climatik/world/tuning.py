"""The cluster's GPU-tuning Jobs, played on the twin's physics.

A tuning Job's pod on a kwok node runs nothing (kwok completes it at once), so the world does
what `climatik gpu-tune` would have done on the node: it holds each clock of the Job's sweep plan
on the node for the Job's settle and measure time (the node's pods draw and serve at that clock
meanwhile), measures each clock as the twin's own tuning sweep does (`sim.clocks.sample_at_clock`:
a replica of each service on the node at full batch, about 1 % noise), chooses with the
controller's own rule and the Job's bounds (`choose_gpu_clock`), and hands back the result
document the Job would have written to its ConfigMap. In Apply mode the chosen clock stays
locked on the node; a recommendation puts back the clock the node had. A Lock Job (the
controller's own clock, no sweep) ends at once: the node's GPUs lock at the highest supported
clock not above the one asked for, as `climatik gpu-tune --mode lock` does.

Pure: no I/O and no clock. The driver brings the Jobs and the simulated time and writes the
ConfigMaps.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from climatik.domain.gpu import ClockSample, GpuError, GpuInventory
from climatik.domain.gpu_tune_result import (
    DEFAULT_MEASURE_S,
    DEFAULT_SETTLE_S,
    DEFAULT_SWEEP_POINTS,
    GpuTuneResult,
    TuneMode,
    lock_clock_mhz,
)
from climatik.kube.json import JsonObject, child, items, objects, text
from climatik.policies.gpu_clock import (
    DEFAULT_MAX_THROUGHPUT_LOSS,
    ClockBounds,
    candidate_clocks,
    choose_gpu_clock,
)
from climatik.sim.clocks import noisy, sample_at_clock
from climatik.sim.scenario import GpuModel, Scenario
from climatik.world.site import NodeSeat, PodSeat

TUNE_JOB_SELECTOR = "app.kubernetes.io/name=climatik-gpu-tune"
"""The label the GPU-frequency reconciler puts on its tuning Jobs."""
CLOCK_STEP_MHZ = 15
"""The step between the SM clocks a GPU accepts (NVML lists H100's and A100's so)."""


@dataclass(frozen=True, slots=True)
class TuneOrder:
    """What one tuning Job asks of its node, read from the Job's spec."""

    uid: str
    job: str
    """namespace/name"""
    node: str
    mode: TuneMode
    bounds: ClockBounds
    result_configmap: str
    """namespace/name of the ConfigMap the result goes to."""
    sweep_points: int = DEFAULT_SWEEP_POINTS
    settle_s: float = DEFAULT_SETTLE_S
    measure_s: float = DEFAULT_MEASURE_S
    clock_mhz: int | None = None
    """The clock a Lock order asks for; only a Lock order carries one (as the CLI insists)."""

    def __post_init__(self) -> None:
        if (self.mode is TuneMode.LOCK) != (self.clock_mhz is not None):
            msg = "a lock order, and only a lock order, names a clock (--clock-mhz)"
            raise ValueError(msg)
        if self.clock_mhz is not None and self.clock_mhz <= 0:
            msg = f"--clock-mhz must be positive, not {self.clock_mhz}"
            raise ValueError(msg)


def read_tune_job(job: JsonObject) -> TuneOrder | None:
    """The order a `climatik gpu-tune` Job carries; None for a Job that names no node or no
    result ConfigMap (there is nothing to play or nowhere to answer), or whose flags do not
    parse (a lock without `--clock-mhz`, a `--clock-mhz` without lock: the CLI refuses them)."""
    meta = child(job, "metadata")
    pod_spec = child(child(child(job, "spec"), "template"), "spec")
    node = text(pod_spec, "nodeName")
    containers = list(objects(pod_spec, "containers"))
    if not node or not containers:
        return None
    args = [str(a) for a in items(containers[0], "args")]
    if "gpu-tune" not in args:
        return None
    flags = _flags(args[args.index("gpu-tune") + 1 :])
    target = flags.get("--result-configmap")
    if target is None or "/" not in target:
        return None
    try:
        mode = TuneMode(flags.get("--mode", TuneMode.RECOMMEND))
        mode = TuneMode.DRY_RUN if "--dry-run" in flags else mode
        latency = flags.get("--max-p99-token-latency-s")
        clock = flags.get("--clock-mhz")
        return TuneOrder(
            uid=text(meta, "uid") or f"{text(meta, 'namespace')}/{text(meta, 'name')}",
            job=f"{text(meta, 'namespace')}/{text(meta, 'name')}",
            node=node,
            mode=mode,
            bounds=ClockBounds(
                float(flags.get("--max-throughput-loss", DEFAULT_MAX_THROUGHPUT_LOSS)),
                float(latency) if latency is not None else None,
            ),
            result_configmap=target,
            sweep_points=int(flags.get("--sweep-points", DEFAULT_SWEEP_POINTS)),
            settle_s=float(flags.get("--settle-s", DEFAULT_SETTLE_S)),
            measure_s=float(flags.get("--measure-s", DEFAULT_MEASURE_S)),
            clock_mhz=int(clock) if clock is not None else None,
        )
    except ValueError:
        return None


def _flags(args: Sequence[str]) -> dict[str, str]:
    """`--flag value` pairs (the last of a repeated flag wins); a flag alone maps to ""."""
    flags: dict[str, str] = {}
    i = 0
    while i < len(args):
        flag = args[i]
        if "=" in flag:
            name, _, value = flag.partition("=")
            flags[name] = value
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            flags[flag] = args[i + 1]
            i += 1
        else:
            flags[flag] = ""
        i += 1
    return flags


@dataclass(frozen=True, slots=True)
class TuneOutcome:
    """A sweep the world finished: the order and the result document for its ConfigMap."""

    order: TuneOrder
    document: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Sweep:
    order: TuneOrder
    plan: tuple[int, ...]
    started_s: float
    services: tuple[str, ...]
    """The scenario services of the pods on the node when the Job came (the Job's
    `--vllm-metrics` URLs)."""
    gpus: int
    before_mhz: float

    @property
    def per_clock_s(self) -> float:
        return self.order.settle_s + self.order.measure_s

    def done_at_s(self) -> float:
        return self.started_s + len(self.plan) * self.per_clock_s

    def clock_at(self, now_s: float) -> int:
        held = int((now_s - self.started_s) // self.per_clock_s)
        return self.plan[min(max(held, 0), len(self.plan) - 1)]


class TuningPlayer:
    """The nodes' SM clocks, and the tuning Jobs the world is playing on them."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.gpu: GpuModel = scenario.racks.gpu_curve
        self.supported_mhz = tuple(
            range(round(self.gpu.max_clock_mhz), round(self.gpu.min_clock_mhz) - 1, -CLOCK_STEP_MHZ)
        )
        """The SM clocks the node's GPUs accept, highest first, as NVML lists them."""
        self.locked_mhz: dict[str, float] = {}
        """Nodes whose clock an applied result or a lock locked, and the clock."""
        self._sweeps: dict[str, _Sweep] = {}
        self._seen: set[str] = set()

    def clock_mhz(self, node: str, now_s: float) -> float:
        """The node's SM clock now: a sweep's, a locked one, else the maximum."""
        sweep = self._sweeps.get(node)
        if sweep is not None:
            return float(sweep.clock_at(now_s))
        return self.locked_mhz.get(node, self.gpu.max_clock_mhz)

    def clock_ratios(self, nodes: Iterable[str], now_s: float) -> dict[str, float]:
        """Each node's clock as a share of the maximum (what `Site.step` takes)."""
        return {n: self.clock_mhz(n, now_s) / self.gpu.max_clock_mhz for n in nodes}

    def take(
        self,
        orders: Iterable[TuneOrder],
        pods: Sequence[PodSeat],
        nodes: Mapping[str, NodeSeat],
        now_s: float,
    ) -> list[TuneOutcome]:
        """Start a sweep for each order not seen before; returns the outcomes of orders that
        end at once (a dry run, a lock, a node the world does not play, a node with no inference
        pod, or a node already sweeping, as NVML would refuse a second lock)."""
        outcomes: list[TuneOutcome] = []
        for order in orders:
            if order.uid in self._seen:
                continue
            self._seen.add(order.uid)
            node = nodes.get(order.node)
            services = tuple(sorted({p.service for p in pods if p.node == order.node}))
            plan = tuple(candidate_clocks(self.supported_mhz, order.sweep_points))
            gpus = node.gpus if node is not None else 0
            before = self.clock_mhz(order.node, now_s)
            result = GpuTuneResult(
                order.mode,
                self._inventory(order.node, gpus, before),
                [],
                requested_clock_mhz=order.clock_mhz,
            )
            if node is None or gpus == 0:
                result.error = GpuError("NoGpu", f"node {order.node} has no GPU the world plays")
            elif order.node in self._sweeps:
                result.error = GpuError("InUse", f"node {order.node}: another sweep holds it")
            elif order.clock_mhz is not None:  # a lock: it needs no workload to measure
                applied = lock_clock_mhz(self.supported_mhz, order.clock_mhz)
                self.locked_mhz[order.node] = float(applied)
                result.planned_clocks_mhz = [applied]
                result.applied_clock_mhz = applied
            elif order.mode is TuneMode.DRY_RUN:
                result.planned_clocks_mhz = list(plan)
            elif not services:
                result.error = GpuError("NoWorkload", f"node {order.node} serves no model")
            else:
                self._sweeps[order.node] = _Sweep(order, plan, now_s, services, gpus, before)
                continue
            outcomes.append(TuneOutcome(order, _document(result, order.node)))
        return outcomes

    def finish(self, now_s: float) -> list[TuneOutcome]:
        """The sweeps whose last clock has been measured: their results, and their clocks
        applied or put back."""
        outcomes: list[TuneOutcome] = []
        for node, sweep in list(self._sweeps.items()):
            if now_s < sweep.done_at_s():
                continue
            del self._sweeps[node]
            outcomes.append(TuneOutcome(sweep.order, _document(self._result(sweep), node)))
        return outcomes

    def _result(self, sweep: _Sweep) -> GpuTuneResult:
        order = sweep.order
        rng = np.random.default_rng([self.scenario.seed, zlib.crc32(order.uid.encode())])
        services = [s for s in self.scenario.services if s.name in sweep.services]
        samples = []
        for clock in sweep.plan:
            each = [noisy(sample_at_clock(self.scenario, s, float(clock)), rng) for s in services]
            latencies = [s.p99_token_latency_s for s in each if s.p99_token_latency_s is not None]
            samples.append(
                ClockSample(
                    clock_mhz=clock,
                    watts=sum(s.watts for s in each),
                    tokens_per_s=sum(s.tokens_per_s for s in each),
                    p99_token_latency_s=max(latencies) if latencies else None,
                )
            )
        result = GpuTuneResult(
            order.mode,
            self._inventory(order.node, sweep.gpus, sweep.before_mhz),
            list(sweep.plan),
            samples,
        )
        result.choice = choose_gpu_clock(samples, order.bounds)
        if order.mode is TuneMode.APPLY:
            result.applied_clock_mhz = result.choice.clock_mhz
            self.locked_mhz[sweep.order.node] = float(result.choice.clock_mhz)
        return result

    def _inventory(self, node: str, gpus: int, clock_mhz: float) -> list[GpuInventory]:
        """What the node's GPUs say about themselves before the sweep (as NVML's inventory)."""
        return [
            GpuInventory(
                index=i,
                uuid=f"GPU-world-{zlib.crc32(node.encode()):08x}-{i}",
                name=f"Simulated {self.scenario.racks.gpu_model}",
                sm_clock_mhz=round(clock_mhz),
                supported_sm_clocks_mhz=self.supported_mhz,
                power_w=self.gpu.idle_w,
                power_limit_w=self.gpu.prefill_max_w,
                power_limit_range_w=(200.0, self.gpu.prefill_max_w),
            )
            for i in range(gpus)
        ]


def _document(result: GpuTuneResult, node: str) -> dict[str, Any]:
    """The JSON `climatik gpu-tune` writes: the result and the node it ran on."""
    document = result.to_json()
    document["node"] = node
    return document
