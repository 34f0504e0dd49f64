"""A small threaded HTTP/1.1 WSGI server with keep-alive, for the local AWS endpoint.

werkzeug's development server closes the connection after every response, so each boto3 call
paid for a new TCP connection and a new server thread; at 500 KiB per PutSnapshotBlock that made
the server, not the pipeline under test, the bottleneck. This server keeps connections open
(one thread per connection, as botocore pools connections), reads the request body once (handed
to the app both as ``wsgi.input`` and as ``environ["sandbox.body"]``) and always answers with a
Content-Length so the connection can be reused.
"""

from __future__ import annotations

import io
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote_to_bytes

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
IDLE_TIMEOUT = 300.0
MAX_HEADER_LINE = 65536
MAX_HEADERS = 100


class Headers:
    """Request headers in arrival order with case-insensitive ``get``.

    The stdlib parses headers with the ``email`` package, which cost more CPU per request than
    storing the 512 KiB block; this is the small subset the server and BaseHTTPRequestHandler use.
    """

    __slots__ = ("_by_name", "_items")

    def __init__(self) -> None:
        self._items: list[tuple[str, str]] = []
        self._by_name: dict[str, str] = {}

    def add(self, name: str, value: str) -> None:
        self._items.append((name, value))
        key = name.lower()
        self._by_name[key] = f"{self._by_name[key]},{value}" if key in self._by_name else value

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._by_name.get(name.lower(), default)

    def items(self) -> list[tuple[str, str]]:
        return self._items

    def __len__(self) -> int:
        return len(self._items)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT
    server: WsgiHttpServer
    headers: Headers  # type: ignore[assignment]
    raw_requestline: bytes

    def parse_request(self) -> bool:
        """Request line and headers, without the ``email`` parser (see :class:`Headers`)."""
        self.command = None  # type: ignore[assignment]
        self.request_version = "HTTP/0.9"
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            self.send_error(400, "Bad request line")
            return False
        self.command, self.path, self.request_version = words
        headers = Headers()
        while True:
            line = self.rfile.readline(MAX_HEADER_LINE + 1)
            if len(line) > MAX_HEADER_LINE or len(headers) > MAX_HEADERS:
                self.send_error(431, "Request header fields too large")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            name, sep, value = line.decode("iso-8859-1").partition(":")
            if not sep:
                self.send_error(400, "Malformed header line")
                return False
            headers.add(name.strip(), value.strip())
        self.headers = headers
        conn = (headers.get("Connection") or "").lower()
        keep = conn == "keep-alive" if self.request_version == "HTTP/1.0" else conn != "close"
        self.close_connection = not keep
        if (headers.get("Expect") or "").lower() == "100-continue":
            self.send_response_only(100)
            self.end_headers()
        return True

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def _read_body(self) -> bytes:
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _environ(self, body: bytes) -> dict[str, Any]:
        path, _, query = self.path.partition("?")
        if path.startswith(("http://", "https://")):  # absolute-form request target
            path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
        host, port = self.server.server_address[:2]
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query,
            "RAW_URI": self.path,
            "REQUEST_URI": self.path,
            "SERVER_NAME": str(host),
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_PORT": self.client_address[1],
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "sandbox.body": body,
        }
        for name, value in self.headers.items():
            if "_" in name:  # as werkzeug: X_Foo must not pass for X-Foo
                continue
            key = name.upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value
                continue
            if key in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
                continue
            key = "HTTP_" + key
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _run(self) -> None:
        body = self._read_body()
        environ = self._environ(body)
        state: dict[str, Any] = {}

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            state["status"], state["headers"] = status, headers
            return lambda data: state.setdefault("extra", []).append(data)

        try:
            result = self.server.app(environ, start_response)
            try:
                chunks = list(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Exception as exc:
            self.server.report(exc)
            state = {"status": "500 Internal Server Error", "headers": [
                ("Content-Type", "text/plain")]}
            chunks = [b"internal error in the local AWS sandbox"]
        payload = b"".join([*state.get("extra", []), *chunks])
        code, _, reason = state["status"].partition(" ")
        lines = [f"HTTP/1.1 {code} {reason}"]
        for name, value in state["headers"]:
            if name.lower() in ("content-length", "connection", "transfer-encoding"):
                continue
            lines.append(f"{name}: {value}")
        send_body = self.command != "HEAD" and not (
            100 <= int(code) < 200 or int(code) in (204, 304)
        )
        lines.append(f"Content-Length: {len(payload) if send_body else 0}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if send_body and len(payload) <= 65536:
            self.wfile.write(head + payload)
        else:
            self.wfile.write(head)
            if send_body:
                self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _run


class WsgiHttpServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` running a WSGI app with HTTP/1.1 keep-alive."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, host: str, port: int, app: WsgiApp, verbose: bool = False) -> None:
        self.app = app
        self.verbose = verbose
        self._errors_lock = threading.Lock()
        self._conns_lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        super().__init__((host, port), _Handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conns_lock:
                self._conns.discard(request)

    def close_connections(self) -> None:
        """End kept-alive connections so their threads exit (clients reconnect if needed)."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def report(self, exc: BaseException) -> None:
        with self._errors_lock:
            print(f"local-aws: unhandled error: {exc!r}", file=sys.stderr)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | socket.timeout | TimeoutError):
            return  # a client going away is not worth a traceback
        super().handle_error(request, client_address)
