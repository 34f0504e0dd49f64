"""SecretStore: 0600 from creation, refusal of readable files, atomic replace; Secret hides."""

from __future__ import annotations

import copy
import json
import os
import pickle
import stat
from pathlib import Path

import pytest

from snapship.secrets import (
    AWS_SECRET_ACCESS_KEY,
    CODEC_KEY,
    VCENTER_PASSWORD,
    Secret,
    SecretStore,
    SecretStoreError,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_secret_never_prints_its_value() -> None:
    s = Secret("p@ss-w0rd-123")
    percent = "%s" % (s,)  # noqa: UP031 - the %-operator is a separate code path
    dotformat = "{}".format(s)  # noqa: UP032 - so is str.format
    for shown in (str(s), repr(s), f"{s}", f"{s!r}", percent, dotformat, f"{s:>20}"):
        assert "p@ss" not in shown
    assert s.reveal() == "p@ss-w0rd-123"
    assert "p@ss" not in repr({"password": s}) and "p@ss" not in repr([s])
    assert Secret("a1b2c3d4") == Secret("a1b2c3d4") and Secret("a1b2c3d4") != Secret("zzzz9999")
    assert copy.deepcopy(s).reveal() == s.reveal()
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_store_file_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        store = SecretStore(tmp_path / "conf" / "secrets.json")
        store.set(VCENTER_PASSWORD, "vc-pass-9876")
        store.set(AWS_SECRET_ACCESS_KEY, Secret("wJalrXUtnFEMI/K7MDENG"))
    finally:
        os.umask(old)
    assert mode(store.path) == 0o600
    assert store.require(VCENTER_PASSWORD).reveal() == "vc-pass-9876"
    assert store.require(AWS_SECRET_ACCESS_KEY).reveal() == "wJalrXUtnFEMI/K7MDENG"
    assert store.names() == [AWS_SECRET_ACCESS_KEY, VCENTER_PASSWORD]
    # no temp files left behind by the atomic replace
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["secrets.json"]


def test_create_empty_is_0600_and_idempotent(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        store = SecretStore(tmp_path / "s.json")
        store.create_empty()
        store.create_empty()
    finally:
        os.umask(old)
    assert mode(store.path) == 0o600
    assert store.names() == []


@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604, 0o660])
def test_store_refuses_group_or_world_accessible_file(tmp_path: Path, bad_mode: int) -> None:
    store = SecretStore(tmp_path / "secrets.json")
    store.set(VCENTER_PASSWORD, "vc-pass-9876")
    os.chmod(store.path, bad_mode)
    with pytest.raises(SecretStoreError) as info:
        store.get(VCENTER_PASSWORD)
    message = str(info.value)
    assert f"chmod 600 {store.path}" in message
    assert "vc-pass-9876" not in message
    with pytest.raises(SecretStoreError):
        store.set(
            CODEC_KEY, "never-stored-0b7e"
        )  # writing must not silently "fix" a file we distrust
    os.chmod(store.path, 0o600)
    assert store.require(VCENTER_PASSWORD).reveal() == "vc-pass-9876"


def test_replace_keeps_other_entries_and_delete(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "secrets.json")
    store.set(VCENTER_PASSWORD, "s3cret-first-9f2")
    with open(store.path) as old_file:  # keeps the old inode alive
        store.set(CODEC_KEY, "c0dec-val-77ab")
        store.set(VCENTER_PASSWORD, "s3cret-second-4c1")
        # replaced by rename, never rewritten in place: the old file still holds the old state
        assert "s3cret-first-9f2" in old_file.read()
        assert os.fstat(old_file.fileno()).st_ino != os.stat(store.path).st_ino
    doc = json.loads(store.path.read_text())
    assert doc == {
        "version": 1,
        "secrets": {"vcenter_password": "s3cret-second-4c1", "codec_key": "c0dec-val-77ab"},
    }
    assert store.delete(VCENTER_PASSWORD) is True
    assert store.delete(VCENTER_PASSWORD) is False
    assert store.get(VCENTER_PASSWORD) is None
    with pytest.raises(SecretStoreError, match="not set"):
        store.require(VCENTER_PASSWORD)
    assert mode(store.path) == 0o600


def test_corrupt_store_error_does_not_echo_content(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b'{"secrets": {"vcenter_password": "leaky-value"')
    os.close(fd)
    with pytest.raises(SecretStoreError) as info:
        SecretStore(path).get(VCENTER_PASSWORD)
    assert "leaky-value" not in str(info.value)


def test_invalid_names_are_refused(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "secrets.json")
    for name in ("", "Has Space", "../etc", "hunter2!"):
        with pytest.raises(SecretStoreError):
            store.set(name, "value")
    assert not store.path.exists()
