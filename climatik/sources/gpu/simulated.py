"""A GPU that follows the twin's model, for tests and `climatik simulate`.

It draws power and serves tokens exactly as `climatik.domain.gpu.GpuModel` says for the clock it
is locked at and the load it is given, plus seeded noise like a real power sensor's; it can be
told to fail like NVML does, so the sweep's restore path is tested too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from climatik.domain.gpu import GpuModel
from climatik.sources.gpu.device import GpuError, GpuInventory
from climatik.sources.gpu.throughput import ThroughputWindow


@dataclass
class SimulatedGpuDevice:
    """One simulated GPU decoding a steady batch."""

    model: GpuModel
    index: int = 0
    batch: float = 32.0
    decode_fraction: float = 0.9
    prefill_fraction: float = 0.05
    noise_fraction: float = 0.02
    seed: int = 0
    fail_on_lock_mhz: int | None = None
    """Raise NotSupported when asked to lock this clock (to test restore paths)."""
    locked_mhz: int | None = None
    lock_history: list[int | None] = field(default_factory=list)
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)  # noqa: S311 - sensor noise, not security

    @property
    def clock_mhz(self) -> float:
        return float(self.locked_mhz) if self.locked_mhz is not None else self.model.max_clock_mhz

    def inventory(self) -> GpuInventory:
        return GpuInventory(
            index=self.index,
            uuid=f"GPU-sim-{self.index:04d}",
            name=f"Simulated {self.model.name}",
            sm_clock_mhz=round(self.clock_mhz),
            supported_sm_clocks_mhz=self.model.supported_clocks_mhz(),
            power_w=self.power_w(),
            power_limit_w=self.model.prefill_max_w,
            power_limit_range_w=(200.0, self.model.prefill_max_w),
        )

    def power_w(self) -> float:
        mean_w = self.model.busy_watts(self.clock_mhz, self.prefill_fraction, self.decode_fraction)
        return mean_w * (1.0 + self._random.gauss(0.0, self.noise_fraction))

    def tokens_per_s(self) -> float:
        return self.decode_fraction * self.model.decode_tokens_per_s(self.clock_mhz, self.batch)

    def token_latency_s(self) -> float:
        return self.model.decode_step_s(self.clock_mhz, self.batch)

    def lock_sm_clock(self, clock_mhz: int) -> None:
        if clock_mhz == self.fail_on_lock_mhz:
            raise GpuError("NotSupported", f"GPU {self.index}: cannot lock {clock_mhz} MHz")
        self.locked_mhz = clock_mhz
        self.lock_history.append(clock_mhz)

    def reset_sm_clock(self) -> None:
        self.locked_mhz = None
        self.lock_history.append(None)


@dataclass
class SimulatedThroughput:
    """Token throughput and latency of simulated GPUs, as a `ThroughputProbe` reads them."""

    devices: list[SimulatedGpuDevice]

    async def measure(self, seconds: float) -> ThroughputWindow:
        del seconds  # the model is steady: any window gives the same rate
        return ThroughputWindow(
            tokens_per_s=sum(device.tokens_per_s() for device in self.devices),
            p99_token_latency_s=max(device.token_latency_s() for device in self.devices),
        )
