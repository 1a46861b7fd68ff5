"""The demo's objects, from a scenario: per service a Deployment of kwok pods and a KEDA
ScaledObject on the world's vLLM series, and one PowerCappingConfig over all of them.

Pure: objects as dicts, applied by the stack. Each replica holds a whole node's GPUs, as the
twin's replicas hold a whole server.
"""

from __future__ import annotations

from typing import Final

from climatik.kube.json import JsonDict
from climatik.sim.scenario import Scenario, Service

MANAGED_LABEL: Final = "climatik-project.ai/managed"
POLLING_INTERVAL_S: Final = 5
"""KEDA's polling interval: a sixth of its default, as the scenario runs faster than life."""
CONFIG_NAME: Final = "demo-power-cap"


def replicas_query(namespace: str, service: str) -> str:
    """What KEDA scales on: the requests a service's pods run and queue."""
    selector = f'namespace="{namespace}",pod=~"{service}-.*"'
    return (
        f"sum(vllm:num_requests_running{{{selector}}})"
        f" + sum(vllm:num_requests_waiting{{{selector}}})"
    )


def requests_per_replica(service: Service) -> int:
    """KEDA's target per replica: the model's batch at the autoscaler's target utilisation."""
    return max(1, round(service.model_class.max_batch * service.autoscaler.target_utilisation))


def deployment(service: Service, gpus: int) -> JsonDict:
    labels: JsonDict = {"app": service.name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": service.name, "labels": dict(labels)},
        "spec": {
            "replicas": service.min_replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": {**labels, MANAGED_LABEL: "true"}},
                "spec": {
                    "containers": [
                        {
                            "name": "vllm",
                            "image": "vllm/vllm-openai:v0.11.0",
                            "args": ["--model", service.model],
                            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                        }
                    ],
                    "nodeSelector": {"type": "kwok"},
                },
            },
        },
    }


def scaled_object(service: Service, namespace: str, prometheus_url: str) -> JsonDict:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": service.name},
        "spec": {
            "scaleTargetRef": {"name": service.name},
            "minReplicaCount": service.min_replicas,
            "maxReplicaCount": service.max_replicas,
            "pollingInterval": POLLING_INTERVAL_S,
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": prometheus_url,
                        "query": replicas_query(namespace, service.name),
                        "threshold": str(requests_per_replica(service)),
                    },
                }
            ],
        },
    }


def pods_cap_w(scenario: Scenario) -> float:
    """The scenario's site cap less the servers' base power, which no pod series carries:
    the KeplerPod preset measures the pods' GPUs and the server overhead that follows them."""
    racks = scenario.racks
    return scenario.caps.site_cap_w - racks.servers * racks.server_base_w


def power_capping_config(scenario: Scenario, prometheus_url: str) -> JsonDict:
    return {
        "apiVersion": "powercapping.climatik-project.ai/v1",
        "kind": "PowerCappingConfig",
        "metadata": {"name": CONFIG_NAME},
        "spec": {
            "powerCapLimit": round(pods_cap_w(scenario)),
            "scaleObjectRef": [
                {
                    "apiVersion": "keda.sh/v1alpha1",
                    "kind": "ScaledObject",
                    "metadata": {"name": s.name},
                }
                for s in scenario.services
            ],
            "powerMeasurement": {"preset": "KeplerPod", "prometheusAddress": prometheus_url},
            "policy": {"type": "Headroom"},
        },
    }


def demo_objects(scenario: Scenario, namespace: str, prometheus_url: str) -> list[JsonDict]:
    """Everything the demo applies in its namespace, Deployments first."""
    gpus = scenario.racks.gpus_per_server
    return [
        *(deployment(s, gpus) for s in scenario.services),
        *(scaled_object(s, namespace, prometheus_url) for s in scenario.services),
        power_capping_config(scenario, prometheus_url),
    ]
