"""The installers (kustomize base and overlays, Helm chart), monitoring and examples, held to what
they promise, against the real dev-cluster where an API server has to say yes.

- Both installers render, carry the same objects, and apply for real in namespaces labelled
  `pod-security.kubernetes.io/enforce=restricted`: the API server admits every object and the
  controller's ReplicaSet creates its pods there (Pod Security is enforced on pods; a privileged
  pod is refused in the same namespace, proving enforcement is on).
- `kubectl auth can-i --list` for the controller's ServiceAccount equals
  deploy/rbac-expectation.txt, with no wildcard, no Secret list or watch and no pod writes
  outside the namespaces named for pod-deletion-cost; every resource the controller's code
  names is covered by a rule.
- The NetworkPolicy of every rendering reaches no link-local or cloud-metadata address and no
  Internet address on port 80, and the API server accepts it with non-default values too.
- promtool checks and unit-tests the alert rules; the monitoring kustomization renders the
  dashboard (tests/unit/test_monitoring.py holds its queries and the rules' to the registry).
- The examples apply (server-side dry-run) with KEDA's and KServe's real CRDs installed.

Objects with cluster scope (ClusterRoles, the webhook configuration, namespaces) are deleted at
the end of each test, so the session's other tests never meet this webhook.
"""

from __future__ import annotations

import ast
import base64
import difflib
import importlib
import json
import os
import pkgutil
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml
from cryptography import x509
from pydantic_settings import BaseSettings

import climatik
from climatik.devcluster.binaries import locate_binaries
from climatik.devcluster.cluster import ClusterInfo
from climatik.router.settings import load_router_settings
from tests.integration.conftest import Kubectl, wait_until
from tests.networkpolicy import (
    METADATA_ADDRESSES,
    egress_allows,
    ingress_rules_for,
    opens_port,
    wide_open_to_everyone,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
CHART = DEPLOY / "helm" / "climatik"
RBAC_EXPECTATION = DEPLOY / "rbac-expectation.txt"
MONITORING = DEPLOY / "monitoring"
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
CONTROLLER_NS = "climatik-system"
TUNING_NS = "climatik-gpu-tuning"
CONTROLLER_SA = "climatik-controller"
RESTRICTED = "pod-security.kubernetes.io/enforce"
FIELD_MANAGER = "climatik-deploy-test"

Obj = dict[str, Any]


# -- tools -----------------------------------------------------------------------------------


def _run(argv: Sequence[str | Path], *, stdin: str | None = None, timeout: float = 120) -> str:
    result = subprocess.run(
        [str(a) for a in argv],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(str(a) for a in argv)} exited {result.returncode}:\n"
            f"{result.stdout}{result.stderr}"
        )
    return result.stdout


@pytest.fixture(scope="module")
def kubectl_bin() -> Path:
    return locate_binaries().path("kubectl")


@pytest.fixture(scope="module")
def helm_bin() -> Path:
    """helm from hack/tools/build.sh (tox's integration env builds it first)."""
    printed = _run(["bash", REPO_ROOT / "hack" / "tools" / "build.sh", "--print"], timeout=30)
    bin_dir = Path(dict(line.split("=", 1) for line in printed.split())["bin_dir"])
    helm = bin_dir / "helm"
    if not helm.is_file():
        pytest.fail(f"{helm} is missing: run `bash hack/tools/build.sh`", pytrace=False)
    return helm


def _docs(text: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]


def kustomize(kubectl_bin: Path, directory: Path) -> list[Obj]:
    return _docs(_run([kubectl_bin, "kustomize", directory]))


def helm_template(
    helm_bin: Path, release: str, namespace: str, *sets: str, values: Obj | None = None
) -> list[Obj]:
    argv: list[str | Path] = [helm_bin, "template", release, CHART, "--namespace", namespace]
    argv += [arg for s in sets for arg in ("--set", s)]
    if values is not None:
        argv += ["--values", "-"]  # helm reads a values file from stdin
    return _docs(_run(argv, stdin=yaml.safe_dump(values) if values is not None else None))


def by_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[Obj], kind: str) -> Obj:
    found = by_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


# -- rendering, without a cluster -----------------------------------------------------------


def test_copies_match_their_sources() -> None:
    # crd/ and deploy/monitoring are the sources; kustomize and Helm need copies under their
    # roots (the chart's CRD, rules and dashboard).
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "sync-deploy-files.sh"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr + "run `bash hack/sync-deploy-files.sh`"


def test_overlays_render_what_they_promise(kubectl_bin: Path) -> None:
    base = kustomize(kubectl_bin, DEPLOY / "base")
    dev = kustomize(kubectl_bin, DEPLOY / "overlays" / "dev")
    cert = kustomize(kubectl_bin, DEPLOY / "overlays" / "cert-manager")
    no_tuning = kustomize(kubectl_bin, DEPLOY / "overlays" / "no-gpu-tuning")
    deletion_cost = kustomize(kubectl_bin, DEPLOY / "overlays" / "pod-deletion-cost")
    assert one(base, "Deployment")["spec"]["replicas"] == 2
    assert one(dev, "Deployment")["spec"]["replicas"] == 1
    assert by_kind(dev, "PodDisruptionBudget") == []
    assert one(dev, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "climatik:dev"
    )
    # The GPU tuning Jobs run whatever image the controller runs, overlays included.
    for objs in (base, dev, cert, no_tuning, deletion_cost):
        container = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["CLIMATIK_GPU_TUNING__IMAGE"] == container["image"]
    webhook = one(cert, "MutatingWebhookConfiguration")
    assert webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{CONTROLLER_NS}/{one(cert, 'Certificate')['metadata']['name']}"
    )
    certificate = one(cert, "Certificate")["spec"]
    assert certificate["secretName"] == _webhook_secret(one(base, "Deployment"))
    assert f"climatik-controller.{CONTROLLER_NS}.svc" in certificate["dnsNames"]
    # no-gpu-tuning: the base minus exactly what gpu-tuning.yaml adds, and the switch that keeps
    # the controller from watching the namespace it dropped.
    tuning_file = _docs((DEPLOY / "base" / "gpu-tuning.yaml").read_text(encoding="utf-8"))
    dropped = {_identity(o) for o in tuning_file}
    assert len(dropped) == 6
    kept = {_identity(o): o for o in base if _identity(o) not in dropped}
    left = {_identity(o): o for o in no_tuning}
    assert sorted(kept) == sorted(left)
    for key, obj in kept.items():
        if key[0] != "Deployment":
            assert left[key] == obj, key
    _assert_gpu_tuning_off(no_tuning, TUNING_NS)
    assert "CLIMATIK_GPU_TUNING__ENABLED" not in _controller_env(base)  # default: on
    # No namespace may run GPU tuning Jobs unless the administrator names it.
    assert _controller_env(base)["CLIMATIK_GPU_TUNING__ALLOWED_NAMESPACES"] == "[]"
    assert "CLIMATIK_GPU_TUNING__APPLY_NAMESPACES" not in _controller_env(base)  # deprecated
    # pod-deletion-cost: the base plus `patch` on pods in one namespace, nothing else.
    in_base = {_identity(b) for b in base}
    added = {_identity(o): o for o in deletion_cost if _identity(o) not in in_base}
    assert sorted(added) == [
        ("Role", "llm", "climatik-pod-deletion-cost"),
        ("RoleBinding", "llm", "climatik-pod-deletion-cost"),
    ]
    assert added[("Role", "llm", "climatik-pod-deletion-cost")]["rules"] == PLACEMENT_POD_RULES
    assert len(deletion_cost) == len(base) + 2
    assert _pod_verbs(base) == ["get", "list", "watch"]  # the base writes to no pod at all


