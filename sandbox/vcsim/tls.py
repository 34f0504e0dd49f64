"""TLS material for the simulator: a private CA made on first start and a server certificate.

Clients verify the simulator for real with the CA file (never ``disableSslCertValidation``);
VDDK-style clients pin the server certificate's SHA-1 thumbprint instead.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the CA certificate, the server certificate/key, and the server thumbprint."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    thumbprint_sha1: str


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def sha1_thumbprint(cert_pem: bytes) -> str:
    """Colon-separated upper-case hex SHA-1 of the DER certificate (the VDDK format)."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha1(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def ensure_tls(directory: Path, hostname: str = "localhost") -> TlsFiles:
    """Create (once) the CA and a server certificate for hostname, localhost and 127.0.0.1."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert_p, ca_key_p = directory / "ca.pem", directory / "ca-key.pem"
    srv_cert_p, srv_key_p = directory / "server.pem", directory / "server-key.pem"
    now = dt.datetime.now(dt.UTC)
    if not ca_cert_p.exists() or not ca_key_p.exists():
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "snapship sandbox CA")])
        ca = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(ca_key_p, ca_key)
        ca_cert_p.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        srv_cert_p.unlink(missing_ok=True)
    ca = x509.load_pem_x509_certificate(ca_cert_p.read_bytes())
    ca_key_loaded = serialization.load_pem_private_key(ca_key_p.read_bytes(), None)
    assert isinstance(ca_key_loaded, ec.EllipticCurvePrivateKey)
    wanted = {hostname, "localhost"}
    if srv_cert_p.exists() and srv_key_p.exists():
        cert = x509.load_pem_x509_certificate(srv_cert_p.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if not wanted.issubset(set(sans.get_values_for_type(x509.DNSName))):
            srv_cert_p.unlink()
    if not srv_cert_p.exists() or not srv_key_p.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        alt: list[x509.GeneralName] = [x509.DNSName(h) for h in sorted(wanted)]
        alt.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key_loaded.public_key()), critical=False)
            .sign(ca_key_loaded, hashes.SHA256())
        )
        _write_key(srv_key_p, key)
        srv_cert_p.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return TlsFiles(ca_cert_p, srv_cert_p, srv_key_p, sha1_thumbprint(srv_cert_p.read_bytes()))
