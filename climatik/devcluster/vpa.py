"""How the VPA add-on of the dev cluster runs (`climatik dev-cluster up --with vpa`): the flags
of metrics-server and of VPA's recommender, updater and admission controller, kwok's resource
metrics, and the objects they need in the cluster.

The recommender reads container usage from the resource metrics API, which metrics-server serves
from each node's kubelet `/metrics/resource`. kwok plays the kubelets: given the `Metric` and
`ClusterResourceUsage` of its `kustomize/metrics/usage`, it serves that endpoint at
`/metrics/nodes/{node}/metrics/resource` on its own server, with per-pod usage taken from the
pod annotations below. metrics-server finds it through each node's InternalIP (kwok's
`--node-ip`), its kubelet port (kwok's `--node-port`, written into the node status) and the node
annotation `metrics.k8s.io/resource-metrics-path`.

All four run as plain processes on 127.0.0.1, each as its own ServiceAccount with the RBAC
their projects ship. metrics-server reaches the aggregation layer like KEDA's adapter (an
APIService whose Service is an ExternalName for `localhost`); the admission controller
registers its webhook by URL (`--register-by-url`) at https://127.0.0.1.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

NAMESPACE = "kube-system"
METRICS_SERVER_ACCOUNT = "metrics-server"
METRICS_SERVER_SERVICE = "metrics-server"
RECOMMENDER_ACCOUNT = "vpa-recommender"
UPDATER_ACCOUNT = "vpa-updater"
ADMISSION_ACCOUNT = "vpa-admission-controller"
RESOURCE_METRICS_GROUP = "metrics.k8s.io"
RESOURCE_METRICS_VERSION = "v1beta1"
APISERVICE_NAME = f"{RESOURCE_METRICS_VERSION}.{RESOURCE_METRICS_GROUP}"
WEBHOOK_CONFIGURATION = "vpa-webhook-config"
"""The MutatingWebhookConfiguration the admission controller creates 10 s after it starts."""
ADMISSION_STATUS_LEASE = "vpa-admission-controller"
"""The Lease the admission controller renews; the updater evicts nothing while it is stale."""
USAGE_CPU_ANNOTATION = "kwok.x-k8s.io/usage-cpu"
USAGE_MEMORY_ANNOTATION = "kwok.x-k8s.io/usage-memory"
RESOURCE_METRICS_PATH_ANNOTATION = "metrics.k8s.io/resource-metrics-path"
RESOURCE_METRICS_PATH = "/metrics/nodes/{node}/metrics/resource"
NODE_IP = "127.0.0.1"
# How often metrics-server scrapes, and the recommender and updater run: short, so a test sees a
# recommendation and an eviction within a minute (VPA's defaults are 1 min each).
METRIC_RESOLUTION = "15s"
RECOMMENDER_INTERVAL = "15s"
UPDATER_INTERVAL = "10s"
# Ports `up` picks for the add-on, by the name they are recorded under in cluster.json.
PORT_NAMES = (
    "kwok-server",
    "metrics-server",
    "vpa-recommender-metrics",
    "vpa-updater-metrics",
    "vpa-admission-controller",
    "vpa-admission-controller-metrics",
)


def node_annotations(node: str) -> dict[str, str]:
    """What tells metrics-server to scrape kwok's path for the node instead of the kubelet's."""
    return {RESOURCE_METRICS_PATH_ANNOTATION: RESOURCE_METRICS_PATH.format(node=node)}


def kwok_args(metrics_config: Path, server_port: int) -> list[str]:
    """kwok's extra flags: its server (which serves the resource metrics) on the port every node
    reports as its kubelet's, at the address every node reports as its own."""
    return [
        f"--config={metrics_config}",
        f"--server-address={NODE_IP}:{server_port}",
        f"--node-ip={NODE_IP}",
        f"--node-port={server_port}",
    ]


def metrics_server_args(kubeconfig: Path, cert_dir: Path, port: int) -> list[str]:
    """metrics-server as an aggregated API server, scraping kwok's self-signed endpoint."""
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={cert_dir}",
        f"--tls-cert-file={cert_dir / 'tls.crt'}",
        f"--tls-private-key-file={cert_dir / 'tls.key'}",
        "--kubelet-insecure-tls",
        "--kubelet-use-node-status-port",
        "--kubelet-preferred-address-types=InternalIP",
        f"--metric-resolution={METRIC_RESOLUTION}",
    ]


def recommender_args(kubeconfig: Path, metrics_port: int) -> list[str]:
    """The recommender with checkpoints in the cluster (its default storage)."""
    return [
        f"--kubeconfig={kubeconfig}",
        f"--address=127.0.0.1:{metrics_port}",
        f"--recommender-interval={RECOMMENDER_INTERVAL}",
        "--v=2",
    ]


def updater_args(kubeconfig: Path, metrics_port: int) -> list[str]:
    """The updater, evicting at most what VPA's defaults allow (two live replicas at least)."""
    return [
        f"--kubeconfig={kubeconfig}",
        f"--address=127.0.0.1:{metrics_port}",
        f"--updater-interval={UPDATER_INTERVAL}",
        "--v=2",
    ]


def admission_controller_args(
    kubeconfig: Path, cert_dir: Path, port: int, metrics_port: int
) -> list[str]:
    """The admission controller outside the cluster: its webhook registered by URL, served with
    a certificate from the cluster's CA (the CA goes into the webhook's caBundle)."""
    return [
        f"--kubeconfig={kubeconfig}",
        f"--client-ca-file={cert_dir / 'ca.crt'}",
        f"--tls-cert-file={cert_dir / 'tls.crt'}",
        f"--tls-private-key={cert_dir / 'tls.key'}",
        f"--port={port}",
        f"--address=127.0.0.1:{metrics_port}",
        "--register-by-url",
        f"--webhook-address=https://{NODE_IP}",
        f"--webhook-port={port}",
        "--webhook-timeout-seconds=10",
        "--v=2",
    ]


def process_env(kubeconfig: Path) -> dict[str, str]:
    """What a VPA pod gets from its Deployment: the namespace of its status Lease."""
    return {"NAMESPACE": NAMESPACE, "KUBECONFIG": str(kubeconfig)}


def cluster_objects(ca_cert: Path, metrics_server_port: int) -> list[dict[str, Any]]:
    """metrics-server's Service and APIService (RBAC and ServiceAccounts come from the projects)."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": METRICS_SERVER_SERVICE, "namespace": NAMESPACE},
            "spec": {
                "type": "ExternalName",
                "externalName": "localhost",
                "ports": [
                    {
                        "name": "https",
                        "port": metrics_server_port,
                        "targetPort": metrics_server_port,
                    }
                ],
            },
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": APISERVICE_NAME},
            "spec": {
                "service": {
                    "name": METRICS_SERVER_SERVICE,
                    "namespace": NAMESPACE,
                    "port": metrics_server_port,
                },
                "group": RESOURCE_METRICS_GROUP,
                "version": RESOURCE_METRICS_VERSION,
                "caBundle": base64.b64encode(ca_cert.read_bytes()).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]


def webhook_registered(configuration: dict[str, Any], port: int) -> bool:
    """Whether the admission controller's webhook configuration points at its URL."""
    webhooks = configuration.get("webhooks")
    if not isinstance(webhooks, list):  # absent, or the Status of an error response
        return False
    url = f"https://{NODE_IP}:{port}"
    return any(w.get("clientConfig", {}).get("url", "").startswith(url) for w in webhooks)
