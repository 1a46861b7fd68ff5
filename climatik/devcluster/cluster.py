"""Bring a real local control plane up and down: etcd, kube-apiserver, controller-manager,
scheduler and kwok as background processes on free 127.0.0.1 ports.

`up` returns only when the API server is ready, the default ServiceAccount exists (so the
controller-manager works), every CRD is Established and every simulated node is Ready and
untainted (so the scheduler can place pods). Add-ons (`keda`: KEDA's operator and metrics
adapter; `kserve`: KServe's controller; `vpa`: VPA's three components, metrics-server and kwok's
resource metrics) start once the CRDs they need are served and are waited
for the same way. Any failure stops what was started and raises DevClusterError carrying the
failing component's log tail. `down` stops every recorded process group and leaves no process
and no listening port behind.
State lives in DIR/cluster.json, written after every start, so `down` can also clean up after
an `up` that died half way.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from climatik.devcluster import components, keda, kserve, vpa
from climatik.devcluster.addon_launch import start_keda, start_kserve, start_vpa
from climatik.devcluster.addons import parse_addons
from climatik.devcluster.apiclient import ApiClient
from climatik.devcluster.binaries import (
    REPO_ROOT,
    KedaBinaries,
    KServeBinaries,
    VpaBinaries,
    locate_binaries,
    locate_keda,
    locate_kserve,
    locate_vpa,
)
from climatik.devcluster.launch import (
    STATE_FILE,
    DevClusterError,
    Launch,
    apply_manifests,
    free_ports,
    healthz_ok,
    plain_http_get,
    write_yaml,
)
from climatik.devcluster.pki import generate_pki
from climatik.devcluster.processes import ProcessRecord, is_alive, stop
from climatik.devcluster.service_proxy import SERVICE_PROXY, service_proxy_args
from climatik.devcluster.topology import KWOK_NODE_LABELS, Topology

__all__ = ["STATE_FILE", "ClusterInfo", "DevClusterError", "down", "read_state", "up"]

OUR_CRD_DIR = REPO_ROOT / "crd"
DEFAULT_TIMEOUT_S = 180.0
_NOT_READY_TAINTS = {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}


@dataclass(frozen=True)
class ClusterInfo:
    """What a caller needs to use a running dev cluster."""

    dir: Path
    kubeconfig: Path
    api_url: str
    bin_dir: Path
    rack_label_key: str
    nodes_by_rack: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    addons: tuple[str, ...] = ()

    @property
    def kubectl(self) -> Path:
        """The kubectl built with the cluster, matching its version."""
        return self.bin_dir / "kubectl"

    @property
    def logs_dir(self) -> Path:
        """Directory with one `<component>.log` per process."""
        return self.dir / "logs"

    def admin_client(self) -> ApiClient:
        """A stdlib JSON client authenticated as the cluster admin (system:masters)."""
        pki = self.dir / "pki"
        return ApiClient(
            "127.0.0.1",
            self.ports["kube-apiserver"],
            ca=pki / "ca.crt",
            cert=pki / "admin.crt",
            key=pki / "admin.key",
        )


def read_state(directory: Path) -> dict[str, Any] | None:
    """The state file of a cluster directory, or None when nothing was started there."""
    try:
        data: dict[str, Any] = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return data


def _records(state: dict[str, Any]) -> list[ProcessRecord]:
    return [ProcessRecord(**p) for p in state.get("processes", [])]


def _info_from_state(directory: Path, state: dict[str, Any]) -> ClusterInfo:
    return ClusterInfo(
        dir=directory,
        kubeconfig=Path(state["kubeconfig"]),
        api_url=state["api_url"],
        bin_dir=Path(state["bin_dir"]),
        rack_label_key=state["rack_label_key"],
        nodes_by_rack={k: tuple(v) for k, v in state["nodes_by_rack"].items()},
        ports=dict(state["ports"]),
        addons=tuple(state.get("addons", ())),
    )


def up(
    directory: Path,
    topology: Topology | None = None,
    *,
    extra_crd_dirs: Sequence[Path] = (OUR_CRD_DIR,),
    addons: Sequence[str] = (),
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Callable[[str], None] | None = None,
    hpa_sync_period_s: float = components.HPA_SYNC_PERIOD_S,
) -> ClusterInfo:
    """Start a fresh dev cluster in `directory` and return once it is ready.

    `addons` names what runs besides the control plane (see `addons.ADDONS`). A cluster running
    there with the same topology and add-ons is reused; one with another topology or other
    add-ons, or a half-dead one, is refused (run `down` first). `hpa_sync_period_s` applies to
    a cluster this call starts.
    """
    directory = directory.resolve()
    topology = topology or Topology()
    addons = parse_addons(",".join(addons))
    state = read_state(directory)
    if state is not None:
        records = _records(state)
        if state.get("status") == "ready" and records and all(is_alive(r) for r in records):
            info = _info_from_state(directory, state)
            wanted = {r.name: tuple(r.node_names()) for r in topology.racks}
            if info.nodes_by_rack != wanted or info.rack_label_key != topology.rack_label_key:
                raise DevClusterError(
                    f"the dev cluster in {directory} runs another topology; run "
                    f"`climatik dev-cluster down --dir {directory}` first"
                )
            if info.addons != addons:
                running = ", ".join(info.addons) or "none"
                raise DevClusterError(
                    f"the dev cluster in {directory} runs other add-ons ({running}); run "
                    f"`climatik dev-cluster down --dir {directory}` first"
                )
            return info
        if any(is_alive(r) for r in records):
            raise DevClusterError(
                f"a dev cluster in {directory} is partly running; run "
                f"`climatik dev-cluster down --dir {directory}` first"
            )
        (directory / STATE_FILE).unlink()

    binaries = locate_binaries()
    keda_binaries = locate_keda() if "keda" in addons else None
    kserve_binaries = locate_kserve() if "kserve" in addons else None
    vpa_binaries = locate_vpa() if "vpa" in addons else None
    directory.mkdir(parents=True, exist_ok=True)
    # Each `up` starts from an empty etcd and a new CA: a dev cluster is disposable.
    for stale in ("etcd", "pki", "logs"):
        shutil.rmtree(directory / stale, ignore_errors=True)
    (directory / "logs").mkdir()

    launch = Launch(directory, binaries, progress)
    try:
        return _bring_up(
            launch,
            topology,
            extra_crd_dirs,
            keda_binaries=keda_binaries,
            kserve_binaries=kserve_binaries,
            vpa_binaries=vpa_binaries,
            deadline=time.monotonic() + timeout_s,
            hpa_sync_period_s=hpa_sync_period_s,
        )
    except BaseException:
        _stop_cluster(launch.records)
        (directory / STATE_FILE).unlink(missing_ok=True)
        raise


def _bring_up(
    launch: Launch,
    topology: Topology,
    extra_crd_dirs: Sequence[Path],
    *,
    keda_binaries: KedaBinaries | None,
    kserve_binaries: KServeBinaries | None,
    vpa_binaries: VpaBinaries | None,
    hpa_sync_period_s: float = components.HPA_SYNC_PERIOD_S,
    deadline: float,
) -> ClusterInfo:
    directory = launch.dir
    addons = [
        name
        for name, built in (
            ("keda", keda_binaries),
            ("kserve", kserve_binaries),
            ("vpa", vpa_binaries),
        )
        if built is not None
    ]
    addon_port_names = (
        *(keda.PORT_NAMES if keda_binaries is not None else ()),
        *(kserve.PORT_NAMES if kserve_binaries is not None else ()),
        *(vpa.PORT_NAMES if vpa_binaries is not None else ()),
    )
    etcd_port, etcd_peer_port, api_port, kcm_port, sched_port, proxy_port, *addon_ports = (
        free_ports(6 + len(addon_port_names))
    )
    ports = {
        "etcd": etcd_port,
        "etcd-peer": etcd_peer_port,
        "kube-apiserver": api_port,
        "kube-controller-manager": kcm_port,
        "kube-scheduler": sched_port,
        SERVICE_PROXY: proxy_port,
        **dict(zip(addon_port_names, addon_ports, strict=True)),
    }
    api_url = f"https://127.0.0.1:{api_port}"
    pki = generate_pki(directory / "pki", service_ip=components.SERVICE_IP)
    kubeconfig = directory / "kubeconfig"
    launch.state.update(
        {
            "api_url": api_url,
            "kubeconfig": str(kubeconfig),
            "bin_dir": str(launch.binaries.bin_dir),
            "version_set": launch.binaries.version_set,
            "rack_label_key": topology.rack_label_key,
            "nodes_by_rack": {r.name: r.node_names() for r in topology.racks},
            "ports": ports,
            "addons": addons,
        }
    )
    write_yaml(
        kubeconfig, components.kubeconfig_for(api_url, pki.ca.cert, pki.admin, "climatik-admin")
    )
    component_kubeconfigs = {
        name: directory / "pki" / f"{name}.kubeconfig"
        for name in ("kube-controller-manager", "kube-scheduler", "kwok")
    }
    for name, pair in (
        ("kube-controller-manager", pki.controller_manager),
        ("kube-scheduler", pki.scheduler),
        ("kwok", pki.kwok),
    ):
        write_yaml(
            component_kubeconfigs[name], components.kubeconfig_for(api_url, pki.ca.cert, pair, name)
        )

    launch.start("etcd", "etcd", components.etcd_args(directory, etcd_port, etcd_peer_port))
    etcd = plain_http_get(etcd_port)
    launch.wait_for("etcd", "/health", lambda: '"health":"true"' in etcd("/health"), deadline)

    launch.start(
        "kube-apiserver", "kube-apiserver", components.apiserver_args(pki, api_port, etcd_port)
    )
    # Generous per-request timeout: listing CRDs returns KServe's 2 MB schema.
    api = ApiClient(
        "127.0.0.1", api_port, ca=pki.ca.cert, cert=pki.admin.cert, key=pki.admin.key, timeout_s=20
    )
    launch.wait_for("kube-apiserver", "/readyz", lambda: api.get("/readyz").status == 200, deadline)

    # In-cluster Service names for the add-ons' processes (KEDA's scalers) and the user's.
    proxy_args = service_proxy_args(
        api_port, pki.ca.cert, pki.admin.cert, pki.admin.key, proxy_port
    )
    launch.start(SERVICE_PROXY, Path(sys.executable), proxy_args)
    proxy = plain_http_get(proxy_port)
    launch.wait_for(SERVICE_PROXY, "/healthz", lambda: proxy("/healthz") == "ok", deadline)

    kcm_kc = component_kubeconfigs["kube-controller-manager"]
    launch.start(
        "kube-controller-manager",
        "kube-controller-manager",
        components.kcm_args(pki, kcm_kc, kcm_port, hpa_sync_period_s),
    )
    sched_kc = component_kubeconfigs["kube-scheduler"]
    launch.start(
        "kube-scheduler", "kube-scheduler", components.scheduler_args(sched_kc, sched_port)
    )
    kwok_args = components.kwok_args(component_kubeconfigs["kwok"], launch.binaries.kwok_stages)
    if vpa_binaries is not None:  # kwok plays the kubelets' resource metrics for metrics-server
        kwok_args += vpa.kwok_args(vpa_binaries.kwok_metrics, ports["kwok-server"])
    launch.start("kwok", "kwok", kwok_args)

    # Nodes first: kwok and the node lifecycle controller get to work while CRDs are applied.
    node_annotations = vpa.node_annotations if vpa_binaries is not None else None
    for node in topology.node_manifests(node_annotations):
        resp = api.post("/api/v1/nodes", node)
        if resp.status not in {201, 409}:
            raise launch.fail("kube-apiserver", f"creating node {node['metadata']['name']}: {resp}")
    launch.note(f"kube-apiserver: created {len(topology.node_names())} nodes")

    crd_files = [*launch.binaries.third_party_crds()]
    # KEDA's operator needs all six of its CRDs, KServe's controller five of its own; the
    # ScaledObject's and the InferenceService's are already among the above.
    for addon_crds in (
        keda_binaries.crds() if keda_binaries is not None else [],
        kserve_binaries.crds() if kserve_binaries is not None else [],
    ):
        present = {p.name for p in crd_files}
        crd_files += [p for p in addon_crds if p.name not in present]
    for crd_dir in extra_crd_dirs:
        if crd_dir.is_dir():
            crd_files += sorted(p for p in crd_dir.iterdir() if p.suffix in {".yaml", ".yml"})
    crd_names = apply_manifests(launch, kubeconfig, crd_files)
    launch.note(f"kubectl: applied {len(crd_names)} CRDs from {len(crd_files)} files")

    for name, port in (("kube-controller-manager", kcm_port), ("kube-scheduler", sched_port)):
        launch.wait_for(name, "/healthz", healthz_ok(port), deadline)
    launch.wait_for(
        "kube-controller-manager",
        "the default ServiceAccount",
        lambda: api.get("/api/v1/namespaces/default/serviceaccounts/default").status == 200,
        deadline,
    )
    endpoints = _crd_endpoints(api, crd_names)
    launch.wait_for(
        "kube-apiserver",
        f"{len(endpoints)} custom resource endpoints served",
        lambda: all(_served(api, e) for e in endpoints),
        deadline,
    )
    if keda_binaries is not None:
        start_keda(launch, keda_binaries, pki, api, deadline)
    if kserve_binaries is not None:
        start_kserve(launch, kserve_binaries, pki, deadline)
    if vpa_binaries is not None:
        start_vpa(launch, vpa_binaries, pki, api, deadline)
    expected = set(topology.node_names())
    launch.wait_for(
        "kwok",
        f"{len(expected)} kwok nodes Ready without not-ready taints",
        lambda: _nodes_ready(api, expected),
        deadline,
    )
    launch.state["status"] = "ready"
    launch.save()
    return _info_from_state(directory, launch.state)


def _crd_endpoints(api: ApiClient, names: Sequence[str]) -> list[str]:
    """List paths of every served version of the named CRDs, as stored by the API server."""
    resp = api.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
    if resp.status != 200:
        raise DevClusterError(f"listing CRDs failed: {resp}", component="kube-apiserver")
    wanted = set(names)
    return [
        f"/apis/{crd['spec']['group']}/{version['name']}/{crd['spec']['names']['plural']}?limit=1"
        for crd in resp.body["items"]
        if crd["metadata"]["name"] in wanted
        for version in crd["spec"]["versions"]
        if version.get("served", True)
    ]


def _served(api: ApiClient, endpoint: str) -> bool:
    # Listing the custom resource, not reading the CRD's Established condition: KServe's CRD
    # is 2 MB of JSON, and a 200 here is what users of the CRD actually need.
    return api.get(endpoint).status == 200


def _nodes_ready(api: ApiClient, expected: set[str]) -> bool:
    selector = ",".join(f"{k}={v}" for k, v in KWOK_NODE_LABELS.items())
    resp = api.get(f"/api/v1/nodes?labelSelector={urllib.parse.quote(selector)}")
    if resp.status != 200:
        return False
    ready = set()
    for node in resp.body.get("items", []):
        conditions = node.get("status", {}).get("conditions", [])
        is_ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        taints = {t["key"] for t in node.get("spec", {}).get("taints", []) or []}
        if is_ready and not taints & _NOT_READY_TAINTS:
            ready.add(node["metadata"]["name"])
    return expected <= ready


# Clients of the API server stop first, then the API server, then etcd: each stops quickly
# when what it talks to is still there, and slowly (retrying) when it is gone.
_STOP_TIERS = (("kube-apiserver",), ("etcd",))


def _stop_cluster(records: Sequence[ProcessRecord]) -> list[ProcessRecord]:
    """Stop all components tier by tier; return the processes that survived."""
    last = {name for tier in _STOP_TIERS for name in tier}
    tiers = [[r for r in records if r.component not in last]]
    tiers += [[r for r in records if r.component in tier] for tier in _STOP_TIERS]
    survivors: list[ProcessRecord] = []
    for tier in tiers:
        if tier:
            survivors += stop(tier)
    return survivors


def down(directory: Path) -> list[str]:
    """Stop every process recorded in `directory`; return the components that were running.

    Raises DevClusterError naming any process that survived SIGKILL.
    """
    directory = directory.resolve()
    state = read_state(directory)
    if state is None:
        return []
    records = _records(state)
    running = [r.component for r in records if is_alive(r)]
    survivors = _stop_cluster(records)
    if survivors:
        names = ", ".join(f"{r.component} (pid {r.pid})" for r in survivors)
        raise DevClusterError(f"processes survived SIGKILL: {names}")
    (directory / STATE_FILE).unlink(missing_ok=True)
    return running
