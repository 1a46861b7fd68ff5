"""The GPU surface the clock sweep uses, and the errors it can meet."""

from __future__ import annotations

from typing import Protocol

from climatik.domain.gpu import GpuError, GpuInventory

__all__ = ["GpuDevice", "GpuError", "GpuInventory"]


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