PLACEMENT_POD_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
]
"""The opt-in per-namespace Role: deletion costs (patch) and placement.migration (evictions)."""


def _pod_verbs(objs: list[Obj]) -> list[str]:
    """What the ClusterRole grants on pods, cluster-wide."""
    (role,) = by_kind(objs, "ClusterRole")
    (rule,) = [r for r in role["rules"] if r["resources"] == ["pods"]]
    return list(rule["verbs"])


def _identity(obj: Obj) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return (obj["kind"], meta.get("namespace", ""), meta["name"])


def _controller_env(objs: list[Obj]) -> dict[str, Any]:
    container = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def _assert_gpu_tuning_off(objs: list[Obj], tuning_ns: str) -> None:
    """Nothing of GPU tuning is installed, and the controller is told not to start it (its
    informers in the missing namespace would be refused and never sync)."""
    assert not [o for o in objs if o["metadata"].get("namespace") == tuning_ns]
    assert tuning_ns not in {n["metadata"]["name"] for n in by_kind(objs, "Namespace")}
    assert not [o for o in objs if "gpu-tun" in o["metadata"]["name"]]
    assert _controller_env(objs)["CLIMATIK_GPU_TUNING__ENABLED"] == "false"


def test_helm_chart_lints_and_refuses_unsafe_values(helm_bin: Path) -> None:
    _run([helm_bin, "lint", "--strict", CHART])
    bad = subprocess.run(
        [
            str(helm_bin),
            "template",
            "x",
            str(CHART),
            "-n",
            "tuning",
            "--set",
            "gpuTuning.namespace=tuning",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert bad.returncode != 0
    assert "must differ from the release namespace" in bad.stderr
    for old_value in ("networkPolicy.prometheusPorts={80}", "networkPolicy.apiServer.cidrs=null"):
        refused = subprocess.run(
            [str(helm_bin), "template", "x", str(CHART), "--set", old_value],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert refused.returncode != 0, old_value
        assert "networkPolicy." in refused.stderr, refused.stderr
    cm = helm_template(helm_bin, "x", "ns", "webhook.certificate.mode=certManager")
    assert one(cm, "Certificate")["spec"]["issuerRef"]["name"] == "x-climatik-selfsigned"
    assert one(cm, "MutatingWebhookConfiguration")["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "ns/x-climatik-webhook"
    }


def _webhook_secret(deployment: Obj) -> str:
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    return str(next(v for v in volumes if v["name"] == "webhook-tls")["secret"]["secretName"])


_HELM_ONLY_LABELS = frozenset(
    {
        "helm.sh/chart",
        "app.kubernetes.io/managed-by",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/version",
    }
)


def _without_helm_labels(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_helm_labels(v) for k, v in value.items() if k not in _HELM_ONLY_LABELS}
    if isinstance(value, list):
        return [_without_helm_labels(v) for v in value]
    return value


def _comparable(obj: Obj) -> Obj:
    """What must agree between the installers: the object minus its own labels and annotations
    and the labels only Helm adds (release, chart, version)."""
    meta = {k: v for k, v in obj["metadata"].items() if k in {"name", "namespace"}}
    body = {k: v for k, v in obj.items() if k not in {"metadata", "status"}}
    return {"metadata": meta, **_without_helm_labels(body)}


def test_helm_chart_renders_the_same_objects_as_the_kustomize_base(
    kubectl_bin: Path, helm_bin: Path
) -> None:
    base = kustomize(kubectl_bin, DEPLOY / "base")
    # Release "climatik" in climatik-system gives the chart the base's names.
    chart = helm_template(helm_bin, "climatik", CONTROLLER_NS)
    _assert_same_objects(base, chart)
    # The pod-deletion-cost overlay is the chart with that namespace named (twice is once).
    _assert_same_objects(
        kustomize(kubectl_bin, DEPLOY / "overlays" / "pod-deletion-cost"),
        helm_template(
            helm_bin, "climatik", CONTROLLER_NS, "rbac.podDeletionCost.namespaces={llm,llm}"
        ),
    )
    # And the CRD the chart installs is the one kustomize installs, plus its own metadata.
    assert [_without_metadata_extras(c) for c in by_kind(chart, "CustomResourceDefinition")] == (
        by_kind(base, "CustomResourceDefinition")
    )


def _without_metadata_extras(obj: Obj) -> Obj:
    """The object without the labels and annotations an installer adds."""
    meta = {k: v for k, v in obj["metadata"].items() if k not in {"labels", "annotations"}}
    return {**obj, "metadata": meta}


def test_gpu_tuning_off_installs_nothing_for_it_in_either_installer(
    kubectl_bin: Path, helm_bin: Path
) -> None:
    overlay = kustomize(kubectl_bin, DEPLOY / "overlays" / "no-gpu-tuning")
    chart = helm_template(helm_bin, "climatik", CONTROLLER_NS, "gpuTuning.enabled=false")
    _assert_gpu_tuning_off(chart, TUNING_NS)
    _assert_same_objects(overlay, chart)
    # The chart sets the variable only when tuning is off (on is the setting's default).
    assert "CLIMATIK_GPU_TUNING__ENABLED" not in _controller_env(
        helm_template(helm_bin, "climatik", CONTROLLER_NS)
    )


def _assert_same_objects(base: list[Obj], chart: list[Obj]) -> None:
    """A kustomize rendering and a Helm one carry the same objects (CRDs aside)."""

    def index(objs: list[Obj]) -> dict[tuple[str, str, str], Obj]:
        return {
            (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
            for o in objs
            if o["kind"] != "CustomResourceDefinition"
            # Helm does not own its release namespace; docs/install.md labels it.
            and not (o["kind"] == "Namespace" and o["metadata"]["name"] == CONTROLLER_NS)
        }

    base_index, chart_index = index(base), index(chart)
    assert sorted(base_index) == sorted(chart_index)
    for key, base_obj in base_index.items():
        chart_obj = chart_index[key]
        texts = [
            json.dumps(_comparable(o), sort_keys=True, indent=1).splitlines()
            for o in (base_obj, chart_obj)
        ]
        diff = "\n".join(difflib.unified_diff(texts[0], texts[1], "kustomize", "helm", lineterm=""))
        assert not diff, f"{key} differs:\n{diff}"


def _assert_safe(objs: list[Obj], controller_ns: str, *, gpu_tuning: bool = True) -> None:
    """The security promises of docs/security.md, on one rendered installation."""
    for role in by_kind(objs, "ClusterRole") + by_kind(objs, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)
            if "secrets" in rule["resources"]:
                assert rule["verbs"] == ["get"], rule
                assert rule.get("resourceNames"), f"Secrets readable without names: {rule}"
                assert role["kind"] == "Role", "Secrets must never be granted cluster-wide"
    namespaces = {n["metadata"]["name"]: n for n in by_kind(objs, "Namespace")}
    if controller_ns in namespaces:
        assert namespaces[controller_ns]["metadata"]["labels"][RESTRICTED] == "restricted"
    # The GPU tuning Jobs' namespace may be privileged; it is never the controller's.
    relaxed = {
        n for n, o in namespaces.items() if o["metadata"]["labels"][RESTRICTED] != "restricted"
    }
    if gpu_tuning:
        assert relaxed, "no namespace for the GPU tuning Jobs"
    else:
        assert not relaxed, f"GPU tuning is off, yet {sorted(relaxed)} are not restricted"
    assert controller_ns not in relaxed
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["requests"]
        assert container["resources"]["limits"]
        probes = {container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")}
        assert probes == {"/healthz", "/readyz"}
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["CLIMATIK_LEADER_ELECTION__ENABLED"] == "true"
    webhook = one(objs, "MutatingWebhookConfiguration")["webhooks"][0]
    assert webhook["failurePolicy"] == "Ignore"
    assert webhook["sideEffects"] == "None"
    assert webhook["timeoutSeconds"] == 2
    assert webhook["objectSelector"] == {"matchLabels": {"climatik-project.ai/managed": "true"}}
    assert one(objs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    policy = one(objs, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    container_ports = {p["containerPort"] for p in pod["containers"][0]["ports"]}
    assert ingress_ports == container_ports
    _assert_network_policy_safe(policy)
    # No write to pods cluster-wide: pod-deletion-cost is granted per namespace, by a Role.
    assert _pod_verbs(objs) == ["get", "list", "watch"]


def _assert_network_policy_safe(policy: Obj) -> None:
    """No link-local or metadata address, no port 80 to any address, /metrics from the
    monitoring namespace only (docs/security.md, "Network")."""
    for address in METADATA_ADDRESSES:
        for port in (80, 443, 53, 6443, 9090):
            assert not egress_allows(policy, address, port), (address, port)
    for rule in policy["spec"]["egress"]:
        assert not (opens_port(rule, 80) and wide_open_to_everyone(rule)), rule
    (metrics,) = ingress_rules_for(policy, 8080)
    assert metrics.get("from"), "metrics open to every pod"


def test_rendered_installations_keep_the_security_promises(
    kubectl_bin: Path, helm_bin: Path
) -> None:
    _assert_safe(kustomize(kubectl_bin, DEPLOY / "base"), CONTROLLER_NS)
    _assert_safe(kustomize(kubectl_bin, DEPLOY / "overlays" / "cert-manager"), CONTROLLER_NS)
    _assert_safe(helm_template(helm_bin, "climatik", CONTROLLER_NS), CONTROLLER_NS)
    _assert_safe(helm_template(helm_bin, "r", "prod", "rbac.secretAccess[0].namespace=llm"), "prod")
    no_tuning = kustomize(kubectl_bin, DEPLOY / "overlays" / "no-gpu-tuning")
    _assert_safe(no_tuning, CONTROLLER_NS, gpu_tuning=False)
    chart = helm_template(helm_bin, "climatik", CONTROLLER_NS, "gpuTuning.enabled=false")
    _assert_safe(chart, CONTROLLER_NS, gpu_tuning=False)
    _assert_safe(kustomize(kubectl_bin, DEPLOY / "overlays" / "pod-deletion-cost"), CONTROLLER_NS)
    _assert_safe(helm_template(helm_bin, "r", "prod", values=_NON_DEFAULT_VALUES), "prod")


# Every value of the chart's NetworkPolicy and pod-deletion-cost RBAC changed from its default.
_NON_DEFAULT_VALUES: Obj = {
    "rbac": {"podDeletionCost": {"namespaces": ["llm", "batch"]}},
    "gpuTuning": {"allowedNamespaces": ["llm"]},
    "networkPolicy": {
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"team": "observability"}}}],
        "webhookFrom": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
        "dns": {
            "to": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dns"}}},
                {"ipBlock": {"cidr": "169.254.20.10/32"}},  # NodeLocal DNSCache
            ],
            "ports": [53, 5353],
        },
        "apiServer": {"cidrs": ["10.0.0.10/32"], "ports": [6443]},
        "prometheus": {
            "namespaceSelector": {"matchLabels": {"team": "observability"}},
            "podSelector": {"matchLabels": {"app": "thanos-query"}},
            "ports": [9090, 10902],
        },
        "internet": {"ports": [443], "exceptIPv4": ["10.0.0.0/8"], "exceptIPv6": []},
        "extraEgress": [
            {
                "to": [{"ipBlock": {"cidr": "10.20.0.15/32"}}],
                "ports": [{"port": 8443, "protocol": "TCP"}],
            }
        ],
    },
}


def test_chart_values_for_least_privilege_render_what_they_say(helm_bin: Path) -> None:
    objs = helm_template(helm_bin, "r", "prod", values=_NON_DEFAULT_VALUES)
    roles = {
        (o["kind"], o["metadata"]["namespace"]): o
        for o in by_kind(objs, "Role") + by_kind(objs, "RoleBinding")
        if o["metadata"]["name"] == "r-climatik-pod-deletion-cost"
    }
    assert sorted(roles) == [
        ("Role", "batch"),
        ("Role", "llm"),
        ("RoleBinding", "batch"),
        ("RoleBinding", "llm"),
    ]
    assert roles[("Role", "llm")]["rules"] == PLACEMENT_POD_RULES
    assert roles[("RoleBinding", "llm")]["subjects"] == [
        {"kind": "ServiceAccount", "name": "r-climatik-controller", "namespace": "prod"}
    ]
    assert _controller_env(objs)["CLIMATIK_GPU_TUNING__ALLOWED_NAMESPACES"] == '["llm"]'
    # The deprecated value name still counts for one release, only while the new one is empty.
    for sets, expected in (
        (["gpuTuning.applyNamespaces={llm}"], '["llm"]'),
        (["gpuTuning.applyNamespaces={llm}", "gpuTuning.allowedNamespaces={batch}"], '["batch"]'),
    ):
        env = _controller_env(helm_template(helm_bin, "r", "prod", *sets))
        assert env["CLIMATIK_GPU_TUNING__ALLOWED_NAMESPACES"] == expected, sets
        assert "CLIMATIK_GPU_TUNING__APPLY_NAMESPACES" not in env
    policy = one(objs, "NetworkPolicy")
    # The values took effect: the extra rule, the narrowed API server, Thanos' port.
    assert egress_allows(policy, "10.20.0.15", 8443)
    assert egress_allows(policy, "10.0.0.10", 6443)
    assert not egress_allows(policy, "10.0.0.11", 6443)
    assert not egress_allows(policy, "10.0.0.10", 443)
    assert egress_allows(policy, "169.254.20.10", 5353, "UDP")  # NodeLocal DNSCache, exactly
    assert egress_allows(policy, "172.20.0.1", 443)  # private ranges allowed on request
    # The old behaviour, on request: `patch` on every pod, no per-namespace Roles.
    wide = helm_template(
        helm_bin,
        "r",
        "prod",
        "rbac.podDeletionCost.clusterWide=true",
        "rbac.podDeletionCost.namespaces={llm}",
    )
    assert _pod_verbs(wide) == ["get", "list", "watch", "patch"]
    (cluster_role,) = by_kind(wide, "ClusterRole")
    assert {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]} in (
        cluster_role["rules"]
    )
    assert not [o for o in by_kind(wide, "Role") if "pod-deletion-cost" in o["metadata"]["name"]]


def test_the_api_server_accepts_the_least_privilege_objects_with_every_value_changed(
    dev_cluster: ClusterInfo, helm_bin: Path, kubectl_bin: Path, namespace: str
) -> None:
    admin = _admin(dev_cluster)
    objs = helm_template(helm_bin, "r", namespace, values=_NON_DEFAULT_VALUES)
    policies = by_kind(objs, "NetworkPolicy")
    overlay = kustomize(kubectl_bin, DEPLOY / "overlays" / "pod-deletion-cost")
    base_policy = one(kustomize(kubectl_bin, DEPLOY / "base"), "NetworkPolicy")
    for policy in (*policies, base_policy):
        policy["metadata"]["namespace"] = namespace
    roles = [
        {**o, "metadata": {**o["metadata"], "namespace": namespace}}
        for o in by_kind(overlay, "Role") + by_kind(overlay, "RoleBinding")
    ]
    # Server-side: the API server validates every CIDR, exception and port (a malformed or
    # non-contained `except`, a named port that is not one, ... is refused).
    _apply(admin, [*policies, base_policy, *roles], "--dry-run=server")


def _settings_variables() -> set[str]:
    """Every CLIMATIK_* variable some pydantic-settings class of the package reads."""

    def fields(model: type[pydantic.BaseModel], prefix: str) -> Iterator[str]:
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(info.validation_alias, str):
                yield info.validation_alias.upper()  # a variable named in full (a deprecated one)
            elif isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
                yield from fields(annotation, f"{prefix}{name.upper()}__")
            else:
                yield f"{prefix}{name.upper()}"

    found: set[str] = set()
    for cls in _settings_classes():
        prefix = str(cls.model_config.get("env_prefix", ""))
        found.update(fields(cls, prefix.upper()))
    return found


def _settings_classes() -> list[type[BaseSettings]]:
    """Every pydantic-settings class in the package (importing every module first)."""
    for module in pkgutil.walk_packages(climatik.__path__, "climatik."):
        if not module.name.endswith("__main__"):  # that one runs the CLI on import
            importlib.import_module(module.name)

    def subclasses(cls: type[BaseSettings]) -> Iterator[type[BaseSettings]]:
        sub: type[BaseSettings]
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    return [c for c in subclasses(BaseSettings) if c.__module__.startswith("climatik.")]


def test_every_climatik_variable_the_installers_set_is_a_real_setting(
    kubectl_bin: Path, helm_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = _settings_variables()
    assert "CLIMATIK_LEADER_ELECTION__ENABLED" in known  # the scan itself works
    for objs in (
        kustomize(kubectl_bin, DEPLOY / "base"),
        kustomize(kubectl_bin, DEPLOY / "overlays" / "no-gpu-tuning"),
        helm_template(
            helm_bin,
            "climatik",
            CONTROLLER_NS,
            "controller.capping.prometheusAddress=http://p:9090",
        ),
        helm_template(helm_bin, "climatik", CONTROLLER_NS, "gpuTuning.enabled=false"),
    ):
        container = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        names = {name for name in env if name.startswith("CLIMATIK_")}
        assert len(names) > 10
        assert names <= known, f"not read by any setting: {sorted(names - known)}"
        # And every value parses: the settings classes accept the installers' environment as
        # the pod would see it ($(POD_NAME) and $(POD_NAMESPACE) expanded by the kubelet).
        for name in names:
            value = str(env[name])
            value = value.replace("$(POD_NAME)", "climatik-0").replace("$(POD_NAMESPACE)", "ns")
            monkeypatch.setenv(name, value)
        for cls in _settings_classes():
            cls()


def _resources_named_in_code() -> set[tuple[str, str]]:
    """(apiGroup, plural) of every Resource constant the controller's code uses.

    A constant counts when a module under climatik/ other than its definition mentions it, so a
    reconciler that starts using a new resource fails this test until RBAC grants it.
    """
    package = REPO_ROOT / "climatik"
    definitions: dict[str, tuple[str, str]] = {}
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
                continue
            func = node.value.func
            if not (isinstance(func, ast.Name) and func.id in {"Resource", "custom"}):
                continue
            args = [a.value for a in node.value.args if isinstance(a, ast.Constant)]
            for target in node.targets:
                if isinstance(target, ast.Name) and len(args) >= 3:
                    definitions[target.id] = (str(args[0]), str(args[2]))
    used: set[tuple[str, str]] = set()
    for path in package.rglob("*.py"):
        if path.parts[-2] in {"devcluster", "sim", "router"}:
            # The dev cluster's own tooling and the twin never run in the controller; the
            # router runs under its own ServiceAccount (test_router_overlay_and_chart_switch_agree).
            continue
        text = path.read_text(encoding="utf-8")
        for name, resource in definitions.items():
            if re.search(rf"\b{name}\b(?!\s*=\s*(Resource|custom)\()", text):
                used.add(resource)
    return used


def test_rbac_grants_every_resource_the_code_uses(kubectl_bin: Path) -> None:
    objs = kustomize(kubectl_bin, DEPLOY / "base")
    granted = {
        (group, resource.split("/")[0])
        for role in by_kind(objs, "ClusterRole") + by_kind(objs, "Role")
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    used = _resources_named_in_code()
    missing = used - granted
    assert not missing, f"the code uses {sorted(missing)} but no Role or ClusterRole grants it"


ROUTER = "climatik-router"


def _router_objects(objs: list[Obj]) -> dict[tuple[str, str, str], Obj]:
    return {_identity(o): o for o in objs if "-router" in o["metadata"]["name"]}


def test_router_overlay_and_chart_switch_agree_and_grant_only_endpointslices(
    kubectl_bin: Path, helm_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = kustomize(kubectl_bin, DEPLOY / "base")
    overlay = kustomize(kubectl_bin, DEPLOY / "overlays" / "router")
    # The base plus exactly the router's objects; the base's own untouched.
    router = _router_objects(overlay)
    assert sorted(router) == [
        ("Deployment", CONTROLLER_NS, ROUTER),
        ("Role", "llm", ROUTER),
        ("RoleBinding", "llm", ROUTER),
        ("Service", CONTROLLER_NS, ROUTER),
        ("ServiceAccount", CONTROLLER_NS, ROUTER),
    ]
    assert sorted(_identity(o) for o in overlay if _identity(o) not in router) == sorted(
        _identity(o) for o in base
    )
    assert not _router_objects(base)
    assert not _router_objects(helm_template(helm_bin, "climatik", CONTROLLER_NS))  # off
    chart = helm_template(
        helm_bin,
        "climatik",
        CONTROLLER_NS,
        "router.enabled=true",
        "router.service=vllm",
        "router.namespace=llm",
        "router.prometheusAddress=http://prometheus-operated.monitoring:9090",
    )
    _assert_same_objects(overlay, chart)
    # Read-only EndpointSlices in the model servers' namespace, and nothing else.
    assert router[("Role", "llm", ROUTER)]["rules"] == [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    assert not by_kind(overlay, "ClusterRole")[0]["metadata"]["name"].endswith("router")
    # The controller's security contexts, exactly.
    controller = next(o for o in by_kind(overlay, "Deployment") if o["metadata"]["name"] != ROUTER)
    pod = router[("Deployment", CONTROLLER_NS, ROUTER)]["spec"]["template"]["spec"]
    assert pod["securityContext"] == controller["spec"]["template"]["spec"]["securityContext"]
    (container,) = pod["containers"]
    controller_container = controller["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"] == controller_container["securityContext"]
    assert container["resources"]["limits"]
    # Every variable it sets is a setting the router reads, and they parse.
    known = _settings_variables()
    env = {e["name"]: e["value"] for e in container["env"]}
    assert set(env) <= known, sorted(set(env) - known)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_router_settings()
    assert (settings.service, settings.namespace) == ("vllm", "llm")
    assert settings.prometheus.address == "http://prometheus-operated.monitoring:9090"


def test_the_router_pod_is_admitted_under_restricted_pod_security(
    dev_cluster: ClusterInfo, kubectl_bin: Path, namespace: str
) -> None:
    admin = _admin(dev_cluster)
    admin.run("label", "namespace", namespace, f"{RESTRICTED}=restricted")
    overlay = kustomize(kubectl_bin, DEPLOY / "overlays" / "router")
    deployment = _router_objects(overlay)[("Deployment", CONTROLLER_NS, ROUTER)]
    pod = _template_pod(deployment)
    pod["metadata"]["namespace"] = namespace
    pod["spec"] = {**pod["spec"], "serviceAccountName": "default"}
    admin.run("create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod))
    refused = admin.run(
        "create",
        "--dry-run=server",
        "-f",
        "-",
        stdin=json.dumps(_privileged_pod(namespace)),
        check=False,
    )
    assert "violates PodSecurity" in refused.stderr


# -- applied to the dev cluster -------------------------------------------------------------


@dataclass(frozen=True)
class Admin:
    """The cluster's kubectl as its administrator, with no default namespace: the installers'
    objects name their own namespaces, several of them."""

    binary: Path
    kubeconfig: Path

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binary), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def get_json(self, *args: str) -> Any:
        return json.loads(self.run("get", *args, "-o", "json").stdout)


def _admin(dev_cluster: ClusterInfo) -> Admin:
    return Admin(dev_cluster.kubectl, dev_cluster.kubeconfig)


def _apply(kubectl: Admin, objs: list[Obj], *extra: str) -> None:
    kubectl.run(
        "apply",
        "--server-side",
        f"--field-manager={FIELD_MANAGER}",
        *extra,
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}),
    )


def _cleanup(kubectl: Admin, objs: list[Obj]) -> None:
    """Delete what a test installed; cluster-scoped objects first so nothing calls the webhook."""
    order = ["MutatingWebhookConfiguration", "ClusterRoleBinding", "ClusterRole", "Namespace"]
    for kind in order:
        for obj in by_kind(objs, kind):
            kubectl.run(
                "delete",
                kind.lower(),
                obj["metadata"]["name"],
                "--wait=false",
                "--ignore-not-found",
                check=False,
            )


def _split_crds(objs: list[Obj]) -> tuple[list[Obj], list[Obj]]:
    crds = by_kind(objs, "CustomResourceDefinition")
    return crds, [o for o in objs if o["kind"] != "CustomResourceDefinition"]


def _can_i_list(kubectl: Admin, service_account: str, namespace: str) -> list[str]:
    """`kubectl auth can-i --list` as the ServiceAccount, one normalized line per row."""
    out = kubectl.run(
        "auth",
        "can-i",
        "--list",
        f"--as=system:serviceaccount:{service_account}",
        f"--namespace={namespace}",
    ).stdout
    lines = out.splitlines()
    header = lines[0]
    # Cut rows at the header's column starts: a cell may be empty (a non-resource row has no
    # resource), so splitting on whitespace would shift the columns.
    starts = [header.index(title) for title in ("Non-Resource URLs", "Resource Names", "Verbs")]
    rows = []
    for line in lines[1:]:
        cells = [
            line[: starts[0]],
            line[starts[0] : starts[1]],
            line[starts[1] : starts[2]],
            line[starts[2] :],
        ]
        resources, non_resource_urls, names, verbs = (c.strip() for c in cells)
        target = resources or f"url:{non_resource_urls}"
        rows.append(f"{target} {names} {verbs}")
    return sorted(rows)


def _rbac_report(kubectl: Admin, sa: str, controller_ns: str, tuning_ns: str) -> str:
    sections = [
        ("controller namespace", controller_ns),
        ("GPU tuning namespace", tuning_ns),
        ("any other namespace", "default"),
    ]
    lines = []
    for title, namespace in sections:
        lines.append(f"[{title}]")
        lines.extend(_can_i_list(kubectl, sa, namespace))
    return "\n".join(lines) + "\n"


def _assert_rbac_matches_expectation(report: str) -> None:
    expected = (
        "\n".join(
            line
            for line in RBAC_EXPECTATION.read_text(encoding="utf-8").splitlines()
            if not line.startswith("#")
        )
        + "\n"
    )
    if report != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                report.splitlines(keepends=True),
                "deploy/rbac-expectation.txt",
                "kubectl auth can-i --list",
            )
        )
        pytest.fail(f"the controller's permissions changed:\n{diff}", pytrace=False)
    for line in report.splitlines():
        if line.startswith(("[", "url:")):
            continue  # section titles; non-resource URLs come from the built-in discovery roles
        resource, names, verbs = line.split(" ", 2)
        assert "*" not in resource, line
        assert "*" not in verbs, line
        if resource == "secrets":
            assert names != "[]", f"Secrets readable by any name: {line}"
            assert verbs == "[get]", line


def _privileged_pod(namespace: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged-probe", "namespace": namespace},
        "spec": {
            "containers": [
                {"name": "c", "image": "busybox", "securityContext": {"privileged": True}}
            ]
        },
    }


def _template_pod(deployment: Obj) -> Obj:
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "template-probe",
            "namespace": deployment["metadata"]["namespace"],
            "labels": template["metadata"]["labels"],
        },
        "spec": template["spec"],
    }


