"""The local control plane's certificates and keys, generated once per state directory.

A real cluster's shape: one CA signs the apiserver's serving certificate and one
client certificate per component (the identity RBAC sees is the certificate's
CN, its groups are the O fields). Service-account tokens are signed with a
separate RSA key pair.
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

VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class ClientIdentity:
    """A client certificate to issue: file stem, user name (CN) and groups (O)."""

    stem: str
    user: str
    groups: tuple[str, ...] = ()


# Each component authenticates as the identity the default RBAC bootstrap policy expects.
CLIENTS = (
    ClientIdentity("admin", "thresher-admin", ("system:masters",)),
    ClientIdentity("kube-controller-manager", "system:kube-controller-manager"),
    ClientIdentity("kube-scheduler", "system:kube-scheduler"),
    # kwok plays the kubelet of every fake node and writes pod status for all of them.
    ClientIdentity("kwok", "system:kwok", ("system:masters",)),
)


def _write_key(path: Path, key) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _issue(
    subject: x509.Name,
    public_key,
    issuer: x509.Name,
    signing_key,
    now: dt.datetime,
    *,
    ca: bool = False,
    server_names: tuple[str, ...] = (),
    server_ips: tuple[str, ...] = (),
    client: bool = False,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    else:
        usages = []
        if server_names or server_ips:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
            sans = [x509.DNSName(n) for n in server_names] + [
                x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips
            ]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def ensure_pki(pki_dir: Path, now: dt.datetime | None = None) -> None:
    """Create the CA, serving and client certificates and SA keys unless they already exist."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    if (pki_dir / "complete").exists():
        return
    now = now or dt.datetime.now(dt.timezone.utc)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("thresher-dev-ca")
    ca_cert = _issue(ca_name, ca_key.public_key(), ca_name, ca_key, now, ca=True)
    _write_key(pki_dir / "ca.key", ca_key)
    _write_cert(pki_dir / "ca.crt", ca_cert)

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _issue(
        _name("kube-apiserver"), server_key.public_key(), ca_name, ca_key, now,
        server_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                      "kubernetes.default.svc.cluster.local"),
        server_ips=("127.0.0.1", "10.0.0.1"),
    )
    _write_key(pki_dir / "apiserver.key", server_key)
    _write_cert(pki_dir / "apiserver.crt", server_cert)

    for identity in CLIENTS:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(_name(identity.user, identity.groups), key.public_key(), ca_name, ca_key, now,
                      client=True)
        _write_key(pki_dir / f"{identity.stem}.key", key)
        _write_cert(pki_dir / f"{identity.stem}.crt", cert)

    # Service-account tokens: RS256 is what every client library verifies.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki_dir / "sa.key", sa_key)
    (pki_dir / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (pki_dir / "complete").write_text("ok\n")  # written last: a half-made PKI is regenerated


def issue_serving_cert(pki_dir: Path, out_dir: Path, stem: str, common_name: str,
                       names: tuple[str, ...] = (), ips: tuple[str, ...] = (),
                       now: dt.datetime | None = None) -> tuple[Path, Path]:
    """A serving certificate signed by this cluster's CA (the dev registry's): ``(crt, key)``."""
    ca_key = serialization.load_pem_private_key((pki_dir / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((pki_dir / "ca.crt").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue(_name(common_name), key.public_key(), ca_cert.subject, ca_key,
                  now or dt.datetime.now(dt.timezone.utc), server_names=names, server_ips=ips)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_key(out_dir / f"{stem}.key", key)
    _write_cert(out_dir / f"{stem}.crt", cert)
    return out_dir / f"{stem}.crt", out_dir / f"{stem}.key"
