"""Fixtures for the VDDK tests: the stub library (built on demand), a state dir per test."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vddk_support import HOST, PASSWORD, PORT, STUB_LIB, THUMB, USER, Env, build_stub

from sandbox.vcsim.disks import DiskStore
from sandbox.vcsim.vddk_registry import StubRegistry
from snapship.vddk.config_file import VddkSettings
from snapship.vddk.process import VddkLibrary


@pytest.fixture(scope="session")
def stub_lib(tmp_path_factory: pytest.TempPathFactory) -> VddkLibrary:
    """The stub as the worker sees it: reader processes start with LD_LIBRARY_PATH=build/."""
    build_stub()
    return VddkLibrary(
        STUB_LIB, work_dir=tmp_path_factory.mktemp("vddk-work"), settings=VddkSettings(log_level=3)
    )


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub_lib: VddkLibrary) -> Iterator[Env]:
    state = tmp_path / "state"
    monkeypatch.setenv("SNAPSHIP_STUB_VDDK_STATE", str(state))
    store = DiskStore(state)
    registry = StubRegistry(state)
    registry.set_endpoint(HOST, PORT, THUMB)
    registry.set_users({USER: PASSWORD, "other": "pw2"})
    yield Env(state, store, registry, stub_lib)
    store.close()
