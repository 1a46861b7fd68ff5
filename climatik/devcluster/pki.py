"""Certificates and keys for a dev cluster: one throwaway CA per `up`.

kube-apiserver needs a serving certificate, a CA for client certificates and a key pair to sign
service-account tokens; each client (admin, controller-manager, scheduler, kwok) authenticates
with its own client certificate so RBAC sees the same identities as in a real cluster. Keys are
EC P-256 (fast to generate) except the service-account key, which is RSA because that is what
every Kubernetes version accepts for token signing.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=365)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class CertPair:
    """Paths of a PEM certificate and its PEM private key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class ClusterPKI:
    """Every credential file one dev cluster uses."""

    ca: CertPair
    apiserver: CertPair
    admin: CertPair
    controller_manager: CertPair
    scheduler: CertPair
    kwok: CertPair
    front_proxy: CertPair
    service_account_key: Path
    service_account_pub: Path


@dataclass(frozen=True)
class AddonPKI:
    """An add-on's identity towards the API server and the certificates of its own services.

    `cert_dir` holds ca.crt, tls.crt and tls.key, the layout KEDA reads from its `kedaorg-certs`
    Secret (its operator's gRPC service and metrics adapter authenticate each other with them, and
    the adapter serves the aggregation layer with the same pair) and KServe's webhook server reads
    from its `kserve-webhook-server-cert` Secret.
    """

    identity: CertPair
    cert_dir: Path
    serving: CertPair


def _name(common_name: str, *organizations: str) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    return x509.Name(attrs)


def _write_key(key: PrivateKey, path: Path) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(
    *,
    subject: x509.Name,
    key: PrivateKey,
    issuer: x509.Name,
    issuer_key: PrivateKey,
    is_ca: bool = False,
    server_names: tuple[str, ...] = (),
    server_ips: tuple[str, ...] = (),
    client: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Backdated so a clock a few seconds behind on a verifier does not reject it.
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usages = []
        if server_names or server_ips:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def generate_pki(directory: Path, *, service_ip: str) -> ClusterPKI:
    """Write a fresh CA and every certificate the cluster needs under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("climatik-dev-cluster-ca")
    ca_cert = _issue(subject=ca_name, key=ca_key, issuer=ca_name, issuer_key=ca_key, is_ca=True)

    def pair(
        stem: str,
        subject: x509.Name,
        *,
        server_names: tuple[str, ...] = (),
        server_ips: tuple[str, ...] = (),
        client: bool = True,
    ) -> CertPair:
        return _issue_pair(
            CertPair(cert=directory / f"{stem}.crt", key=directory / f"{stem}.key"),
            subject,
            ca_name=ca_name,
            ca_key=ca_key,
            server_names=server_names,
            server_ips=server_ips,
            client=client,
        )

    ca = CertPair(cert=directory / "ca.crt", key=directory / "ca.key")
    _write_cert(ca_cert, ca.cert)
    _write_key(ca_key, ca.key)

    apiserver = pair(
        "apiserver",
        _name("kube-apiserver"),
        server_names=(
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        server_ips=("127.0.0.1", service_ip),
        client=False,
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_key_path = directory / "sa.key"
    sa_pub_path = directory / "sa.pub"
    _write_key(sa_key, sa_key_path)
    sa_pub_path.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return ClusterPKI(
        ca=ca,
        apiserver=apiserver,
        # system:masters bypasses RBAC: the admin and kwok (which writes every node's and pod's
        # status, more than the Node authorizer would let one identity do) are trusted tools.
        admin=pair("admin", _name("climatik-admin", "system:masters")),
        controller_manager=pair("controller-manager", _name("system:kube-controller-manager")),
        scheduler=pair("scheduler", _name("system:kube-scheduler")),
        kwok=pair("kwok", _name("kwok", "system:masters")),
        front_proxy=pair("front-proxy-client", _name("front-proxy-client")),
        service_account_key=sa_key_path,
        service_account_pub=sa_pub_path,
    )


def _issue_pair(
    paths: CertPair,
    subject: x509.Name,
    *,
    ca_name: x509.Name,
    ca_key: PrivateKey,
    server_names: tuple[str, ...] = (),
    server_ips: tuple[str, ...] = (),
    client: bool = True,
) -> CertPair:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue(
        subject=subject,
        key=key,
        issuer=ca_name,
        issuer_key=ca_key,
        server_names=server_names,
        server_ips=server_ips,
        client=client,
    )
    _write_cert(cert, paths.cert)
    _write_key(key, paths.key)
    return paths


def generate_addon_pki(
    directory: Path,
    ca: CertPair,
    *,
    namespace: str,
    service_account: str,
    services: tuple[str, ...],
    cert_dir: Path | None = None,
) -> AddonPKI:
    """Issue an add-on's credentials from the cluster's CA (written by `generate_pki`).

    The identity is the ServiceAccount the add-on runs as in a real cluster, as a client
    certificate: RBAC matches a ServiceAccount subject by user name, so the add-on's own Roles and
    bindings apply to its processes exactly as they would to its pods. The service certificate
    (in `cert_dir`, `directory/certs` unless given) names each Service's cluster DNS names (the
    aggregation layer checks KEDA's adapter against its APIService's Service) and 127.0.0.1 (where
    KEDA's adapter dials its operator, and the API server KServe's webhooks).
    """
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise TypeError(f"{ca.key}: unsupported CA key type {type(ca_key).__name__}")
    ca_name = ca_cert.subject
    identity = _issue_pair(
        CertPair(cert=directory / "identity.crt", key=directory / "identity.key"),
        _name(
            f"system:serviceaccount:{namespace}:{service_account}",
            "system:serviceaccounts",
            f"system:serviceaccounts:{namespace}",
        ),
        ca_name=ca_name,
        ca_key=ca_key,
    )
    cert_dir = cert_dir or directory / "certs"
    cert_dir.mkdir(parents=True, exist_ok=True)
    cert_dir.chmod(0o700)
    (cert_dir / "ca.crt").write_bytes(ca.cert.read_bytes())
    dns_names = tuple(
        f"{svc}.{namespace}.{suffix}" for svc in services for suffix in ("svc", "svc.cluster.local")
    )
    serving = _issue_pair(
        CertPair(cert=cert_dir / "tls.crt", key=cert_dir / "tls.key"),
        _name(f"{namespace}-services"),
        ca_name=ca_name,
        ca_key=ca_key,
        server_names=("localhost", *dns_names),
        server_ips=("127.0.0.1",),
        client=True,
    )
    return AddonPKI(identity=identity, cert_dir=cert_dir, serving=serving)
