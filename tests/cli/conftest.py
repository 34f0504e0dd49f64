"""Fixtures of the console/install tests (helpers live in install_support.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from install_support import SCENARIO, STUB_TARBALL, InstallEnv


@pytest.fixture(scope="package")
def install_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InstallEnv]:
    from sandbox.aws.testing import start_local_aws
    from sandbox.vcsim.testing import start_simulator

    if not STUB_TARBALL.is_file():
        pytest.fail(f"{STUB_TARBALL} is missing: run scripts/setup.sh (make -C sandbox/vddk_stub)")
    base = tmp_path_factory.mktemp("install-env")
    sim = start_simulator(SCENARIO, base / "vcsim")
    aws = start_local_aws(base / "aws")
    try:
        yield InstallEnv(sim, aws)
    finally:
        aws.stop()
        sim.stop()
