"""Fixtures for the EBS tests: one local AWS endpoint per session, faults reset per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from snapship.ebs.client import AwsClients, AwsConnection, AwsCredentials, make_clients


@pytest.fixture(scope="session")
def local_aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from sandbox.aws.testing import start_local_aws

    handle = start_local_aws(
        Path(tmp_path_factory.mktemp("local-aws")), settings={"complete_delay_seconds": 0.05}
    )
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def aws(local_aws: Any) -> Iterator[Any]:
    """The session's endpoint with healthy defaults and zeroed counters for this test."""
    local_aws.admin.reset_faults()
    local_aws.admin.set_faults(complete_delay_seconds=0.05)
    local_aws.admin.reset_stats()
    yield local_aws
    local_aws.admin.reset_faults()


@pytest.fixture
def conn(aws: Any) -> AwsConnection:
    key, secret = aws.access_key_id, aws.secret_access_key
    return AwsConnection(
        region=aws.region,
        endpoint_url=aws.endpoint_url,
        credentials=lambda: AwsCredentials(key, secret),
        connect_timeout_s=5,
        read_timeout_s=20,
    )


@pytest.fixture
def clients(conn: AwsConnection) -> AwsClients:
    return make_clients(conn, ebs_concurrency=16)
