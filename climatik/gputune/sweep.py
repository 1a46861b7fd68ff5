"""Sweep locked SM clocks on a node's GPUs, measure tokens per joule, keep the best; or lock
a clock the controller chose, with no sweep.

All GPUs of the node move together: a tensor-parallel replica spans them, so a clock only means
something for the whole group. NVML calls run in a thread. Whatever happens (an NVML error, a
signal, a bug), clocks the sweep locked are reset unless the chosen clock is being applied; a lock
that fails on one GPU resets them all, so a node never runs its GPUs at different clocks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from climatik.domain.gpu import ClockSample, GpuInventory
from climatik.domain.gpu_tune_result import (
    DEFAULT_MEASURE_S,
    DEFAULT_SETTLE_S,
    DEFAULT_SWEEP_POINTS,
    GpuTuneResult,
    TuneMode,
    lock_clock_mhz,
)
from climatik.policies.gpu_clock import ClockBounds, candidate_clocks, choose_gpu_clock
from climatik.sources.gpu import GpuDevice, GpuError, ThroughputProbe

__all__ = ["GpuTuneResult", "Sleep", "SweepProgress", "TuneMode", "lock_gpus", "tune_gpus"]

Sleep = Callable[[float], Awaitable[None]]
SweepProgress = Callable[[int, int, ClockSample | None], None]
"""Told (clocks measured, clocks planned, the latest sample) before the sweep and after each
clock; the sample is ``None`` before the first."""


async def _lock_all(devices: Sequence[GpuDevice], clock_mhz: int) -> None:
    for device in devices:
        call = asyncio.ensure_future(asyncio.to_thread(device.lock_sm_clock, clock_mhz))
        try:
            await asyncio.shield(call)
        except asyncio.CancelledError:
            # A thread cannot be stopped: a lock landing after the caller's reset would stay,
            # so the NVML call in flight finishes first (its own error no longer matters).
            with contextlib.suppress(GpuError):
                await call
            raise


def _common_clocks(inventory: Sequence[GpuInventory]) -> set[int]:
    """The SM clocks every GPU of the node supports: the group moves together."""
    common = set(inventory[0].supported_sm_clocks_mhz)
    for gpu in inventory[1:]:
        common &= set(gpu.supported_sm_clocks_mhz)
    return common


async def _mean_power_w(
    devices: Sequence[GpuDevice], seconds: float, sleep: Sleep, samples: int = 5
) -> float:
    """Mean total power of the group over the window, sampled evenly."""
    readings = []
    for _ in range(samples):
        total = 0.0
        for device in devices:
            total += await asyncio.to_thread(device.power_w)
        readings.append(total)
        await sleep(seconds / samples)
    return sum(readings) / len(readings)


async def _restore(devices: Sequence[GpuDevice]) -> GpuError | None:
    """Reset every GPU, even when one of them fails; report the first failure."""
    first: GpuError | None = None
    for device in devices:
        try:
            await asyncio.to_thread(device.reset_sm_clock)
        except GpuError as error:
            first = first or error
    return first


async def tune_gpus(
    devices: Sequence[GpuDevice],
    probe: ThroughputProbe | None,
    *,
    mode: TuneMode,
    bounds: ClockBounds,
    sweep_points: int = DEFAULT_SWEEP_POINTS,
    settle_s: float = DEFAULT_SETTLE_S,
    measure_s: float = DEFAULT_MEASURE_S,
    sleep: Sleep = asyncio.sleep,
    progress: SweepProgress | None = None,
) -> GpuTuneResult:
    """Run one tuning pass over `devices` and return what it found and did.

    `probe` may be `None` only for a dry run, which measures no throughput. `progress` hears
    of the sweep before the first clock and after each one, since a sweep takes minutes.
    """
    if not devices:
        return GpuTuneResult(mode, [], [], error=GpuError("NoGpu", "this node has no GPU"))
    try:
        inventory = [await asyncio.to_thread(device.inventory) for device in devices]
    except GpuError as error:
        return GpuTuneResult(mode, [], [], error=error)
    plan = candidate_clocks(sorted(_common_clocks(inventory), reverse=True), sweep_points)
    result = GpuTuneResult(mode, inventory, plan)
    if mode is TuneMode.DRY_RUN or not plan:
        return result
    if probe is None:
        msg = "a sweep needs a throughput probe; only a dry run can go without"
        raise ValueError(msg)

    keep_locked = False
    if progress is not None:
        progress(0, len(plan), None)
    try:
        for clock_mhz in plan:
            await _lock_all(devices, clock_mhz)
            await sleep(settle_s)
            power_w, window = await asyncio.gather(
                _mean_power_w(devices, measure_s, sleep), probe.measure(measure_s)
            )
            sample = ClockSample(
                clock_mhz, power_w, window.tokens_per_s, window.p99_token_latency_s
            )
            result.samples.append(sample)
            if progress is not None:
                progress(len(result.samples), len(plan), sample)
        choice = result.choice = choose_gpu_clock(result.samples, bounds)
        if mode is TuneMode.APPLY:
            await _lock_all(devices, choice.clock_mhz)
            result.applied_clock_mhz = choice.clock_mhz
            keep_locked = True
    except GpuError as error:
        result.error = error
    finally:
        if not keep_locked:
            restore_error = await _restore(devices)
            if result.error is None and restore_error is not None:
                result.error = restore_error
    return result


async def lock_gpus(devices: Sequence[GpuDevice], clock_mhz: int) -> GpuTuneResult:
    """Lock every GPU at the supported clock nearest `clock_mhz` from below (the controller's
    choice under a power cap, which a faster clock could overshoot); no sweep, so it takes
    seconds. On any failure, or a cancellation, every GPU is reset."""
    result = GpuTuneResult(TuneMode.LOCK, [], [], requested_clock_mhz=clock_mhz)
    if not devices:
        result.error = GpuError("NoGpu", "this node has no GPU")
        return result
    try:
        result.inventory = [await asyncio.to_thread(device.inventory) for device in devices]
    except GpuError as error:
        result.error = error
        return result
    common = _common_clocks(result.inventory)
    if not common:
        result.error = GpuError("NotSupported", "this node's GPUs share no SM clock to lock")
        return result
    chosen = lock_clock_mhz(common, clock_mhz)
    result.planned_clocks_mhz = [chosen]
    try:
        await _lock_all(devices, chosen)
        result.applied_clock_mhz = chosen
    except GpuError as error:
        result.error = error
    finally:
        if result.applied_clock_mhz is None:
            restore_error = await _restore(devices)
            if result.error is None and restore_error is not None:
                result.error = restore_error
    return result
