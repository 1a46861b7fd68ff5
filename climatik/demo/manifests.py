"""The demo's objects, from a scenario: per service a Deployment of kwok pods and a KEDA
ScaledObject on the world's vLLM series, and one PowerCappingConfig over all of them.

Pure: objects as dicts, applied by the stack. Each replica holds a whole node's GPUs, as the
twin's replicas hold a whole server.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from climatik.kube.json import JsonDict
from climatik.policies.ceiling_settings import HeadroomSettings
from climatik.policies.gpu_clock import CLOCK_CHANGE_INTERVAL_S
from climatik.sim.scenario import Scenario, Service

MANAGED_LABEL: Final = "climatik-project.ai/managed"
POLLING_INTERVAL_S: Final = 5
"""KEDA's polling interval: a sixth of its default, as the scenario runs faster than life."""
TWIN_HEADROOM: Final = HeadroomSettings()
"""The headroom policy's tuning the twin runs with."""
CONFIG_NAME: Final = "demo-power-cap"
DEMO_LABEL: Final = "climatik-project.ai/demo"
"""On each InferenceService of the KServe variant: what the config's targetSelector selects."""


IN_CLUSTER_PROMETHEUS = ("monitoring", "prometheus-server", 9090)
"""(namespace, Service, port) of the demo's Prometheus inside the cluster: where the examples,
and the Prometheus community chart's default install, have it."""


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


HPA_SCALE_UP_PERIOD_S: Final = 15.0
"""The HPA's default scale-up policies: double, or 4 more pods, per this period."""


def hpa_behavior(service: Service, speed: float) -> JsonDict:
    """The HPA's behaviour with its windows compressed by the demo's speed, as the twin models
    it: the scenario's scale-down stabilisation and the HPA's default scale-up policies, in
    wall seconds (a 300 s window at 10x would otherwise hold 50 simulated minutes)."""
    period_s = max(1, round(HPA_SCALE_UP_PERIOD_S / speed))
    return {
        "scaleDown": {
            "stabilizationWindowSeconds": round(service.autoscaler.scale_down_window_s / speed)
        },
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": period_s},
                {"type": "Pods", "value": 4, "periodSeconds": period_s},
            ],
        },
    }


def scaled_object(
    service: Service, namespace: str, prometheus_url: str, speed: float = 1.0
) -> JsonDict:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": service.name},
        "spec": {
            "scaleTargetRef": {"name": service.name},
            "minReplicaCount": service.min_replicas,
            "maxReplicaCount": service.max_replicas,
            "pollingInterval": POLLING_INTERVAL_S,
            "advanced": {
                "horizontalPodAutoscalerConfig": {"behavior": hpa_behavior(service, speed)}
            },
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


def inference_service(service: Service, gpus: int, prometheus_url: str, namespace: str) -> JsonDict:
    """The KServe variant: a Standard-mode predictor scaled by KEDA on the same query and
    target, its pods (`<service>-predictor-...`) on the kwok nodes. KServe makes the
    ScaledObject; Climatik lowers the InferenceService's maxReplicas, never that object."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": service.name,
            "labels": {DEMO_LABEL: "true"},
            "annotations": {
                "serving.kserve.io/deploymentMode": "Standard",
                "serving.kserve.io/autoscalerClass": "keda",
            },
        },
        "spec": {
            "predictor": {
                "minReplicas": service.min_replicas,
                "maxReplicas": service.max_replicas,
                "autoScaling": {
                    "metrics": [
                        {
                            "type": "External",
                            "external": {
                                "metric": {
                                    "backend": "prometheus",
                                    "serverAddress": prometheus_url,
                                    "query": replicas_query(namespace, service.name),
                                },
                                "target": {
                                    "type": "Value",
                                    "value": str(requests_per_replica(service)),
                                },
                            },
                        }
                    ]
                },
                "nodeSelector": {"type": "kwok"},
                "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}],
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": "vllm/vllm-openai:v0.11.0",
                        "args": ["--model", service.model],
                        "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                    }
                ],
            }
        },
    }


SITE_POWER_QUERY: Final = 'sum(kepler_node_cpu_watts{zone="package"}) + sum(kepler_node_gpu_watts)'
"""The whole site's IT power from Kepler's node series: every server's floor, idle GPUs and
pods, what the twin caps (its `site_w`)."""


TARGET_POWER_QUERY: Final = (
    '(sum by (node_name) (kepler_node_cpu_watts{zone="package"})'
    " + sum by (node_name) (kepler_node_gpu_watts))"
    ' and on (node_name) kepler_pod_cpu_watts{pod_namespace="$namespace",pod_name=~"$pods",'
    'zone="package"}'
)
"""A service's power as the twin measures it: the whole servers its pods run on (floor and
idle GPUs included), not the pods' own share. The controller's idle credit (a new replica on
an idle node displaces that node's draw, already in the site's power) and its power model
(idle draw plus dynamic power per replica) assume per-target watts that include the node's
idle draw; pod-level series leave the floor out, so with them the model predicts idle + pod
watts per replica and the controller caps a replica's worth too low."""


def site_cap_w(scenario: Scenario) -> float:
    return scenario.caps.site_cap_w


