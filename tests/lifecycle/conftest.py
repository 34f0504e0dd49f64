"""Local AWS for the launch tests: one endpoint per session (as tests/sandbox_aws does)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.aws.testing import LocalAwsHandle, start_local_aws


@pytest.fixture(scope="session")
def local_aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAwsHandle]:
    handle = start_local_aws(
        Path(tmp_path_factory.mktemp("launch-aws")), settings={"complete_delay_seconds": 0.05}
    )
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def ebs(local_aws: LocalAwsHandle) -> Any:
    return local_aws.client("ebs", max_attempts=1)


@pytest.fixture
def ec2(local_aws: LocalAwsHandle) -> Any:
    return local_aws.client("ec2", max_attempts=1)
