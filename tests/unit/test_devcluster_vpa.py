"""The VPA add-on's pure parts: where kwok's resource metrics are found, the flags of
metrics-server and VPA's components, and the objects `up` applies.

Whether they really run with them is tests/integration/test_vpa_live.py; these pin down what would
otherwise only show there, minutes into a run: metrics-server dialling a port kwok does not
serve, or an admission webhook registered at an address nothing listens on.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from climatik.devcluster import vpa
from climatik.devcluster.binaries import (
    ENV_VPA_BIN_DIR,
    ENV_VPA_KWOK_METRICS,
    ENV_VPA_MANIFEST_DIR,
    BinariesMissingError,
    locate_vpa,
)
from climatik.devcluster.topology import Rack, Topology

PORTS = {name: 31000 + i for i, name in enumerate(vpa.PORT_NAMES)}


def test_vpa_not_built_says_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VPA_BIN_DIR, str(tmp_path / "bin"))
    monkeypatch.setenv(ENV_VPA_MANIFEST_DIR, str(tmp_path / "manifests"))
    monkeypatch.setenv(ENV_VPA_KWOK_METRICS, str(tmp_path / "metrics.yaml"))
    with pytest.raises(BinariesMissingError, match=r"build\.sh --with vpa") as error:
        locate_vpa()
    for name in ("vpa-recommender", "vpa-updater", "vpa-admission-controller", "metrics-server"):
        assert name in str(error.value)
    assert "vpa-rbac.yaml" in str(error.value)
    assert "metrics.yaml" in str(error.value)


def test_each_node_points_metrics_server_at_kwoks_path_for_it() -> None:
    topology = Topology(racks=(Rack(name="r1", nodes=2),))
    plain = topology.node_manifests()
    annotated = topology.node_manifests(vpa.node_annotations)
    assert vpa.RESOURCE_METRICS_PATH_ANNOTATION not in plain[0]["metadata"]["annotations"]
    for node in annotated:
        name = node["metadata"]["name"]
        annotations = node["metadata"]["annotations"]
        assert annotations[vpa.RESOURCE_METRICS_PATH_ANNOTATION] == (
            f"/metrics/nodes/{name}/metrics/resource"
        )
        # kwok still manages the node.
        assert annotations["kwok.x-k8s.io/node"] == "fake"


def test_metrics_server_dials_the_port_and_address_kwok_serves_and_reports(
    tmp_path: Path,
) -> None:
    kwok = vpa.kwok_args(tmp_path / "metrics.yaml", PORTS["kwok-server"])
    port = PORTS["kwok-server"]
    assert f"--server-address=127.0.0.1:{port}" in kwok
    # Written into every node's status: its InternalIP and kubelet port.
    assert "--node-ip=127.0.0.1" in kwok
    assert f"--node-port={port}" in kwok
    assert f"--config={tmp_path / 'metrics.yaml'}" in kwok

    server = vpa.metrics_server_args(tmp_path / "kc", tmp_path / "certs", PORTS["metrics-server"])
    assert "--kubelet-use-node-status-port" in server
    assert "--kubelet-preferred-address-types=InternalIP" in server
    assert "--kubelet-insecure-tls" in server  # kwok serves a self-signed test certificate
    assert f"--secure-port={PORTS['metrics-server']}" in server
    assert "--bind-address=127.0.0.1" in server


def test_the_webhook_is_registered_at_the_admission_controllers_own_port(tmp_path: Path) -> None:
    port = PORTS["vpa-admission-controller"]
    args = vpa.admission_controller_args(
        tmp_path / "kc", tmp_path / "certs", port, PORTS["vpa-admission-controller-metrics"]
    )
    assert "--register-by-url" in args
    assert "--webhook-address=https://127.0.0.1" in args
    assert f"--webhook-port={port}" in args
    assert f"--port={port}" in args
    # The CA it puts into the webhook's caBundle is the one that signed its serving certificate.
    assert f"--client-ca-file={tmp_path / 'certs' / 'ca.crt'}" in args
    registered = {"webhooks": [{"clientConfig": {"url": f"https://127.0.0.1:{port}"}}]}
    assert vpa.webhook_registered(registered, port)
    assert not vpa.webhook_registered(registered, port + 1)
    assert not vpa.webhook_registered({"kind": "Status", "reason": "NotFound"}, port)


def test_metrics_and_health_of_each_component_stay_on_loopback(tmp_path: Path) -> None:
    recommender = vpa.recommender_args(tmp_path / "kc", PORTS["vpa-recommender-metrics"])
    updater = vpa.updater_args(tmp_path / "kc", PORTS["vpa-updater-metrics"])
    assert f"--address=127.0.0.1:{PORTS['vpa-recommender-metrics']}" in recommender
    assert f"--address=127.0.0.1:{PORTS['vpa-updater-metrics']}" in updater
    assert vpa.process_env(tmp_path / "kc")["NAMESPACE"] == "kube-system"


def test_the_apiservice_serves_resource_metrics_through_an_externalname_service(
    tmp_path: Path,
) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    objects = {o["kind"]: o for o in vpa.cluster_objects(ca, 32443)}
    service, apiservice = objects["Service"], objects["APIService"]
    assert service["spec"]["externalName"] == "localhost"
    assert service["spec"]["ports"][0]["port"] == 32443
    ref = apiservice["spec"]["service"]
    assert (ref["name"], ref["namespace"], ref["port"]) == ("metrics-server", "kube-system", 32443)
    assert apiservice["metadata"]["name"] == "v1beta1.metrics.k8s.io"
    assert base64.b64decode(apiservice["spec"]["caBundle"]) == ca.read_bytes()
    assert "insecureSkipTLSVerify" not in apiservice["spec"]