def rack_constraints(scenario: Scenario, racks: Sequence[str]) -> list[JsonDict]:
    """One constraint per cluster rack, at the scenario's rack limit or, with none, the site
    cap (never binding alone). They make the controller read every rack and its idle nodes, so
    it learns the idle draw a new replica displaces, as the twin learns it from the servers
    that host no replica: without it every new replica is priced its whole measured watts on
    top of an idle node already counted in the site's power."""
    limit = scenario.caps.rack_max_w or scenario.caps.site_cap_w
    return [{"rackId": rack, "maxPower": round(limit)} for rack in racks]


GPU_TUNING_INTERVAL_S: Final = 3600.0
"""How often a node may be tuned, in simulated seconds (the CRD's default, an hour)."""
MIN_GPU_TUNING_INTERVAL_S: Final = 60
"""The CRD's floor for `minIntervalSeconds`."""
MIN_CLOCK_CHANGE_INTERVAL_S: Final = 30
"""The CRD's floor for `clockChangeIntervalSeconds`."""


def gpu_tuning_spec(
    scenario: Scenario, mode: str, speed: float, *, clocks_under_cap: bool = False
) -> JsonDict:
    """`spec.gpuTuning` asking for `mode` (Recommend or Apply) as the twin tunes: a clock may
    cost at most the default throughput loss and must keep every service's time between tokens
    within 0.8 x its objective (`sim.clocks.clock_bounds`); a node at most once an hour of
    simulated time; with `clocks_under_cap`, clocks moved with the replicas at most every
    `CLOCK_CHANGE_INTERVAL_S` of simulated time."""
    tbt_ms = min(0.8 * s.slo.tbt_s for s in scenario.services) * 1000.0
    spec: JsonDict = {
        "mode": mode,
        "minIntervalSeconds": max(MIN_GPU_TUNING_INTERVAL_S, round(GPU_TUNING_INTERVAL_S / speed)),
        "sloBounds": {"maxInterTokenLatencyMilliseconds": max(1, int(tbt_ms))},
    }
    if clocks_under_cap:
        spec["clocksUnderCap"] = True
        spec["clockChangeIntervalSeconds"] = max(
            MIN_CLOCK_CHANGE_INTERVAL_S, round(CLOCK_CHANGE_INTERVAL_S / speed)
        )
    return spec


def power_capping_config(
    scenario: Scenario,
    prometheus_url: str,
    racks: Sequence[str] = (),
    *,
    kserve: bool = False,
    gpu_tuning: JsonDict | None = None,
) -> JsonDict:
    targets: JsonDict = (
        {"targetSelector": {"matchLabels": {DEMO_LABEL: "true"}}}
        if kserve
        else {
            "scaleObjectRef": [
                {
                    "apiVersion": "keda.sh/v1alpha1",
                    "kind": "ScaledObject",
                    "metadata": {"name": s.name},
                }
                for s in scenario.services
            ]
        }
    )
    return {
        "apiVersion": "powercapping.climatik-project.ai/v1",
        "kind": "PowerCappingConfig",
        "metadata": {"name": CONFIG_NAME},
        "spec": {
            "powerCapLimit": round(site_cap_w(scenario)),
            **targets,
            # The scope's own query: the site as the twin caps it, floors included; each
            # service's power is the whole servers its pods run on, as the twin prices it.
            "metrics": [
                {
                    "type": "Prometheus",
                    "prometheusAddress": prometheus_url,
                    "query": SITE_POWER_QUERY,
                }
            ],
            "powerMeasurement": {
                "preset": "Custom",
                "powerQuery": f"sum({TARGET_POWER_QUERY})",
                "prometheusAddress": prometheus_url,
            },
            # The twin's tuning, so live and twin run the same policy (the CRD's defaults,
            # 5 % and 5 %, are more cautious than the twin's).
            "policy": {
                "type": "Headroom",
                "safetyMarginPercent": round(100 * TWIN_HEADROOM.safety_margin_fraction),
                "hysteresisPercent": round(100 * TWIN_HEADROOM.hysteresis_fraction),
            },
            **({"rackConstraints": rack_constraints(scenario, racks)} if racks else {}),
            **({"gpuTuning": gpu_tuning} if gpu_tuning else {}),
        },
    }


def demo_objects(
    scenario: Scenario,
    namespace: str,
    prometheus_url: str,
    racks: Sequence[str] = (),
    *,
    kserve: bool = False,
    speed: float = 1.0,
    gpu_tuning: str = "Disabled",
    clocks_under_cap: bool = False,
) -> list[JsonDict]:
    """Everything the demo applies in its namespace, Deployments first; `racks` are the
    cluster's rack label values; the autoscalers' windows compressed by `speed`; `gpu_tuning`
    the config's `spec.gpuTuning.mode` (and `clocks_under_cap` its `clocksUnderCap`)."""
    gpus = scenario.racks.gpus_per_server
    tuning = (
        gpu_tuning_spec(scenario, gpu_tuning, speed, clocks_under_cap=clocks_under_cap)
        if gpu_tuning != "Disabled"
        else None
    )
    config = power_capping_config(scenario, prometheus_url, racks, kserve=kserve, gpu_tuning=tuning)
    if kserve:
        isvcs = (inference_service(s, gpus, prometheus_url, namespace) for s in scenario.services)
        return [*isvcs, config]
    return [
        *(deployment(s, gpus) for s in scenario.services),
        *(scaled_object(s, namespace, prometheus_url, speed) for s in scenario.services),
        config,
    ]
