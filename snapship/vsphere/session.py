"""A vCenter session that verifies TLS, explains failures, and survives session expiry.

Why not ``pyVim.connect.SmartConnect``: it silently turns certificate validation off for
``localhost``/``127.0.0.1``, its errors are raw, and it offers no re-login. Here every call (method
calls and property reads alike, since pyvmomi routes both through ``InvokeMethod``) goes through
one stub that counts round trips and, on ``vim.fault.NotAuthenticated`` (vCenter's idle session
timeout hits long copies), logs in again and retries that call once.
"""

from __future__ import annotations

import http.client
import io
import logging
import socket
import ssl
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from http.cookies import SimpleCookie
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from pyVmomi import SoapStubAdapter, VmomiSupport, vim, vmodl
from pyVmomi.SoapAdapter import SoapResponseDeserializer
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_none

from snapship.telemetry.metrics import observe_vcenter_call
from snapship.vsphere.errors import (
    CaFileUnusable,
    InvalidCredentials,
    TlsVerificationFailed,
    UnsupportedVcenter,
    VcenterProtocolError,
    VcenterUnreachable,
)

log = logging.getLogger(__name__)

SUPPORTED_VCENTER_RELEASES = ("6.7", "7.0", "8.0")
# Used when the server publishes no vimServiceVersions.xml: every supported vCenter speaks 6.7.
FALLBACK_API_VERSION = "vim.version.version12"
DEFAULT_HTTP_TIMEOUT_S = 300.0
# Calls that must never trigger a re-login themselves.
_NO_RELOGIN = frozenset({"Login", "Logout", "RetrieveServiceContent", "LoginByToken"})


@runtime_checkable
class Revealable(Protocol):
    def reveal(self) -> str: ...


Password = str | Revealable


def _reveal(password: Password) -> str:
    if isinstance(password, str):
        return password
    return password.reveal()


def build_ssl_context(ca_path: str | None, disable_ssl_cert_validation: bool) -> ssl.SSLContext:
    """TLS context for vCenter: verified (CA file or system store) unless explicitly disabled."""
    if disable_ssl_cert_validation:
        log.warning(
            "TLS certificate validation for vCenter is DISABLED (--disable-ssl-cert-validation): "
            "the connection is encrypted but the server is not authenticated."
        )
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if ca_path is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=ca_path)
    except FileNotFoundError:
        raise CaFileUnusable(ca_path, "file not found") from None
    except PermissionError:
        raise CaFileUnusable(ca_path, "permission denied (Error 13)") from None
    except (ssl.SSLError, ValueError) as exc:
        raise CaFileUnusable(ca_path, f"not a PEM CA certificate: {exc}") from None


