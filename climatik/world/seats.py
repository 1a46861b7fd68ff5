"""Which pods the world serves and where they sit, read from the API objects the informers cache.

A pod is an inference pod of a service when it carries one of the service label keys (KServe's
`serving.kserve.io/inferenceservice` first, then the app labels a Deployment's template has)
and it is a server, restarted whenever it stops (a Job's pods, which run to completion, are not);
it sits on a node when it is bound to one of the rack-labelled nodes. It takes requests once it
is Ready and its model has had its start-up time (the scenario's, in simulated seconds): kwok
marks pods Ready at once, a real vLLM only after loading its weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from climatik.kube.json import JsonObject, child, items, objects, strings, text
from climatik.world.site import NodeSeat, PodSeat

SERVICE_LABEL_KEYS = (
    "serving.kserve.io/inferenceservice",
    "app.kubernetes.io/name",
    "app",
)
GPU_RESOURCE = "nvidia.com/gpu"


def _quantity_int(value: str | None) -> int | None:
    """A whole-number quantity ("8"); None for anything else (GPUs are never fractional)."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def node_seat(node: JsonObject, rack_label_key: str, default_gpus: int) -> NodeSeat | None:
    """The node's rack and GPUs; None for a node with no rack label."""
    meta = child(node, "metadata")
    name = text(meta, "name")
    rack = strings(meta, "labels").get(rack_label_key)
    if not name or not rack:
        return None
    capacity = child(child(node, "status"), "capacity")
    gpus = _quantity_int(text(capacity, GPU_RESOURCE))
    return NodeSeat(name=name, rack=rack, gpus=gpus if gpus is not None else default_gpus)


def service_of(pod: JsonObject, label_keys: Sequence[str] = SERVICE_LABEL_KEYS) -> str | None:
    """The service an inference pod serves; None for a pod that serves none."""
    if text(child(pod, "spec"), "restartPolicy") not in (None, "Always"):
        return None
    labels = strings(child(pod, "metadata"), "labels")
    for key in label_keys:
        if labels.get(key):
            return labels[key]
    return None


def gpus_of(pod: JsonObject, default_gpus: int) -> int:
    """The GPUs the pod's containers ask for (limits, else requests); the scenario's GPUs per
    replica when it asks for none (the dev cluster's examples often ask for no GPU)."""
    total = 0
    for container in objects(child(pod, "spec"), "containers"):
        resources = child(container, "resources")
        asked = _quantity_int(text(child(resources, "limits"), GPU_RESOURCE))
        if asked is None:
            asked = _quantity_int(text(child(resources, "requests"), GPU_RESOURCE))
        total += asked or 0
    return total or default_gpus


def model_of(pod: JsonObject) -> str | None:
    """The model a vLLM container serves, from its `--model` argument (vLLM's `model_name`
    label, which users' KEDA queries often select on); None when no container names one."""
    for container in objects(child(pod, "spec"), "containers"):
        words = [w for w in items(container, "args") if isinstance(w, str)]
        words += [w for w in items(container, "command") if isinstance(w, str)]
        for i, word in enumerate(words):
            if word.startswith("--model="):
                return word.removeprefix("--model=")
            if word == "--model" and i + 1 < len(words):
                return words[i + 1]
    return None


def is_ready(pod: JsonObject) -> bool:
    """Bound, not being deleted, and its Ready condition true."""
    if text(child(pod, "metadata"), "deletionTimestamp"):
        return False
    for condition in objects(child(pod, "status"), "conditions"):
        if text(condition, "type") == "Ready":
            return text(condition, "status") == "True"
    return False


def pod_key(pod: JsonObject) -> str:
    meta = child(pod, "metadata")
    return f"{text(meta, 'namespace') or ''}/{text(meta, 'name') or ''}"


@dataclass
class StartupClock:
    """When each pod was first seen Ready, in simulated seconds: it serves `startup_s` later.
    A pod that stops being Ready starts over."""

    ready_since_s: dict[str, float] = field(default_factory=dict)

    def serving(self, key: str, ready: bool, now_s: float, startup_s: float) -> bool:
        if not ready:
            self.ready_since_s.pop(key, None)
            return False
        since = self.ready_since_s.setdefault(key, now_s)
        return now_s - since >= startup_s

    def forget_all_but(self, keys: Iterable[str]) -> None:
        keep = set(keys)
        for key in [k for k in self.ready_since_s if k not in keep]:
            del self.ready_since_s[key]


def seat_pods(
    pods: Iterable[JsonObject],
    nodes: Mapping[str, NodeSeat],
    services: Mapping[str, str],
    startup_s: Mapping[str, float],
    *,
    clock: StartupClock,
    now_s: float,
    default_gpus: int,
    label_keys: Sequence[str] = SERVICE_LABEL_KEYS,
) -> list[PodSeat]:
    """The inference pods on rack nodes, each with the scenario service that drives it.

    `services` maps a cluster service name to a scenario service (see `site.assign_services`);
    `startup_s` is each scenario service's model start-up time.
    """
    seats: list[PodSeat] = []
    for pod in pods:
        name = service_of(pod, label_keys)
        node = text(child(pod, "spec"), "nodeName")
        if name is None or name not in services or node is None or node not in nodes:
            continue
        scenario_service = services[name]
        key = pod_key(pod)
        serving = clock.serving(key, is_ready(pod), now_s, startup_s[scenario_service])
        seats.append(
            PodSeat(
                key=key,
                service=scenario_service,
                node=node,
                gpus=gpus_of(pod, default_gpus),
                serving=serving,
                model_name=model_of(pod),
            )
        )
    clock.forget_all_but(s.key for s in seats)
    return sorted(seats, key=lambda s: s.key)
