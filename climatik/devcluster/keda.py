"""How the KEDA add-on of the dev cluster runs: the operator's and metrics adapter's flags,
environment and the objects they need in the cluster (`climatik dev-cluster up --with keda`).

Both run as plain processes on 127.0.0.1 as KEDA's own ServiceAccount (see `generate_addon_pki`),
with KEDA's own RBAC. The adapter reaches the API server's aggregation layer through an
APIService whose Service is an ExternalName for `localhost` on the adapter's port: the
aggregator dials `<externalName>:<APIService port>` and checks the serving certificate against
the APIService's CA bundle under the Service's DNS name, which the adapter's certificate carries.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

NAMESPACE = "keda"
SERVICE_ACCOUNT = "keda-operator"
OPERATOR_SERVICE = "keda-operator"
ADAPTER_SERVICE = "keda-metrics-apiserver"
EXTERNAL_METRICS_GROUP = "external.metrics.k8s.io"
EXTERNAL_METRICS_VERSION = "v1beta1"
APISERVICE_NAME = f"{EXTERNAL_METRICS_VERSION}.{EXTERNAL_METRICS_GROUP}"
# Ports `up` picks for the add-on, by the name they are recorded under in cluster.json.
PORT_NAMES = (
    "keda-operator-metrics",
    "keda-operator-health",
    "keda-operator-grpc",
    "keda-adapter",
    "keda-adapter-metrics",
)


def process_env(kubeconfig: Path, service_proxy_port: int) -> dict[str, str]:
    """What a KEDA pod gets from its Deployment and the kubelet, for a process outside one.

    Without KEDA_CLUSTER_OBJECT_NAMESPACE the operator reads the namespace from a mounted
    ServiceAccount token file, which a process outside a pod does not have. Its scalers'
    HTTP clients honour `HTTP_PROXY` (KEDA's `pkg/util/http.go`): through the dev cluster's
    service proxy a trigger's `http://NAME.NS.svc:PORT` reaches what that Service points at,
    as cluster DNS would resolve it (Go never proxies loopback addresses, so the API server
    and the operator's own gRPC stay direct; `NO_PROXY` says so for any other client).
    """
    proxy = f"http://127.0.0.1:{service_proxy_port}"
    return {
        "WATCH_NAMESPACE": "",
        "POD_NAMESPACE": NAMESPACE,
        "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE,
        "KUBECONFIG": str(kubeconfig),
        "HTTP_PROXY": proxy,
        "NO_PROXY": "127.0.0.1,localhost",
    }


def operator_args(kubeconfig: Path, cert_dir: Path, ports: dict[str, int]) -> list[str]:
    """The operator without leader election (one instance) and without certificate rotation
    (`up` issues the certificates)."""
    return [
        f"--kubeconfig={kubeconfig}",
        f"--metrics-bind-address=127.0.0.1:{ports['keda-operator-metrics']}",
        f"--health-probe-bind-address=127.0.0.1:{ports['keda-operator-health']}",
        f"--metrics-service-bind-address=127.0.0.1:{ports['keda-operator-grpc']}",
        f"--cert-dir={cert_dir}",
        "--leader-elect=false",
        "--enable-cert-rotation=false",
        "--zap-log-level=info",
        "--zap-encoder=console",
    ]


def adapter_args(kubeconfig: Path, cert_dir: Path, ports: dict[str, int]) -> list[str]:
    """The metrics adapter: an aggregated API server serving `external.metrics.k8s.io`, asking
    the operator for each value over gRPC."""
    return [
        f"--kubeconfig={kubeconfig}",
        f"--lister-kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports['keda-adapter']}",
        f"--cert-dir={cert_dir}",
        f"--tls-cert-file={cert_dir / 'tls.crt'}",
        f"--tls-private-key-file={cert_dir / 'tls.key'}",
        f"--client-ca-file={cert_dir / 'ca.crt'}",
        f"--port={ports['keda-adapter-metrics']}",
        f"--metrics-service-address=127.0.0.1:{ports['keda-operator-grpc']}",
        "--zap-log-level=info",
    ]


def cluster_objects(ca_cert: Path, adapter_port: int) -> list[dict[str, Any]]:
    """KEDA's namespace, the adapter's Service and its APIService (RBAC comes from KEDA)."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": ADAPTER_SERVICE, "namespace": NAMESPACE},
            "spec": {
                "type": "ExternalName",
                "externalName": "localhost",
                "ports": [{"name": "https", "port": adapter_port, "targetPort": adapter_port}],
            },
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": APISERVICE_NAME},
            "spec": {
                "service": {"name": ADAPTER_SERVICE, "namespace": NAMESPACE, "port": adapter_port},
                "group": EXTERNAL_METRICS_GROUP,
                "version": EXTERNAL_METRICS_VERSION,
                "caBundle": base64.b64encode(ca_cert.read_bytes()).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]


def apiservice_available(apiservice: dict[str, Any]) -> bool:
    """Whether the aggregation layer reached the adapter (its Available condition)."""
    status = apiservice.get("status")
    if not isinstance(status, dict):  # absent, or a Status string of an error response
        return False
    conditions = status.get("conditions") or []
    return any(c.get("type") == "Available" and c.get("status") == "True" for c in conditions)
