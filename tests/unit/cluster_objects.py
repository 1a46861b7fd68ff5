"""Workload objects as the API server returns them: managedFields, defaults, status and all.

Shaped like `benchmarks/bench_scale.py`'s objects after the controller-manager, the scheduler,
kwok and KEDA have had their say; used to check what the informers keep
(`test_cached_fields.py`) and to measure it (`benchmarks/bench_cache_memory.py`).
"""

from __future__ import annotations

from typing import Any

CREATED = "2025-03-01T10:00:00Z"


def _managed(manager: str, operation: str, fields: dict[str, Any], sub: str = "") -> dict[str, Any]:
    entry = {
        "manager": manager,
        "operation": operation,
        "apiVersion": "v1",
        "time": CREATED,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }
    if sub:
        entry["subresource"] = sub
    return entry


def _meta(name: str, namespace: str, index: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "uid": f"{index:08x}-1b2c-4d5e-8f90-{index:012x}",
        "resourceVersion": str(100_000 + index),
        "creationTimestamp": CREATED,
        **extra,
    }


def pod(namespace: str, index: int, *, node: str = "kwok-node-0", gpus: int = 0) -> dict[str, Any]:
    name = f"svc-{index:05d}"
    pod_name = f"{name}-7d9f8c6b5-{index % 100_000:05x}"
    labels = {"app": name, "pod-template-hash": "7d9f8c6b5"}
    conditions = [
        {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": CREATED}
        for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _meta(
            pod_name,
            namespace,
            index,
            generateName=f"{name}-7d9f8c6b5-",
            labels=labels,
            ownerReferences=[
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": f"{name}-7d9f8c6b5",
                    "uid": f"rs-{index:08x}-4d5e-8f90",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            managedFields=[
                _managed(
                    "kube-controller-manager",
                    "Update",
                    {"f:metadata": {"f:generateName": {}, "f:labels": {"f:app": {}}}},
                ),
                _managed("kwok", "Update", {"f:status": {"f:conditions": {}}}, "status"),
            ],
        ),
        "spec": {
            "volumes": [
                {
                    "name": f"kube-api-access-{index % 100_000:05x}",
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                            {
                                "configMap": {
                                    "name": "kube-root-ca.crt",
                                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                                }
                            },
                        ],
                        "defaultMode": 420,
                    },
                }
            ],
            "containers": [
                {
                    "name": "vllm",
                    "image": "vllm/vllm-openai:latest",
                    "resources": (
                        {
                            "requests": {"cpu": "4", "nvidia.com/gpu": str(gpus)},
                            "limits": {"memory": "32Gi", "nvidia.com/gpu": str(gpus)},
                        }
                        if gpus
                        else {}
                    ),
                    "volumeMounts": [
                        {
                            "name": "kube-api-access",
                            "readOnly": True,
                            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                        }
                    ],
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "imagePullPolicy": "Always",
                }
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "nodeSelector": {"type": "kwok"},
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "nodeName": node,
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "kwok.x-k8s.io/node", "operator": "Exists"},
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists"},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists"},
            ],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {
            "phase": "Running",
            "conditions": conditions,
            "hostIP": "10.0.0.1",
            "hostIPs": [{"ip": "10.0.0.1"}],
            "podIP": f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}",
            "podIPs": [{"ip": f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}"}],
            "startTime": CREATED,
            "containerStatuses": [
                {
                    "name": "vllm",
                    "state": {"running": {"startedAt": CREATED}},
                    "lastState": {},
                    "ready": True,
                    "restartCount": 0,
                    "image": "vllm/vllm-openai:latest",
                    "imageID": "",
                    "started": True,
                }
            ],
            "qosClass": "BestEffort",
        },
    }


def deployment(namespace: str, index: int) -> dict[str, Any]:
    name = f"svc-{index:05d}"
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(
            name,
            namespace,
            index,
            generation=1,
            labels=labels,
            annotations={"deployment.kubernetes.io/revision": "1"},
            managedFields=[
                _managed("kubectl", "Apply", {"f:spec": {"f:replicas": {}, "f:template": {}}}),
                _managed("kube-controller-manager", "Update", {"f:status": {}}, "status"),
            ],
        ),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"creationTimestamp": None, "labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "vllm",
                            "image": "vllm/vllm-openai:latest",
                            "resources": {},
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "File",
                            "imagePullPolicy": "Always",
                        }
                    ],
                    "restartPolicy": "Always",
                    "terminationGracePeriodSeconds": 30,
                    "dnsPolicy": "ClusterFirst",
                    "nodeSelector": {"type": "kwok"},
                    "securityContext": {},
                    "schedulerName": "default-scheduler",
                    "affinity": {
                        "nodeAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 1,
                                    "preference": {
                                        "matchExpressions": [
                                            {"key": "gpu", "operator": "Exists"},
                                        ]
                                    },
                                }
                            ]
                        }
                    },
                    "tolerations": [
                        {"key": "kwok.x-k8s.io/node", "operator": "Exists"},
                        {"key": "node.kubernetes.io/not-ready", "operator": "Exists"},
                        {"key": "node.kubernetes.io/unreachable", "operator": "Exists"},
                    ],
                },
            },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
            },
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
        "status": {
            "observedGeneration": 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "readyReplicas": 1,
            "availableReplicas": 1,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True",
                    "lastUpdateTime": CREATED,
                    "lastTransitionTime": CREATED,
                    "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability.",
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "lastUpdateTime": CREATED,
                    "lastTransitionTime": CREATED,
                    "reason": "NewReplicaSetAvailable",
                    "message": f'ReplicaSet "{name}-7d9f8c6b5" has successfully progressed.',
                },
            ],
        },
    }


