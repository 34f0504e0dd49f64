"""Fixtures for the local AWS tests: one endpoint per session, healthy settings per test.

Every test talks to the server over HTTP with real boto3 clients. Clients used to observe
errors have botocore retries disabled (``max_attempts=1``) so an injected or semantic error
reaches the test instead of being retried away.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for sandbox_aws_helpers

from sandbox.aws.testing import LocalAwsHandle, start_local_aws

COMPLETE_DELAY = 0.05


@pytest.fixture(scope="session")
def local_aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAwsHandle]:
    handle = start_local_aws(
        Path(tmp_path_factory.mktemp("sandbox-aws")),
        settings={"complete_delay_seconds": COMPLETE_DELAY},
    )
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def aws(local_aws: LocalAwsHandle) -> Iterator[LocalAwsHandle]:
    local_aws.admin.reset_faults()
    local_aws.admin.set_faults(complete_delay_seconds=COMPLETE_DELAY)
    yield local_aws
    local_aws.admin.reset_faults()
    # Leftover pending snapshots would count against the pending quota of later tests.
    ec2 = local_aws.client("ec2")
    for snap in local_aws.admin.snapshots():
        if snap["Status"] == "pending" and not snap["Foreign"]:
            ec2.delete_snapshot(SnapshotId=snap["SnapshotId"])


@pytest.fixture
def ebs(aws: LocalAwsHandle) -> Any:
    return aws.client("ebs", max_attempts=1)


@pytest.fixture
def ec2(aws: LocalAwsHandle) -> Any:
    return aws.client("ec2", max_attempts=1)

