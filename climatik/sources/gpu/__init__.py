"""GPUs and their token throughput, as the clock-tuning Job measures them.

`GpuDevice` is the small, synchronous surface the sweep needs (NVML is a blocking C library:
callers run it through `asyncio.to_thread`). `NvmlGpuDevice` is the real one; `SimulatedGpuDevice`
follows the twin's GPU model so the sweep runs in tests and in `climatik simulate` without a GPU.
"""

from climatik.sources.gpu.device import GpuDevice, GpuError, GpuInventory
from climatik.sources.gpu.nvml import NvmlGpuDevice, NvmlLibrary
from climatik.sources.gpu.simulated import SimulatedGpuDevice, SimulatedThroughput
from climatik.sources.gpu.throughput import ThroughputProbe, ThroughputWindow, VllmMetricsProbe

__all__ = [
    "GpuDevice",
    "GpuError",
    "GpuInventory",
    "NvmlGpuDevice",
    "NvmlLibrary",
    "SimulatedGpuDevice",
    "SimulatedThroughput",
    "ThroughputProbe",
    "ThroughputWindow",
    "VllmMetricsProbe",
]
