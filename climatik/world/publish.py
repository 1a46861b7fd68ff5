"""A step of the world, published: each pod's and node's loads become the readings the scrape
target serves. Pods the world published and no longer sees are removed; pods set through the
control endpoints by someone else are left alone."""

from __future__ import annotations

from collections.abc import Mapping

from climatik.sim.scenario import Service
from climatik.world.readings import Readings
from climatik.world.site import Frame


def publish(
    readings: Readings,
    frame: Frame,
    services: Mapping[str, Service],
    published: set[str],
    uids: Mapping[str, str],
) -> set[str]:
    """Write `frame` into `readings`; returns the pod keys the world now publishes.

    `published` are the keys it published before; `uids` each pod's UID (Kepler's `pod_id`).
    """
    now = {pod.key for pod in frame.pods}
    for key in published - now:
        readings.delete(key)
    for pod in frame.pods:
        namespace, _, name = pod.key.partition("/")
        service = services[pod.service]
        readings.upsert(
            {
                "namespace": namespace,
                "name": name,
                "node": pod.node,
                "uid": uids.get(pod.key, pod.key),
                "gpus": pod.gpus,
                "gpu_watts": pod.gpu_watts,
                "cpu_watts": pod.cpu_watts,
                "tokens_per_s": pod.tokens_per_s,
                "running_requests": pod.running_requests,
                "waiting_requests": pod.waiting_requests,
                "tokens_per_request": float(service.output_tokens),
                "prompt_tokens_per_output_token": service.prompt_tokens / service.output_tokens,
                "model_name": pod.model_name or service.model,
                **({"sm_clock_mhz": pod.sm_clock_mhz} if pod.sm_clock_mhz is not None else {}),
            }
        )
    for node in frame.nodes:
        readings.set_node(node.name, {"idle_cpu_watts": node.floor_w, "inlet_c": node.inlet_c})
    return now
