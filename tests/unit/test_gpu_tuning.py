"""The clock sweep against simulated GPUs: finds the tokens/J optimum, keeps SLOs, restores."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

import pynvml
import pytest

from climatik.domain.gpu import A100, H100, ClockSample, GpuModel
from climatik.gputune.sweep import TuneMode, lock_gpus, tune_gpus
from climatik.policies.gpu_clock import ClockBounds, candidate_clocks, choose_gpu_clock
from climatik.sources.gpu import GpuError, NvmlLibrary, SimulatedGpuDevice, SimulatedThroughput
from climatik.sources.gpu.device import GpuInventory
from climatik.sources.gpu.nvml import translate
from climatik.sources.gpu.throughput import p99_from_bucket_deltas, parse_vllm_metrics


async def no_sleep(seconds: float) -> None:
    del seconds


def node(model: GpuModel = H100, count: int = 2, **kwargs: object) -> list[SimulatedGpuDevice]:
    return [
        SimulatedGpuDevice(model, index=i, noise_fraction=0.0, seed=i, **kwargs)  # type: ignore[arg-type]
        for i in range(count)
    ]


def true_optimum(model: GpuModel, max_loss: float, batch: float = 32.0) -> int:
    """Brute force over every supported clock with the model itself."""
    device = SimulatedGpuDevice(model, batch=batch, noise_fraction=0.0)
    base_tps = device.tokens_per_s()
    best, best_tpj = int(model.max_clock_mhz), 0.0
    for clock in model.supported_clocks_mhz():
        device.locked_mhz = clock
        tps = device.tokens_per_s()
        if tps < base_tps * (1 - max_loss):
            continue
        tpj = tps / device.power_w()
        if tpj > best_tpj:
            best, best_tpj = clock, tpj
    return best


@pytest.mark.parametrize("model", [H100, A100], ids=lambda m: m.name)
@pytest.mark.parametrize("max_loss", [0.05, 0.10, 0.20])
async def test_dense_sweep_finds_the_optimum_within_one_clock_step(
    model: GpuModel, max_loss: float
) -> None:
    devices = node(model)
    result = await tune_gpus(
        devices,
        SimulatedThroughput(devices),
        mode=TuneMode.RECOMMEND,
        bounds=ClockBounds(max_throughput_loss=max_loss),
        sweep_points=500,
        sleep=no_sleep,
    )
    assert result.succeeded
    assert result.choice is not None
    assert abs(result.choice.clock_mhz - true_optimum(model, max_loss)) <= model.clock_step_mhz
    assert result.choice.throughput_loss <= max_loss + 1e-9
    assert result.choice.tokens_per_joule_gain > 0


async def test_coarse_sweep_gains_tokens_per_joule_within_the_throughput_bound() -> None:
    devices = node()
    result = await tune_gpus(
        devices,
        SimulatedThroughput(devices),
        mode=TuneMode.RECOMMEND,
        bounds=ClockBounds(max_throughput_loss=0.10),
        sleep=no_sleep,
    )
    assert result.choice is not None
    assert len(result.samples) == 8
    assert result.choice.throughput_loss <= 0.10
    assert result.choice.tokens_per_joule_gain >= 0.15


async def test_latency_bound_excludes_slow_clocks() -> None:
    devices = node()
    at_max = devices[0].token_latency_s()
    result = await tune_gpus(
        devices,
        SimulatedThroughput(devices),
        mode=TuneMode.RECOMMEND,
        bounds=ClockBounds(max_throughput_loss=0.5, max_p99_token_latency_s=at_max * 1.03),
        sweep_points=500,
        sleep=no_sleep,
    )
    assert result.choice is not None
    latency = result.choice.chosen.p99_token_latency_s
    assert latency is not None
    assert latency <= at_max * 1.03


async def test_recommend_restores_and_apply_keeps_the_clock() -> None:
    recommended = node()
    result = await tune_gpus(
        recommended,
        SimulatedThroughput(recommended),
        mode=TuneMode.RECOMMEND,
        bounds=ClockBounds(),
        sleep=no_sleep,
    )
    assert result.applied_clock_mhz is None
    assert all(d.locked_mhz is None and d.lock_history[-1] is None for d in recommended)

    applied = node()
    result = await tune_gpus(
        applied,
        SimulatedThroughput(applied),
        mode=TuneMode.APPLY,
        bounds=ClockBounds(),
        sleep=no_sleep,
    )
    assert result.choice is not None
    assert result.applied_clock_mhz == result.choice.clock_mhz
    assert all(d.locked_mhz == result.choice.clock_mhz for d in applied)


async def test_dry_run_changes_nothing() -> None:
    devices = node()
    result = await tune_gpus(
        devices,
        SimulatedThroughput(devices),
        mode=TuneMode.DRY_RUN,
        bounds=ClockBounds(),
        sleep=no_sleep,
    )
    assert result.planned_clocks_mhz[0] == 1980
    assert result.samples == []
    assert all(d.lock_history == [] for d in devices)
    assert result.to_json()["gpus"][0]["name"] == "Simulated H100"


async def test_an_nvml_error_mid_sweep_restores_every_gpu() -> None:
    plan = candidate_clocks(H100.supported_clocks_mhz())
    devices = node(fail_on_lock_mhz=plan[3])
    result = await tune_gpus(
        devices,
        SimulatedThroughput(devices),
        mode=TuneMode.APPLY,
        bounds=ClockBounds(),
        sleep=no_sleep,
    )
    assert not result.succeeded
    assert result.error is not None
    assert result.error.reason == "NotSupported"
    assert result.to_json()["error"]["reason"] == "NotSupported"
    assert all(d.locked_mhz is None for d in devices)
    assert result.applied_clock_mhz is None


async def test_cancellation_mid_sweep_restores_clocks() -> None:
    devices = node()
    entered = asyncio.Event()

    async def slow_sleep(seconds: float) -> None:
        entered.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(
        tune_gpus(
            devices,
            SimulatedThroughput(devices),
            mode=TuneMode.APPLY,
            bounds=ClockBounds(),
            sleep=slow_sleep,
        )
    )
    await entered.wait()
    assert devices[0].locked_mhz is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(d.locked_mhz is None for d in devices)


def test_choice_keeps_the_baseline_when_nothing_is_admissible() -> None:
    samples = [ClockSample(1980, 700, 1000), ClockSample(1500, 400, 500)]
    choice = choose_gpu_clock(samples, ClockBounds(max_throughput_loss=0.1))
    assert choice.clock_mhz == 1980
    assert "kept" in choice.reason


def test_candidate_clocks_spread_from_the_top_to_the_floor() -> None:
    clocks = candidate_clocks(H100.supported_clocks_mhz(), count=5)
    assert clocks[0] == 1980
    assert len(clocks) == 5
    assert min(clocks) >= 1980 * 0.4
    assert clocks == sorted(clocks, reverse=True)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (pynvml.NVML_ERROR_NO_PERMISSION, "NoPermission"),
        (pynvml.NVML_ERROR_NOT_SUPPORTED, "NotSupported"),
        (pynvml.NVML_ERROR_GPU_IS_LOST, "GpuLost"),
    ],
)
def test_nvml_errors_become_reasons_with_advice(code: int, reason: str) -> None:
    error = translate(pynvml.NVMLError(code), "GPU 0: locking SM clock")
    assert error.reason == reason
    assert error.message.startswith("GPU 0: locking SM clock")
    assert "(" in error.message  # carries advice a user can act on


def test_nvml_on_this_machine_answers_with_gpus_or_a_clear_error() -> None:
    failure: GpuError | None = None
    inventory = []
    try:
        with NvmlLibrary() as library:
            inventory = [device.inventory() for device in library.devices()]
    except GpuError as error:
        failure = error
    if failure is not None:
        assert failure.reason in {"LibraryNotFound", "DriverNotLoaded"}
        assert "NVML" in failure.message
    else:
        assert inventory
        assert all(gpu.supported_sm_clocks_mhz for gpu in inventory)


VLLM_TEXT = """
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{model_name="llama"} 1000.0
# TYPE vllm:inter_token_latency_seconds histogram
vllm:inter_token_latency_seconds_bucket{le="0.025",model_name="llama"} 10.0
vllm:inter_token_latency_seconds_bucket{le="0.05",model_name="llama"} 90.0
vllm:inter_token_latency_seconds_bucket{le="0.1",model_name="llama"} 100.0
vllm:inter_token_latency_seconds_bucket{le="+Inf",model_name="llama"} 100.0
vllm:inter_token_latency_seconds_count{model_name="llama"} 100.0
vllm:inter_token_latency_seconds_sum{model_name="llama"} 4.0
"""


def test_vllm_metrics_parse_tokens_and_latency_buckets() -> None:
    tokens, buckets = parse_vllm_metrics(VLLM_TEXT)
    assert tokens == 1000
    assert buckets == {0.025: 10, 0.05: 90, 0.1: 100, float("inf"): 100}
    before = {0.025: 0.0, 0.05: 0.0, 0.1: 0.0, float("inf"): 0.0}
    assert p99_from_bucket_deltas(before, buckets) == 0.1
    assert p99_from_bucket_deltas(buckets, buckets) is None


async def test_progress_is_told_before_the_sweep_and_after_every_clock() -> None:
    devices = node(count=1)
    heard: list[tuple[int, int, int | None]] = []
    result = await tune_gpus(
        devices,
        SimulatedThroughput(devices),
        mode=TuneMode.RECOMMEND,
        bounds=ClockBounds(),
        sweep_points=3,
        sleep=no_sleep,
        progress=lambda done, total, sample: heard.append(
            (done, total, None if sample is None else sample.clock_mhz)
        ),
    )
    assert heard == [(0, 3, None)] + [
        (i + 1, 3, clock) for i, clock in enumerate(result.planned_clocks_mhz)
    ]


async def test_a_lock_takes_the_highest_supported_clock_not_above_the_request() -> None:
    devices = node()
    result = await lock_gpus(devices, 1400)
    assert result.succeeded
    assert result.mode is TuneMode.LOCK
    # H100 clocks run 1980, 1965, ... in 15 MHz steps: 1395 is the highest not above 1400.
    assert result.applied_clock_mhz == 1395
    assert all(d.locked_mhz == 1395 and d.lock_history == [1395] for d in devices)
    document = result.to_json()
    assert document["mode"] == "lock"
    assert document["appliedClockMHz"] == 1395
    assert document["requestedClockMHz"] == 1400
    assert document["plannedClocksMHz"] == [1395]
    assert [g["smClockMHz"] for g in document["gpus"]] == [1980, 1980]
    assert (await lock_gpus(node(), 1395)).applied_clock_mhz == 1395
    assert (await lock_gpus(node(), 5000)).applied_clock_mhz == 1980


async def test_a_lock_below_every_supported_clock_takes_the_lowest() -> None:
    devices = node()
    result = await lock_gpus(devices, 100)
    lowest = min(H100.supported_clocks_mhz())
    assert result.applied_clock_mhz == lowest
    assert result.requested_clock_mhz == 100
    assert all(d.locked_mhz == lowest for d in devices)


async def test_a_lock_takes_only_clocks_every_gpu_supports() -> None:
    """An A100 stops at 1410 MHz: a node with both locks no higher."""
    devices = [SimulatedGpuDevice(H100, index=0), SimulatedGpuDevice(A100, index=1)]
    result = await lock_gpus(devices, 1980)
    assert result.applied_clock_mhz == max(
        set(H100.supported_clocks_mhz()) & set(A100.supported_clocks_mhz())
    )
    assert result.applied_clock_mhz is not None
    assert result.applied_clock_mhz < 1980


async def test_a_gpu_failing_to_lock_resets_every_gpu_and_reports_it() -> None:
    devices = [
        SimulatedGpuDevice(H100, index=0),
        SimulatedGpuDevice(H100, index=1, fail_on_lock_mhz=1395),
        SimulatedGpuDevice(H100, index=2),
    ]
    result = await lock_gpus(devices, 1400)
    assert not result.succeeded
    assert result.error is not None
    assert result.error.reason == "NotSupported"
    assert result.applied_clock_mhz is None
    assert result.to_json()["appliedClockMHz"] is None
    assert devices[0].lock_history == [1395, None]
    assert all(d.locked_mhz is None for d in devices)


async def test_a_lock_without_gpus_or_without_an_inventory_locks_nothing() -> None:
    none = await lock_gpus([], 1400)
    assert none.error is not None
    assert none.error.reason == "NoGpu"

    class Lost(SimulatedGpuDevice):
        def inventory(self) -> GpuInventory:
            raise GpuError("GpuLost", "GPU 1 fell off the bus")

    devices = [SimulatedGpuDevice(H100, index=0), Lost(H100, index=1)]
    result = await lock_gpus(devices, 1400)
    assert result.error is not None
    assert result.error.reason == "GpuLost"
    assert result.applied_clock_mhz is None
    assert all(d.lock_history == [] for d in devices)


@dataclass
class SlowToLock(SimulatedGpuDevice):
    """Its lock blocks in NVML's thread until released, as a driver call can."""

    release: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)
    returned: threading.Event = field(default_factory=threading.Event)

    def lock_sm_clock(self, clock_mhz: int) -> None:
        self.entered.set()
        self.release.wait(10)
        super().lock_sm_clock(clock_mhz)
        self.returned.set()


async def test_cancelling_a_lock_resets_every_gpu_even_the_one_whose_lock_was_in_flight() -> None:
    """A thread cannot be stopped: the reset must wait for the lock in flight, or the lock
    lands after it and stays."""
    devices = [SlowToLock(H100, index=0), SlowToLock(H100, index=1)]
    task = asyncio.create_task(lock_gpus(devices, 1400))
    await asyncio.to_thread(devices[0].entered.wait, 10)
    task.cancel()
    asyncio.get_running_loop().call_later(0.2, devices[0].release.set)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(devices[0].returned.wait, 10)
    assert devices[0].lock_history == [1395, None]
    assert devices[1].lock_history == [None]
    assert all(d.locked_mhz is None for d in devices)
