"""The GPU surface the clock sweep uses, and the errors it can meet."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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


class GpuDevice(Protocol):
    """One GPU. Every method blocks; call it off the event loop."""

    def inventory(self) -> GpuInventory:
        """Read identity, clocks, power and limits without changing anything."""
        ...

    def power_w(self) -> float:
        """Instantaneous board power."""
        ...

    def lock_sm_clock(self, clock_mhz: int) -> None:
        """Lock the SM clock (min = max = `clock_mhz`)."""
        ...

    def reset_sm_clock(self) -> None:
        """Return the SM clock to the driver's default behaviour."""
        ...
