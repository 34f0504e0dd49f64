"""Codec server over real HTTP: Temporal's JSON format, CORS for the Web UI, loopback only."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload

from snapship.codec import ENCODING, EncryptionCodec, KeyRing
from snapship.codec_server import CodecServer, start_codec_server
from snapship.secrets import Secret

UI = "http://127.0.0.1:8233"
MARKER = "PLAINTEXT-MARKER-codec-server"


ServerFixture = tuple[CodecServer, EncryptionCodec]


@pytest.fixture
def server() -> Iterator[ServerFixture]:
    codec = EncryptionCodec(KeyRing.generate("srv"))
    handle = start_codec_server(codec, port=0, allowed_origins=[UI, "http://localhost:8233"])
    try:
        yield handle, codec
    finally:
        handle.stop()


def request(
    url: str, body: Any = None, method: str = "POST", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def plain_json() -> dict:
    return {
        "payloads": [
            {"metadata": {"encoding": b64(b"json/plain")}, "data": b64(json.dumps(MARKER).encode())}
        ]
    }


def test_binds_loopback_and_reports_port(server: ServerFixture) -> None:
    handle, _ = server
    assert handle.host == "127.0.0.1"
    assert handle.port > 0
    assert handle.url == f"http://127.0.0.1:{handle.port}"


def test_encode_then_decode_round_trip(server: ServerFixture) -> None:
    handle, codec = server
    status, _headers, body = request(
        handle.url + "/encode", plain_json(), headers={"X-Namespace": "default"}
    )
    assert status == 200, body
    encoded = json.loads(body)
    [payload] = encoded["payloads"]
    assert base64.b64decode(payload["metadata"]["encoding"]) == ENCODING
    assert base64.b64decode(payload["metadata"]["encryption-key-id"]) == b"srv"
    assert MARKER.encode() not in base64.b64decode(payload["data"])
    # the codec in-process agrees with what came over the wire
    wire = Payload(
        metadata={k: base64.b64decode(v) for k, v in payload["metadata"].items()},
        data=base64.b64decode(payload["data"]),
    )
    assert codec.decode_sync([wire])[0].data == json.dumps(MARKER).encode()
    # decode under a prefix, as the UI calls it: only the last path segment matters
    status, _, body = request(handle.url + "/some/prefix/decode", encoded)
    assert status == 200
    assert json.loads(body) == plain_json()


def test_cors_preflight_for_the_web_ui(server: ServerFixture) -> None:
    handle, _ = server
    status, headers, _ = request(
        handle.url + "/decode",
        method="OPTIONS",
        headers={
            "Origin": UI,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace",
        },
    )
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == UI
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "x-namespace"} <= allowed
    assert "POST" in headers["Access-Control-Allow-Methods"]
    # the actual POST from the UI carries the same CORS answer
    status, headers, _ = request(
        handle.url + "/encode", plain_json(), headers={"Origin": UI, "X-Namespace": "default"}
    )
    assert status == 200 and headers["Access-Control-Allow-Origin"] == UI


def test_other_origins_are_refused(server: ServerFixture) -> None:
    handle, _ = server
    evil = "https://evil.example"
    status, headers, _ = request(
        handle.url + "/decode",
        method="OPTIONS",
        headers={"Origin": evil, "Access-Control-Request-Method": "POST"},
    )
    assert status == 403 and "Access-Control-Allow-Origin" not in headers
    status, headers, _ = request(handle.url + "/encode", plain_json(), headers={"Origin": evil})
    assert status == 403 and "Access-Control-Allow-Origin" not in headers


def test_bad_requests(server: ServerFixture) -> None:
    handle, _ = server
    status, _, _ = request(handle.url + "/other", plain_json())
    assert status == 404
    req = urllib.request.Request(handle.url + "/decode", data=b"not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 400
    # a payload sealed with a key the server does not hold: clear 400, not a crash
    foreign = EncryptionCodec(KeyRing.generate("gone")).encode_sync(
        [Payload(metadata={"encoding": b"json/plain"}, data=b'"x"')]
    )[0]
    body = {
        "payloads": [
            {
                "metadata": {k: b64(v) for k, v in foreign.metadata.items()},
                "data": b64(foreign.data),
            }
        ]
    }
    status, _, text = request(handle.url + "/decode", body)
    assert status == 400 and b"gone" in text


def test_optional_bearer_token() -> None:
    handle = start_codec_server(
        EncryptionCodec(KeyRing.generate()), allowed_origins=[UI], auth_token=Secret("tok-5f1d9a")
    )
    try:
        status, _, _ = request(handle.url + "/encode", plain_json())
        assert status == 401
        status, _, _ = request(
            handle.url + "/encode", plain_json(), headers={"Authorization": "Bearer wrong"}
        )
        assert status == 401
        status, _, body = request(
            handle.url + "/encode", plain_json(), headers={"Authorization": "Bearer tok-5f1d9a"}
        )
        assert status == 200 and b"payloads" in body
        status, headers, _ = request(
            handle.url + "/decode",
            method="OPTIONS",
            headers={"Origin": UI, "Access-Control-Request-Method": "POST"},
        )
        assert status == 200  # preflight carries no credentials
        assert "authorization" in headers["Access-Control-Allow-Headers"]
    finally:
        handle.stop()