def _assert_admitted_under_restricted(kubectl: Admin, objs: list[Obj]) -> None:
    deployment = one(objs, "Deployment")
    namespace = deployment["metadata"]["namespace"]
    labels = kubectl.get_json("namespace", namespace)["metadata"]["labels"]
    assert labels[RESTRICTED] == "restricted"
    # Pod Security is enforced here: a privileged pod is refused ...
    refused = kubectl.run(
        "create",
        "--dry-run=server",
        "-f",
        "-",
        stdin=json.dumps(_privileged_pod(namespace)),
        check=False,
    )
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr
    # ... and the controller's pod, exactly as its template says, is not.
    kubectl.run(
        "create", "--dry-run=server", "-f", "-", stdin=json.dumps(_template_pod(deployment))
    )
    # The ReplicaSet really created the pods (a refusal would leave FailedCreate events instead).
    selector = ",".join(
        f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items()
    )
    replicas = int(deployment["spec"]["replicas"])

    def pods_created() -> bool:
        pods: list[Obj] = kubectl.get_json("pods", f"--namespace={namespace}", "-l", selector)[
            "items"
        ]
        return len(pods) == replicas

    wait_until(f"{replicas} controller pods in {namespace}", pods_created, timeout_s=60)


def _assert_serving_certificate(secret: Obj, dns_name: str) -> None:
    """The Secret's certificate names the Service and is signed by the CA it carries."""
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert dns_name in names.get_values_for_type(x509.DNSName)
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)


