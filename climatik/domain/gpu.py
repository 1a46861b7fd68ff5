"""How a GPU's power and token throughput depend on its SM clock.

The model of SIMULATOR.md, shared by the twin and the simulated `GpuDevice`, so the clock sweep
that tunes real GPUs is exercised against the same physics the twin reports:

- P_x(f) = P_idle + (P_x,max - P_idle) * (f / f_max)^gamma, for prefill and decode;
- decode step time t(f, B) = t(f_max, B) * (beta + (1 - beta) * f_max / f): decode is mostly
  memory bound, so throughput falls slower than the clock while power falls faster, and tokens
  per joule peaks below f_max.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GpuModel:
    """Power and speed constants of one GPU model (H100 defaults)."""

    name: str = "H100"
    idle_w: float = 75.0
    prefill_max_w: float = 700.0
    decode_max_w: float = 380.0
    gamma: float = 1.6
    max_clock_mhz: float = 1980.0
    min_clock_mhz: float = 210.0
    clock_step_mhz: float = 15.0
    memory_bound_fraction: float = 0.8
    """beta: the share of a decode step that does not speed up with the SM clock."""
    decode_step_s_batch1: float = 0.030
    decode_step_s_batch64: float = 0.050

    def busy_watts(
        self, clock_mhz: float, prefill_fraction: float, decode_fraction: float
    ) -> float:
        """Mean power of one GPU busy `prefill_fraction` / `decode_fraction` of the time."""
        scale = float((clock_mhz / self.max_clock_mhz) ** self.gamma)
        prefill_w = (self.prefill_max_w - self.idle_w) * scale
        decode_w = (self.decode_max_w - self.idle_w) * scale
        return self.idle_w + prefill_fraction * prefill_w + decode_fraction * decode_w

    def decode_step_s(self, clock_mhz: float, batch: float) -> float:
        """Time of one decode step for a batch, at a clock."""
        at_max = (
            self.decode_step_s_batch1
            + (self.decode_step_s_batch64 - self.decode_step_s_batch1)
            * (max(batch, 1.0) - 1.0)
            / 63.0
        )
        beta = self.memory_bound_fraction
        return at_max * (beta + (1.0 - beta) * self.max_clock_mhz / clock_mhz)

    def decode_tokens_per_s(self, clock_mhz: float, batch: float) -> float:
        """Tokens per second of a replica decoding a batch continuously."""
        return batch / self.decode_step_s(clock_mhz, batch)

    def supported_clocks_mhz(self) -> tuple[int, ...]:
        """The SM clocks the GPU accepts, highest first, as NVML lists them."""
        clocks = []
        clock = self.max_clock_mhz
        while clock >= self.min_clock_mhz:
            clocks.append(round(clock))
            clock -= self.clock_step_mhz
        return tuple(clocks)


H100 = GpuModel()
A100 = GpuModel(
    name="A100",
    idle_w=63.0,
    prefill_max_w=400.0,
    decode_max_w=250.0,
    max_clock_mhz=1410.0,
    min_clock_mhz=210.0,
)


@dataclass(frozen=True, slots=True)
class ClockSample:
    """What one GPU did for a while at one locked clock."""

    clock_mhz: int
    watts: float
    tokens_per_s: float
    p99_token_latency_s: float | None = None

    @property
    def tokens_per_joule(self) -> float:
        return self.tokens_per_s / self.watts if self.watts > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ClockChoice:
    """The clock a sweep chose, the sample it rests on and why."""

    clock_mhz: int
    chosen: ClockSample
    baseline: ClockSample
    reason: str

    @property
    def tokens_per_joule_gain(self) -> float:
        """Relative gain in tokens per joule over the baseline (max clock)."""
        base = self.baseline.tokens_per_joule
        return self.chosen.tokens_per_joule / base - 1.0 if base > 0 else 0.0

    @property
    def throughput_loss(self) -> float:
        """Relative loss of tokens per second against the baseline."""
        base = self.baseline.tokens_per_s
        return 1.0 - self.chosen.tokens_per_s / base if base > 0 else 0.0


class GpuError(Exception):
    """An NVML failure in words: `reason` is NotSupported, NoPermission, GpuLost, ..."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class GpuInventory:
    """What a GPU says about itself before anything is changed."""

    index: int
    uuid: str
    name: str
    sm_clock_mhz: int
    supported_sm_clocks_mhz: tuple[int, ...]
    power_w: float
    power_limit_w: float
    power_limit_range_w: tuple[float, float]


TUNE_NODE_LABEL = "climatik-project.ai/gpu-tune-node"
"""Label carried by tuning Jobs and their result ConfigMaps: the node they tune."""
TUNE_RESULT_KEY = "result.json"


def node_label_value(node: str) -> str:
    """Node names can exceed a label value's 63 characters; keep them readable and unique."""
    if len(node) <= 63:
        return node
    digest = hashlib.sha256(node.encode()).hexdigest()[:8]
    return f"{node[:54]}-{digest}"


def result_configmap_name(node: str) -> str:
    """The ConfigMap a node's tuning Job writes its result to (the contract with the Job)."""
    return f"climatik-gpu-tune-{hashlib.sha256(node.encode()).hexdigest()[:10]}"


def lock_configmap_name(node: str) -> str:
    """The ConfigMap a node's clock-lock Job writes its result to: apart from the sweep's, whose
    samples the controller keeps deciding clocks with."""
    return f"climatik-gpu-clock-{hashlib.sha256(node.encode()).hexdigest()[:10]}"
