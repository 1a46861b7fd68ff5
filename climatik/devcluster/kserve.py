"""How the KServe add-on of the dev cluster runs: the controller's flags, environment and the
objects it needs in the cluster (`climatik dev-cluster up --with kserve`).

KServe's manager (`cmd/manager`) runs as a plain process as KServe's own ServiceAccount (see
`generate_addon_pki`) with KServe's own ClusterRole. It reads `inferenceservice-config` from its
namespace at start-up and at every reconcile; ours is KServe's own with the default deployment
mode set to `Standard` (a Deployment, a Service and, with the `keda` autoscaler class, a KEDA
ScaledObject per component), since the dev cluster has no Knative for KServe's `Serverless`, and
Climatik's ceiling annotations kept out of the predictors' pods, as docs/power-capping.md asks of
every KServe that Climatik caps.

Its webhooks stay registered, as KServe's own configurations with each Service reference turned
into a URL on 127.0.0.1: the InferenceService defaulter and validator are part of what KServe does
to an object (they fill the fields its reconciler reads), and a dev cluster that skipped them
would accept InferenceServices a real one refuses. They fail closed (`failurePolicy: Fail`) as in
KServe, so they only touch KServe's own kinds and pods labelled for an InferenceService.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path

NAMESPACE = "kserve"
SERVICE_ACCOUNT = "kserve-controller-manager"
CLUSTER_ROLE = "kserve-manager-role"
WEBHOOK_SERVICE = "kserve-webhook-server-service"
CONFIG_MAP = "inferenceservice-config"
DEPLOYMENT_MODE = "Standard"
# What Climatik writes beside an InferenceService's ceiling (`CEILING_ANNOTATIONS` of the
# reconcilers, a layer above): KServe copies every annotation not in its disallowed list into the
# predictor's pod template, and a changed template rolls every predictor pod.
CLIMATIK_CEILING_ANNOTATIONS = (
    "climatik-project.ai/user-max-replicas",
    "climatik-project.ai/applied-max-replicas",
    "climatik-project.ai/capped-by",
)
# The controllers `cmd/manager` starts; each logs "Starting workers" once its caches synced.
CONTROLLERS = ("inferenceservice", "trainedmodel", "inferencegraph")
# Ports `up` picks for the add-on, by the name they are recorded under in cluster.json.
PORT_NAMES = ("kserve-webhook", "kserve-metrics", "kserve-health")
# controller-runtime serves webhooks from `$TMPDIR/k8s-webhook-server/serving-certs` unless the
# manager sets another folder, which KServe's does not (and has no flag for).
WEBHOOK_CERT_SUBDIR = Path("k8s-webhook-server") / "serving-certs"

Manifest = dict[str, object]


def process_env(kubeconfig: Path, tmp_dir: Path) -> dict[str, str]:
    """What KServe's pod gets from its Deployment, for a process outside one.

    POD_NAMESPACE names where the ConfigMap is read; TMPDIR is where the webhook server finds its
    certificate (WEBHOOK_CERT_SUBDIR below it).
    """
    return {"POD_NAMESPACE": NAMESPACE, "KUBECONFIG": str(kubeconfig), "TMPDIR": str(tmp_dir)}


def manager_args(kubeconfig: Path, ports: dict[str, int]) -> list[str]:
    """One instance, no leader election; metrics and probes on loopback. The webhook server has
    no address flag and listens on every interface, on its own port."""
    return [
        f"--kubeconfig={kubeconfig}",
        f"--metrics-addr=127.0.0.1:{ports['kserve-metrics']}",
        f"--health-probe-addr=127.0.0.1:{ports['kserve-health']}",
        f"--webhook-port={ports['kserve-webhook']}",
        "--leader-elect=false",
        "--zap-log-level=info",
    ]


def config_map(kserve_config_map: Manifest) -> Manifest:
    """KServe's `inferenceservice-config` in our namespace with `Standard` as default mode and
    Climatik's ceiling annotations added to `serviceAnnotationDisallowedList`."""
    data = kserve_config_map.get("data")
    if not isinstance(data, dict):
        raise ValueError(f"{CONFIG_MAP} has no data")
    metadata = kserve_config_map.get("metadata")
    return {
        **kserve_config_map,
        "metadata": {**(metadata if isinstance(metadata, dict) else {}), "namespace": NAMESPACE},
        "data": {
            **data,
            "deploy": json.dumps({"defaultDeploymentMode": DEPLOYMENT_MODE}),
            "inferenceService": _without_climatik_annotations(data.get("inferenceService")),
        },
    }


def _without_climatik_annotations(inference_service: object) -> str:
    """KServe's `inferenceService` entry (JSON) with Climatik's annotations disallowed; KServe
    appends the list to its own defaults."""
    settings = json.loads(inference_service) if isinstance(inference_service, str) else {}
    if not isinstance(settings, dict):
        raise ValueError(f"{CONFIG_MAP}: inferenceService is not a JSON object")
    listed = settings.get("serviceAnnotationDisallowedList") or []
    if not isinstance(listed, list):
        raise ValueError(f"{CONFIG_MAP}: serviceAnnotationDisallowedList is not a list")
    missing = [a for a in CLIMATIK_CEILING_ANNOTATIONS if a not in listed]
    return json.dumps({**settings, "serviceAnnotationDisallowedList": [*listed, *missing]})


def webhook_configurations(
    kserve_webhooks: Iterable[Manifest], ca_cert: Path, webhook_port: int
) -> list[Manifest]:
    """KServe's webhook configurations calling the process on 127.0.0.1 instead of its Service.

    The API server checks the serving certificate against the cluster CA (`caBundle`) under the
    name 127.0.0.1, which the add-on's certificate carries.
    """
    ca_bundle = base64.b64encode(ca_cert.read_bytes()).decode()
    result: list[Manifest] = []
    for configuration in kserve_webhooks:
        webhooks = configuration.get("webhooks")
        if not isinstance(webhooks, list):
            continue
        metadata = configuration.get("metadata")
        rewritten: list[object] = []
        for webhook in webhooks:
            client_config = webhook.get("clientConfig") if isinstance(webhook, dict) else None
            service = client_config.get("service") if isinstance(client_config, dict) else None
            path = service.get("path") if isinstance(service, dict) else None
            if not isinstance(webhook, dict) or not isinstance(path, str):
                raise ValueError(f"a KServe webhook without a service path: {webhook!r}")
            url = f"https://127.0.0.1:{webhook_port}{path}"
            rewritten.append({**webhook, "clientConfig": {"url": url, "caBundle": ca_bundle}})
        name = metadata.get("name") if isinstance(metadata, dict) else None
        result.append(
            {
                "apiVersion": configuration.get("apiVersion"),
                "kind": configuration.get("kind"),
                "metadata": {"name": name},
                "webhooks": rewritten,
            }
        )
    return result


def cluster_objects() -> list[Manifest]:
    """KServe's namespace, ServiceAccount and the binding of its ClusterRole to it (KServe's own
    binding leaves the subject's namespace to kustomize)."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "kserve-manager-rolebinding"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": CLUSTER_ROLE,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}
            ],
        },
    ]


def started_controllers(log_lines: Iterable[str]) -> set[str]:
    """The controllers whose workers started, from the manager's JSON log.

    controller-runtime starts a controller's workers only once every cache it watches synced, and
    says so nowhere but its log: a cache of a kind the API server does not serve never syncs, and
    the manager exits two minutes later. `/readyz` is no help, it only reports the webhook server.
    """
    started: set[str] = set()
    for line in log_lines:
        if '"Starting workers"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("controller"), str):
            started.add(entry["controller"])
    return started