@pytest.fixture
def installed() -> Iterator[list[tuple[Admin, list[Obj]]]]:
    """Installations a test made, removed at teardown."""
    made: list[tuple[Admin, list[Obj]]] = []
    yield made
    for kubectl, objs in made:
        _cleanup(kubectl, objs)


@pytest.mark.timeout(300)
def test_kustomize_base_applies_under_restricted_pod_security(
    dev_cluster: ClusterInfo, kubectl_bin: Path, installed: list[tuple[Admin, list[Obj]]]
) -> None:
    admin = _admin(dev_cluster)
    crds, objs = _split_crds(kustomize(kubectl_bin, DEPLOY / "base"))
    # The cluster already runs the generated CRD; the base's copy is identical, so a dry run
    # shows it applies without touching what the session's other tests use.
    _apply(admin, crds, "--dry-run=server", "--force-conflicts")
    installed.append((admin, objs))
    _apply(admin, by_kind(objs, "Namespace"))
    _apply(admin, [o for o in objs if o["kind"] != "Namespace"])
    _assert_admitted_under_restricted(admin, objs)
    report = _rbac_report(admin, f"{CONTROLLER_NS}:{CONTROLLER_SA}", CONTROLLER_NS, TUNING_NS)
    _assert_rbac_matches_expectation(report)
    # The self-signed certificate option, run as docs/install.md says, against this install.
    env = {
        **os.environ,
        "KUBECONFIG": str(dev_cluster.kubeconfig),
        "PATH": f"{dev_cluster.kubectl.parent}:{os.environ['PATH']}",
    }
    script = REPO_ROOT / "hack" / "webhook-self-signed-cert.sh"
    made = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert made.returncode == 0, made.stdout + made.stderr
    secret = admin.get_json("secret", "climatik-webhook-tls", f"--namespace={CONTROLLER_NS}")
    webhook = admin.get_json("mutatingwebhookconfiguration", "climatik-placement")
    ca_bundle = webhook["webhooks"][0]["clientConfig"]["caBundle"]
    assert ca_bundle == secret["data"]["ca.crt"]
    _assert_serving_certificate(secret, f"climatik-controller.{CONTROLLER_NS}.svc")


