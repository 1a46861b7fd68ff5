"""Fixtures for tests against the real local control plane (`climatik dev-cluster`).

One cluster per session (start-up costs tens of seconds on a small machine), one namespace per
test so tests cannot see each other's objects, and on failure the tail of every component's log
is attached to the test report, because "pod never became Running" is only debuggable with the
scheduler's and kwok's side of the story.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from climatik.devcluster.binaries import (
    BinariesMissingError,
    locate_binaries,
    locate_keda,
    locate_kserve,
    locate_vpa,
)
from climatik.devcluster.cluster import ClusterInfo, down, up
from climatik.devcluster.processes import tail
from climatik.devcluster.topology import Rack, Topology
from climatik.kube.client import KubeClient
from tests.integration.helpers import k3s

# The fixture's cluster: 2 racks x 4 nodes x 8 GPUs, the `up` default.
SESSION_TOPOLOGY = Topology(racks=(Rack(name="rack-a", nodes=4), Rack(name="rack-b", nodes=4)))

# Log directories whose tails go into a failing test's report: each session cluster's (by the
# name of its fixture) for tests that use it, plus those of clusters a test brings up itself
# (see `cluster_dir`).
_SESSION_LOGS_KEY = pytest.StashKey[dict[str, Path]]()
_ITEM_LOGS_KEY = pytest.StashKey[list[Path]]()


@pytest.fixture(scope="session")
def dev_cluster(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[ClusterInfo]:
    """A real control plane shared by the session, torn down at its end.

    With `CLIMATIK_TEST_CLUSTER=k3s` (machines with a Docker engine) the API server is k3s in a
    container instead of the one `hack/control-plane/build.sh` builds; see
    tests/integration/helpers/k3s.py.
    """
    try:
        locate_binaries()
    except BinariesMissingError as exc:
        pytest.fail(str(exc), pytrace=False)
    directory = tmp_path_factory.mktemp("dev-cluster")
    if k3s.wanted():
        with k3s.k3s_cluster(directory, SESSION_TOPOLOGY) as info:
            yield info
        return
    pytestconfig.stash.setdefault(_SESSION_LOGS_KEY, {})["dev_cluster"] = directory / "logs"
    with _session_cluster(directory) as info:
        yield info


@pytest.fixture(scope="session")
def keda_dev_cluster(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[ClusterInfo]:
    """A session cluster that also runs KEDA's operator and metrics adapter (`up --with keda`).

    Its own cluster, so tests that do not need KEDA never wait for it, and KEDA's HPAs never
    scale what other tests create. Built by `hack/control-plane/build.sh --with keda`.
    """
    try:
        locate_binaries()
        locate_keda()
    except BinariesMissingError as exc:
        pytest.fail(str(exc), pytrace=False)
    directory = tmp_path_factory.mktemp("keda-dev-cluster")
    pytestconfig.stash.setdefault(_SESSION_LOGS_KEY, {})["keda_dev_cluster"] = directory / "logs"
    with _session_cluster(directory, addons=("keda",)) as info:
        yield info


@pytest.fixture(scope="session")
def kserve_dev_cluster(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[ClusterInfo]:
    """A session cluster that runs KServe's controller beside KEDA (`up --with keda,kserve`).

    Its own cluster, for the same reasons as `keda_dev_cluster`, and because KServe's webhooks
    fail closed: no other test's pods or objects should depend on KServe running. Built by
    `hack/control-plane/build.sh --with keda,kserve`.
    """
    try:
        locate_binaries()
        locate_keda()
        locate_kserve()
    except BinariesMissingError as exc:
        pytest.fail(str(exc), pytrace=False)
    directory = tmp_path_factory.mktemp("kserve-dev-cluster")
    pytestconfig.stash.setdefault(_SESSION_LOGS_KEY, {})["kserve_dev_cluster"] = directory / "logs"
    with _session_cluster(directory, addons=("keda", "kserve")) as info:
        yield info


@pytest.fixture(scope="session")
def vpa_dev_cluster(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[ClusterInfo]:
    """A session cluster that runs VPA's three components and metrics-server (`up --with vpa`).

    Its own cluster, so VPA's updater never evicts what other tests create and no other test
    waits for it. Built by `hack/control-plane/build.sh --with vpa`.
    """
    try:
        locate_binaries()
        locate_vpa()
    except BinariesMissingError as exc:
        pytest.fail(str(exc), pytrace=False)
    directory = tmp_path_factory.mktemp("vpa-dev-cluster")
    pytestconfig.stash.setdefault(_SESSION_LOGS_KEY, {})["vpa_dev_cluster"] = directory / "logs"
    with _session_cluster(directory, addons=("vpa",)) as info:
        yield info


@contextmanager
def _session_cluster(directory: Path, addons: Sequence[str] = ()) -> Iterator[ClusterInfo]:
    try:
        info = up(directory, SESSION_TOPOLOGY, addons=addons)
    except Exception:
        down(directory)
        raise
    try:
        yield info
    finally:
        down(directory)


@dataclass(frozen=True)
class Kubectl:
    """The cluster's own kubectl, bound to its kubeconfig and a test namespace."""

    binary: Path
    kubeconfig: Path
    namespace: str

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl in the test namespace; raise with its output when `check` and it fails."""
        argv = [
            str(self.binary),
            f"--kubeconfig={self.kubeconfig}",
            f"--namespace={self.namespace}",
        ]
        result = subprocess.run(
            [*argv, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def apply(self, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        """Create or update one object from a dict."""
        return self.run("apply", "-f", "-", stdin=json.dumps(manifest))

    def get_json(self, *args: str) -> Any:
        """`kubectl get ... -o json`, decoded."""
        return json.loads(self.run("get", *args, "-o", "json").stdout)


@pytest.fixture
def cluster_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A directory for a cluster the test brings up itself; `down` runs on it at teardown."""
    directory = tmp_path / "cluster"
    request.node.stash.setdefault(_ITEM_LOGS_KEY, []).append(directory / "logs")
    yield directory
    down(directory)


