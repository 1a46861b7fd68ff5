"""The KServe add-on's pure parts: its credentials, flags, ConfigMap, webhooks and readiness.

Whether KServe really runs with them is tests/integration/test_kserve_live.py; these pin down what
would otherwise only fail there, after a long build: a webhook the API server cannot reach or
verify, a ConfigMap that leaves KServe in Knative's mode, or a start-up declared ready too early.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from pathlib import Path

import pytest
from cryptography import x509

from climatik.devcluster import kserve
from climatik.devcluster.binaries import (
    ENV_KSERVE_BIN_DIR,
    ENV_KSERVE_CRD_DIR,
    ENV_KSERVE_MANIFEST_DIR,
    BinariesMissingError,
    locate_kserve,
)
from climatik.devcluster.pki import generate_addon_pki, generate_pki
from climatik.reconcilers.resources import CEILING_ANNOTATIONS

PORTS = {name: 31000 + i for i, name in enumerate(kserve.PORT_NAMES)}


def test_kserve_not_built_says_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_KSERVE_BIN_DIR, str(tmp_path / "bin"))
    monkeypatch.setenv(ENV_KSERVE_CRD_DIR, str(tmp_path / "crds"))
    monkeypatch.setenv(ENV_KSERVE_MANIFEST_DIR, str(tmp_path / "manifests"))
    with pytest.raises(BinariesMissingError, match=r"build\.sh --with kserve") as error:
        locate_kserve()
    assert "kserve-manager" in str(error.value)
    assert "configmap-inferenceservice.yaml" in str(error.value)


def test_the_webhook_certificate_is_where_controller_runtime_looks_under_tmpdir(
    tmp_path: Path,
) -> None:
    pki = generate_pki(tmp_path / "pki", service_ip="10.96.0.1")
    tmp_dir = tmp_path / "pki" / "kserve" / "tmp"
    kserve_pki = generate_addon_pki(
        tmp_path / "pki" / "kserve",
        pki.ca,
        namespace=kserve.NAMESPACE,
        service_account=kserve.SERVICE_ACCOUNT,
        services=(kserve.WEBHOOK_SERVICE,),
        cert_dir=tmp_dir / kserve.WEBHOOK_CERT_SUBDIR,
    )
    cert_dir = Path(kserve.process_env(tmp_path / "kc", tmp_dir)["TMPDIR"])
    cert_dir /= "k8s-webhook-server/serving-certs"
    assert kserve_pki.cert_dir == cert_dir
    assert sorted(p.name for p in cert_dir.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
    serving = x509.load_pem_x509_certificate((cert_dir / "tls.crt").read_bytes())
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # The API server calls the webhooks at https://127.0.0.1:<port>.
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert "kserve-webhook-server-service.kserve.svc" in sans.get_values_for_type(x509.DNSName)
    identity = x509.load_pem_x509_certificate(kserve_pki.identity.cert.read_bytes())
    assert identity.subject.rfc4514_string().startswith(
        "O=system:serviceaccounts:kserve,O=system:serviceaccounts,"
        "CN=system:serviceaccount:kserve:kserve-controller-manager"
    )


def test_the_manager_reads_its_namespace_and_listens_on_its_own_ports(tmp_path: Path) -> None:
    args = kserve.manager_args(tmp_path / "kc", PORTS)
    assert f"--kubeconfig={tmp_path / 'kc'}" in args
    assert f"--webhook-port={PORTS['kserve-webhook']}" in args
    assert f"--metrics-addr=127.0.0.1:{PORTS['kserve-metrics']}" in args
    assert f"--health-probe-addr=127.0.0.1:{PORTS['kserve-health']}" in args
    assert "--leader-elect=false" in args
    env = kserve.process_env(tmp_path / "kc", tmp_path / "tmp")
    assert env["POD_NAMESPACE"] == kserve.NAMESPACE


def test_the_config_map_keeps_kserves_settings_and_defaults_to_standard_mode() -> None:
    shipped: kserve.Manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": kserve.CONFIG_MAP, "namespace": "somewhere"},
        "data": {
            "deploy": '{"defaultDeploymentMode": "Serverless"}',
            "ingress": '{"ingressDomain": "example.com"}',
        },
    }
    config = kserve.config_map(shipped)
    assert config["metadata"] == {"name": kserve.CONFIG_MAP, "namespace": kserve.NAMESPACE}
    data = config["data"]
    assert isinstance(data, dict)
    assert json.loads(data["deploy"]) == {"defaultDeploymentMode": "Standard"}
    assert data["ingress"] == '{"ingressDomain": "example.com"}'
    assert json.loads(data["inferenceService"]) == {
        "serviceAnnotationDisallowedList": list(CEILING_ANNOTATIONS)
    }
    assert shipped["data"] != data, "KServe's own manifest is left as it was"
    with pytest.raises(ValueError, match="no data"):
        kserve.config_map({"kind": "ConfigMap"})


def _shipped_webhook(path: str) -> kserve.Manifest:
    return {
        "clientConfig": {
            "service": {"name": "$(webhookServiceName)", "namespace": "$(ns)", "path": path}
        },
        "failurePolicy": "Fail",
        "name": "inferenceservice.kserve-webhook-server.pod-mutator",
        "objectSelector": {
            "matchExpressions": [
                {"key": "serving.kserve.io/inferenceservice", "operator": "Exists"}
            ]
        },
        "rules": [{"apiGroups": [""], "resources": ["pods"], "operations": ["CREATE"]}],
    }


def test_webhooks_call_the_process_on_loopback_and_keep_kserves_rules(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    shipped: kserve.Manifest = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "inferenceservice.serving.kserve.io", "creationTimestamp": None},
        "webhooks": [_shipped_webhook("/mutate-pods")],
    }
    [configuration] = kserve.webhook_configurations([shipped, {"kind": "Service"}], ca, 31443)
    assert configuration["kind"] == "MutatingWebhookConfiguration"
    assert configuration["metadata"] == {"name": "inferenceservice.serving.kserve.io"}
    webhooks = configuration["webhooks"]
    assert isinstance(webhooks, list)
    [webhook] = webhooks
    assert webhook["clientConfig"]["url"] == "https://127.0.0.1:31443/mutate-pods"
    assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == ca.read_bytes()
    assert "service" not in webhook["clientConfig"]
    expected = _shipped_webhook("/mutate-pods")
    for key in ("failurePolicy", "objectSelector", "rules", "name"):
        assert webhook[key] == expected[key]

    broken = {**shipped, "webhooks": [{"name": "no-path", "clientConfig": {"url": "x"}}]}
    with pytest.raises(ValueError, match="without a service path"):
        kserve.webhook_configurations([broken], ca, 31443)


def test_kserve_runs_as_its_service_account_bound_to_its_own_cluster_role() -> None:
    objects = {o["kind"]: o for o in kserve.cluster_objects()}
    binding = objects["ClusterRoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "kserve-manager-role",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": kserve.SERVICE_ACCOUNT, "namespace": kserve.NAMESPACE}
    ]
    assert objects["ServiceAccount"]["metadata"] == {
        "name": kserve.SERVICE_ACCOUNT,
        "namespace": kserve.NAMESPACE,
    }


def test_started_controllers_come_only_from_starting_workers_lines() -> None:
    lines = [
        '{"level":"info","msg":"Starting Controller","controller":"trainedmodel"}',
        '{"level":"info","msg":"Starting workers","controller":"inferenceservice","n":1}',
        'not json but mentions "Starting workers"',
        '{"level":"info","msg":"Starting workers","controller":"inferencegraph"}',
        '{"level":"info","msg":"Starting workers"}',
    ]
    assert kserve.started_controllers(lines) == {"inferenceservice", "inferencegraph"}
    assert kserve.started_controllers([]) == set()


def test_climatiks_annotations_join_kserves_own_disallowed_list_once() -> None:
    """KServe copies an InferenceService's annotations into its predictor's pods unless
    disallowed: Climatik's ceiling annotations must be, or each ceiling write rolls the pods."""
    assert set(kserve.CLIMATIK_CEILING_ANNOTATIONS) == set(CEILING_ANNOTATIONS)
    settings = {
        "resource": {"cpuLimit": "1"},
        "serviceAnnotationDisallowedList": ["my.custom.annotation/1", CEILING_ANNOTATIONS[0]],
    }
    shipped: kserve.Manifest = {
        "kind": "ConfigMap",
        "data": {"inferenceService": json.dumps(settings)},
    }
    data = kserve.config_map(shipped)["data"]
    assert isinstance(data, dict)
    written = json.loads(data["inferenceService"])
    assert written["resource"] == {"cpuLimit": "1"}
    assert written["serviceAnnotationDisallowedList"] == [
        "my.custom.annotation/1",
        *CEILING_ANNOTATIONS,
    ]
    with pytest.raises(ValueError, match="not a JSON object"):
        kserve.config_map({"data": {"inferenceService": "[]"}})
