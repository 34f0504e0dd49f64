"""HTTP for PutSnapshotBlock through libcurl (pycurl): the request and its answer never pass
through Python's http.client.

Why: with the request already signed in C (awscrt), what was left of a PutSnapshotBlock's CPU was
urllib3 and http.client: request assembly, and answer headers parsed by the `email` package.
Measured per call, 2,048 calls of 512 KiB against local AWS, one to 32 threads, alternating on
one machine: 0.78-0.91 ms through botocore's URLLib3Session, 0.32-0.37 ms through a pycurl easy
handle. libcurl also releases the GIL for the whole transfer, body included (the CRT's own HTTP
client reads a Python body stream chunk by chunk, taking the GIL for each).

What a boto3 user expects is kept: the endpoint (`--endpoint`), the proxy from the client config,
TLS verification (a CA bundle path, botocore's default bundle, or off), the connect timeout, a
bound on the whole call (connect plus read timeout: an upload never hangs), and failures raised
as botocore's own exceptions, so the retry conditions, `is_transient` and the error texts see
what a boto3 call raises. Handles are pooled: each keeps its connection alive between calls,
and one is used by one thread at a time.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass

import pycurl
from botocore.awsrequest import HeadersDict
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
)
from botocore.httpsession import get_cert_path, mask_proxy_url
from botocore.utils import get_environ_proxies

from snapship.ebs.curl_options import CurlOptions, perform, was_connected

_CONNECT_FAILED = {pycurl.E_COULDNT_RESOLVE_HOST, pycurl.E_COULDNT_CONNECT}
_PROXY_FAILED = {pycurl.E_COULDNT_RESOLVE_PROXY}
_TLS_FAILED = {
    pycurl.E_SSL_CONNECT_ERROR,
    pycurl.E_PEER_FAILED_VERIFICATION,
    pycurl.E_SSL_CACERT_BADFILE,
    pycurl.E_SSL_CERTPROBLEM,
}
_CLOSED = {pycurl.E_SEND_ERROR, pycurl.E_RECV_ERROR, pycurl.E_GOT_NOTHING, pycurl.E_PARTIAL_FILE}


@dataclass
class CurlResponse:
    status_code: int
    headers: HeadersDict
    content: bytes


class CurlHttp:
    """A pool of libcurl easy handles for one endpoint's calls; thread-safe."""

    def __init__(
        self,
        *,
        verify: bool | str = True,
        proxies: dict[str, str] | None = None,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 60.0,
        max_pool_connections: int = 64,
    ) -> None:
        self._verify = verify
        # None, as for a boto3 client: the environment's proxies (HTTPS_PROXY, NO_PROXY, ...).
        self._proxies = dict(proxies) if proxies is not None else None
        self._connect_timeout_ms = max(1, int(connect_timeout_s * 1000))
        # The whole exchange is bounded: connected, a 512 KiB call not answered within the read
        # timeout fails as a read timeout (libcurl's low-speed limit, the closer match to a
        # socket read timeout, averages over five seconds and let a silent server run over).
        self._timeout_ms = max(1, int((connect_timeout_s + read_timeout_s) * 1000))
        # The pool keeps at most this many idle handles, each with its block-sized upload buffer.
        self._max_idle = max(1, max_pool_connections)
        self._idle: queue.SimpleQueue[pycurl.Curl] = queue.SimpleQueue()
        # botocore's choice of CA bundle: the given path, else its default (certifi's).
        self._ca_path = verify if isinstance(verify, str) else (
            get_cert_path(True) if verify else None
        )

    def options_for(self, url: str) -> CurlOptions:
        """The handle settings for `url`, botocore's choices (proxy, CA bundle) resolved."""
        return CurlOptions(
            connect_timeout_ms=self._connect_timeout_ms,
            timeout_ms=self._timeout_ms,
            proxy=self._proxy_for(url),
            verify=self._verify is not False,
            ca_path=self._ca_path,
        )

    def send(self, method: str, url: str, header_lines: list[str], body: bytes) -> CurlResponse:
        """One request; raises botocore's transport exceptions (the connection's faults only:
        an HTTP error status is an answer, returned like any other)."""
        try:
            handle = self._idle.get_nowait()
        except queue.Empty:
            handle = self.options_for(url).new_handle()
        try:
            try:
                answer = perform(handle, method, url, header_lines, body)
            except pycurl.error as exc:
                code = int(exc.args[0]) if exc.args else -1
                text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
                raise self.transport_error(code, text, was_connected(handle), url) from None
        except BaseException:
            handle.close()  # its connection may be half-used: the next call starts clean
            raise
        self._give_back(handle)
        return CurlResponse(answer.status, headers_of(answer.header_lines), answer.body)

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def _give_back(self, handle: pycurl.Curl) -> None:
        if self._idle.qsize() < self._max_idle:
            self._idle.put(handle)
        else:
            handle.close()

    def transport_error(self, code: int, text: str, connected: bool, url: str) -> Exception:
        """botocore's exception for libcurl error `code` on `url` (wherever the call was made)."""
        proxy = self._proxy_for(url)
        if code in _PROXY_FAILED or (proxy and code in _CONNECT_FAILED):
            # As botocore does: a proxy URL's user and password never reach an error text.
            return ProxyConnectionError(proxy_url=mask_proxy_url(proxy), error=text)
        if code in _CONNECT_FAILED:
            return EndpointConnectionError(endpoint_url=url, error=text)
        if code == pycurl.E_OPERATION_TIMEDOUT:
            if connected:
                return ReadTimeoutError(endpoint_url=url, error=text)
            return ConnectTimeoutError(endpoint_url=url, error=text)
        if code in _TLS_FAILED:
            return SSLError(endpoint_url=url, error=OSError(text))
        if code in _CLOSED:
            return ConnectionClosedError(endpoint_url=url)
        return HTTPClientError(error=f"{text} (libcurl error {code})")

    def _proxy_for(self, url: str) -> str:
        """The proxy botocore would use for `url` ("" for none), written as botocore writes it."""
        proxies = self._proxies if self._proxies is not None else get_environ_proxies(url)
        proxy = str(proxies.get(url.split(":", 1)[0].lower()) or "")
        if not proxy or proxy.startswith(("http:", "https:")):
            return proxy
        return "http:" + proxy if proxy.startswith("//") else "http://" + proxy


def headers_of(lines: list[bytes]) -> HeadersDict:
    """The final answer's headers (after any interim 1xx answer), case-insensitive."""
    out = HeadersDict()
    for raw in lines:
        line = raw.decode("iso-8859-1").rstrip("\r\n")
        if line.startswith("HTTP/"):
            out = HeadersDict()
        elif ":" in line:
            name, _, value = line.partition(":")
            out[name.strip()] = value.strip()
    return out
