"""The KEDA add-on's pure parts: add-on names, KEDA's credentials, its flags and objects.

Whether KEDA really runs with them is tests/integration/test_keda_live.py; these pin down what
would otherwise only fail there, minutes into a build: a certificate KEDA's RBAC would not match,
or a gRPC name the adapter could not verify.
"""

from __future__ import annotations

import base64
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from climatik.cli import main
from climatik.devcluster import keda
from climatik.devcluster.addons import parse_addons
from climatik.devcluster.binaries import (
    ENV_KEDA_BIN_DIR,
    ENV_KEDA_CRD_DIR,
    ENV_KEDA_RBAC_DIR,
    BinariesMissingError,
    locate_keda,
)
from climatik.devcluster.pki import generate_addon_pki, generate_pki


def test_addons_are_checked_and_ordered() -> None:
    assert parse_addons("") == ()
    assert parse_addons("keda") == ("keda",)
    assert parse_addons(" keda , keda ") == ("keda",)
    assert parse_addons("kserve,keda") == ("keda", "kserve")
    assert parse_addons("vpa,keda") == ("keda", "vpa")
    with pytest.raises(
        ValueError, match="unknown add-on hpa, nope; known add-ons: keda, kserve, vpa"
    ):
        parse_addons("keda,hpa,nope")


def test_an_unknown_addon_is_a_usage_error_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["dev-cluster", "up", "--dir", str(tmp_path / "c"), "--with", "keda,nope"])
    assert exit_info.value.code == 2
    assert "unknown add-on nope; known add-ons: keda, kserve, vpa" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_keda_not_built_says_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_KEDA_BIN_DIR, str(tmp_path / "bin"))
    monkeypatch.setenv(ENV_KEDA_CRD_DIR, str(tmp_path / "crds"))
    monkeypatch.setenv(ENV_KEDA_RBAC_DIR, str(tmp_path / "rbac"))
    with pytest.raises(BinariesMissingError, match=r"build\.sh --with keda") as error:
        locate_keda()
    assert "keda-operator" in str(error.value)
    assert "keda-adapter" in str(error.value)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _verify_signed_by(cert: x509.Certificate, ca: x509.Certificate) -> None:
    assert cert.issuer == ca.subject
    public_key = ca.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert cert.signature_hash_algorithm is not None
    public_key.verify(
        cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
    )


def test_keda_runs_as_its_service_account_with_certificates_from_the_cluster_ca(
    tmp_path: Path,
) -> None:
    pki = generate_pki(tmp_path / "pki", service_ip="10.96.0.1")
    keda_pki = generate_addon_pki(
        tmp_path / "pki" / "keda",
        pki.ca,
        namespace="keda",
        service_account="keda-operator",
        services=("keda-operator", "keda-metrics-apiserver"),
    )
    ca = _cert(pki.ca.cert)

    identity = _cert(keda_pki.identity.cert)
    _verify_signed_by(identity, ca)
    # RBAC matches a ServiceAccount subject by this exact user name.
    assert identity.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "system:serviceaccount:keda:keda-operator"
    )
    groups = {a.value for a in identity.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)}
    assert groups == {"system:serviceaccounts", "system:serviceaccounts:keda"}

    # KEDA reads ca.crt, tls.crt and tls.key from one folder for both ends of its gRPC link.
    assert sorted(p.name for p in keda_pki.cert_dir.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
    assert (keda_pki.cert_dir / "ca.crt").read_bytes() == pki.ca.cert.read_bytes()
    serving = _cert(keda_pki.serving.cert)
    _verify_signed_by(serving, ca)
    usages = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    # The aggregation layer checks the adapter's certificate under its Service's name.
    assert "keda-metrics-apiserver.keda.svc" in sans.get_values_for_type(x509.DNSName)
    assert "keda-operator.keda.svc.cluster.local" in sans.get_values_for_type(x509.DNSName)
    assert keda_pki.identity.key.stat().st_mode & 0o077 == 0
    assert keda_pki.serving.key.stat().st_mode & 0o077 == 0


PORTS = {name: 30000 + i for i, name in enumerate(keda.PORT_NAMES)}


def test_operator_and_adapter_listen_only_on_their_own_loopback_ports(tmp_path: Path) -> None:
    kubeconfig, cert_dir = tmp_path / "kc", tmp_path / "certs"
    operator = keda.operator_args(kubeconfig, cert_dir, PORTS)
    adapter = keda.adapter_args(kubeconfig, cert_dir, PORTS)
    grpc = PORTS["keda-operator-grpc"]
    assert f"--metrics-service-bind-address=127.0.0.1:{grpc}" in operator
    assert f"--metrics-service-address=127.0.0.1:{grpc}" in adapter
    assert "--leader-elect=false" in operator
    assert f"--secure-port={PORTS['keda-adapter']}" in adapter
    for flag in ("--kubeconfig", "--lister-kubeconfig", "--authentication-kubeconfig"):
        assert f"{flag}={kubeconfig}" in adapter
    bound = [a for a in operator if "bind-address=" in a]
    assert len(bound) == 3
    assert all("=127.0.0.1:" in a for a in bound)
    env = keda.process_env(kubeconfig, 31999)
    assert env["WATCH_NAMESPACE"] == ""
    assert env["KEDA_CLUSTER_OBJECT_NAMESPACE"] == keda.NAMESPACE
    # Scalers reach in-cluster Service names through the dev cluster's service proxy.
    assert env["HTTP_PROXY"] == "http://127.0.0.1:31999"
    assert "127.0.0.1" in env["NO_PROXY"].split(",")


def test_the_apiservice_points_at_the_adapter_through_an_externalname_service(
    tmp_path: Path,
) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    objects = {o["kind"]: o for o in keda.cluster_objects(ca, 31443)}
    assert list(objects) == ["Namespace", "ServiceAccount", "Service", "APIService"]
    service, apiservice = objects["Service"], objects["APIService"]
    assert service["spec"]["type"] == "ExternalName"
    assert service["spec"]["externalName"] == "localhost"
    assert service["spec"]["ports"][0]["port"] == 31443
    ref = apiservice["spec"]["service"]
    assert (ref["name"], ref["namespace"], ref["port"]) == (
        service["metadata"]["name"],
        service["metadata"]["namespace"],
        31443,
    )
    assert apiservice["metadata"]["name"] == "v1beta1.external.metrics.k8s.io"
    assert base64.b64decode(apiservice["spec"]["caBundle"]) == ca.read_bytes()
    assert "insecureSkipTLSVerify" not in apiservice["spec"]


@pytest.mark.parametrize(
    ("apiservice", "available"),
    [
        ({"status": {"conditions": [{"type": "Available", "status": "True"}]}}, True),
        ({"status": {"conditions": [{"type": "Available", "status": "False"}]}}, False),
        ({"status": {}}, False),
        ({"kind": "Status", "status": "Failure", "reason": "NotFound"}, False),
    ],
)
def test_apiservice_available_reads_only_the_available_condition(
    apiservice: dict[str, object], available: bool
) -> None:
    assert keda.apiservice_available(apiservice) is available