@pytest.mark.timeout(300)
def test_helm_chart_applies_under_restricted_pod_security(
    dev_cluster: ClusterInfo,
    helm_bin: Path,
    namespace: str,
    installed: list[tuple[Admin, list[Obj]]],
) -> None:
    admin = _admin(dev_cluster)
    admin.run("label", "namespace", namespace, f"{RESTRICTED}=restricted")
    release = f"r{uuid.uuid4().hex[:6]}"
    tuning_ns = f"{namespace}-gpu"
    crds, objs = _split_crds(
        helm_template(helm_bin, release, namespace, f"gpuTuning.namespace={tuning_ns}")
    )
    # The session's other tests use the cluster's CRD: the chart's (the same schema, more
    # labels) is only dry-run here; test_helm_upgrade_updates_the_crd installs one for real.
    _apply(admin, crds, "--dry-run=server", "--force-conflicts")
    installed.append((admin, objs))
    _apply(admin, by_kind(objs, "Namespace"))
    _apply(admin, [o for o in objs if o["kind"] != "Namespace"])
    _assert_admitted_under_restricted(admin, objs)
    sa = one(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    _assert_rbac_matches_expectation(_rbac_report(admin, f"{namespace}:{sa}", namespace, tuning_ns))


# -- the chart at KEDA's level: schema, security contexts, monitoring, CRD upgrades ------------

CHART_CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))


