"""The EBS direct REST endpoint (botocore's ebs 2019-11-02 rest-json model) as a WSGI app.

Paths, headers and status codes come from the model: POST /snapshots (201), PUT and GET
/snapshots/{id}/blocks/{index} (201 / 200 with x-amz-Data-Length, x-amz-Checksum,
x-amz-Checksum-Algorithm), GET /snapshots/{id}/blocks, GET /snapshots/{id}/changedblocks,
POST /snapshots/completion/{id} (202). Parsing is done on the raw WSGI environ to keep the
per-request cost of PutSnapshotBlock low.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote

from sandbox.aws.errors import EbsError, internal, validation
from sandbox.aws.faults import FaultInjector
from sandbox.aws.snapshots import BLOCK_SIZE, EbsDirectBackend
from sandbox.aws.stats import Stats

StartResponse = Callable[..., Any]
Headers = list[tuple[str, str]]


def _status_line(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"


def _int_or_error(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise validation("INVALID_PARAMETER_VALUE", f"{name} must be an integer.") from None


def route(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    """Operation name and path parameters, or None when no EBS operation matches."""
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if not parts or parts[0] != "snapshots":
        return None
    n = len(parts)
    if n == 1 and method == "POST":
        return "StartSnapshot", {}
    if n == 3 and parts[1] == "completion" and method == "POST":
        return "CompleteSnapshot", {"snapshotId": parts[2]}
    if n == 3 and parts[2] == "blocks" and method == "GET":
        return "ListSnapshotBlocks", {"snapshotId": parts[1]}
    if n == 3 and parts[2] == "changedblocks" and method == "GET":
        return "ListChangedBlocks", {"secondSnapshotId": parts[1]}
    if n == 4 and parts[2] == "blocks" and method in ("PUT", "GET"):
        op = "PutSnapshotBlock" if method == "PUT" else "GetSnapshotBlock"
        return op, {"snapshotId": parts[1], "blockIndex": parts[3]}
    return None


class EbsApi:
    """Turns HTTP requests into :class:`EbsDirectBackend` calls and AWS-shaped answers."""

    def __init__(self, backend: EbsDirectBackend, faults: FaultInjector, stats: Stats) -> None:
        self.backend = backend
        self.faults = faults
        self.stats = stats

    def __call__(
        self, environ: dict[str, Any], start_response: StartResponse, region: str
    ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        matched = route(method, environ.get("PATH_INFO", ""))
        operation = matched[0] if matched else "Unknown"
        self.stats.request(operation)
        request_id = str(uuid.uuid4())
        body = self._read_body(environ)
        try:
            if matched is None:
                raise validation(
                    "INVALID_PARAMETER_VALUE",
                    f"No EBS direct operation for {method} {environ.get('PATH_INFO')}.",
                )
            self.faults.before(operation)
            status, headers, payload = self._dispatch(operation, matched[1], environ, body, region)
            self.faults.after(operation)
        except EbsError as err:
            self.stats.error(operation, err.code)
            status, payload = err.status, err.body()
            headers = [
                ("Content-Type", "application/json"),
                ("x-amzn-ErrorType", err.code),
            ]
        except Exception as exc:  # a bug here must still look like AWS, not a hung socket
            bug = internal(f"Internal error: {type(exc).__name__}: {exc}")
            self.stats.error(operation, bug.code)
            status, payload = bug.status, bug.body()
            headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", bug.code)]
        headers.append(("x-amzn-RequestId", request_id))
        headers.append(("Content-Length", str(len(payload))))
        start_response(_status_line(status), headers)
        return [payload]

    @staticmethod
    def _read_body(environ: dict[str, Any]) -> bytes:
        ready = environ.get("sandbox.body")
        if isinstance(ready, bytes):
            return ready
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length <= 0:
            return b""
        stream = environ["wsgi.input"]
        chunks: list[bytes] = []
        remaining = length
        while remaining > 0:
            chunk = stream.read(remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _dispatch(
        self,
        operation: str,
        params: dict[str, str],
        environ: dict[str, Any],
        body: bytes,
        region: str,
    ) -> tuple[int, Headers, bytes]:
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        b = self.backend
        if operation == "PutSnapshotBlock":
            sid = params["snapshotId"]
            index = _int_or_error(params["blockIndex"], "BlockIndex")
            assert index is not None
            checksum = b.put_block(
                region,
                sid,
                index,
                body,
                _int_or_error(environ.get("HTTP_X_AMZ_DATA_LENGTH"), "DataLength"),
                environ.get("HTTP_X_AMZ_CHECKSUM"),
                environ.get("HTTP_X_AMZ_CHECKSUM_ALGORITHM"),
                _int_or_error(environ.get("HTTP_X_AMZ_PROGRESS"), "Progress"),
            )
            self.stats.put_block(sid, len(body))
            return 201, [
                ("x-amz-Checksum", checksum),
                ("x-amz-Checksum-Algorithm", "SHA256"),
            ], b""
        if operation == "GetSnapshotBlock":
            index = _int_or_error(params["blockIndex"], "BlockIndex")
            assert index is not None
            data, checksum = b.get_block(
                region, params["snapshotId"], index, query.get("blockToken")
            )
            self.stats.got_block(len(data))
            return 200, [
                ("Content-Type", "application/octet-stream"),
                ("x-amz-Data-Length", str(BLOCK_SIZE)),
                ("x-amz-Checksum", checksum),
                ("x-amz-Checksum-Algorithm", "SHA256"),
            ], data
        if operation == "StartSnapshot":
            try:
                doc = json.loads(body or b"{}")
            except ValueError:
                raise validation("INVALID_PARAMETER_VALUE", "The body is not JSON.") from None
            if not isinstance(doc, dict):
                raise validation("INVALID_PARAMETER_VALUE", "The body is not a JSON object.")
            return 201, [("Content-Type", "application/json")], _json(
                b.start_snapshot(region, doc)
            )
        if operation == "CompleteSnapshot":
            status = b.complete(
                region,
                params["snapshotId"],
                _int_or_error(environ.get("HTTP_X_AMZ_CHANGEDBLOCKSCOUNT"), "ChangedBlocksCount"),
                environ.get("HTTP_X_AMZ_CHECKSUM"),
                environ.get("HTTP_X_AMZ_CHECKSUM_ALGORITHM"),
                environ.get("HTTP_X_AMZ_CHECKSUM_AGGREGATION_METHOD"),
            )
            return 202, [("Content-Type", "application/json")], _json({"Status": status})
        max_results = _int_or_error(query.get("maxResults"), "MaxResults")
        starting = _int_or_error(query.get("startingBlockIndex"), "StartingBlockIndex")
        if operation == "ListSnapshotBlocks":
            out = b.list_blocks(
                region, params["snapshotId"], query.get("pageToken"), max_results, starting
            )
        else:
            out = b.list_changed(
                region,
                query.get("firstSnapshotId"),
                params["secondSnapshotId"],
                query.get("pageToken"),
                max_results,
                starting,
            )
        return 200, [("Content-Type", "application/json")], _json(out)


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()
