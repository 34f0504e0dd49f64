"""HTTP codec server so people can read encrypted histories.

Why: with `snapship.codec` every payload in Temporal is ciphertext. The Temporal Web UI
(`--ui-codec-endpoint` / "Data Encoder" setting) and the CLI (`temporal ... --codec-endpoint`)
decode through a codec server speaking Temporal's codec protocol:

  POST <any prefix>/encode and <any prefix>/decode
  body and answer: a `temporal.api.common.v1.Payloads` message in protobuf JSON form,
  {"payloads": [{"metadata": {"encoding": "<base64>"}, "data": "<base64>"}]}
  the UI sends `Content-Type: application/json` and `X-Namespace`.

The browser calls it cross-origin, so the UI's origin must be allowed by CORS (with an OPTIONS
preflight). The server holds the keys, so it listens on loopback by default, and a request that
carries an `Origin` not in the allow list is refused outright (not just left without CORS
headers), so another web page open in the operator's browser cannot use it as a decryption
oracle.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from snapship.codec import CodecError, EncryptionCodec, KeyRing
from snapship.secrets import Secret

log = logging.getLogger(__name__)

#: The Web UI of the embedded dev server (`temporal server start-dev`, UI port 8233).
DEFAULT_ALLOWED_ORIGINS: tuple[str, ...] = ("http://127.0.0.1:8233", "http://localhost:8233")


def ui_origins(ui_port: int) -> tuple[str, ...]:
    """The origins of a Web UI served on `ui_port` of this machine (the browser sends either)."""
    return (f"http://127.0.0.1:{ui_port}", f"http://localhost:{ui_port}")


ALLOWED_HEADERS = "content-type,x-namespace"
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass
class CodecServer:
    """A running codec server; `stop()` shuts it down and frees the port."""

    host: str
    port: int
    _server: ThreadingHTTPServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    server_version = "snapship-codec"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    # Filled in by the per-server subclass built in start_codec_server.
    codec: EncryptionCodec
    allowed_origins: frozenset[str]
    auth_header: bytes | None = None  # expected "Authorization" value, when auth is on

    def log_message(self, format: str, *args: object) -> None:
        log.debug("codec server: " + format, *args)

    # -- CORS ------------------------------------------------------------------------------

    def _origin_ok(self) -> bool:
        origin = self.headers.get("Origin")
        return origin is None or origin in self.allowed_origins or "*" in self.allowed_origins

    def _cors_headers(self) -> None:
        origin = self.headers.get("Origin")
        if origin is None:
            return
        self.send_header("Access-Control-Allow-Origin", origin)
        self.send_header("Vary", "Origin")
        self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
        allowed = ALLOWED_HEADERS + (",authorization" if self.auth_header else "")
        self.send_header("Access-Control-Allow-Headers", allowed)
        self.send_header("Access-Control-Allow-Credentials", "true")
        self.send_header("Access-Control-Max-Age", "600")
        if self.headers.get("Access-Control-Request-Private-Network", "").lower() == "true":
            # Chrome's Private Network Access: a UI served from elsewhere reaching loopback.
            self.send_header("Access-Control-Allow-Private-Network", "true")

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        if self._origin_ok():
            self._cors_headers()
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._reply(status, (message + "\n").encode(), "text/plain; charset=utf-8")

    # -- verbs -----------------------------------------------------------------------------

    def _operation(self) -> str | None:
        # Only the last path segment counts, so the server can be mounted under any prefix.
        last = self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        return last if last in ("encode", "decode") else None

    def do_OPTIONS(self) -> None:
        if not self._origin_ok():
            self._error(403, "origin not allowed")
            return
        if self._operation() is None:
            self._error(404, "not found")
            return
        self.send_response(200)
        self._cors_headers()
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        if not self._origin_ok():
            self._error(403, "origin not allowed")
            return
        operation = self._operation()
        if operation is None:
            self._error(404, "not found: POST .../encode or .../decode")
            return
        if self.auth_header is not None:
            given = self.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, self.auth_header):
                self._error(401, "missing or wrong Authorization header")
                return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(411, "Content-Length required")
            return
        if length < 0 or length > MAX_BODY_BYTES:
            self._error(413, "body too large")
            return
        body = self.rfile.read(length)
        try:
            request = json_format.Parse(body, Payloads())
        except (json_format.ParseError, UnicodeDecodeError) as exc:
            self._error(400, f"body is not Payloads JSON: {exc}")
            return
        try:
            if operation == "encode":
                result = self.codec.encode_sync(request.payloads)
            else:
                result = self.codec.decode_sync(request.payloads)
        except CodecError as exc:
            self._error(400, str(exc))
            return
        answer = json_format.MessageToJson(Payloads(payloads=result), indent=None)
        self._reply(200, answer.encode())

    def do_GET(self) -> None:
        self._error(405, "use POST .../encode or .../decode")


def start_codec_server(
    codec: EncryptionCodec,
    port: int = 0,
    addr: str = "127.0.0.1",
    allowed_origins: Iterable[str] = DEFAULT_ALLOWED_ORIGINS,
    auth_token: str | Secret | None = None,
) -> CodecServer:
    """Serve `codec` over HTTP in a background thread. `port=0` picks a free port.

    `auth_token`: when set, POSTs must carry `Authorization: Bearer <token>` (the CLI's
    `--codec-auth "Bearer <token>"`), so other local users cannot decrypt through the server.
    The dev server's Web UI sends no token, so leave it unset where the UI must decode.
    """
    token = auth_token.reveal() if isinstance(auth_token, Secret) else auth_token
    handler = type(
        "CodecHandler",
        (_Handler,),
        {
            "codec": codec,
            "allowed_origins": frozenset(o.rstrip("/") for o in allowed_origins),
            "auth_header": f"Bearer {token}".encode() if token else None,
        },
    )
    server = ThreadingHTTPServer((addr, port), handler)
    server.daemon_threads = True
    if addr not in ("127.0.0.1", "::1", "localhost"):
        log.warning(
            "codec server listening on %s: anyone who can reach it can decrypt payloads", addr
        )
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="codec-server", daemon=True
    )
    thread.start()
    bound_host, bound_port = server.server_address[:2]
    return CodecServer(host=str(bound_host), port=int(bound_port), _server=server, _thread=thread)


def main(argv: list[str] | None = None) -> int:
    """`python -m snapship.codec_server --secrets PATH`: serve until interrupted."""
    from snapship.secrets import CODEC_KEY, SecretStore

    parser = argparse.ArgumentParser(description="snapship payload codec server")
    parser.add_argument("--secrets", type=Path, required=True, help="snapship secret store file")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--addr", default="127.0.0.1")
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=None,
        help="Web UI origin allowed by CORS (repeatable); default: the dev server UI on 8233",
    )
    args = parser.parse_args(argv)
    keyring = KeyRing.from_text(SecretStore(args.secrets).require(CODEC_KEY))
    server = start_codec_server(
        EncryptionCodec(keyring),
        port=args.port,
        addr=args.addr,
        allowed_origins=args.allow_origin or DEFAULT_ALLOWED_ORIGINS,
    )
    print(f"codec server at {server.url} (Ctrl-C to stop)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
