"""The kubeconfig is found as kubectl finds it, refused with what to fix, and its context's
namespace becomes the commands' default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from climatik.kube.client import KubeClient
from climatik.kube.kubeconfig import KubeConfigError, current_context


def kubeconfig(
    path: Path, *, current: str | None = "x", namespace: str | None = "team", name: str = "x"
) -> Path:
    context = "{cluster: c, user: u" + (f", namespace: {namespace}" if namespace else "") + "}"
    lines = [
        "apiVersion: v1",
        "kind: Config",
        'clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]',
        "users: [{name: u, user: {token: abc}}]",
        f"contexts: [{{name: {name}, context: {context}}}]",
    ]
    if current is not None:
        lines.append(f"current-context: {current}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def no_ambient_kubeconfig(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


def test_the_current_contexts_namespace_is_the_default(tmp_path: Path) -> None:
    context = current_context(str(kubeconfig(tmp_path / "a")))
    assert (context.name, context.namespace) == ("x", "team")
    assert current_context(str(kubeconfig(tmp_path / "b", namespace=None))).namespace == "default"


def test_kubeconfig_files_merge_as_kubectl_merges_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first file that sets current-context wins; a later file may hold its context."""
    first = kubeconfig(tmp_path / "first", current="y", name="unused")
    second = kubeconfig(tmp_path / "second", current="x", name="y", namespace="prod")
    monkeypatch.setenv(
        "KUBECONFIG", os.pathsep.join([str(tmp_path / "absent"), str(first), str(second)])
    )
    context = current_context(None)
    assert (context.files, context.name, context.namespace) == ((first, second), "y", "prod")


def test_the_default_file_is_used_without_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / ".kube").mkdir()
    kubeconfig(tmp_path / ".kube" / "config", namespace="home")
    assert current_context(None).namespace == "home"


def test_a_current_context_that_is_not_defined_is_refused(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", current="gone")
    with pytest.raises(KubeConfigError) as error:
        current_context(str(path))
    assert str(error.value) == (
        f"kubeconfig {path}: the current-context 'gone' is not among its contexts; "
        "run `kubectl config get-contexts` and `kubectl config use-context NAME`"
    )


async def test_the_client_carries_the_contexts_namespace(tmp_path: Path) -> None:
    client = await KubeClient.from_config(str(kubeconfig(tmp_path / "config")))
    try:
        assert client.default_namespace == "team"
        assert client.server == "https://127.0.0.1:6443"
    finally:
        await client.close()


async def test_a_context_naming_a_missing_cluster_is_refused_in_one_sentence(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config"
    path.write_text(
        "current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n",
        encoding="utf-8",
    )
    with pytest.raises(KubeConfigError) as error:
        await KubeClient.from_config(str(path))
    assert str(error.value) == (
        f"kubeconfig {path} (context 'x') cannot be used: Invalid kube-config file. "
        f"Expected object with name c in {path}/clusters list"
    )
