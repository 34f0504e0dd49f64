"""HTTP front ends: the HTTPS /sdk SOAP endpoint and the loopback JSON admin API."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sandbox.vcsim.admin import AdminApi
from sandbox.vcsim.service import VimService
from sandbox.vcsim.simulator import Simulator
from sandbox.vcsim.soap import service_versions_xml
from sandbox.vcsim.tls import TlsFiles, ensure_tls

COOKIE = "vmware_soap_session"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def get_request(self) -> tuple[Any, Any]:
        conn, addr = super().get_request()
        # small request/response pairs: without NODELAY, Nagle + delayed ACK add ~40 ms each
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass     # a client that hangs up or fails TLS is its own problem, not a server trace


def _soap_handler(service: VimService, sim: Simulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "VMware vCenter Server"
        wbufsize = 1 << 16

        def setup(self) -> None:
            # TLS handshake here, in the connection's own thread: an idle or slow client must
            # never hold up accept() for everyone else
            self.request.settimeout(30)
            self.request.do_handshake()
            self.request.settimeout(None)
            super().setup()

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, ctype: str, cookie: str | None = None
                  ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if cookie:
                self.send_header("Set-Cookie", f'{COOKIE}="{cookie}"; Path=/; HttpOnly; Secure;')
            self.end_headers()
            self.wfile.write(body)

        def _drop_if_asked(self) -> bool:
            with sim.inv.lock:
                if sim.faults.drop_connections > 0:
                    sim.faults.drop_connections -= 1
                    self.close_connection = True
                    return True
            return False

        def do_GET(self) -> None:
            if self._drop_if_asked():
                return
            if self.path.rstrip("/") in ("/sdk/vimServiceVersions.xml",):
                self._send(200, service_versions_xml(sim.api_version, sim.profile["prior"]),
                           "text/xml; charset=utf-8")
            elif self.path.startswith("/sdk/vimService"):
                self._send(404, b"", "text/plain")
            else:
                self._send(404, b"not found", "text/plain")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if self._drop_if_asked():
                return
            if not self.path.startswith("/sdk"):
                self._send(404, b"not found", "text/plain")
                return
            key = None
            raw = self.headers.get("Cookie")
            if raw:
                try:
                    c = SimpleCookie()
                    c.load(raw)
                    if COOKIE in c:
                        key = c[COOKIE].value
                except Exception:
                    key = None
            session = sim.sessions.get(key)
            new_cookie = None
            if session is None:
                session = sim.sessions.new()
                new_cookie = session.key
            status, out = service.handle(body, session, self.headers.get("SOAPAction"))
            self._send(status, out, "text/xml; charset=utf-8", new_cookie)

    return Handler


def _admin_handler(api: AdminApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = 1 << 16

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, status: int, obj: Any) -> None:
            body = json.dumps(obj, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._dispatch("GET", {})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                payload = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self._reply(400, {"error": "body is not JSON"})
                return
            self._dispatch("POST", payload)

        def _dispatch(self, method: str, payload: dict[str, Any]) -> None:
            status, obj = api.dispatch(method, self.path, payload)
            self._reply(status, obj)

    return Handler


class SimulatorServer:
    """Runs the SOAP endpoint and the admin API on background threads."""

    def __init__(self, sim: Simulator, host: str = "127.0.0.1", port: int = 0,
                 admin_port: int = 0, hostname: str = "localhost") -> None:
        self.sim = sim
        self.tls: TlsFiles = ensure_tls(sim.state_dir / "tls", hostname)
        self.service = VimService(sim)
        self.httpd = _Server((host, port), _soap_handler(self.service, sim))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.tls.server_cert, self.tls.server_key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True,
                                            do_handshake_on_connect=False)
        self.host = host
        self.hostname = hostname
        self.port = self.httpd.server_address[1]
        self.admin = AdminApi(sim, self)
        self.admin_httpd = _Server(("127.0.0.1", admin_port), _admin_handler(self.admin))
        self.admin_port = self.admin_httpd.server_address[1]
        sim.registry.set_endpoint(hostname, self.port, self.tls.thumbprint_sha1)
        sim.registry.set_users({u.name: u.password for u in sim.users.values()})
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"https://{self.hostname}:{self.port}/sdk"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> None:
        for srv in (self.httpd, self.admin_httpd):
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2},
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self.service.collector.stopping = True
        self.sim.inv.notify()
        for srv in (self.httpd, self.admin_httpd):
            srv.shutdown()
            srv.server_close()
        self.sim.close()

    def write_info(self, path: Path) -> dict[str, Any]:
        """Endpoint, CA and credentials file for humans and scripts (JSON)."""
        creds = self.sim.state_dir / "credentials.json"
        creds.write_text(json.dumps({u.name: u.password for u in self.sim.users.values()},
                                    indent=2))
        creds.chmod(0o600)
        info = {"url": self.url, "host": self.hostname, "port": self.port,
                "ca_path": str(self.tls.ca_cert), "thumbprint": self.tls.thumbprint_sha1,
                "admin_url": self.admin_url, "credentials_file": str(creds),
                "state_dir": str(self.sim.state_dir)}
        path.write_text(json.dumps(info, indent=2))
        return info
