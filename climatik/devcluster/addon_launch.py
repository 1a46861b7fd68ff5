"""How the add-ons start once the control plane serves their CRDs: KEDA's operator and metrics
adapter, KServe's controller, VPA's three components and metrics-server, with their certificates,
kubeconfigs and cluster objects, each waited for until it serves.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from climatik.devcluster import components, keda, kserve, vpa
from climatik.devcluster.apiclient import ApiClient
from climatik.devcluster.binaries import KedaBinaries, KServeBinaries, VpaBinaries
from climatik.devcluster.launch import Launch, apply_manifests, plain_http_get, write_yaml
from climatik.devcluster.pki import AddonPKI, ClusterPKI, generate_addon_pki
from climatik.devcluster.service_proxy import SERVICE_PROXY


def start_keda(
    launch: Launch,
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
    write_yaml(
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
    apply_manifests(launch, Path(launch.state["kubeconfig"]), [objects, *binaries.rbac()])
    launch.note("kubectl: applied KEDA's namespace, RBAC, Service and APIService")

    env = keda.process_env(kubeconfig, ports[SERVICE_PROXY])
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
    health = plain_http_get(ports["keda-operator-health"])
    launch.wait_for("keda-operator", "/readyz", lambda: health("/readyz") == "ok", deadline)
    _wait_for_aggregated_api(
        launch,
        api,
        "keda-adapter",
        apiservice_name=keda.APISERVICE_NAME,
        group_path=f"/apis/{keda.EXTERNAL_METRICS_GROUP}/{keda.EXTERNAL_METRICS_VERSION}",
        deadline=deadline,
    )


def start_kserve(
    launch: Launch, binaries: KServeBinaries, pki: ClusterPKI, deadline: float
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
    write_yaml(
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
    apply_manifests(launch, Path(launch.state["kubeconfig"]), [binaries.cluster_role, objects])
    launch.note("kubectl: applied KServe's namespace, RBAC, ConfigMap and webhook configurations")

    launch.start(
        "kserve-manager",
        binaries.path("kserve-manager"),
        kserve.manager_args(kubeconfig, ports),
        kserve.process_env(kubeconfig, tmp_dir),
    )
    health = plain_http_get(ports["kserve-health"])
    launch.wait_for("kserve-manager", "/readyz", lambda: health("/readyz") == "ok", deadline)
    log = launch.log_path("kserve-manager")
    wanted = set(kserve.CONTROLLERS)
    launch.wait_for(
        "kserve-manager",
        f"{len(wanted)} controllers started (caches synced)",
        lambda: wanted <= kserve.started_controllers(log.read_text(errors="replace").splitlines()),
        deadline,
    )
    # After the manager: its webhook validates serving runtimes.
    apply_manifests(launch, Path(launch.state["kubeconfig"]), [binaries.serving_runtime])
    launch.note("kubectl: applied KServe's huggingface ClusterServingRuntime")


def start_vpa(
    launch: Launch,
    binaries: VpaBinaries,
    pki: ClusterPKI,
    api: ApiClient,
    deadline: float,
) -> None:
    """Run metrics-server and VPA's recommender, updater and admission controller, and wait
    until the resource metrics API is served through the aggregation layer and the admission
    controller's webhook is registered and its status Lease renewed (called once VPA's CRD is
    served; kwok already serves the resource metrics, see `vpa.kwok_args`)."""
    directory = launch.dir
    ports: dict[str, int] = launch.state["ports"]

    def identity(account: str, services: tuple[str, ...] = ()) -> tuple[AddonPKI, Path]:
        """Credentials of one ServiceAccount and a kubeconfig that uses them."""
        addon_pki = generate_addon_pki(
            directory / "pki" / account,
            pki.ca,
            namespace=vpa.NAMESPACE,
            service_account=account,
            services=services,
        )
        kubeconfig = directory / "pki" / f"{account}.kubeconfig"
        write_yaml(
            kubeconfig,
            components.kubeconfig_for(
                launch.state["api_url"], pki.ca.cert, addon_pki.identity, account
            ),
        )
        return addon_pki, kubeconfig

    objects = directory / "vpa-objects.yaml"
    objects.write_text(
        yaml.safe_dump_all(vpa.cluster_objects(pki.ca.cert, ports["metrics-server"])),
        encoding="utf-8",
    )
    apply_manifests(launch, Path(launch.state["kubeconfig"]), [*binaries.rbac(), objects])
    launch.note("kubectl: applied VPA's and metrics-server's RBAC, Service and APIService")

    ms_pki, ms_kubeconfig = identity(vpa.METRICS_SERVER_ACCOUNT, (vpa.METRICS_SERVER_SERVICE,))
    launch.start(
        "metrics-server",
        binaries.path("metrics-server"),
        vpa.metrics_server_args(ms_kubeconfig, ms_pki.cert_dir, ports["metrics-server"]),
        {"KUBECONFIG": str(ms_kubeconfig)},
    )
    _, recommender_kubeconfig = identity(vpa.RECOMMENDER_ACCOUNT)
    launch.start(
        "vpa-recommender",
        binaries.path("vpa-recommender"),
        vpa.recommender_args(recommender_kubeconfig, ports["vpa-recommender-metrics"]),
        vpa.process_env(recommender_kubeconfig),
    )
    _, updater_kubeconfig = identity(vpa.UPDATER_ACCOUNT)
    launch.start(
        "vpa-updater",
        binaries.path("vpa-updater"),
        vpa.updater_args(updater_kubeconfig, ports["vpa-updater-metrics"]),
        vpa.process_env(updater_kubeconfig),
    )
    admission_pki, admission_kubeconfig = identity(vpa.ADMISSION_ACCOUNT)
    launch.start(
        "vpa-admission-controller",
        binaries.path("vpa-admission-controller"),
        vpa.admission_controller_args(
            admission_kubeconfig,
            admission_pki.cert_dir,
            ports["vpa-admission-controller"],
            ports["vpa-admission-controller-metrics"],
        ),
        vpa.process_env(admission_kubeconfig),
    )

    _wait_for_aggregated_api(
        launch,
        api,
        "metrics-server",
        apiservice_name=vpa.APISERVICE_NAME,
        group_path=f"/apis/{vpa.RESOURCE_METRICS_GROUP}/{vpa.RESOURCE_METRICS_VERSION}",
        deadline=deadline,
    )
    for component in ("vpa-recommender", "vpa-updater"):
        health = plain_http_get(ports[f"{component}-metrics"])
        launch.wait_for(component, "/health-check", _answers(health, "/health-check"), deadline)
    webhook = (
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/"
        + vpa.WEBHOOK_CONFIGURATION
    )
    port = ports["vpa-admission-controller"]
    launch.wait_for(
        "vpa-admission-controller",
        f"webhook {vpa.WEBHOOK_CONFIGURATION} registered by URL",
        lambda: vpa.webhook_registered(api.get(webhook).body or {}, port),
        deadline,
    )
    lease = (
        f"/apis/coordination.k8s.io/v1/namespaces/{vpa.NAMESPACE}/leases/"
        + vpa.ADMISSION_STATUS_LEASE
    )
    launch.wait_for(
        "vpa-admission-controller",
        f"status Lease {vpa.ADMISSION_STATUS_LEASE} renewed",
        lambda: api.get(lease).status == 200,
        deadline,
    )


def _wait_for_aggregated_api(
    launch: Launch,
    api: ApiClient,
    component: str,
    *,
    apiservice_name: str,
    group_path: str,
    deadline: float,
) -> None:
    """Wait until the aggregation layer reaches an add-on's API server (its APIService is
    Available) and serves its group: KEDA's metrics adapter and metrics-server alike."""
    apiservice = f"/apis/apiregistration.k8s.io/v1/apiservices/{apiservice_name}"
    launch.wait_for(
        component,
        f"APIService {apiservice_name} Available",
        lambda: keda.apiservice_available(api.get(apiservice).body or {}),
        deadline,
    )
    launch.wait_for(
        component,
        f"{group_path} served through the aggregation layer",
        lambda: api.get(group_path).status == 200,
        deadline,
    )


def _answers(get: Callable[[str], str], path: str) -> Callable[[], bool]:
    """Whether a plain HTTP endpoint answers at all (`get` raises OSError until it listens)."""

    def probe() -> bool:
        get(path)
        return True

    return probe