def scaled_object(namespace: str, index: int, *, capped_by: str | None = None) -> dict[str, Any]:
    name = f"svc-{index:05d}"
    annotations = {"climatik-project.ai/priority": "1"}
    if capped_by is not None:
        annotations |= {
            "climatik-project.ai/user-max-replicas": "4",
            "climatik-project.ai/applied-max-replicas": "1",
            "climatik-project.ai/capped-by": capped_by,
        }
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _meta(
            name,
            namespace,
            index,
            generation=2,
            labels={"scaledobject.keda.sh/name": name, "tier": "serving"},
            annotations=annotations,
            finalizers=["finalizer.keda.sh"],
            managedFields=[
                _managed("kubectl", "Apply", {"f:spec": {"f:maxReplicaCount": {}}}),
                _managed("keda", "Update", {"f:status": {}}, "status"),
            ],
        ),
        "spec": {
            "scaleTargetRef": {"name": name},
            "minReplicaCount": 1,
            "maxReplicaCount": 1 if capped_by else 4,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}
                }
            },
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": "http://prometheus.monitoring:9090",
                        "query": f'sum(vllm:num_requests_waiting{{pod=~"{name}.*"}})',
                        "threshold": "5",
                    },
                }
            ],
        },
        "status": {
            "scaleTargetKind": "apps/v1.Deployment",
            "scaleTargetGVKR": {
                "group": "apps",
                "version": "v1",
                "kind": "Deployment",
                "resource": "deployments",
            },
            "originalReplicaCount": 1,
            "externalMetricNames": ["s0-prometheus"],
            "hpaName": f"keda-hpa-{name}",
            "health": {"s0-prometheus": {"numberOfFailures": 0, "status": "Happy"}},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "ScaledObjectReady",
                    "message": "ScaledObject is defined correctly and is ready for scaling",
                },
                {
                    "type": "Active",
                    "status": "True",
                    "reason": "ScalerActive",
                    "message": "Scaling is performed because triggers are active",
                },
                {"type": "Fallback", "status": "False", "reason": "NoFallbackFound"},
                {"type": "Paused", "status": "Unknown"},
            ],
        },
    }


def hpa(namespace: str, index: int, *, limited: bool = True) -> dict[str, Any]:
    name = f"svc-{index:05d}"
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(
            f"keda-hpa-{name}",
            namespace,
            index,
            labels={
                "app.kubernetes.io/managed-by": "keda-operator",
                "scaledobject.keda.sh/name": name,
            },
            ownerReferences=[
                {
                    "apiVersion": "keda.sh/v1alpha1",
                    "kind": "ScaledObject",
                    "name": name,
                    "uid": f"so-{index:08x}",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            managedFields=[_managed("keda", "Update", {"f:spec": {}})],
        ),
        "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": name, "apiVersion": "apps/v1"},
            "minReplicas": 1,
            "maxReplicas": 1,
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {
                            "name": "s0-prometheus",
                            "selector": {"matchLabels": {"scaledobject.keda.sh/name": name}},
                        },
                        "target": {"type": "AverageValue", "averageValue": "5"},
                    },
                }
            ],
        },
        "status": {
            "currentReplicas": 1,
            "desiredReplicas": 1,
            "currentMetrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {"name": "s0-prometheus", "selector": {"matchLabels": {}}},
                        "current": {"averageValue": "12"},
                    },
                }
            ],
            "conditions": [
                {
                    "type": "AbleToScale",
                    "status": "True",
                    "lastTransitionTime": CREATED,
                    "reason": "ReadyForNewScale",
                    "message": "recommended size matches current size",
                },
                {
                    "type": "ScalingActive",
                    "status": "True",
                    "lastTransitionTime": CREATED,
                    "reason": "ValidMetricFound",
                    "message": "the HPA was able to compute the replica count",
                },
                {
                    "type": "ScalingLimited",
                    "status": "True" if limited else "False",
                    "lastTransitionTime": CREATED,
                    "reason": "TooManyReplicas" if limited else "DesiredWithinRange",
                    "message": "the desired replica count is more than the maximum replica count",
                },
            ],
        },
    }


