"""`climatik explain` against a real API server: the kubeconfig context's namespace is the
default, and a config that is not there is one line saying where it looked."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import Kubectl
from tests.integration.helpers.workloads import API


def explain(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "climatik", "explain", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_explain_reads_the_contexts_namespace_without_n(
    kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    kubectl.apply(
        {
            "apiVersion": API,
            "kind": "PowerCappingConfig",
            "metadata": {"name": "cap"},
            "spec": {"powerCapLimit": 1500, "deploymentName": "llm"},
        }
    )
    config = tmp_path / "kubeconfig"
    shutil.copy(kubectl.kubeconfig, config)
    own = Kubectl(kubectl.binary, config, namespace)
    own.run("config", "set-context", "--current", f"--namespace={namespace}")

    found = await asyncio.to_thread(explain, "cap", "--kubeconfig", str(config))
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines()[:2] == [
        f"PowerCappingConfig {namespace}/cap",
        "  Cap: 1500 W (powerCapLimit), policy Headroom.",
    ]

    missing = await asyncio.to_thread(explain, "nope", "--kubeconfig", str(config))
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        f"climatik explain: no PowerCappingConfig 'nope' in namespace '{namespace}'; "
        "`kubectl get pcc -A` lists them"
    ]
