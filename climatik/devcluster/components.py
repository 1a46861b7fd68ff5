"""How each control-plane component of the dev cluster is started: its flags and kubeconfig.

Built from the ports, paths and certificates `climatik.devcluster.cluster` chose: etcd on
loopback without fsync (a disposable cluster), kube-apiserver with RBAC and the front proxy,
controller-manager and scheduler without leader election (one instance each), kwok managing
only the nodes labelled for it.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from climatik.devcluster.pki import CertPair, ClusterPKI
from climatik.devcluster.topology import KWOK_NODE_LABELS

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.244.0.0/16"


def kubeconfig_for(server: str, ca: Path, client: CertPair, user: str) -> dict[str, Any]:
    """A kubeconfig with the certificates inline, so it stays valid wherever it is copied."""

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "climatik-dev",
                "cluster": {"server": server, "certificate-authority-data": b64(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(client.cert),
                    "client-key-data": b64(client.key),
                },
            }
        ],
        "contexts": [
            {"name": "climatik-dev", "context": {"cluster": "climatik-dev", "user": user}}
        ],
        "current-context": "climatik-dev",
    }


def etcd_args(directory: Path, port: int, peer_port: int) -> list[str]:
    client = f"http://127.0.0.1:{port}"
    peer = f"http://127.0.0.1:{peer_port}"
    return [
        "--name=dev",
        f"--data-dir={directory / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=dev={peer}",
        "--initial-cluster-state=new",
        # KServe's full InferenceService CRD is about 2 MB, above etcd's 1.5 MiB default.
        "--max-request-bytes=10485760",
        # A disposable cluster on a shared disk: durability is not worth the fsync latency.
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def apiserver_args(pki: ClusterPKI, port: int, etcd_port: int) -> list[str]:
    return [
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--tls-cert-file={pki.apiserver.cert}",
        f"--tls-private-key-file={pki.apiserver.key}",
        f"--client-ca-file={pki.ca.cert}",
        # The aggregation layer's front proxy; without it every component logs a missing
        # requestheader CA bundle, and aggregated APIs could not be tried on the dev cluster.
        f"--requestheader-client-ca-file={pki.ca.cert}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.front_proxy.cert}",
        f"--proxy-client-key-file={pki.front_proxy.key}",
        f"--service-account-key-file={pki.service_account_pub}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,"
        "DefaultTolerationSeconds,NodeRestriction,MutatingAdmissionWebhook,"
        "ValidatingAdmissionWebhook,ResourceQuota",
        "--allow-privileged=true",
        # The "kubernetes" Service would point at 127.0.0.1, which Endpoints refuse; nothing in
        # a kwok cluster dials it, so do not reconcile it.
        "--endpoint-reconciler-type=none",
        "--profiling=false",
        "--v=1",
    ]


HPA_SYNC_PERIOD_S = 15.0
"""kube-controller-manager's own default `--horizontal-pod-autoscaler-sync-period`."""


def kcm_args(
    pki: ClusterPKI, kubeconfig: Path, port: int, hpa_sync_period_s: float = HPA_SYNC_PERIOD_S
) -> list[str]:
    """The controller-manager's flags; `hpa_sync_period_s` below the default where a demo
    compresses time (the HPA then acts as often per simulated second as in a real site)."""
    return [
        f"--horizontal-pod-autoscaler-sync-period={hpa_sync_period_s:g}s",
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--service-account-private-key-file={pki.service_account_key}",
        f"--root-ca-file={pki.ca.cert}",
        f"--cluster-signing-cert-file={pki.ca.cert}",
        f"--cluster-signing-key-file={pki.ca.key}",
        "--use-service-account-credentials=true",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # One instance per cluster: skipping election saves its lease wait at start-up.
        "--leader-elect=false",
        "--v=1",
    ]


def scheduler_args(kubeconfig: Path, port: int) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        "--leader-elect=false",
        "--v=1",
    ]


def kwok_args(kubeconfig: Path, stages: Path) -> list[str]:
    """kwok simulates only the nodes labelled for it, never a node someone else registered."""
    return [
        f"--kubeconfig={kubeconfig}",
        f"--config={stages}",
        "--manage-all-nodes=false",
        "--manage-nodes-with-label-selector="
        + ",".join(f"{k}={v}" for k, v in KWOK_NODE_LABELS.items()),
        f"--cidr={POD_CIDR}",
        # kwok renews no node Lease unless given a duration; without one the node-lifecycle
        # controller marks every node (and its pods) NotReady each grace period of 50 s.
        # 40 s is the kubelet's default; kwok renews at a quarter of it, as a kubelet does.
        "--node-lease-duration-seconds=40",
    ]
