"""A pod's GPUs as the exporters name them: index on the node, UUID and model, and each GPU's
share of the pod's GPU power (the pod's GPUs draw alike)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from climatik.world.readings import PodReadings

GPU_MODEL = "NVIDIA H100 80GB HBM3"


@dataclass(frozen=True, slots=True)
class Gpu:
    index: int
    uuid: str
    share: float
    """This GPU's fraction of the pod's GPU power and energy."""


def gpu_uuid(node: str, index: int) -> str:
    """Stable per node and index, like a real board's UUID."""
    return f"GPU-{uuid.uuid5(uuid.NAMESPACE_DNS, f'{node}/{index}')}"


def pod_gpus(pod: PodReadings) -> Iterator[Gpu]:
    for offset in range(pod.gpus):
        index = pod.gpu_index + offset
        yield Gpu(index=index, uuid=gpu_uuid(pod.node, index), share=1.0 / pod.gpus)
