"""Kepler >= 0.10: pod and node CPU power per RAPL zone, and (from 0.11.4) GPU power.

Zones overlap like RAPL's (core and uncore are inside package; dram is separate), so a query
that sums zones double counts, on purpose: the controller must filter one zone.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping
from typing import Final

from climatik.world.counters import finite_or_zero
from climatik.world.exposition.gpus import GPU_MODEL, Gpu, pod_gpus
from climatik.world.exposition.text import Scrape, header
from climatik.world.readings import NodeReadings, PodReadings

ZONE_FRACTIONS: Final = {"package": 1.0, "core": 0.8, "uncore": 0.1, "dram": 0.15}
"""Each zone's power as a fraction of the package zone's."""


def pod_labels(pod: PodReadings) -> dict[str, str]:
    return {
        "pod_id": pod.uid,
        "pod_name": pod.name,
        "pod_namespace": pod.namespace,
        "state": "running",
        "node_name": pod.node,
    }


def gpu_labels(gpu: Gpu) -> dict[str, str]:
    return {"gpu": str(gpu.index), "gpu_uuid": gpu.uuid, "gpu_name": GPU_MODEL, "vendor": "nvidia"}


def jittered_cpu_watts(pod: PodReadings, rng: random.Random) -> float:
    """The CPU gauge with the pod's meter noise (counters integrate the steady value)."""
    if not pod.noise or not math.isfinite(pod.cpu_watts):
        return pod.cpu_watts
    return pod.cpu_watts * (1 + rng.uniform(-pod.noise, pod.noise))


def render_kepler(
    pods: list[PodReadings], nodes: Mapping[str, NodeReadings], scrape: Scrape, rng: random.Random
) -> Iterator[str]:
    """`pods` sorted by key; every pod's node is in `nodes`."""
    yield from header("kepler_pod_cpu_watts", "gauge", "Power of the pod's CPU by zone")
    for pod in pods:
        watts = jittered_cpu_watts(pod, rng)
        for zone, fraction in ZONE_FRACTIONS.items():
            labels = {**pod_labels(pod), "zone": zone}
            yield scrape.sample("kepler_pod_cpu_watts", labels, watts * fraction, pod)
    yield from header("kepler_pod_cpu_joules_total", "counter", "Energy of the pod's CPU")
    for pod in pods:
        for zone, fraction in ZONE_FRACTIONS.items():
            labels = {**pod_labels(pod), "zone": zone}
            yield scrape.sample(
                "kepler_pod_cpu_joules_total", labels, pod.cpu_joules * fraction, pod
            )
    gpu_pods = [p for p in pods if p.gpu_watts is not None]
    if gpu_pods:
        yield from header("kepler_pod_gpu_watts", "gauge", "Power of the pod's GPUs")
        for pod in gpu_pods:
            watts = pod.gpu_watts if pod.gpu_watts is not None else 0.0
            for gpu in pod_gpus(pod):
                labels = {**pod_labels(pod), **gpu_labels(gpu)}
                yield scrape.sample("kepler_pod_gpu_watts", labels, watts * gpu.share, pod)
        yield from header("kepler_pod_gpu_joules_total", "counter", "Energy of the GPUs")
        for pod in gpu_pods:
            for gpu in pod_gpus(pod):
                labels = {**pod_labels(pod), **gpu_labels(gpu)}
                joules = pod.gpu_joules * gpu.share
                yield scrape.sample("kepler_pod_gpu_joules_total", labels, joules, pod)
    yield from header("kepler_node_cpu_watts", "gauge", "Power of the node's CPU by zone")
    for name in sorted(nodes):
        cpu_w = nodes[name].idle_cpu_watts + sum(
            finite_or_zero(p.cpu_watts) for p in pods if p.node == name
        )
        for zone, fraction in ZONE_FRACTIONS.items():
            labels = {
                "zone": zone,
                "path": f"/sys/class/powercap/intel-rapl/intel-rapl:0/{zone}",
                "node_name": name,
            }
            yield scrape.sample("kepler_node_cpu_watts", labels, cpu_w * fraction)
    if gpu_pods:
        yield from header("kepler_node_gpu_watts", "gauge", "Power of the node's GPUs")
        for pod in gpu_pods:
            watts = pod.gpu_watts if pod.gpu_watts is not None else 0.0
            for gpu in pod_gpus(pod):
                labels = {**gpu_labels(gpu), "node_name": pod.node}
                yield scrape.sample("kepler_node_gpu_watts", labels, watts * gpu.share)
