"""The libcurl transport of PutSnapshotBlock against a small local server: TLS verified with the
given CA bundle (and refused without it), the proxy from the config used, a bound on the call's
time, the body sent whole without `Expect: 100-continue`, and every connection fault one
of botocore's own exceptions (the retry conditions and `is_transient` rest on those types)."""

from __future__ import annotations

import hashlib
import os
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import (
    EndpointConnectionError,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
)

from sandbox.vcsim.tls import ensure_tls
from snapship.ebs.client import is_transient
from snapship.ebs.curl_http import CurlHttp


class Echo(BaseHTTPRequestHandler):
    """Answers what it was sent: the request line's target, the body's SHA-256, Expect."""

    delay_s = 0.0

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        time.sleep(self.delay_s)
        self.send_response(200)
        self.send_header("X-Target", self.path)
        self.send_header("X-Body-Sha256", hashlib.sha256(body).hexdigest())
        self.send_header("X-Expect", self.headers.get("Expect", "none"))
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(
    handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None
) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        scheme = "https" if tls else "http"
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def plain() -> Iterator[str]:
    yield from serve(Echo)


@pytest.fixture
def slow() -> Iterator[str]:
    class Slow(Echo):
        delay_s = 5.0

    yield from serve(Slow)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    files = ensure_tls(tmp_path / "tls")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(files.server_cert, files.server_key)
    for url in serve(Echo, ctx):
        yield url, files.ca_cert


BODY = os.urandom(512 * 1024)


def test_the_body_arrives_whole_with_no_expect_round_trip(plain: str) -> None:
    http = CurlHttp()
    for _ in range(3):  # the handle and its connection are reused
        answer = http.send("PUT", f"{plain}/snapshots/snap-1/blocks/7", ["X-A: 1"], BODY)
        assert answer.status_code == 200
        assert answer.headers["x-body-sha256"] == hashlib.sha256(BODY).hexdigest()
        assert answer.headers["X-Expect"] == "none"
        assert answer.headers["x-target"] == "/snapshots/snap-1/blocks/7"
        assert answer.content == b"{}"


def test_tls_is_verified_against_the_given_ca_bundle(tls_server: tuple[str, Path]) -> None:
    url, ca = tls_server
    with pytest.raises(SSLError) as info:
        CurlHttp(verify=True).send("PUT", f"{url}/x", [], BODY)  # certifi's bundle: unknown CA
    assert is_transient(info.value)  # botocore's type; a retry is Temporal's to bound
    assert CurlHttp(verify=str(ca)).send("PUT", f"{url}/x", [], BODY).status_code == 200
    assert CurlHttp(verify=False).send("PUT", f"{url}/x", [], BODY).status_code == 200


def test_the_configured_proxy_carries_the_request(plain: str) -> None:
    http = CurlHttp(proxies={"http": plain})
    target = "http://ebs.us-east-1.amazonaws.invalid/snapshots/s/blocks/1"
    answer = http.send("PUT", target, [], BODY)
    # A proxy is sent the absolute URL: the echo server was the proxy.
    assert answer.headers["x-target"] == target


def test_without_a_configured_proxy_the_environments_is_used_as_boto3_does(
    plain: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = "http://ebs.us-east-1.amazonaws.invalid/snapshots/s/blocks/2"
    monkeypatch.setenv("HTTP_PROXY", plain)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert CurlHttp().send("PUT", target, [], BODY).headers["x-target"] == target
    monkeypatch.setenv("NO_PROXY", "amazonaws.invalid")
    with pytest.raises(EndpointConnectionError):  # straight to a name that does not resolve
        CurlHttp(connect_timeout_s=2).send("PUT", target, [], BODY)


def test_an_unreachable_proxy_is_botocores_proxy_error_without_its_password() -> None:
    secret = os.urandom(8).hex()
    http = CurlHttp(proxies={"http": f"http://squid:{secret}@127.0.0.1:9"}, connect_timeout_s=2)
    with pytest.raises(ProxyConnectionError) as info:
        http.send("PUT", "http://ebs.example.invalid/x", [], BODY)
    assert is_transient(info.value)
    assert secret not in str(info.value) and "127.0.0.1" in str(info.value)


def test_an_unreachable_endpoint_is_botocores_connection_error() -> None:
    with pytest.raises(EndpointConnectionError) as info:
        CurlHttp(connect_timeout_s=2).send("PUT", "http://127.0.0.1:9/x", [], BODY)
    assert is_transient(info.value)
    assert "127.0.0.1:9" in str(info.value)


def test_a_silent_server_is_a_read_timeout_after_the_read_timeout(slow: str) -> None:
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError) as info:
        CurlHttp(connect_timeout_s=1, read_timeout_s=1).send("PUT", f"{slow}/x", [], BODY)
    assert time.monotonic() - started < 4.5  # the server answers after 5 s
    assert is_transient(info.value)
