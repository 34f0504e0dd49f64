"""The cheap PutSnapshotBlock behaves like boto3's: same errors, same retries, same transport
exceptions, same results; every other call is boto3's own."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from snapship.blocks import EBS_BLOCK_SIZE
from snapship.checksums import linear_aggregate
from snapship.ebs.block_transport import EbsBlockClient
from snapship.ebs.client import (
    AwsClients,
    AwsConnection,
    AwsCredentials,
    is_transient,
    make_clients,
)
from snapship.ebs.curl_options import HttpResult, perform
from snapship.ebs.reader import read_snapshot
from snapship.ebs.writer import EbsSnapshotWriter, client_token
from snapship.telemetry.metrics import METRICS
from snapship.telemetry.tracing import capture_spans


def block(seed: int) -> tuple[bytes, str]:
    data = hashlib.sha256(str(seed).encode()).digest() * (EBS_BLOCK_SIZE // 32)
    return data, base64.b64encode(hashlib.sha256(data).digest()).decode()


def start(clients: AwsClients, name: str) -> str:
    token = client_token("block-transport", name, str(time.time()))
    return str(clients.ebs.start_snapshot(VolumeSize=1, ClientToken=token)["SnapshotId"])


def put(ebs: Any, snapshot_id: str, index: int, data: bytes, checksum: str) -> Any:
    return ebs.put_snapshot_block(
        SnapshotId=snapshot_id,
        BlockIndex=index,
        BlockData=data,
        DataLength=len(data),
        Checksum=checksum,
        ChecksumAlgorithm="SHA256",
    )


def test_the_ebs_client_is_the_cheap_one_and_blocks_land(clients: AwsClients) -> None:
    assert isinstance(clients.ebs, EbsBlockClient)
    sid = start(clients, "lands")
    data, checksum = block(1)
    answer = put(clients.ebs, sid, 3, data, checksum)
    assert answer["Checksum"] == checksum and answer["ChecksumAlgorithm"] == "SHA256"
    clients.ebs.complete_snapshot(
        SnapshotId=sid,
        ChangedBlocksCount=1,
        Checksum=linear_aggregate({3: base64.b64decode(checksum)}),
        ChecksumAlgorithm="SHA256",
        ChecksumAggregationMethod="LINEAR",
    )
    EbsSnapshotWriter(clients.ebs, clients.ec2).wait_completed(sid, timeout_s=60)
    assert read_snapshot(clients.ebs, sid, 4 * EBS_BLOCK_SIZE)[3 * EBS_BLOCK_SIZE :] == data


@pytest.mark.parametrize("fault", ["bad-checksum", "unknown-snapshot", "bad-length"])
def test_errors_are_the_ones_boto3_raises(aws: Any, clients: AwsClients, fault: str) -> None:
    sid = start(clients, fault)
    data, checksum = block(2)
    if fault == "bad-checksum":
        checksum = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    elif fault == "unknown-snapshot":
        sid = "snap-0123456789abcdef0"
    else:
        data = data[:4096]
    plain = aws.client("ebs")
    errors: list[ClientError] = []
    for ebs in (clients.ebs, plain):
        with pytest.raises(ClientError) as info:
            put(ebs, sid, 0, data, checksum)
        errors.append(info.value)
    ours, theirs = errors
    assert type(ours).__name__ == type(theirs).__name__
    assert ours.response["Error"] == theirs.response["Error"]
    assert ours.response.get("Reason") == theirs.response.get("Reason")
    status = ours.response["ResponseMetadata"]["HTTPStatusCode"]
    assert status == theirs.response["ResponseMetadata"]["HTTPStatusCode"] >= 400
    assert str(ours) == str(theirs)


def test_throttling_is_retried_inside_the_call_like_botocore_standard_mode(
    aws: Any, clients: AwsClients
) -> None:
    sid = start(clients, "throttled")
    aws.admin.set_faults(
        fail_next=[
            {"operation": "PutSnapshotBlock", "code": "RequestThrottledException", "count": 2}
        ]
    )
    data, checksum = block(3)
    put(clients.ebs, sid, 0, data, checksum)  # attempts 1 and 2 throttled, 3 lands
    errors = aws.admin.stats()["errors"]
    assert sum(n for k, n in errors.items() if "RequestThrottledException" in k) == 2


def test_a_permanent_error_is_not_retried(aws: Any, clients: AwsClients) -> None:
    sid = start(clients, "denied")
    aws.admin.set_faults(access_denied_operations=["PutSnapshotBlock"])
    aws.admin.reset_stats()
    data, checksum = block(4)
    with pytest.raises(ClientError) as info:
        put(clients.ebs, sid, 0, data, checksum)
    assert info.value.response["Error"]["Code"] == "AccessDeniedException"
    assert not is_transient(info.value)
    assert aws.admin.stats()["requests"]["PutSnapshotBlock"] == 1


def test_an_unreachable_endpoint_raises_botocores_transient_connection_error() -> None:
    conn = AwsConnection(
        region="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        credentials=lambda: AwsCredentials("AKIAEXAMPLE", os.urandom(8).hex()),
        connect_timeout_s=2,
        max_attempts=2,
    )
    ebs = make_clients(conn).ebs
    data, checksum = block(5)
    with pytest.raises(EndpointConnectionError) as info:
        put(ebs, "snap-0123456789abcdef0", 0, data, checksum)
    assert is_transient(info.value)


def test_an_upload_is_one_span_with_its_totals_and_every_put_is_still_timed(
    clients: AwsClients,
) -> None:
    def timed_puts() -> float:
        value = METRICS.registry.get_sample_value(
            "snapship_ebs_call_seconds_count", {"operation": "PutSnapshotBlock"}
        )
        return value or 0.0

    before = timed_puts()
    writer = EbsSnapshotWriter(clients.ebs, clients.ec2)
    upload = writer.start(1, None, client_token("block-transport", "span", str(time.time())))
    with capture_spans() as exporter:
        writer.put_blocks(upload, [(i, block(i)[0]) for i in range(5)])
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["ebs.PutSnapshotBlocks"]
    attributes = spans[0].attributes or {}
    assert attributes["snapship.snapshot_id"] == upload.snapshot_id
    assert attributes["snapship.blocks_sent"] == 5
    assert attributes["snapship.bytes_sent"] == 5 * EBS_BLOCK_SIZE
    assert timed_puts() - before == 5


def send_signed(clients: AwsClients, sid: str, index: int, data: bytes, digest: bytes) -> Any:
    """What a VDDK reader does with a PUT the worker signed: send it with its own handle."""
    signed = clients.ebs.sign_put(sid, index, digest)
    handle = clients.ebs.block_send_options().new_handle()
    try:
        answer = perform(handle, "PUT", signed.url, signed.header_lines, memoryview(data))
    finally:
        handle.close()
    return signed, HttpResult(answer.status, answer.header_lines, answer.body)


def test_a_put_signed_here_and_sent_elsewhere_lands_and_carries_no_key(
    aws: Any, clients: AwsClients
) -> None:
    sid = start(clients, "signed-elsewhere")
    data, _ = block(6)
    signed, result = send_signed(clients, sid, 2, data, hashlib.sha256(data).digest())
    assert result.stored
    assert clients.ebs.settle_put(sid, 2, result) is None
    assert not any(aws.secret_access_key in line for line in signed.header_lines)
    assert any(line.startswith("Authorization: AWS4-HMAC-SHA256 ") for line in signed.header_lines)
    clients.ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=1)
    EbsSnapshotWriter(clients.ebs, clients.ec2).wait_completed(sid, timeout_s=60)
    assert read_snapshot(clients.ebs, sid, 3 * EBS_BLOCK_SIZE)[2 * EBS_BLOCK_SIZE :] == data


@pytest.mark.parametrize("fault", ["bad-checksum", "unknown-snapshot", "throttled", "denied"])
def test_a_put_sent_elsewhere_fails_with_what_boto3_raises(
    aws: Any, clients: AwsClients, fault: str
) -> None:
    sid = start(clients, f"elsewhere-{fault}")
    data, checksum = block(7)
    digest = hashlib.sha256(data).digest()
    if fault == "bad-checksum":
        digest = hashlib.sha256(b"other").digest()
        checksum = base64.b64encode(digest).decode()
    elif fault == "unknown-snapshot":
        sid = "snap-0123456789abcdef0"
    one_fault = {
        "throttled": {"fail_next": [
            {"operation": "PutSnapshotBlock", "code": "RequestThrottledException", "count": 1}
        ]},
        "denied": {"access_denied_operations": ["PutSnapshotBlock"]},
    }.get(fault, {})
    aws.admin.set_faults(**one_fault)
    _, result = send_signed(clients, sid, 0, data, digest)
    ours = clients.ebs.settle_put(sid, 0, result)
    aws.admin.set_faults(**one_fault)
    # boto3 with one attempt, so its throttle is raised, not retried past
    plain = aws.client("ebs", max_attempts=1) if fault == "throttled" else aws.client("ebs")
    with pytest.raises(ClientError) as info:
        put(plain, sid, 0, data, checksum)
    theirs = info.value
    assert isinstance(ours, ClientError) and type(ours).__name__ == type(theirs).__name__
    assert ours.response["Error"] == theirs.response["Error"]
    assert ours.response.get("Reason") == theirs.response.get("Reason")
    if fault != "throttled":  # boto3 adds "(reached max retries: 0)" to a throttle's text
        assert str(ours) == str(theirs)
    assert is_transient(ours) == (fault == "throttled")


def test_a_put_sent_elsewhere_that_cannot_connect_is_botocores_connection_error() -> None:
    conn = AwsConnection(
        region="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        credentials=lambda: AwsCredentials("AKIAEXAMPLE", os.urandom(8).hex()),
        connect_timeout_s=2,
    )
    ebs = make_clients(conn).ebs
    failed = HttpResult(0, curl_code=7, curl_text="Failed to connect to 127.0.0.1 port 9")
    assert isinstance(ebs.settle_put("snap-0123456789abcdef0", 0, failed), EndpointConnectionError)


def test_a_signed_put_is_the_request_boto3_signs_for_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Against AWS (HTTPS), botocore signs PutSnapshotBlock with the body outside the signature
    (UNSIGNED-PAYLOAD, as AWS documents for this call) and the checksum header inside it. The
    PUT signed here must carry exactly the signature boto3's own call would, at the same second,
    or EBS answers SignatureDoesNotMatch; the local AWS does not check signatures, so this is
    where a change to the signing is caught."""
    import datetime

    import botocore.auth

    connection = AwsConnection(
        region="eu-west-1",
        credentials=lambda: AwsCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", "token-1"),
    )
    ebs = make_clients(connection).ebs
    assert isinstance(ebs, EbsBlockClient)
    data, checksum = block(9)
    signed = ebs.sign_put("snap-0123456789abcdef0", 5, hashlib.sha256(data).digest())
    ours = {k.lower(): v for k, v in (line.split(": ", 1) for line in signed.header_lines)}
    assert signed.url == "https://ebs.eu-west-1.amazonaws.com/snapshots/snap-0123456789abcdef0/blocks/5"

    at = datetime.datetime.strptime(ours["x-amz-date"], "%Y%m%dT%H%M%SZ")
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: at)
    theirs: dict[str, str] = {}

    class Sent(Exception):
        """boto3's request, captured instead of sent."""

    def capture(request: Any, **_: Any) -> None:
        theirs.update({k.lower(): v.decode() if isinstance(v, bytes) else v
                       for k, v in request.headers.items()})
        raise Sent

    ebs._client.meta.events.register_first("before-send.ebs.PutSnapshotBlock", capture)
    with pytest.raises(Sent):
        put(ebs._client, "snap-0123456789abcdef0", 5, data, checksum)
    assert theirs["x-amz-date"] == ours["x-amz-date"]
    assert ours["authorization"] == theirs["authorization"]
    assert ours["x-amz-security-token"] == "token-1"
    assert ours["x-amz-content-sha256"] == theirs["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    # The same headers besides (libcurl adds Content-Length; the SDK's own are unsigned).
    assert set(ours) == set(theirs) - {"amz-sdk-invocation-id", "amz-sdk-request", "content-length"}
