"""Bring a real local control plane up and down: etcd, kube-apiserver, controller-manager,
scheduler and kwok as background processes on free 127.0.0.1 ports.

`up` returns only when the API server is ready, the default ServiceAccount exists (so the
controller-manager works), every CRD is Established and every simulated node is Ready and
untainted (so the scheduler can place pods). Add-ons (`keda`: KEDA's operator and metrics
adapter; `kserve`: KServe's controller) start once the CRDs they need are served and are waited
for the same way. Any failure stops what was started and raises DevClusterError carrying the
failing component's log tail. `down` stops every recorded process group and leaves no process
and no listening port behind.
State lives in DIR/cluster.json, written after every start, so `down` can also clean up after
an `up` that died half way.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from climatik.devcluster import components, keda, kserve
from climatik.devcluster.addons import parse_addons
from climatik.devcluster.apiclient import ApiClient
from climatik.devcluster.binaries import (
    REPO_ROOT,
    ControlPlaneBinaries,
    KedaBinaries,
    KServeBinaries,
    locate_binaries,
    locate_keda,
    locate_kserve,
)
from climatik.devcluster.pki import ClusterPKI, generate_addon_pki, generate_pki
from climatik.devcluster.processes import ProcessRecord, exit_code, is_alive, spawn, stop, tail
from climatik.devcluster.topology import KWOK_NODE_LABELS, Topology

STATE_FILE = "cluster.json"
OUR_CRD_DIR = REPO_ROOT / "crd"
DEFAULT_TIMEOUT_S = 180.0
_NOT_READY_TAINTS = {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}


class DevClusterError(RuntimeError):
    """`up` or `down` failed; `str()` names the component and includes its log tail."""

    def __init__(self, message: str, *, component: str | None = None, log_tail: str = "") -> None:
        """Keep the component and its log tail for callers that print them separately."""
        self.component = component
        self.log_tail = log_tail
        text = message
        if component is not None:
            text = f"{component}: {message}"
        if log_tail:
            text += f"\n--- last lines of {component} log ---\n{log_tail}"
        super().__init__(text)


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


def _free_ports(count: int) -> list[int]:
    """Ask the kernel for distinct free loopback ports (held together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _write_yaml(path: Path, data: object) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    path.chmod(0o600)


class _Launch:
    """One `up` in progress: started processes, their logs and the state file."""

    def __init__(
        self,
        directory: Path,
        binaries: ControlPlaneBinaries,
        progress: Callable[[str], None] | None,
    ) -> None:
        self.dir = directory
        self.binaries = binaries
        self.records: list[ProcessRecord] = []
        self.state: dict[str, Any] = {"status": "starting", "processes": [], "timings_s": {}}
        self._progress = progress
        self._started = time.monotonic()

    def note(self, step: str) -> None:
        """Record how long into `up` a step finished, and report it."""
        elapsed = round(time.monotonic() - self._started, 2)
        self.state["timings_s"][step] = elapsed
        if self._progress is not None:
            self._progress(f"[{elapsed:5.1f}s] {step}")

    def log_path(self, component: str) -> Path:
        return self.dir / "logs" / f"{component}.log"

    def save(self) -> None:
        self.state["processes"] = [asdict(r) for r in self.records]
        tmp = self.dir / f"{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(self.state, indent=2), encoding="utf-8")
        tmp.replace(self.dir / STATE_FILE)

    def start(
        self,
        component: str,
        binary: str | Path,
        args: Sequence[str],
        env: dict[str, str] | None = None,
    ) -> None:
        """Start a control-plane binary by name, or any executable by path."""
        executable = binary if isinstance(binary, Path) else self.binaries.path(binary)
        record = spawn(
            component,
            [str(executable), *args],
            log_path=self.log_path(component),
            cwd=self.dir,
            env={**_component_env(), **(env or {})},
        )
        self.records.append(record)
        self.save()

    def fail(self, component: str, message: str) -> DevClusterError:
        return DevClusterError(
            message, component=component, log_tail=tail(self.log_path(component))
        )

    def check_running(self) -> None:
        """Raise for the first component that exited early, with its log."""
        for record in self.records:
            if not is_alive(record):
                code = exit_code(record)
                status = f" with status {code}" if code is not None else ""
                raise self.fail(record.component, f"exited during start-up{status}")

    def wait_for(
        self, component: str, what: str, ready: Callable[[], bool], deadline: float
    ) -> None:
        """Poll `ready` until true; fail on timeout or when any component dies."""
        last_error = ""
        while True:
            self.check_running()
            try:
                if ready():
                    self.note(f"{component}: {what}")
                    return
            except OSError as exc:  # not listening yet, connection reset, TLS not ready
                last_error = f" (last error: {exc})"
            if time.monotonic() > deadline:
                raise self.fail(component, f"timed out waiting for {what}{last_error}")
            time.sleep(0.25)


def _component_env() -> dict[str, str]:
    # A KUBECONFIG from the caller's shell must never steer a component to another cluster.
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.setdefault("HOME", str(Path.home()))
    return env


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
) -> ClusterInfo:
    """Start a fresh dev cluster in `directory` and return once it is ready.

    `addons` names what runs besides the control plane (see `addons.ADDONS`). A cluster running
    there with the same topology and add-ons is reused; one with another topology or other
    add-ons, or a half-dead one, is refused (run `down` first).
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
    directory.mkdir(parents=True, exist_ok=True)
    # Each `up` starts from an empty etcd and a new CA: a dev cluster is disposable.
    for stale in ("etcd", "pki", "logs"):
        shutil.rmtree(directory / stale, ignore_errors=True)
    (directory / "logs").mkdir()

    launch = _Launch(directory, binaries, progress)
    try:
        return _bring_up(
            launch,
            topology,
            extra_crd_dirs,
            keda_binaries=keda_binaries,
            kserve_binaries=kserve_binaries,
            deadline=time.monotonic() + timeout_s,
        )
    except BaseException:
        _stop_cluster(launch.records)
        (directory / STATE_FILE).unlink(missing_ok=True)
        raise


def _bring_up(
    launch: _Launch,
    topology: Topology,
    extra_crd_dirs: Sequence[Path],
    *,
    keda_binaries: KedaBinaries | None,
    kserve_binaries: KServeBinaries | None,
    deadline: float,
) -> ClusterInfo:
    directory = launch.dir
    addons = [
        name
        for name, built in (("keda", keda_binaries), ("kserve", kserve_binaries))
        if built is not None
    ]
    addon_port_names = (
        *(keda.PORT_NAMES if keda_binaries is not None else ()),
        *(kserve.PORT_NAMES if kserve_binaries is not None else ()),
    )
    etcd_port, etcd_peer_port, api_port, kcm_port, sched_port, *addon_ports = _free_ports(
        5 + len(addon_port_names)
    )
    ports = {
        "etcd": etcd_port,
        "etcd-peer": etcd_peer_port,
        "kube-apiserver": api_port,
        "kube-controller-manager": kcm_port,
        "kube-scheduler": sched_port,
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
    _write_yaml(
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
        _write_yaml(
            component_kubeconfigs[name], components.kubeconfig_for(api_url, pki.ca.cert, pair, name)
        )

    launch.start("etcd", "etcd", components.etcd_args(directory, etcd_port, etcd_peer_port))
    etcd = _plain_http_get(etcd_port)
    launch.wait_for("etcd", "/health", lambda: '"health":"true"' in etcd("/health"), deadline)

    launch.start(
        "kube-apiserver", "kube-apiserver", components.apiserver_args(pki, api_port, etcd_port)
    )
    # Generous per-request timeout: listing CRDs returns KServe's 2 MB schema.
    api = ApiClient(
        "127.0.0.1", api_port, ca=pki.ca.cert, cert=pki.admin.cert, key=pki.admin.key, timeout_s=20
    )
    launch.wait_for("kube-apiserver", "/readyz", lambda: api.get("/readyz").status == 200, deadline)

    kcm_kc = component_kubeconfigs["kube-controller-manager"]
    launch.start(
        "kube-controller-manager",
        "kube-controller-manager",
        components.kcm_args(pki, kcm_kc, kcm_port),
    )
    sched_kc = component_kubeconfigs["kube-scheduler"]
    launch.start(
        "kube-scheduler", "kube-scheduler", components.scheduler_args(sched_kc, sched_port)
    )
    launch.start(
        "kwok",
        "kwok",
        components.kwok_args(component_kubeconfigs["kwok"], launch.binaries.kwok_stages),
    )

    # Nodes first: kwok and the node lifecycle controller get to work while CRDs are applied.
    for node in topology.node_manifests():
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
    crd_names = _apply(launch, kubeconfig, crd_files)
    launch.note(f"kubectl: applied {len(crd_names)} CRDs from {len(crd_files)} files")

    for name, port in (("kube-controller-manager", kcm_port), ("kube-scheduler", sched_port)):
        launch.wait_for(name, "/healthz", _healthz_ok(port), deadline)
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
        _start_keda(launch, keda_binaries, pki, api, deadline)
    if kserve_binaries is not None:
        _start_kserve(launch, kserve_binaries, pki, deadline)
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


def _start_keda(
    launch: _Launch,
    binaries: KedaBinaries,
    pki: ClusterPKI,
    api: ApiClient,
    deadline: float,
) -> None:
    """Run KEDA's operator and metrics adapter and wait until the API server serves external
    metrics through the adapter (called once KEDA's CRDs are served)."""
    directory = launch.dir
    ports: dict[str, int] = launch.state["ports"]
    keda_pki = generate_addon_pki(
        directory / "pki" / "keda",
        pki.ca,
        namespace=keda.NAMESPACE,
        service_account=keda.SERVICE_ACCOUNT,
        services=(keda.OPERATOR_SERVICE, keda.ADAPTER_SERVICE),
    )
    kubeconfig = directory / "pki" / "keda.kubeconfig"
    _write_yaml(
        kubeconfig,
        components.kubeconfig_for(
            launch.state["api_url"], pki.ca.cert, keda_pki.identity, keda.SERVICE_ACCOUNT
        ),
    )
    objects = directory / "keda-objects.yaml"
    objects.write_text(
        yaml.safe_dump_all(keda.cluster_objects(pki.ca.cert, ports["keda-adapter"])),
        encoding="utf-8",
    )
    _apply(launch, Path(launch.state["kubeconfig"]), [objects, *binaries.rbac()])
    launch.note("kubectl: applied KEDA's namespace, RBAC, Service and APIService")

    env = keda.process_env(kubeconfig)
    launch.start(
        "keda-operator",
        binaries.path("keda-operator"),
        keda.operator_args(kubeconfig, keda_pki.cert_dir, ports),
        env,
    )
    launch.start(
        "keda-adapter",
        binaries.path("keda-adapter"),
        keda.adapter_args(kubeconfig, keda_pki.cert_dir, ports),
        env,
    )
    health = _plain_http_get(ports["keda-operator-health"])
    launch.wait_for("keda-operator", "/readyz", lambda: health("/readyz") == "ok", deadline)
    apiservice = f"/apis/apiregistration.k8s.io/v1/apiservices/{keda.APISERVICE_NAME}"
    launch.wait_for(
        "keda-adapter",
        f"APIService {keda.APISERVICE_NAME} Available",
        lambda: keda.apiservice_available(api.get(apiservice).body or {}),
        deadline,
    )
    group = f"/apis/{keda.EXTERNAL_METRICS_GROUP}/{keda.EXTERNAL_METRICS_VERSION}"
    launch.wait_for(
        "keda-adapter",
        f"{group} served through the aggregation layer",
        lambda: api.get(group).status == 200,
        deadline,
    )


def _start_kserve(
    launch: _Launch, binaries: KServeBinaries, pki: ClusterPKI, deadline: float
) -> None:
    """Run KServe's controller and wait until its webhooks serve and its three controllers run
    (called once KServe's CRDs are served)."""
    directory = launch.dir
    ports: dict[str, int] = launch.state["ports"]
    # The webhook server's certificate sits where controller-runtime looks for it by default,
    # under a TMPDIR of the process's own inside the cluster's pki folder.
    tmp_dir = directory / "pki" / "kserve" / "tmp"
    kserve_pki = generate_addon_pki(
        directory / "pki" / "kserve",
        pki.ca,
        namespace=kserve.NAMESPACE,
        service_account=kserve.SERVICE_ACCOUNT,
        services=(kserve.WEBHOOK_SERVICE,),
        cert_dir=tmp_dir / kserve.WEBHOOK_CERT_SUBDIR,
    )
    kubeconfig = directory / "pki" / "kserve.kubeconfig"
    _write_yaml(
        kubeconfig,
        components.kubeconfig_for(
            launch.state["api_url"], pki.ca.cert, kserve_pki.identity, kserve.SERVICE_ACCOUNT
        ),
    )
    shipped_config = yaml.safe_load(binaries.config_map.read_text(encoding="utf-8"))
    shipped_webhooks = yaml.safe_load_all(binaries.webhooks.read_text(encoding="utf-8"))
    objects = directory / "kserve-objects.yaml"
    objects.write_text(
        yaml.safe_dump_all(
            [
                *kserve.cluster_objects(),
                kserve.config_map(shipped_config),
                *kserve.webhook_configurations(
                    (d for d in shipped_webhooks if isinstance(d, dict)),
                    pki.ca.cert,
                    ports["kserve-webhook"],
                ),
            ]
        ),
        encoding="utf-8",
    )
    _apply(launch, Path(launch.state["kubeconfig"]), [binaries.cluster_role, objects])
    launch.note("kubectl: applied KServe's namespace, RBAC, ConfigMap and webhook configurations")

    launch.start(
        "kserve-manager",
        binaries.path("kserve-manager"),
        kserve.manager_args(kubeconfig, ports),
        kserve.process_env(kubeconfig, tmp_dir),
    )
    health = _plain_http_get(ports["kserve-health"])
    launch.wait_for("kserve-manager", "/readyz", lambda: health("/readyz") == "ok", deadline)
    log = launch.log_path("kserve-manager")
    wanted = set(kserve.CONTROLLERS)
    launch.wait_for(
        "kserve-manager",
        f"{len(wanted)} controllers started (caches synced)",
        lambda: wanted <= kserve.started_controllers(log.read_text(errors="replace").splitlines()),
        deadline,
    )


def _healthz_ok(port: int) -> Callable[[], bool]:
    probe = ApiClient("127.0.0.1", port, ca=None)
    return lambda: probe.get("/healthz").status == 200


def _plain_http_get(port: int) -> Callable[[str], str]:
    def get(path: str) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", path)
            return conn.getresponse().read().decode("utf-8", errors="replace")
        finally:
            conn.close()

    return get


def _apply(launch: _Launch, kubeconfig: Path, files: Sequence[Path]) -> list[str]:
    """Apply manifests with the built kubectl and return the names of the CRDs among them.

    Server-side, because KServe's CRD is too big for a client-side apply's last-applied
    annotation; kubectl rather than Python because parsing that 2 MB of YAML in Python takes
    tens of seconds on a small machine.
    """
    if not files:
        return []
    argv = [str(launch.binaries.path("kubectl")), f"--kubeconfig={kubeconfig}", "apply", "-o=name"]
    argv += ["--server-side", "--force-conflicts", "--field-manager=climatik-dev-cluster"]
    for path in files:
        argv += ["-f", str(path)]
    remaining = 120.0
    result = subprocess.run(argv, capture_output=True, text=True, timeout=remaining, check=False)
    if result.returncode != 0:
        raise DevClusterError(
            f"kubectl apply of {', '.join(p.name for p in files)} failed",
            component="kubectl",
            log_tail=(result.stdout + result.stderr).strip(),
        )
    prefix = "customresourcedefinition.apiextensions.k8s.io/"
    return [line[len(prefix) :] for line in result.stdout.split() if line.startswith(prefix)]


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
