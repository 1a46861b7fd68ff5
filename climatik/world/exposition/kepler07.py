"""Kepler 0.7: container energy counters only, split into an idle and a dynamic mode; watts are
`rate()` of them. Still common in clusters that have not moved to the rewrite."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Final

from climatik.world.exposition.kepler import ZONE_FRACTIONS
from climatik.world.exposition.text import Scrape, header
from climatik.world.readings import PodReadings

IDLE_FRACTION: Final = 0.1
MODES: Final = (("dynamic", 1 - IDLE_FRACTION), ("idle", IDLE_FRACTION))


def container_labels(pod: PodReadings) -> dict[str, str]:
    return {
        "container_namespace": pod.namespace,
        "pod_name": pod.name,
        "container_name": "vllm",
        "container_id": uuid.uuid5(uuid.NAMESPACE_OID, pod.uid).hex,
    }


def render_kepler07(pods: list[PodReadings], scrape: Scrape) -> Iterator[str]:
    """`pods` sorted by key."""
    yield from header("kepler_container_joules_total", "counter", "Container energy")
    for pod in pods:
        total = pod.cpu_joules + pod.gpu_joules
        for mode, fraction in MODES:
            labels = {**container_labels(pod), "mode": mode}
            yield scrape.sample("kepler_container_joules_total", labels, total * fraction, pod)
    components: dict[str, Callable[[PodReadings], float]] = {
        "package": lambda p: p.cpu_joules,
        "dram": lambda p: p.cpu_joules * ZONE_FRACTIONS["dram"],
        "gpu": lambda p: p.gpu_joules,
    }
    for component, joules in components.items():
        metric = f"kepler_container_{component}_joules_total"
        yield from header(metric, "counter", f"Container {component} energy")
        for pod in pods:
            for mode, fraction in MODES:
                labels = {**container_labels(pod), "mode": mode}
                yield scrape.sample(metric, labels, joules(pod) * fraction, pod)