def _ci_values(name: str) -> Obj:
    values: Obj = yaml.safe_load((CHART / "ci" / name).read_text(encoding="utf-8"))
    return values


def _helm_refusal(helm_bin: Path, *argv: str) -> str:
    refused = subprocess.run(
        [str(helm_bin), *argv], capture_output=True, text=True, check=False, timeout=60
    )
    assert refused.returncode != 0, argv
    return refused.stdout + refused.stderr  # lint reports on stdout, template on stderr


def test_helm_chart_lints_with_every_ci_values_file_and_its_schema_refuses_mistakes(
    helm_bin: Path,
) -> None:
    assert {p.name for p in CHART_CI_VALUES} >= {"openshift-values.yaml", "monitoring-values.yaml"}
    for values in CHART_CI_VALUES:
        _run([helm_bin, "lint", "--strict", CHART, "--values", values])
    # values.schema.json: a misspelt key, a value outside its enum, a string for a boolean.
    for bad, where in (
        ("controller.replica=3", "/controller"),
        ("controller.logging.level=verbose", "/controller/logging/level"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("serviceMonitor.enabled=yes", "/serviceMonitor/enabled"),
        ("controller.podSecurityContext.runAsUser=-1", "/controller/podSecurityContext/runAsUser"),
    ):
        stderr = _helm_refusal(helm_bin, "template", "x", str(CHART), "--set", bad)
        assert f"at '{where}'" in stderr, (bad, stderr)
    stderr = _helm_refusal(helm_bin, "lint", str(CHART), "--set", "crds.instal=true")
    assert "additional properties 'instal' not allowed" in stderr, stderr


def test_helm_security_contexts_are_values_with_todays_defaults(helm_bin: Path) -> None:
    def pod_spec(objs: list[Obj]) -> Obj:
        spec: Obj = one(objs, "Deployment")["spec"]["template"]["spec"]
        return spec

    default = pod_spec(helm_template(helm_bin, "climatik", CONTROLLER_NS))
    assert default["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # OpenShift's restricted-v2 picks the ids itself: the values file leaves them out.
    openshift = helm_template(
        helm_bin, "climatik", CONTROLLER_NS, values=_ci_values("openshift-values.yaml")
    )
    assert pod_spec(openshift)["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert "runAsUser" not in json.dumps(pod_spec(openshift))
    _assert_safe(openshift, CONTROLLER_NS)
    # The container's context is a value too.
    custom = pod_spec(
        helm_template(
            helm_bin, "climatik", CONTROLLER_NS, "controller.securityContext.runAsUser=1001"
        )
    )
    assert custom["containers"][0]["securityContext"]["runAsUser"] == 1001
    assert custom["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def _monitoring_objects(objs: list[Obj]) -> list[Obj]:
    return [
        o
        for o in objs
        if o["kind"] in {"ServiceMonitor", "PrometheusRule"}
        or o["metadata"]["name"].endswith("grafana-dashboard")
    ]


def test_helm_monitoring_switches_carry_labels_namespace_and_the_same_rules(
    helm_bin: Path, kubectl_bin: Path
) -> None:
    assert _monitoring_objects(helm_template(helm_bin, "climatik", CONTROLLER_NS)) == []
    values = _ci_values("monitoring-values.yaml")
    argv: list[str | Path] = [helm_bin, "template", "climatik", CHART, "-n", CONTROLLER_NS]
    rendered = _run([*argv, "--values", "-"], stdin=yaml.safe_dump(values))
    objs = _docs(rendered)
    monitor, rule = one(objs, "ServiceMonitor"), one(objs, "PrometheusRule")
    (dashboard,) = [o for o in by_kind(objs, "ConfigMap") if o in _monitoring_objects(objs)]
    for obj in (monitor, rule, dashboard):
        assert obj["metadata"]["namespace"] == "monitoring", obj["kind"]
    for obj in (monitor, rule):
        assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack", obj["kind"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    # The ServiceMonitor finds the controller's Service from the other namespace.
    service = one(objs, "Service")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [CONTROLLER_NS]}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    # The same scrape, rules and dashboard as deploy/monitoring; the rules' text byte for byte.
    kustomized = kustomize(kubectl_bin, MONITORING)
    assert monitor["spec"]["endpoints"] == one(kustomized, "ServiceMonitor")["spec"]["endpoints"]
    assert rule["spec"] == one(kustomized, "PrometheusRule")["spec"]
    assert dashboard["data"] == one(kustomized, "ConfigMap")["data"]
    source = (MONITORING / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert source.split("\nspec:\n", 1)[1] in rendered
    assert "{{ $labels.config }}" in rendered  # Prometheus', not Helm's, templates


def test_helm_crd_is_a_template_behind_crds_install(helm_bin: Path) -> None:
    # Helm installs crds/ once and never upgrades it: the chart must not use it.
    assert not (CHART / "crds").exists()
    (crd,) = by_kind(helm_template(helm_bin, "climatik", CONTROLLER_NS), "CustomResourceDefinition")
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    off = helm_template(helm_bin, "climatik", CONTROLLER_NS, "crds.install=false")
    assert by_kind(off, "CustomResourceDefinition") == []
    (unkept,) = by_kind(
        helm_template(helm_bin, "climatik", CONTROLLER_NS, "crds.keep=false"),
        "CustomResourceDefinition",
    )
    assert "annotations" not in unkept["metadata"]


def _tools_crd_dir() -> Path:
    printed = _run(["bash", REPO_ROOT / "hack" / "tools" / "build.sh", "--print"], timeout=30)
    crd_dir = Path(dict(line.split("=", 1) for line in printed.split())["crd_dir"])
    if not crd_dir.is_dir():
        pytest.fail(f"{crd_dir} is missing: run `bash hack/tools/build.sh`", pytrace=False)
    return crd_dir


@pytest.mark.timeout(300)
def test_every_chart_rendering_passes_the_api_servers_dry_run(
    dev_cluster: ClusterInfo,
    helm_bin: Path,
    namespace: str,
    installed: list[tuple[Admin, list[Obj]]],
) -> None:
    admin = _admin(dev_cluster)
    # The Prometheus Operator's own CRDs (hack/tools/build.sh), so the API server validates the
    # ServiceMonitor and PrometheusRule. They stay: nothing else in the session uses them.
    operator_crds = sorted(_tools_crd_dir().glob("*.yaml"))
    for path in operator_crds:
        admin.run("apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", str(path))
    admin.run(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *(
            f"crd/{_docs(p.read_text(encoding='utf-8'))[0]['metadata']['name']}"
            for p in operator_crds
        ),
    )
    renderings: list[Obj] = [{}, {"webhook": {"certificate": {"mode": "secret"}}}]
    for values_file in CHART_CI_VALUES:
        values = yaml.safe_load(values_file.read_text(encoding="utf-8"))
        for part in ("serviceMonitor", "prometheusRule", "grafanaDashboard"):
            if part in values:
                values[part]["namespace"] = namespace  # `monitoring` does not exist here
        renderings.append(values)
    for i, values in enumerate(renderings):
        tuning = f"{namespace}-g{i}"
        objs = helm_template(
            helm_bin, f"r{i}", namespace, f"gpuTuning.namespace={tuning}", values=values
        )
        namespaces = by_kind(objs, "Namespace")
        installed.append((admin, namespaces))
        _apply(admin, namespaces)  # a dry-run cannot create what the others live in
        rest = [o for o in objs if o["kind"] != "Namespace"]
        _apply(admin, rest, "--dry-run=server", "--force-conflicts")
    assert len(renderings) == 2 + len(CHART_CI_VALUES)


@pytest.mark.timeout(300)
def test_helm_upgrade_updates_the_crd_and_uninstall_keeps_it(
    dev_cluster: ClusterInfo, helm_bin: Path, namespace: str, tmp_path: Path
) -> None:
    admin = _admin(dev_cluster)
    # A copy of the chart whose CRD has a group of its own: the session's CRD is never touched.
    chart = tmp_path / "climatik"
    shutil.copytree(CHART, chart)
    group = f"{namespace}.climatik-test.io"
    (crd_path,) = (chart / "files" / "crds").glob("*.yaml")
    crd_path.write_text(
        crd_path.read_text(encoding="utf-8").replace("powercapping.climatik-project.ai", group),
        encoding="utf-8",
    )
    crd_name = f"powercappingconfigs.{group}"
    env = {
        **os.environ,
        "KUBECONFIG": str(dev_cluster.kubeconfig),
        "HELM_CACHE_HOME": str(tmp_path),
    }
    release = f"r{uuid.uuid4().hex[:6]}"
    small = ["--set", "gpuTuning.enabled=false", "--set", "controller.replicas=0"]

    def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(helm_bin), *args, "--namespace", namespace],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    try:
        # As an older chart left it: the CRD applied from crds/, outside the release.
        admin.run("apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", str(crd_path))
        helm("install", release, str(chart), *small, "--set", "crds.install=false")
        # The next version of the CRD gains a field.
        crd = yaml.safe_load(crd_path.read_text(encoding="utf-8"))
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        schema["properties"]["spec"]["properties"]["upgradeProbe"] = {"type": "string"}
        crd_path.write_text(yaml.safe_dump(crd, sort_keys=False), encoding="utf-8")
        upgrade = ["upgrade", release, str(chart), "--reuse-values", "--set", "crds.install=true"]
        # Helm refuses to take over an object it did not create ...
        refused = helm(*upgrade, check=False)
        assert refused.returncode != 0
        assert "invalid ownership metadata" in refused.stderr, refused.stderr
        # ... until told, as the chart's README says.
        admin.run("label", "crd", crd_name, "app.kubernetes.io/managed-by=Helm")
        admin.run(
            "annotate",
            "crd",
            crd_name,
            f"meta.helm.sh/release-name={release}",
            f"meta.helm.sh/release-namespace={namespace}",
        )
        helm(*upgrade)
        live = admin.get_json("crd", crd_name)
        live_schema = live["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert "upgradeProbe" in live_schema["properties"]["spec"]["properties"]
        assert live["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        # Uninstalling leaves the CRD, and so every config the controller has capped with.
        helm("uninstall", release)
        assert admin.get_json("crd", crd_name)["metadata"]["name"] == crd_name
    finally:
        helm("uninstall", release, "--ignore-not-found", check=False)
        admin.run("delete", "crd", crd_name, "--wait=false", "--ignore-not-found", check=False)


# -- monitoring ------------------------------------------------------------------------------


def _promtool() -> Path:
    return locate_binaries().path("promtool")


def test_alert_rules_pass_promtool_check_and_unit_tests(tmp_path: Path) -> None:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text(encoding="utf-8"))
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    (tmp_path / "alerts-test.yaml").write_text(
        (MONITORING / "alerts-test.yaml").read_text(encoding="utf-8")
    )
    checked = _run([_promtool(), "check", "rules", tmp_path / "rules.yaml"])
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert f"SUCCESS: {len(alerts)} rules found" in checked
    for required in (
        "ClimatikPowerCapExceeded",
        "ClimatikPowerMetricsUnavailable",
        "ClimatikLeaderMissing",
        "ClimatikCarbonSourceStale",
    ):
        assert required in alerts
    _run([_promtool(), "test", "rules", tmp_path / "alerts-test.yaml"])
    # Every alert has at least one unit test that expects it to fire.
    tests = yaml.safe_load((MONITORING / "alerts-test.yaml").read_text(encoding="utf-8"))
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert set(alerts) == fired


def test_monitoring_kustomization_renders(kubectl_bin: Path) -> None:
    objs = kustomize(kubectl_bin, MONITORING)
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == ["ConfigMap", "PrometheusRule", "ServiceMonitor"]
    dashboard = one(objs, "ConfigMap")["data"]["grafana-dashboard.json"]
    assert json.loads(dashboard)["uid"] == "climatik-overview"


# -- examples --------------------------------------------------------------------------------


def test_examples_apply_with_the_real_crds(kubectl: Kubectl) -> None:
    assert EXAMPLES, "no examples found"
    kinds: set[str] = set()
    for path in EXAMPLES:
        objs = _docs(path.read_text(encoding="utf-8"))
        kinds.update(o["kind"] for o in objs)
        # Server-side: the API server validates each object against its CRD (OpenAPI and CEL).
        kubectl.run("apply", "--server-side", "--dry-run=server", "-f", str(path))
    assert {"PowerCappingConfig", "ScaledObject", "InferenceService", "Deployment"} <= kinds


def test_an_invalid_example_edit_is_refused(kubectl: Kubectl) -> None:
    # The dry runs above can fail: the same example with an unknown policy type is refused.
    objs = _docs((REPO_ROOT / "examples" / "vllm-keda.yaml").read_text(encoding="utf-8"))
    config = one(objs, "PowerCappingConfig")
    config["spec"]["policy"]["type"] = "Guess"
    refused = kubectl.run(
        "apply",
        "--server-side",
        "--dry-run=server",
        "-f",
        "-",
        stdin=json.dumps(config),
        check=False,
    )
    assert refused.returncode != 0
    assert "spec.policy.type" in refused.stderr
