"""The CLI (``python -m sandbox.aws``) and the HTTP layer: endpoint line, keep-alive, SIGTERM."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

ROOT = Path(__file__).resolve().parents[2]


def test_cli_serves_ebs_and_ec2_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox.aws", "--port", "0", "--data-dir", str(tmp_path / "d"),
         "--complete-delay", "0.01", "--faults", '{"pending_quota": 1}'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("local-aws endpoint http://127.0.0.1:"), line
        endpoint = line.split()[-1]
        kw: dict[str, Any] = dict(endpoint_url=endpoint, region_name="us-east-1",
                                  aws_access_key_id="AKIATEST", aws_secret_access_key="x")
        ebs = boto3.client("ebs", config=Config(retries={"total_max_attempts": 1}), **kw)
        sid = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
        with pytest.raises(ClientError) as exc:  # --faults set a quota of one pending snapshot
            ebs.start_snapshot(VolumeSize=1)
        assert exc.value.response["Error"]["Code"] == "ConcurrentLimitExceededException"
        ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=0)
        ec2 = boto3.client("ec2", **kw)
        deadline = time.monotonic() + 5
        while ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["State"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert (tmp_path / "d" / "blocks").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def test_connections_are_kept_alive(local_aws: Any) -> None:
    host, port = local_aws.endpoint_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        for _ in range(3):
            conn.request("GET", "/_sandbox/health")
            resp = conn.getresponse()
            assert resp.status == 200
            assert json.loads(resp.read()) == {"ok": True}
            assert resp.getheader("Connection") != "close"
        sock_before = conn.sock
        conn.request("GET", "/_sandbox/faults")
        conn.getresponse().read()
        assert conn.sock is sock_before  # same TCP connection throughout
    finally:
        conn.close()


def test_unknown_ebs_route_is_a_validation_error(local_aws: Any) -> None:
    ebs = local_aws.client("ebs", max_attempts=1)
    with pytest.raises(ClientError) as exc:  # path id with a slash reaches no operation
        ebs.list_snapshot_blocks(SnapshotId="snap-1/x")
    assert exc.value.response["Error"]["Code"] == "ValidationException"
