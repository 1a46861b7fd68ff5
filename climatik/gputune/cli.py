"""`climatik gpu-tune`: the GPU clock-tuning Job's entrypoint (same image as the controller).

It prints its result as JSON on stdout and, with `--result-configmap`, stores it in a ConfigMap
the GPU-frequency reconciler reads. Progress goes to stderr, a line per measured clock with the
time left. SIGTERM (exit 143) and Ctrl-C (exit 130) cancel the sweep, which restores clocks.
`--mode lock --clock-mhz N` only locks every GPU at a clock the controller chose: no sweep, no
vLLM metrics, done in seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from climatik.domain.errors import UsageError
from climatik.domain.gpu import ClockSample
from climatik.domain.gpu_tune_result import (
    DEFAULT_MEASURE_S,
    DEFAULT_SETTLE_S,
    DEFAULT_SWEEP_POINTS,
    GpuTuneResult,
    TuneMode,
)
from climatik.policies.gpu_clock import DEFAULT_MAX_THROUGHPUT_LOSS

EXIT_TERMINATED = 128 + signal.SIGTERM


def add_gpu_tune_parser(subparsers: Any) -> None:
    """Register `climatik gpu-tune`."""
    parser = subparsers.add_parser(
        "gpu-tune",
        help="sweep GPU clocks on this node for the most tokens per joule",
        description=(
            "Measure tokens per joule at several locked SM clocks on this node's GPUs and "
            "recommend (or apply) the best clock within the SLO bounds. --dry-run only reads; "
            "--mode lock --clock-mhz N locks every GPU at N MHz without a sweep."
        ),
    )
    parser.add_argument(
        "--mode",
        choices=[str(m) for m in TuneMode],
        default=str(TuneMode.RECOMMEND),
        help=(
            "dry-run reads only; recommend sweeps then restores; apply keeps the best clock; "
            "lock locks --clock-mhz on every GPU"
        ),
    )
    parser.add_argument(
        "--clock-mhz",
        type=int,
        metavar="MHZ",
        help=(
            "the SM clock --mode lock locks (the highest supported clock not above it, "
            "else the lowest); only with --mode lock"
        ),
    )
    parser.add_argument("--dry-run", action="store_true", help="same as --mode dry-run")
    parser.add_argument(
        "--simulate",
        type=int,
        metavar="GPUS",
        default=0,
        help="use this many simulated H100s instead of NVML (for demos and tests)",
    )
    parser.add_argument(
        "--vllm-metrics",
        action="append",
        default=[],
        metavar="URL",
        help="a vLLM /metrics URL on this node (repeat for each pod)",
    )
    parser.add_argument(
        "--sweep-points",
        type=int,
        default=DEFAULT_SWEEP_POINTS,
        help=(
            "how many SM clocks to measure, spread over the supported range "
            f"(default {DEFAULT_SWEEP_POINTS})"
        ),
    )
    parser.add_argument(
        "--settle-s",
        type=float,
        default=DEFAULT_SETTLE_S,
        help=(
            f"seconds to wait after locking a clock before measuring (default {DEFAULT_SETTLE_S:g})"
        ),
    )
    parser.add_argument(
        "--measure-s",
        type=float,
        default=DEFAULT_MEASURE_S,
        help=f"seconds to measure power and tokens at each clock (default {DEFAULT_MEASURE_S:g})",
    )
    parser.add_argument(
        "--max-throughput-loss",
        type=float,
        default=DEFAULT_MAX_THROUGHPUT_LOSS,
        help=(
            "largest fraction of the top clock's tokens per second a slower clock may lose "
            f"(default {DEFAULT_MAX_THROUGHPUT_LOSS:g})"
        ),
    )
    parser.add_argument(
        "--max-p99-token-latency-s",
        type=float,
        default=None,
        help="refuse clocks whose p99 time per output token exceeds this (default: no limit)",
    )
    parser.add_argument(
        "--result-configmap",
        metavar="NAMESPACE/NAME",
        help="also store the result in this ConfigMap (the reconciler reads it)",
    )
    parser.add_argument(
        "--kubeconfig", help="kubeconfig for --result-configmap (default: in-cluster)"
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_main(args))
    except asyncio.CancelledError:
        # SIGTERM (a deleted Job's pod): the sweep was cancelled and restored the clocks.
        print("climatik gpu-tune: stopped by SIGTERM; clocks restored", file=sys.stderr)
        return EXIT_TERMINATED


def _mode(args: argparse.Namespace) -> TuneMode:
    """The mode asked for, with `--clock-mhz` where (and only where) it means something."""
    mode = TuneMode.DRY_RUN if args.dry_run else TuneMode(args.mode)
    if mode is TuneMode.LOCK and args.clock_mhz is None:
        msg = "--mode lock needs --clock-mhz MHZ, the SM clock to lock"
        raise UsageError(msg)
    if mode is not TuneMode.LOCK and args.clock_mhz is not None:
        msg = f"--clock-mhz is only for --mode lock (this run is --mode {mode})"
        raise UsageError(msg)
    if args.clock_mhz is not None and args.clock_mhz <= 0:
        msg = f"--clock-mhz must be a positive number of MHz, not {args.clock_mhz}"
        raise UsageError(msg)
    return mode


async def _main(args: argparse.Namespace) -> int:
    from climatik.sources.gpu import GpuError

    mode = _mode(args)
    task = asyncio.current_task()
    if task is not None:
        # Ctrl-C is asyncio.run's: it cancels this task too, then raises KeyboardInterrupt.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        result = await _tune(args, mode)
    except GpuError as error:
        # The Job's log keeps the JSON on stdout; a person at a terminal reads stderr's line.
        print(json.dumps({"error": {"reason": error.reason, "message": error.message}}))
        print(f"climatik gpu-tune: {error.message} ({error.reason})", file=sys.stderr)
        return 1
    document = result.to_json()
    document["node"] = os.environ.get("NODE_NAME", "")
    print(json.dumps(document, indent=2))
    if args.result_configmap:
        await _store(args.result_configmap, args.kubeconfig, document)
    return 0 if result.succeeded else 1


def _progress_printer(args: argparse.Namespace) -> Callable[[int, int, ClockSample | None], None]:
    """One line on stderr before the sweep and per measured clock, with the time left (stdout
    carries the JSON result)."""
    per_clock_s = args.settle_s + args.measure_s

    def report(done: int, total: int, sample: ClockSample | None) -> None:
        left = f"about {_duration((total - done) * per_clock_s)} left"
        if sample is None:
            line = f"gpu-tune: measuring {total} clocks, {_duration(per_clock_s)} each; {left}"
        else:
            line = (
                f"gpu-tune: clock {done}/{total}: {sample.clock_mhz} MHz, {sample.watts:.0f} W, "
                f"{sample.tokens_per_s:.0f} tokens/s, {sample.tokens_per_joule:.3f} tokens/J"
            )
            line += f"; {left}" if done < total else ""
        print(line, file=sys.stderr, flush=True)

    return report


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


async def _tune(args: argparse.Namespace, mode: TuneMode) -> GpuTuneResult:
    import aiohttp

    from climatik.domain.gpu import H100
    from climatik.gputune.sweep import lock_gpus, tune_gpus
    from climatik.policies.gpu_clock import ClockBounds
    from climatik.sources.gpu import (
        NvmlLibrary,
        SimulatedGpuDevice,
        SimulatedThroughput,
        VllmMetricsProbe,
    )

    bounds = ClockBounds(args.max_throughput_loss, args.max_p99_token_latency_s)
    options = {
        "mode": mode,
        "bounds": bounds,
        "sweep_points": args.sweep_points,
        "settle_s": args.settle_s,
        "measure_s": args.measure_s,
        "progress": _progress_printer(args),
    }
    if args.simulate:
        devices = [SimulatedGpuDevice(H100, index=i, seed=i) for i in range(args.simulate)]
        if mode is TuneMode.LOCK:
            return await lock_gpus(devices, args.clock_mhz)
        return await tune_gpus(devices, SimulatedThroughput(devices), **options)
    if mode is TuneMode.LOCK:
        with NvmlLibrary() as library:
            nvml_devices = await asyncio.to_thread(library.devices)
            return await lock_gpus(nvml_devices, args.clock_mhz)
    if mode is not TuneMode.DRY_RUN and not args.vllm_metrics:
        msg = "a sweep needs at least one --vllm-metrics URL (or --dry-run, or --simulate GPUS)"
        raise UsageError(msg)
    with NvmlLibrary() as library:
        nvml_devices = await asyncio.to_thread(library.devices)
        async with aiohttp.ClientSession() as session:
            probe = VllmMetricsProbe(session, args.vllm_metrics) if args.vllm_metrics else None
            return await tune_gpus(nvml_devices, probe, **options)


async def _store(target: str, kubeconfig: str | None, document: dict[str, Any]) -> None:
    from climatik.domain.gpu_tune_result import result_configmap
    from climatik.kube.client import KubeClient
    from climatik.kube.resources import CONFIGMAPS

    namespace, _, name = target.partition("/")
    body = result_configmap(namespace, name, document)
    client = await KubeClient.from_config(kubeconfig)
    try:
        # A previous run's result is replaced.
        await client.create_or_merge(CONFIGMAPS, body, {"data": body["data"]}, namespace)
    finally:
        await client.close()
