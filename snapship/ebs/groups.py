"""Snapshot groups: one EBS snapshot per VM disk, all from the same VMware snapshot.

Every EBS snapshot we write carries the tags below (set at StartSnapshot, so a snapshot is never
untagged). A group is found again by its tags alone, so no local state is needed to list, launch
from, or delete replication points. A group counts only when it has all its members
(`snapship:group-size`) and each of them is `completed` — a half-written run is never offered as
a launch point.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from snapship.ebs.client import EbsCallError, error_code

log = logging.getLogger(__name__)

TAG_GROUP_ID = "snapship:group-id"
TAG_SOURCE_SERVER = "snapship:source-server"
TAG_DISK_UUID = "snapship:disk-uuid"
TAG_DEVICE_KEY = "snapship:device-key"
TAG_RUN_ID = "snapship:run-id"
TAG_POINT_IN_TIME = "snapship:point-in-time"
TAG_VM_NAME = "snapship:vm-name"
TAG_GROUP_SIZE = "snapship:group-size"
"""Number of disks in the group: lets a reader tell a complete group from a partial one."""

MAX_TAG_VALUE = 256


def iso_utc(when: datetime) -> str:
    """ISO 8601 in UTC with a Z suffix (sorts lexicographically in time order)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso_utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass(frozen=True)
class SnapshotTags:
    """The tag set of one disk's EBS snapshot in a group."""

    group_id: str
    source_server: str
    disk_uuid: str
    device_key: int
    run_id: str
    point_in_time: str
    vm_name: str
    group_size: int

    def to_dict(self) -> dict[str, str]:
        return {
            TAG_GROUP_ID: self.group_id,
            TAG_SOURCE_SERVER: self.source_server,
            TAG_DISK_UUID: self.disk_uuid,
            TAG_DEVICE_KEY: str(self.device_key),
            TAG_RUN_ID: self.run_id,
            TAG_POINT_IN_TIME: self.point_in_time,
            TAG_VM_NAME: self.vm_name[:MAX_TAG_VALUE],
            TAG_GROUP_SIZE: str(self.group_size),
        }

    def to_api(self) -> list[dict[str, str]]:
        return [{"Key": k, "Value": v} for k, v in self.to_dict().items()]

    @classmethod
    def from_api(cls, tags: Iterable[Mapping[str, str]]) -> SnapshotTags | None:
        """Parse EC2 `Tags`; None when the snapshot is not one of ours."""
        d = {t["Key"]: t["Value"] for t in tags}
        if TAG_GROUP_ID not in d or TAG_SOURCE_SERVER not in d:
            return None
        try:
            return cls(
                group_id=d[TAG_GROUP_ID],
                source_server=d[TAG_SOURCE_SERVER],
                disk_uuid=d.get(TAG_DISK_UUID, ""),
                device_key=int(d.get(TAG_DEVICE_KEY, "0") or 0),
                run_id=d.get(TAG_RUN_ID, ""),
                point_in_time=d.get(TAG_POINT_IN_TIME, ""),
                vm_name=d.get(TAG_VM_NAME, ""),
                group_size=int(d.get(TAG_GROUP_SIZE, "0") or 0),
            )
        except ValueError:
            return None


@dataclass(frozen=True)
class GroupSnapshot:
    snapshot_id: str
    state: str
    volume_size_gib: int
    tags: SnapshotTags
    start_time: datetime | None = None
    progress: str = ""


@dataclass
class SnapshotGroup:
    group_id: str
    source_server: str
    run_id: str
    point_in_time: str
    vm_name: str
    group_size: int
    snapshots: list[GroupSnapshot] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """All members present (by device key) and every one `completed`."""
        keys = {s.tags.device_key for s in self.snapshots}
        return (
            self.group_size > 0
            and len(keys) >= self.group_size
            and all(s.state == "completed" for s in self.snapshots)
        )

    @property
    def failed(self) -> bool:
        return any(s.state == "error" for s in self.snapshots)

    @property
    def snapshot_ids(self) -> list[str]:
        return [s.snapshot_id for s in self.snapshots]

    def by_device_key(self) -> list[GroupSnapshot]:
        return sorted(self.snapshots, key=lambda s: s.tags.device_key)