@pytest.fixture
async def client(dev_cluster: ClusterInfo) -> AsyncIterator[KubeClient]:
    """A kube client of the session's dev cluster, closed afterwards."""
    kube = await KubeClient.from_config(str(dev_cluster.kubeconfig))
    yield kube
    await kube.close()


@pytest.fixture
def namespace(dev_cluster: ClusterInfo) -> Generator[str, None, None]:
    """A fresh namespace per test, deleted afterwards without waiting for finalization."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kubectl = Kubectl(dev_cluster.kubectl, dev_cluster.kubeconfig, "default")
    kubectl.run("create", "namespace", name)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def kubectl(dev_cluster: ClusterInfo, namespace: str) -> Kubectl:
    """kubectl bound to this test's namespace."""
    return Kubectl(dev_cluster.kubectl, dev_cluster.kubeconfig, namespace)


def _fresh_namespace(cluster: ClusterInfo) -> Iterator[Kubectl]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    admin = Kubectl(cluster.kubectl, cluster.kubeconfig, "default")
    admin.run("create", "namespace", name)
    yield Kubectl(cluster.kubectl, cluster.kubeconfig, name)
    admin.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def keda_kubectl(keda_dev_cluster: ClusterInfo) -> Iterator[Kubectl]:
    """kubectl bound to a fresh namespace of the KEDA cluster, deleted afterwards."""
    yield from _fresh_namespace(keda_dev_cluster)


@pytest.fixture
def kserve_kubectl(kserve_dev_cluster: ClusterInfo) -> Iterator[Kubectl]:
    """kubectl bound to a fresh namespace of the KServe cluster, deleted afterwards."""
    yield from _fresh_namespace(kserve_dev_cluster)


@pytest.fixture
def vpa_kubectl(vpa_dev_cluster: ClusterInfo) -> Iterator[Kubectl]:
    """kubectl bound to a fresh namespace of the VPA cluster, deleted afterwards."""
    yield from _fresh_namespace(vpa_dev_cluster)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach each component's log tail to a failing integration test's report."""
    report = yield
    if not report.failed:
        return report
    dirs: list[Path] = [*item.stash.get(_ITEM_LOGS_KEY, [])]
    fixtures = getattr(item, "fixturenames", ())
    for fixture, session_logs in item.config.stash.get(_SESSION_LOGS_KEY, {}).items():
        if fixture in fixtures:
            dirs.append(session_logs)
    for logs in dirs:
        for log in sorted(logs.glob("*.log")):
            report.sections.append((f"{log.parent.parent.name}/{log.name}", tail(log, 30)))
    return report


def wait_until(
    what: str, check: Callable[[], bool], *, timeout_s: float = 60.0, interval_s: float = 0.5
) -> None:
    """Poll `check` until it is true; fail the test naming `what` on timeout."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)