def inference_service(namespace: str, index: int) -> dict[str, Any]:
    name = f"isvc-{index:05d}"
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": _meta(
            name,
            namespace,
            index,
            generation=1,
            labels={"tier": "serving"},
            annotations={"serving.kserve.io/deploymentMode": "RawDeployment"},
            finalizers=["inferenceservice.finalizers"],
        ),
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "maxReplicas": 6,
                "model": {
                    "modelFormat": {"name": "huggingface"},
                    "args": ["--model_name=llm", "--model_id=meta-llama/Llama-3.1-8B"],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                },
            }
        },
        "status": {
            "url": f"http://{name}.{namespace}.example.com",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": CREATED}],
        },
    }


def predictor_scaled_object(namespace: str, index: int) -> dict[str, Any]:
    """The ScaledObject KServe keeps for an InferenceService (it owns it)."""
    so = scaled_object(namespace, index)
    name = f"isvc-{index:05d}"
    so["metadata"]["name"] = f"{name}-predictor"
    so["metadata"]["ownerReferences"] = [
        {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "name": name}
    ]
    so["spec"]["scaleTargetRef"] = {"name": f"{name}-predictor"}
    return so


def node(index: int, *, rack: str) -> dict[str, Any]:
    metadata = _meta(
        f"kwok-node-{index}",
        "",
        index,
        labels={
            "type": "kwok",
            "kubernetes.io/hostname": f"kwok-node-{index}",
            "climatik-project.ai/rack": rack,
            "topology.kubernetes.io/zone": "zone-a",
        },
        annotations={"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
    )
    del metadata["namespace"]  # cluster-scoped
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": metadata,
        "spec": {
            "taints": [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]
        },
        "status": {
            "capacity": {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "8", "pods": "110"},
            "allocatable": {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "8", "pods": "110"},
            "conditions": [
                {"type": "Ready", "status": "True", "lastHeartbeatTime": CREATED, "reason": "r"}
            ],
            "addresses": [{"type": "InternalIP", "address": f"10.1.0.{index % 256}"}],
            "nodeInfo": {"kubeletVersion": "fake", "architecture": "amd64"},
        },
    }


def power_capping_config(namespace: str, index: int, *, tight: bool = False) -> dict[str, Any]:
    """A config as the power-cap, carbon and placement reconcilers leave its status."""
    name = f"svc-{index:05d}"
    watts = 300.0 + index % 7

    def condition(type_: str, reason: str, message: str) -> dict[str, Any]:
        return {
            "type": type_,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastTransitionTime": CREATED,
            "observedGeneration": 1,
        }

    return {
        "apiVersion": "powercapping.climatik-project.ai/v1",
        "kind": "PowerCappingConfig",
        "metadata": _meta(
            name,
            namespace,
            index,
            generation=1,
            finalizers=["powercapping.climatik-project.ai/give-back"] if tight else [],
            managedFields=[_managed("climatik", "Update", {"f:status": {}}, "status")],
        ),
        "spec": {
            "powerCapLimit": 250 if tight else 2000,
            "scaleObjectRef": [
                {
                    "apiVersion": "keda.sh/v1alpha1",
                    "kind": "ScaledObject",
                    "metadata": {"name": name},
                }
            ],
            "powerMeasurement": {"preset": "KeplerPod"},
        },
        "status": {
            "observedGeneration": 1,
            "conditions": [
                condition("Ready", "Reconciled", "targets resolved and measured"),
                condition("MetricsAvailable", "Measured", f"{watts:.0f} W from 1 pod"),
                condition("Capped", "OverCap" if tight else "WithinCap", f"{watts:.0f} W"),
            ],
            "measuredPowerWatts": watts,
            "effectiveCapWatts": 250.0 if tight else 2000.0,
            "effectiveCapSource": "Static",
            "targets": [
                {
                    "name": name,
                    "kind": "ScaledObject",
                    "currentReplicas": 1,
                    "userMaxReplicas": 4,
                    "appliedMaxReplicas": 1 if tight else 4,
                    "wattsPerReplica": watts,
                }
            ],
            "lastDecision": {
                "time": CREATED,
                "action": "Hold" if tight else "Release",
                "reason": f"{watts:.0f} W of {250 if tight else 2000} W",
            },
            **({"heldTargets": [{"kind": "ScaledObject", "name": name}]} if tight else {}),
        },
    }
