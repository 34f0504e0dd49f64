"""The SHA-1 thumbprint comes from the real TLS handshake with the server."""

from __future__ import annotations

import datetime
import hashlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from snapship.vddk.thumbprint import format_thumbprint, server_thumbprint


def _cert(tmp_path: Path) -> tuple[Path, Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "c.pem", tmp_path / "k.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path, bytes]]:
    cert_path, key_path, der = _cert(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield sock.getsockname()[1], cert_path, der
    stop.set()
    t.join(timeout=5)
    sock.close()


def test_thumbprint_matches_certificate(tls_server: tuple[int, Path, bytes]) -> None:
    port, cert_path, der = tls_server
    want = hashlib.sha1(der).hexdigest().upper()
    got = server_thumbprint("127.0.0.1", port, ca_path=str(cert_path))
    assert got.replace(":", "") == want and len(got) == 59 and got == format_thumbprint(der)
    assert server_thumbprint("127.0.0.1", port, verify=False) == got


def test_untrusted_certificate_is_refused(tls_server: tuple[int, Path, bytes]) -> None:
    port, _, _ = tls_server
    with pytest.raises(ssl.SSLError):
        server_thumbprint("127.0.0.1", port)  # system CAs do not trust the self-signed cert
