"""Mirror of EBS-direct snapshots inside moto's EC2 backend (same SnapshotId).

AWS shows a snapshot written through the EBS direct APIs in EC2 like any other: DescribeSnapshots
reports its state (pending, then completed or error), size and tags; CreateTags, DeleteSnapshot,
CreateVolume and RegisterImage accept it. :class:`MirroredSnapshot` is a moto ``Snapshot`` whose
state and progress are read live from our record, so nothing has to be pushed on transitions.
Its volume is AWS's placeholder ``vol-ffffffff`` (such snapshots come from no EC2 volume).
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.ec2.models.elastic_block_store import Snapshot

if TYPE_CHECKING:
    from sandbox.aws.snapshots import SnapshotRecord

PLACEHOLDER_VOLUME_ID = "vol-ffffffff"


class PlaceholderVolume:
    """What moto reads from ``snapshot.volume`` (id, size, encryption)."""

    def __init__(self, size: int, encrypted: bool) -> None:
        self.id = PLACEHOLDER_VOLUME_ID
        self.size = size
        self.encrypted = encrypted


class MirroredSnapshot(Snapshot):
    """A moto EC2 snapshot backed by an EBS-direct :class:`SnapshotRecord`."""

    def __init__(
        self,
        ec2_backend: Any,
        record: SnapshotRecord,
        status_of: Callable[[SnapshotRecord], str],
    ) -> None:
        super().__init__(
            ec2_backend,
            record.snapshot_id,
            PlaceholderVolume(record.volume_size, record.encrypted),
            record.description or "",
            encrypted=record.encrypted,
            kms_key_id=record.kms_key_arn,
        )
        self._record = record
        self._status_of = status_of
        self.start_time = datetime.datetime.fromtimestamp(
            record.start_time, datetime.UTC
        ).replace(tzinfo=None)

    @property
    def status(self) -> str:
        return self._status_of(self._record)

    @status.setter
    def status(self, value: str) -> None:
        """moto's constructor sets "completed"; the record owns the state."""

    @property
    def progress(self) -> str:
        state = self.status
        if state == "completed":
            return "100%"
        return f"{min(self._record.progress, 99)}%"


class Ec2Mirror:
    """Creates and looks up mirrored snapshots in moto's per-region EC2 backends."""

    def __init__(self, account_id: str = DEFAULT_ACCOUNT_ID) -> None:
        self.account_id = account_id

    def backend(self, region: str) -> Any | None:
        try:
            return ec2_backends[self.account_id][region]
        except KeyError:
            return None

    def new_snapshot_id(self, region: str) -> str:
        backend = self.backend(region)
        while True:
            sid = "snap-" + secrets.token_hex(9)[:17]
            if backend is None or sid not in backend.snapshots:
                return sid

    def create(self, record: SnapshotRecord, status_of: Callable[[SnapshotRecord], str]) -> None:
        backend = self.backend(record.region)
        if backend is None:
            return
        snap = MirroredSnapshot(backend, record, status_of)
        backend.snapshots[record.snapshot_id] = snap
        if record.tags:
            snap.add_tags({t["Key"]: t["Value"] for t in record.tags})

    def exists(self, record: SnapshotRecord) -> bool:
        backend = self.backend(record.region)
        return backend is None or record.snapshot_id in backend.snapshots

    def foreign(self, region: str, snapshot_id: str) -> Any | None:
        """A snapshot moto created by itself (CreateSnapshot, default AMIs), if any."""
        backend = self.backend(region)
        if backend is None:
            return None
        snap = backend.snapshots.get(snapshot_id)
        if snap is None or isinstance(snap, MirroredSnapshot):
            return None
        return snap
