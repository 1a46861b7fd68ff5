"""Find and check the kubeconfig before kubernetes-asyncio loads it.

kubernetes-asyncio reads a missing file as an empty config ("Expected key current-context"),
and a file that is not a mapping as a ``TypeError``. This module finds the files the way
kubectl does (``--kubeconfig``, else every file in ``$KUBECONFIG``, else ``~/.kube/config``),
checks that they parse and name a current context, and says what to do when they do not. It also
reads the current context's namespace, the default of commands such as ``climatik explain``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from climatik.domain.errors import UserError, describe_yaml_error

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class KubeConfigError(UserError):
    """No usable kubeconfig; the message names the file and what to change."""


@dataclass(frozen=True)
class KubeContext:
    """What the current context selects, as far as Climatik's commands care."""

    files: tuple[Path, ...]
    name: str
    namespace: str


def kubeconfig_files(explicit: str | None) -> list[Path]:
    """The files kubectl would read, in its order; an explicit path must exist."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            msg = f"kubeconfig {explicit} does not exist; pass an existing file to --kubeconfig"
            raise KubeConfigError(msg)
        return [path]
    listed = [Path(p).expanduser() for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        found = [path for path in listed if path.is_file()]
        if not found:
            names = ", ".join(map(str, listed))
            msg = (
                f"no kubeconfig: none of the files in $KUBECONFIG exists ({names}); "
                "fix KUBECONFIG or pass --kubeconfig FILE"
            )
            raise KubeConfigError(msg)
        return found
    default = Path("~/.kube/config").expanduser()
    if not default.is_file():
        msg = (
            f"no kubeconfig: $KUBECONFIG is not set and {default} does not exist; "
            "pass --kubeconfig FILE, set KUBECONFIG, or run inside a pod"
        )
        raise KubeConfigError(msg)
    return [default]


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as stream:
            data = yaml.safe_load(stream)
    except OSError as error:
        msg = f"cannot read kubeconfig {path}: {error.strerror}"
        raise KubeConfigError(msg) from error
    except yaml.YAMLError as error:
        msg = f"kubeconfig is not valid YAML: {describe_yaml_error(error, str(path))}"
        raise KubeConfigError(msg) from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        msg = (
            f"kubeconfig {path} is not a kubeconfig (a YAML mapping with clusters, users and "
            "contexts); point --kubeconfig or KUBECONFIG at the file kubectl uses"
        )
        raise KubeConfigError(msg)
    return data


def current_context(explicit: str | None) -> KubeContext:
    """Check the kubeconfig files and return the current context (kubectl's merge: the first
    file that sets a value wins)."""
    files = kubeconfig_files(explicit)
    documents = [_read(path) for path in files]
    name = next((str(d["current-context"]) for d in documents if d.get("current-context")), "")
    where = ", ".join(map(str, files))
    if not name:
        msg = (
            f"kubeconfig {where} sets no current-context; "
            "run `kubectl config use-context NAME` or `kubectl config get-contexts` to list them"
        )
        raise KubeConfigError(msg)
    for document in documents:
        for entry in document.get("contexts") or []:
            if isinstance(entry, dict) and entry.get("name") == name:
                context = entry.get("context") or {}
                namespace = context.get("namespace") if isinstance(context, dict) else None
                return KubeContext(tuple(files), name, str(namespace or "default"))
    msg = (
        f"kubeconfig {where}: the current-context {name!r} is not among its contexts; "
        "run `kubectl config get-contexts` and `kubectl config use-context NAME`"
    )
    raise KubeConfigError(msg)


def in_cluster_namespace() -> str:
    """The pod's own namespace, from its service account (``default`` outside a pod)."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip() or "default"
    except OSError:
        return "default"