def transport_error(
    exc: BaseException, host: str, port: int, ca_path: str | None, timeout_s: float
) -> Exception:
    """Translate a socket/TLS/HTTP failure into one of our explained errors."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or str(exc)
        return TlsVerificationFailed(host, port, detail, ca_path)
    if isinstance(exc, ssl.SSLError):
        return VcenterProtocolError(host, port, f"TLS handshake failed: {exc.reason or exc}")
    if isinstance(exc, socket.gaierror):
        return VcenterUnreachable(host, port, "the host name does not resolve")
    if isinstance(exc, ConnectionRefusedError):
        return VcenterUnreachable(host, port, "connection refused")
    if isinstance(exc, TimeoutError | socket.timeout):
        return VcenterUnreachable(host, port, f"no answer within {timeout_s:g} s")
    if isinstance(exc, http.client.HTTPException):
        return VcenterProtocolError(host, port, f"HTTP error: {exc}")
    if isinstance(exc, OSError):
        return VcenterUnreachable(host, port, exc.strerror or type(exc).__name__)
    return VcenterProtocolError(host, port, f"{type(exc).__name__}: {exc}")


def negotiate_api_version(
    host: str, port: int, ctx: ssl.SSLContext, timeout_s: float
) -> tuple[str, list[str]]:
    """Pick the newest API version both pyvmomi and the server speak.

    Reads ``/sdk/vimServiceVersions.xml`` (what vCenter publishes for exactly this purpose). This
    is also the first TLS contact, so unreachable hosts and certificate problems surface here.
    Returns (pyvmomi version name, version ids the server listed).
    """
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout_s)
    try:
        conn.request("GET", "/sdk/vimServiceVersions.xml")
        resp = conn.getresponse()
        body = resp.read()
        status = resp.status
    finally:
        conn.close()
    if status != 200:
        return FALLBACK_API_VERSION, []
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return FALLBACK_API_VERSION, []
    server_ids: list[str] = []
    for ns in root.findall("namespace"):
        if (ns.findtext("name") or "").strip() != "urn:vim25":
            continue
        server_ids.append((ns.findtext("version") or "").strip())
        server_ids.extend((v.text or "").strip() for v in ns.findall("priorVersions/version"))
    known = set(server_ids)
    for name in VmomiSupport.GetServiceVersions("vim25"):
        if VmomiSupport.versionIdMap.get(name) in known:
            return name, server_ids
    return FALLBACK_API_VERSION, server_ids


class _SessionStub(SoapStubAdapter):
    """SOAP stub that counts round trips and re-logs in once on NotAuthenticated."""

    def __init__(self, relogin: Callable[[int], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._relogin = relogin
        self._counter_lock = threading.Lock()
        self.round_trips = 0
        self.generation = 0  # bumped by each successful re-login

    def _count(self) -> None:
        with self._counter_lock:
            self.round_trips += 1

    def _with_relogin(self, what: str, call: Callable[[], Any]) -> Any:
        seen = [self.generation]

        def _before_retry(_: Any) -> None:
            log.info("vCenter session expired during %s; logging in again", what)
            self._relogin(seen[0])

        for attempt in Retrying(
            stop=stop_after_attempt(2),
            wait=wait_none(),
            retry=retry_if_exception_type(vim.fault.NotAuthenticated),
            before_sleep=_before_retry,
            reraise=True,
        ):
            with attempt, observe_vcenter_call(what):
                seen[0] = self.generation
                self._count()
                return call()
        raise AssertionError("unreachable")  # pragma: no cover

    def InvokeMethod(self, mo: Any, info: Any, args: Any, outerStub: Any = None) -> Any:
        if info.wsdlName in _NO_RELOGIN or outerStub is not None:
            self._count()
            with observe_vcenter_call(info.wsdlName):
                return super().InvokeMethod(mo, info, args, outerStub)
        return self._with_relogin(
            info.wsdlName, lambda: super(_SessionStub, self).InvokeMethod(mo, info, args, outerStub)
        )

    def invoke_raw(self, mo: Any, info: Any, args: Any) -> bytes:
        """Call a method and return the raw SOAP body of a successful answer.

        For bulk reads parsed without pyvmomi objects (fastxml.py). Faults are deserialized by
        pyvmomi and raised exactly as ``InvokeMethod`` would, re-login included.
        """
        return bytes(self._with_relogin(info.wsdlName, lambda: self._post_raw(mo, info, args)))

    def _post_raw(self, mo: Any, info: Any, args: Any) -> bytes:
        headers = {
            "Cookie": self.cookie,
            "SOAPAction": self.versionId,
            "Content-Type": "text/xml; charset=utf-8",
            "User-Agent": "snapship (pyvmomi)",
        }
        if self._customHeaders:
            headers.update(self._customHeaders)
        req = self.SerializeRequest(mo, info, args)
        conn = self.GetConnection()
        try:
            conn.request("POST", self.path, req, headers)
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self.DropConnections()
            raise
        cookie = resp.getheader("Set-Cookie") or resp.getheader("set-cookie")
        if cookie:
            self.cookie = cookie
            morsel = SimpleCookie(cookie).get("vmware_soap_session")
            if morsel is not None:
                self.SetSessionId(morsel.value)
        if resp.status == 200:
            self.ReturnConnection(conn)
            return body
        if resp.status == 500:
            self.ReturnConnection(conn)
            fault = SoapResponseDeserializer(self).Deserialize(io.BytesIO(body), info.result)
            if isinstance(fault, Exception):
                raise fault
        conn.close()
        raise http.client.HTTPException(f"{resp.status} {resp.reason}")


class VcenterSession:
    """One authenticated vCenter session; use as a context manager so it always logs out."""

    def __init__(
        self,
        host: str,
        user: str,
        password: Password,
        *,
        port: int = 443,
        ca_path: str | None = None,
        disable_ssl_cert_validation: bool = False,
        timeout_s: float = DEFAULT_HTTP_TIMEOUT_S,
    ) -> None:
        self.host = host
        self.port = port
        self.user = user
        self._password = password  # kept as given (Secret stays wrapped); revealed only at login
        self.ca_path = ca_path
        self.disable_ssl_cert_validation = disable_ssl_cert_validation
        self.timeout_s = timeout_s
        self.relogins = 0
        self._login_lock = threading.Lock()
        self._stub: _SessionStub | None = None
        self._si: Any = None
        self._content: Any = None
        self.api_version: str | None = None

    def __repr__(self) -> str:
        return f"VcenterSession(host={self.host!r}, port={self.port}, user={self.user!r})"

    # -- lifecycle -------------------------------------------------------------------------
    def connect(self) -> VcenterSession:
        ctx = build_ssl_context(self.ca_path, self.disable_ssl_cert_validation)
        try:
            version, _ = negotiate_api_version(self.host, self.port, ctx, self.timeout_s)
        except Exception as exc:  # socket/TLS/HTTP: translate with context
            raise transport_error(exc, self.host, self.port, self.ca_path, self.timeout_s) from exc
        self.api_version = version
        stub = _SessionStub(
            self._relogin,
            host=self.host,
            port=self.port,
            version=version,
            sslContext=ctx,
            httpConnectionTimeout=self.timeout_s,
        )
        self._stub = stub
        self._si = vim.ServiceInstance("ServiceInstance", stub)
        try:
            self._content = self._si.RetrieveContent()
        except vmodl.MethodFault as exc:
            raise VcenterProtocolError(
                self.host, self.port, f"RetrieveServiceContent: {type(exc).__name__}"
            ) from None
        except Exception as exc:
            raise transport_error(exc, self.host, self.port, self.ca_path, self.timeout_s) from exc
        self._check_version()
        try:
            self._login()
        except InvalidCredentials:
            stub.DropConnections()
            raise
        log.info(
            "Connected to vCenter %s:%s (%s, API %s) as %s",
            self.host,
            self.port,
            self.about.fullName,
            version,
            self.user,
        )
        return self

    def _check_version(self) -> None:
        about = self._content.about
        if about.apiType != "VirtualCenter":
            raise UnsupportedVcenter(
                self.host, f"it is a {about.apiType} ({about.fullName}), not vCenter Server"
            )
        release = ".".join((about.version or "").split(".")[:2])
        if release not in SUPPORTED_VCENTER_RELEASES:
            raise UnsupportedVcenter(self.host, f"it runs version {about.version}")

    def _login(self) -> None:
        try:
            self._content.sessionManager.Login(self.user, _reveal(self._password), None)
        except vim.fault.InvalidLogin:
            # `from None`: the fault's request context must not travel with our error.
            raise InvalidCredentials(self.host, self.user) from None
        except vmodl.MethodFault as exc:
            raise VcenterProtocolError(
                self.host, self.port, f"login failed: {type(exc).__name__}"
            ) from None
        except Exception as exc:
            raise transport_error(exc, self.host, self.port, self.ca_path, self.timeout_s) from None

    def _relogin(self, seen_generation: int) -> None:
        stub = self.stub
        with self._login_lock:
            if stub.generation != seen_generation:
                return  # another thread already logged in again
            stub.cookie = ""  # the dead session's cookie must not be presented again
            self._login()
            stub.generation += 1
            self.relogins += 1

    def close(self) -> None:
        if self._stub is None:
            return
        try:
            if self._content is not None:
                self._content.sessionManager.Logout()
        except Exception as exc:  # already expired, network gone: nothing left to free
            log.debug("vCenter logout failed: %s", type(exc).__name__)
        finally:
            self._stub.DropConnections()
            self._stub = None

    def __enter__(self) -> VcenterSession:
        if self._stub is None:
            self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- accessors -------------------------------------------------------------------------
    @property
    def stub(self) -> _SessionStub:
        if self._stub is None:
            raise RuntimeError("VcenterSession is not connected (call connect() or use 'with')")
        return self._stub

    @property
    def content(self) -> Any:
        self.stub  # noqa: B018 - raises when closed
        return self._content

    @property
    def about(self) -> Any:
        return self.content.about

    @property
    def instance_uuid(self) -> str:
        return str(self.about.instanceUuid)

    @property
    def round_trips(self) -> int:
        return self.stub.round_trips

    def managed_object(self, kind: type, moref: str) -> Any:
        """A reference to an object by moref id, bound to this session (no round trip)."""
        return kind(moref, self.stub)

    def vm(self, moref: str) -> Any:
        return self.managed_object(vim.VirtualMachine, moref)
