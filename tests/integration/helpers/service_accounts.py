"""Running controllers as the installers' ServiceAccounts, with exactly the installers' RBAC.

A kustomization is rendered by the cluster's kubectl; its RBAC objects are moved into a test's
namespaces (cluster-scoped ones get a suffix, so the session's other tests never meet them) and
applied as the administrator; a kubeconfig with a real bound token then authenticates as the
ServiceAccount, so every call the controllers make is authorized as it would be when deployed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from climatik.devcluster.cluster import ClusterInfo
from tests.integration.conftest import Kubectl

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
CONTROLLER_SA = "climatik-controller"

Obj = dict[str, Any]


def render(dev_cluster: ClusterInfo, source: Path) -> list[Obj]:
    """A kustomization's objects, as `kubectl kustomize` renders them."""
    rendered = subprocess.run(
        [str(dev_cluster.kubectl), "kustomize", str(source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [o for o in yaml.safe_load_all(rendered) if isinstance(o, dict)]


def moved_rbac(
    rendered: list[Obj],
    names: set[tuple[str, str]],
    moves: dict[str, str],
    suffix: str,
) -> list[Obj]:
    """The rendering's objects of these (kind, name)s, all of which must be there, moved into
    the test's namespaces (`moves`: installed namespace -> test namespace)."""
    objs = [o for o in rendered if (o["kind"], o["metadata"]["name"]) in names]
    found = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert found == names, "the installer no longer renders the RBAC objects named here"
    for obj in objs:
        meta = obj["metadata"]
        if obj["kind"].startswith("Cluster"):
            meta["name"] = f"{meta['name']}-{suffix}"
        if "namespace" in meta:
            meta["namespace"] = moves[meta["namespace"]]
        if obj.get("roleRef", {}).get("kind") == "ClusterRole":
            obj["roleRef"]["name"] = f"{obj['roleRef']['name']}-{suffix}"
        for subject in obj.get("subjects", []):
            subject["namespace"] = moves[subject["namespace"]]
    return objs


def apply_all(dev_cluster: ClusterInfo, objs: list[Obj], default_namespace: str) -> None:
    """Apply as the administrator (kubectl refuses an object of another namespace than its
    own flag, so each goes with its own)."""
    for obj in objs:
        own = obj["metadata"].get("namespace", default_namespace)
        Kubectl(dev_cluster.kubectl, dev_cluster.kubeconfig, own).apply(obj)


def token_kubeconfig(admin: Kubectl, account: str, namespace: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount with a real bound token."""
    token = admin.run("create", "token", account, f"--namespace={namespace}").stdout.strip()
    cluster = yaml.safe_load(admin.kubeconfig.read_text(encoding="utf-8"))["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": cluster["name"], "user": account}}],
        "current-context": account,
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def delete_cluster_scoped(admin: Kubectl, objs: list[Obj]) -> None:
    """The namespaced objects go with the test's namespaces; these would outlive them."""
    for obj in objs:
        if obj["kind"].startswith("Cluster"):
            admin.run(
                "delete", obj["kind"].lower(), obj["metadata"]["name"], "--wait=false", check=False
            )
