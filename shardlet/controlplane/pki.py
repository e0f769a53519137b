"""Certificates and keys for a local control plane, made with `cryptography` (no openssl).

One CA signs the apiserver's serving certificate and the client certificates of the admin and
the controllers; a separate RSA key pair signs service-account tokens. Every private key is
written 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class PKIPaths:
    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def kubelet_client_cert(self) -> Path:
        """The apiserver's client certificate towards kubelets (shardlet's kubelet server)."""
        return self.dir / "apiserver-kubelet-client.crt"

    @property
    def kubelet_client_key(self) -> Path:
        return self.dir / "apiserver-kubelet-client.key"

    @property
    def kubelet_serving_cert(self) -> Path:
        """The serving certificate of shardlet's kubelet server (127.0.0.1, localhost)."""
        return self.dir / "kubelet.crt"

    @property
    def kubelet_serving_key(self) -> Path:
        return self.dir / "kubelet.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"


def write_private(path: Path, data: bytes) -> None:
    """Write a secret so that it is never readable by others, not even for an instant."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _sign(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    usages: list[x509.ObjectIdentifier] | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + (_VALIDITY * 10 if ca else _VALIDITY))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    else:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=True, key_cert_sign=False, crl_sign=False,
                content_commitment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    if usages:
        b = b.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def generate(dir: Path, service_ip: str = "10.96.0.1") -> PKIPaths:
    """Create the CA, serving cert, admin client cert and service-account keys under `dir`."""
    dir.mkdir(parents=True, exist_ok=True)
    os.chmod(dir, 0o700)
    p = PKIPaths(dir)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("shardlet-ca")
    ca_cert = _sign(ca_name, ca_key, ca_name, ca_key, ca=True)
    p.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    write_private(p.ca_key, _key_pem(ca_key))

    sans: list[x509.GeneralName] = [
        x509.DNSName(n)
        for n in ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                  "kubernetes.default.svc.cluster.local")
    ]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1", service_ip)]
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _sign(_name("kube-apiserver"), srv_key, ca_name, ca_key,
                usages=[ExtendedKeyUsageOID.SERVER_AUTH], sans=sans)
    p.serving_cert.write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    write_private(p.serving_key, _key_pem(srv_key))

    adm_key = ec.generate_private_key(ec.SECP256R1())
    adm = _sign(_name("shardlet-admin", "system:masters"), adm_key, ca_name, ca_key,
                usages=[ExtendedKeyUsageOID.CLIENT_AUTH])
    p.admin_cert.write_bytes(adm.public_bytes(serialization.Encoding.PEM))
    write_private(p.admin_key, _key_pem(adm_key))

    # the kubelet API (logs): the apiserver presents this client certificate to shardlet's kubelet
    # server, which presents this serving one; both checked against the CA
    kc_key = ec.generate_private_key(ec.SECP256R1())
    kc = _sign(_name("kube-apiserver-kubelet-client", "system:masters"), kc_key, ca_name, ca_key,
               usages=[ExtendedKeyUsageOID.CLIENT_AUTH])
    p.kubelet_client_cert.write_bytes(kc.public_bytes(serialization.Encoding.PEM))
    write_private(p.kubelet_client_key, _key_pem(kc_key))
    ks_key = ec.generate_private_key(ec.SECP256R1())
    ks = _sign(_name("shardlet-kubelet"), ks_key, ca_name, ca_key, usages=[ExtendedKeyUsageOID.SERVER_AUTH],
               sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                     x509.IPAddress(ipaddress.ip_address("::1"))])
    p.kubelet_serving_cert.write_bytes(ks.public_bytes(serialization.Encoding.PEM))
    write_private(p.kubelet_serving_key, _key_pem(ks_key))

    # Service-account tokens are signed RS256 by default: an RSA pair.
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_private(p.sa_key, sa.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    p.sa_pub.write_bytes(sa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return p
