"""NVIDIA GPUs through NVML (the `pynvml` module of nvidia-ml-py).

NVML errors become `GpuError`s whose reason a user can act on: no permission (the Job lacks the
privilege to set clocks), not supported (the GPU or driver cannot lock clocks), GPU lost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TypeVar

import pynvml

from climatik.sources.gpu.device import GpuError, GpuInventory

_T = TypeVar("_T")

_REASONS = {
    pynvml.NVML_ERROR_NOT_SUPPORTED: "NotSupported",
    pynvml.NVML_ERROR_NO_PERMISSION: "NoPermission",
    pynvml.NVML_ERROR_GPU_IS_LOST: "GpuLost",
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND: "LibraryNotFound",
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED: "DriverNotLoaded",
    pynvml.NVML_ERROR_UNINITIALIZED: "Uninitialized",
    pynvml.NVML_ERROR_INVALID_ARGUMENT: "InvalidArgument",
}
_ADVICE = {
    "NoPermission": "setting clocks needs root or CAP_SYS_ADMIN in the tuning Job",
    "NotSupported": "this GPU or driver cannot lock SM clocks",
    "GpuLost": "the GPU fell off the bus; the node needs attention",
    "LibraryNotFound": "libnvidia-ml.so is not present: is this a GPU node with the driver?",
    "DriverNotLoaded": "the NVIDIA driver is not loaded",
}


def translate(error: pynvml.NVMLError, doing: str) -> GpuError:
    """Turn an NVML error into a `GpuError` naming what failed and what to do."""
    reason = _REASONS.get(error.value, "NvmlError")
    advice = _ADVICE.get(reason)
    message = f"{doing}: {error}" + (f" ({advice})" if advice else "")
    return GpuError(reason, message)


def _call(doing: str, function: Callable[[], _T]) -> _T:
    try:
        return function()
    except pynvml.NVMLError as error:
        raise translate(error, doing) from None


class NvmlLibrary:
    """NVML's lifetime: init once, shut down once; a context manager."""

    def __enter__(self) -> NvmlLibrary:
        _call("initialising NVML", pynvml.nvmlInit)
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Shutting down a library that already failed does not need a second error.
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()

    def devices(self) -> list[NvmlGpuDevice]:
        count = _call("counting GPUs", pynvml.nvmlDeviceGetCount)
        return [NvmlGpuDevice(index) for index in range(count)]


class NvmlGpuDevice:
    """One GPU by NVML index."""

    def __init__(self, index: int) -> None:
        self.index = index
        self._handle = _call(
            f"opening GPU {index}", lambda: pynvml.nvmlDeviceGetHandleByIndex(index)
        )

    def inventory(self) -> GpuInventory:
        handle = self._handle
        where = f"GPU {self.index}"
        memory_clocks = _call(
            f"{where}: memory clocks", lambda: pynvml.nvmlDeviceGetSupportedMemoryClocks(handle)
        )
        top_memory = max(memory_clocks)
        sm_clocks = _call(
            f"{where}: SM clocks",
            lambda: pynvml.nvmlDeviceGetSupportedGraphicsClocks(handle, top_memory),
        )
        low_mw, high_mw = _call(
            f"{where}: power limit range",
            lambda: pynvml.nvmlDeviceGetPowerManagementLimitConstraints(handle),
        )
        return GpuInventory(
            index=self.index,
            uuid=str(_call(f"{where}: uuid", lambda: pynvml.nvmlDeviceGetUUID(handle))),
            name=str(_call(f"{where}: name", lambda: pynvml.nvmlDeviceGetName(handle))),
            sm_clock_mhz=int(
                _call(
                    f"{where}: SM clock",
                    lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
                )
            ),
            supported_sm_clocks_mhz=tuple(sorted((int(c) for c in sm_clocks), reverse=True)),
            power_w=self.power_w(),
            power_limit_w=_call(
                f"{where}: power limit", lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(handle)
            )
            / 1000.0,
            power_limit_range_w=(low_mw / 1000.0, high_mw / 1000.0),
        )

    def power_w(self) -> float:
        handle = self._handle
        milliwatts = _call(
            f"GPU {self.index}: power", lambda: pynvml.nvmlDeviceGetPowerUsage(handle)
        )
        return float(milliwatts) / 1000.0

    def lock_sm_clock(self, clock_mhz: int) -> None:
        handle = self._handle
        _call(
            f"GPU {self.index}: locking SM clock at {clock_mhz} MHz",
            lambda: pynvml.nvmlDeviceSetGpuLockedClocks(handle, clock_mhz, clock_mhz),
        )

    def reset_sm_clock(self) -> None:
        handle = self._handle
        _call(
            f"GPU {self.index}: resetting SM clocks",
            lambda: pynvml.nvmlDeviceResetGpuLockedClocks(handle),
        )
