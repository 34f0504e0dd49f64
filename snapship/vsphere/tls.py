"""The certificate vCenter actually presents, and its SHA-1 thumbprint (what VDDK's connect takes).

The verified thumbprint for VDDK itself is ``snapship.vddk.thumbprint.server_thumbprint``; this
module adds the PEM and SHA-256 (shown to the operator at install so they can compare it with
vCenter's own display) and the explained connection errors of session.py.

Taken from a real TLS handshake with the endpoint, not from configuration, so it reflects the
certificate in use. Fetching does not validate the chain (the point is to see the certificate);
whether to trust it is decided by the verified session (session.py).
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from dataclasses import dataclass

from snapship.vddk.thumbprint import format_thumbprint as vddk_thumbprint
from snapship.vsphere.session import transport_error


@dataclass(frozen=True)
class ServerCertificate:
    der: bytes
    pem: str
    sha1_thumbprint: str  # "AB:CD:..." upper-case, colon-separated, as VDDK expects
    sha256_thumbprint: str


def certificate_from_der(der: bytes) -> ServerCertificate:
    sha256 = hashlib.sha256(der).digest()
    return ServerCertificate(
        der=der,
        pem=ssl.DER_cert_to_PEM_cert(der),
        sha1_thumbprint=vddk_thumbprint(der),  # one formatter for VDDK's format: snapship.vddk
        sha256_thumbprint=":".join(f"{b:02X}" for b in sha256),
    )


def fetch_server_certificate(
    host: str, port: int = 443, timeout_s: float = 15.0
) -> ServerCertificate:
    """Handshake with host:port and return the leaf certificate it presented."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            ctx.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except OSError as exc:
        raise transport_error(exc, host, port, None, timeout_s) from exc
    if not der:
        raise transport_error(OSError("no certificate presented"), host, port, None, timeout_s)
    return certificate_from_der(der)
