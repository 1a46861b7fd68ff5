"""NVIDIA's DCGM exporter: per-GPU power, energy (mJ), temperature and SM clock (MHz), with the
exporter's own `pod`/`namespace`/`container` labels (behind a ServiceMonitor Prometheus renames
them `exported_*`, which the controller's queries expect)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from climatik.world.counters import finite_or_zero
from climatik.world.exposition.gpus import GPU_MODEL, Gpu, pod_gpus
from climatik.world.exposition.text import Scrape, header
from climatik.world.readings import PodReadings

DRIVER_VERSION: Final = "580.65.06"
IDLE_TEMP_C: Final = 35.0
WATTS_PER_DEGREE: Final = 20.0
"""A GPU's temperature rises a degree per this many watts above idle (a rough heatsink)."""


def gpu_labels(pod: PodReadings, gpu: Gpu) -> dict[str, str]:
    return {
        "gpu": str(gpu.index),
        "UUID": gpu.uuid,
        "device": f"nvidia{gpu.index}",
        "modelName": GPU_MODEL,
        "Hostname": pod.node,
        "DCGM_FI_DRIVER_VERSION": DRIVER_VERSION,
        "container": "vllm",
        "namespace": pod.namespace,
        "pod": pod.name,
    }


def render_dcgm(pods: list[PodReadings], scrape: Scrape) -> Iterator[str]:
    """`pods` sorted by key; pods without GPU watts have no GPU series."""
    gpu_pods = [p for p in pods if p.gpu_watts is not None]

    def power(pod: PodReadings, gpu: Gpu) -> float:
        return (pod.gpu_watts if pod.gpu_watts is not None else 0.0) * gpu.share

    def energy_mj(pod: PodReadings, gpu: Gpu) -> float:
        return pod.gpu_joules * gpu.share * 1000

    def temperature(pod: PodReadings, gpu: Gpu) -> float:
        return IDLE_TEMP_C + finite_or_zero(pod.gpu_watts) * gpu.share / WATTS_PER_DEGREE

    def sm_clock(pod: PodReadings, gpu: Gpu) -> float:
        return pod.sm_clock_mhz

    fields = (
        ("DCGM_FI_DEV_POWER_USAGE", "gauge", power),
        ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter", energy_mj),
        ("DCGM_FI_DEV_GPU_TEMP", "gauge", temperature),
        ("DCGM_FI_DEV_SM_CLOCK", "gauge", sm_clock),
    )
    for metric, kind, value in fields:
        yield from header(metric, kind, f"DCGM field {metric}")
        for pod in gpu_pods:
            for gpu in pod_gpus(pod):
                yield scrape.sample(metric, gpu_labels(pod, gpu), value(pod, gpu), pod)
