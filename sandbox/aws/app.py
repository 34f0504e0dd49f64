"""The single WSGI application: admin routes, EBS direct APIs, and moto for everything else.

A request goes to the EBS implementation when its SigV4 credential scope names the ``ebs``
service (``Credential=AKID/date/region/ebs/aws4_request``) — exactly how AWS's endpoints
differ — so boto3 clients need nothing but ``endpoint_url``. Other signed requests (EC2, STS,
...) reach moto's own server application (``DomainDispatcherApplication``), in process.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from sandbox.aws.admin import PREFIX, AdminApi
from sandbox.aws.ebs_api import EbsApi
from sandbox.aws.stats import Stats

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def credential_scope(authorization: str | None) -> tuple[str, str] | None:
    """(service, region) from a SigV4 Authorization header, or None."""
    if not authorization or "Credential=" not in authorization:
        return None
    cred = authorization.split("Credential=", 1)[1].split(",", 1)[0].strip()
    parts = cred.split("/")
    if len(parts) < 5:
        return None
    return parts[3].lower(), parts[2]


class LocalAwsApp:
    """Routes each request to the admin API, the EBS direct API or moto."""

    def __init__(self, ebs: EbsApi, admin: AdminApi, moto_app: WsgiApp, stats: Stats) -> None:
        self.ebs = ebs
        self.admin = admin
        self.moto_app = moto_app
        self.stats = stats

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(PREFIX):
            return self.admin(environ, start_response)
        scope = credential_scope(environ.get("HTTP_AUTHORIZATION"))
        if scope is not None and scope[0] == "ebs":
            return self.ebs(environ, start_response, scope[1])
        action = self._count_moto(environ, scope[0] if scope else "unsigned")
        self.ebs.faults.before_moto(action)
        return self.moto_app(environ, start_response)

    def _count_moto(self, environ: dict[str, Any], service: str) -> str:
        """Count query-protocol calls as ``service:Action`` (the body is put back for moto);
        returns that name."""
        action = None
        ctype = environ.get("CONTENT_TYPE", "")
        if ctype.startswith("application/x-www-form-urlencoded"):
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if 0 < length <= 1 << 20:
                raw = environ["wsgi.input"].read(length)
                environ["wsgi.input"] = io.BytesIO(raw)
                action = parse_qs(raw.decode("utf-8", "replace")).get("Action", [None])[-1]
        if action is None:
            action = parse_qs(environ.get("QUERY_STRING", "")).get("Action", [None])[-1]
        name = f"{service}:{action or environ.get('REQUEST_METHOD', '?')}"
        self.stats.request(name)
        return name
