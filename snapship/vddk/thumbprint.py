"""The SHA-1 thumbprint VDDK's ConnectEx wants, taken from the server's actual TLS handshake."""

from __future__ import annotations

import hashlib
import socket
import ssl


def format_thumbprint(der_certificate: bytes) -> str:
    """SHA-1 of a DER certificate as uppercase colon-separated hex ("AB:CD:...")."""
    digest = hashlib.sha1(der_certificate).hexdigest().upper()  # VDDK wants SHA-1
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def server_thumbprint(
    host: str,
    port: int = 443,
    *,
    ca_path: str | None = None,
    verify: bool = True,
    timeout: float = 10.0,
) -> str:
    """Connect, complete the TLS handshake and return the peer certificate's SHA-1 thumbprint.

    With verify=True the chain and host name are checked (against ca_path, or the system CAs)
    before the thumbprint is trusted; verify=False is the explicit --disable-ssl-cert-validation.
    """
    if verify:
        ctx = ssl.create_default_context(cafile=ca_path)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError(f"{host}:{port} presented no certificate")
    return format_thumbprint(der)
