"""`climatik gpu-tune`: the GPU clock-tuning Job's entrypoint (same image as the controller).

It prints its result as JSON on stdout and, with `--result-configmap`, stores it in a ConfigMap
the GPU-frequency reconciler reads. SIGTERM and SIGINT cancel the sweep, which restores clocks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import Any

from climatik.policies.gpu_clock import DEFAULT_MAX_THROUGHPUT_LOSS


def add_gpu_tune_parser(subparsers: Any) -> None:
    """Register `climatik gpu-tune`."""
    parser = subparsers.add_parser(
        "gpu-tune",
        help="sweep GPU clocks on this node for the most tokens per joule",
        description=(
            "Measure tokens per joule at several locked SM clocks on this node's GPUs and "
            "recommend (or apply) the best clock within the SLO bounds. --dry-run only reads."
        ),
    )
    parser.add_argument(
        "--mode",
        choices=["dry-run", "recommend", "apply"],
        default="recommend",
        help="dry-run reads only; recommend sweeps then restores; apply keeps the best clock",
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
    parser.add_argument("--sweep-points", type=int, default=8)
    parser.add_argument("--settle-s", type=float, default=20.0)
    parser.add_argument("--measure-s", type=float, default=30.0)
    parser.add_argument("--max-throughput-loss", type=float, default=DEFAULT_MAX_THROUGHPUT_LOSS)
    parser.add_argument("--max-p99-token-latency-s", type=float, default=None)
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
    return asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    from climatik.gputune.sweep import TuneMode
    from climatik.sources.gpu import GpuError

    mode = TuneMode.DRY_RUN if args.dry_run else TuneMode(args.mode)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
    try:
        result = await _tune(args, mode)
    except GpuError as error:
        print(json.dumps({"error": {"reason": error.reason, "message": error.message}}))
        return 1
    document = result.to_json()
    document["node"] = os.environ.get("NODE_NAME", "")
    print(json.dumps(document, indent=2))
    if args.result_configmap:
        await _store(args.result_configmap, args.kubeconfig, document)
    return 0 if result.succeeded else 1


async def _tune(args: argparse.Namespace, mode: Any) -> Any:
    import aiohttp

    from climatik.domain.gpu import H100
    from climatik.gputune.sweep import TuneMode, tune_gpus
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
    }
    if args.simulate:
        devices = [SimulatedGpuDevice(H100, index=i, seed=i) for i in range(args.simulate)]
        return await tune_gpus(devices, SimulatedThroughput(devices), **options)
    if mode is not TuneMode.DRY_RUN and not args.vllm_metrics:
        print("gpu-tune: a sweep needs at least one --vllm-metrics URL", file=sys.stderr)
        raise SystemExit(2)
    with NvmlLibrary() as library:
        nvml_devices = await asyncio.to_thread(library.devices)
        async with aiohttp.ClientSession() as session:
            probe = VllmMetricsProbe(session, args.vllm_metrics) if args.vllm_metrics else None
            return await tune_gpus(nvml_devices, probe, **options)


async def _store(target: str, kubeconfig: str | None, document: dict[str, Any]) -> None:
    from climatik.domain.gpu import TUNE_NODE_LABEL, TUNE_RESULT_KEY, node_label_value
    from climatik.kube.client import CONFIGMAPS, ApiError, KubeClient

    namespace, _, name = target.partition("/")
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {TUNE_NODE_LABEL: node_label_value(document.get("node") or "unknown")},
        },
        "data": {TUNE_RESULT_KEY: json.dumps(document)},
    }
    client = await KubeClient.from_config(kubeconfig)
    try:
        try:
            await client.create(CONFIGMAPS, body, namespace)
        except ApiError as error:
            if not error.is_conflict:  # AlreadyExists: a previous run's result
                raise
            await client.merge_patch(CONFIGMAPS, name, {"data": body["data"]}, namespace)
    finally:
        await client.close()
