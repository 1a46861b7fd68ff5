"""The same test cluster on machines with a Docker engine: k3s through testcontainers.

Set `CLIMATIK_TEST_CLUSTER=k3s` to run the integration tier against a k3s container instead of
the control plane `hack/control-plane/build.sh` builds. Our kwok binary (from that build) joins
the k3s API server to simulate the same GPU nodes in racks, and the same CRDs are applied, so
tests see the same cluster shape either way. This machine has no Docker engine; the path is
kept for machines that do.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from climatik.devcluster.binaries import locate_binaries
from climatik.devcluster.cluster import OUR_CRD_DIR, ClusterInfo
from climatik.devcluster.topology import KWOK_NODE_LABELS, Topology

ENV_CLUSTER = "CLIMATIK_TEST_CLUSTER"
K3S_IMAGE = "rancher/k3s:v1.33.5-k3s1"


def wanted() -> bool:
    """True when the integration tier should use k3s instead of the built control plane."""
    return os.environ.get(ENV_CLUSTER, "").lower() == "k3s"


@contextmanager
def k3s_cluster(directory: Path, topology: Topology) -> Iterator[ClusterInfo]:
    """A k3s API server with kwok's simulated nodes and our CRDs, removed at the end."""
    from testcontainers.community.k3s import K3SContainer  # noqa: PLC0415 - Docker only

    binaries = locate_binaries()
    kubectl = str(binaries.path("kubectl"))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "logs").mkdir(exist_ok=True)
    try:
        container = K3SContainer(image=K3S_IMAGE).start()
    except Exception as error:  # docker's errors have no common base worth naming here
        msg = f"{ENV_CLUSTER}=k3s needs a reachable Docker engine: {error}"
        raise RuntimeError(msg) from error
    with container as k3s:
        kubeconfig = directory / "kubeconfig"
        kubeconfig.write_text(k3s.config_yaml())

        def run(*args: str, stdin: str | None = None) -> str:
            done = subprocess.run(
                [kubectl, f"--kubeconfig={kubeconfig}", *args],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
            return done.stdout

        with (directory / "logs" / "kwok.log").open("wb") as log:
            kwok = subprocess.Popen(
                [
                    str(binaries.path("kwok")),
                    f"--kubeconfig={kubeconfig}",
                    f"--config={binaries.kwok_stages}",
                    "--manage-all-nodes=false",
                    "--manage-nodes-with-label-selector="
                    + ",".join(f"{k}={v}" for k, v in KWOK_NODE_LABELS.items()),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            for node in topology.node_manifests():
                run("apply", "-f", "-", stdin=json.dumps(node))
            crds = [*binaries.third_party_crds(), *sorted(OUR_CRD_DIR.glob("*.yaml"))]
            for crd in crds:
                run("apply", "--server-side", "-f", str(crd))
            run("wait", "--for=condition=Established", "crd", "--all", "--timeout=120s")
            selector = ",".join(f"{k}={v}" for k, v in KWOK_NODE_LABELS.items())
            run("wait", "--for=condition=Ready", "node", "-l", selector, "--timeout=120s")
            time.sleep(2)  # let discovery catch up with the new CRDs
            yield ClusterInfo(
                dir=directory,
                kubeconfig=kubeconfig,
                api_url=f"https://{k3s.get_container_host_ip()}:"
                f"{k3s.get_exposed_port(K3SContainer.KUBE_SECURE_PORT)}",
                bin_dir=binaries.bin_dir,
                rack_label_key=topology.rack_label_key,
                nodes_by_rack={r.name: tuple(r.node_names()) for r in topology.racks},
            )
        finally:
            kwok.terminate()
            kwok.wait(timeout=10)