def tag_snapshots(ec2: Any, snapshot_ids: Iterable[str], tags: Mapping[str, str]) -> None:
    """CreateTags on a set of snapshots (e.g. to re-tag or mark a group after the fact)."""
    ids = list(snapshot_ids)
    if not ids:
        return
    try:
        ec2.create_tags(Resources=ids, Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    except ClientError as exc:
        raise EbsCallError.from_exception("CreateTags", exc) from exc


def _iter_snapshots(ec2: Any, filters: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    paginator = ec2.get_paginator("describe_snapshots")
    try:
        for page in paginator.paginate(
            OwnerIds=["self"], Filters=filters, PaginationConfig={"PageSize": 500}
        ):
            yield from page.get("Snapshots", [])
    except ClientError as exc:
        raise EbsCallError.from_exception("DescribeSnapshots", exc) from exc


def _group_from(snaps: Iterable[dict[str, Any]]) -> list[SnapshotGroup]:
    groups: dict[str, SnapshotGroup] = {}
    for snap in snaps:
        tags = SnapshotTags.from_api(snap.get("Tags", []))
        if tags is None:
            continue
        group = groups.get(tags.group_id)
        if group is None:
            group = groups[tags.group_id] = SnapshotGroup(
                group_id=tags.group_id,
                source_server=tags.source_server,
                run_id=tags.run_id,
                point_in_time=tags.point_in_time,
                vm_name=tags.vm_name,
                group_size=tags.group_size,
            )
        group.snapshots.append(
            GroupSnapshot(
                snapshot_id=snap["SnapshotId"],
                state=str(snap.get("State", "")),
                volume_size_gib=int(snap.get("VolumeSize", 0) or 0),
                tags=tags,
                start_time=snap.get("StartTime"),
                progress=str(snap.get("Progress", "")),
            )
        )
    return sorted(groups.values(), key=lambda g: (g.point_in_time, g.group_id), reverse=True)


def describe_groups(ec2: Any, source_server: str) -> list[SnapshotGroup]:
    """All groups of one source server, newest point in time first (complete or not)."""
    filters = [{"Name": f"tag:{TAG_SOURCE_SERVER}", "Values": [source_server]}]
    return _group_from(_iter_snapshots(ec2, filters))


def describe_group(ec2: Any, group_id: str) -> SnapshotGroup | None:
    filters = [{"Name": f"tag:{TAG_GROUP_ID}", "Values": [group_id]}]
    groups = _group_from(_iter_snapshots(ec2, filters))
    return groups[0] if groups else None


def latest_complete_group(groups: Iterable[SnapshotGroup]) -> SnapshotGroup | None:
    complete = [g for g in groups if g.complete]
    return max(complete, key=lambda g: (g.point_in_time, g.group_id), default=None)


def delete_snapshots(ec2: Any, snapshot_ids: Iterable[str]) -> list[str]:
    """Delete snapshots; already-gone ones count as deleted. Returns the ids now gone."""
    gone: list[str] = []
    for snapshot_id in snapshot_ids:
        try:
            ec2.delete_snapshot(SnapshotId=snapshot_id)
        except ClientError as exc:
            if error_code(exc) != "InvalidSnapshot.NotFound":
                raise EbsCallError.from_exception("DeleteSnapshot", exc) from exc
        gone.append(snapshot_id)
        log.info("deleted EBS snapshot %s", snapshot_id)
    return gone


def delete_group(ec2: Any, group: SnapshotGroup) -> list[str]:
    """Delete every snapshot of a group (discarding a run, or retention)."""
    return delete_snapshots(ec2, group.snapshot_ids)
