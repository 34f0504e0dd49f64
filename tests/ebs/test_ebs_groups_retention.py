"""Snapshot group tags and completeness, retention rules (pure), and both against local AWS.

Launching from a group is `snapship.launch` (tests/lifecycle)."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from snapship.blocks import EBS_BLOCK_SIZE
from snapship.ebs.client import AwsClients
from snapship.ebs.groups import (
    GroupSnapshot,
    SnapshotGroup,
    SnapshotTags,
    delete_group,
    describe_group,
    describe_groups,
    iso_utc,
    latest_complete_group,
    parse_iso_utc,
    tag_snapshots,
)
from snapship.ebs.retention import apply_retention, plan_retention
from snapship.ebs.writer import EbsSnapshotWriter, WriterSettings, client_token

# ---------------------------------------------------------------- pure


def tags(group: str, key: int, size: int = 2, when: str = "2026-01-01T00:00:00Z") -> SnapshotTags:
    return SnapshotTags(group, "srv-1", f"uuid-{key}", key, f"run-{group}", when, "vm", size)


def group(name: str, when: str, states: list[str], size: int | None = None) -> SnapshotGroup:
    size = len(states) if size is None else size
    g = SnapshotGroup(name, "srv-1", f"run-{name}", when, "vm", size)
    for i, state in enumerate(states):
        g.snapshots.append(GroupSnapshot(f"snap-{name}-{i}", state, 1, tags(name, 2000 + i, size)))
    return g


def test_tags_round_trip_and_foreign_snapshots_are_ignored() -> None:
    t = tags("g1", 2001)
    assert SnapshotTags.from_api(t.to_api()) == t
    assert set(t.to_dict()) >= {
        "snapship:group-id",
        "snapship:source-server",
        "snapship:disk-uuid",
        "snapship:device-key",
        "snapship:run-id",
        "snapship:point-in-time",
        "snapship:vm-name",
    }
    assert SnapshotTags.from_api([{"Key": "Name", "Value": "someone else's"}]) is None


def test_point_in_time_is_iso_utc() -> None:
    from datetime import datetime, timedelta, timezone

    when = datetime(2026, 3, 1, 12, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    assert iso_utc(when) == "2026-03-01T10:00:05Z"
    assert parse_iso_utc(iso_utc(when)) == when


def test_group_completeness_needs_every_member_completed() -> None:
    assert group("a", "t1", ["completed", "completed"]).complete
    assert not group("a", "t1", ["completed", "pending"]).complete
    assert not group("a", "t1", ["completed"], size=2).complete  # a disk is missing
    assert group("a", "t1", ["completed", "error"]).failed


STATE = st.sampled_from(["completed", "completed", "pending", "error"])


@given(
    st.lists(st.lists(STATE, min_size=1, max_size=3), min_size=0, max_size=8),
    st.integers(0, 4),
    st.sets(st.integers(0, 7), max_size=2),
)
def test_retention_properties(states: list[list[str]], keep: int, protect: set[int]) -> None:
    groups = [group(f"g{i}", f"2026-01-{i + 1:02d}T00:00:00Z", s) for i, s in enumerate(states)]
    protected = {g.snapshot_ids[0] for i, g in enumerate(groups) if i in protect}
    plan = plan_retention(groups, keep, protected)
    kept = {g.group_id for g in plan.keep}
    deleted = {g.group_id for g in plan.delete}
    assert kept | deleted == {g.group_id for g in groups} and not kept & deleted
    complete = sorted((g for g in groups if g.complete), key=lambda g: g.point_in_time)
    if complete:
        assert complete[-1].group_id in kept  # never delete the newest (or only) complete group
        newest = complete[-1].point_in_time
    else:
        newest = None
    kept_complete = [g for g in plan.keep if g.complete and not set(g.snapshot_ids) & protected]
    assert len(kept_complete) <= max(1, keep)
    # the newest max(1, keep) complete groups are all kept
    assert {g.group_id for g in complete[-max(1, keep) :]} <= kept
    for g in plan.delete:
        assert not set(g.snapshot_ids) & protected
        if not g.complete:
            assert newest is not None and g.point_in_time <= newest
    for g in groups:  # incomplete groups newer than every complete one may be in flight
        if not g.complete and (newest is None or g.point_in_time > newest):
            assert g.group_id in kept


# ---------------------------------------------------------------- against local AWS


def make_group(
    writer: EbsSnapshotWriter,
    server: str,
    name: str,
    when: str,
    disks: int,
    complete: int,
) -> SnapshotGroup:
    """A group of `disks` one-block snapshots, the first `complete` of them completed."""
    for key in range(disks):
        t = SnapshotTags(name, server, f"u{key}", 2000 + key, f"r-{name}", when, "vm-x", disks)
        up = writer.start(1, None, client_token(server, name, key), t.to_dict())
        writer.put_blocks(up, iter([(key, bytes([key + 1]) * EBS_BLOCK_SIZE)]))
        if key < complete:
            writer.complete(up)
            writer.wait_completed(up.snapshot_id, 30)
    found = describe_group(writer.ec2, name)
    assert found is not None
    return found


def test_groups_retention_and_launch_against_local_aws(aws: Any, clients: AwsClients) -> None:
    server = f"srv-{uuid.uuid4().hex[:8]}"
    writer = EbsSnapshotWriter(clients.ebs, clients.ec2, WriterSettings(wait_poll_s=0.05))
    g1 = make_group(writer, server, f"{server}-g1", "2026-01-01T00:00:00Z", 2, 2)
    g2 = make_group(writer, server, f"{server}-g2", "2026-01-02T00:00:00Z", 2, 1)  # partial
    g3 = make_group(writer, server, f"{server}-g3", "2026-01-03T00:00:00Z", 2, 2)
    g4 = make_group(writer, server, f"{server}-g4", "2026-01-04T00:00:00Z", 2, 2)

    groups = describe_groups(clients.ec2, server)
    assert [g.group_id for g in groups] == [g4.group_id, g3.group_id, g2.group_id, g1.group_id]
    assert [g.complete for g in groups] == [True, True, False, True]
    latest = latest_complete_group(groups)
    assert latest is not None and latest.group_id == g4.group_id
    assert {s.tags.device_key for s in latest.snapshots} == {2000, 2001}
    assert describe_groups(clients.ec2, "some-other-server") == []

    tag_snapshots(clients.ec2, g3.snapshot_ids, {"snapship:launched": "yes"})
    tagged = clients.ec2.describe_snapshots(SnapshotIds=g3.snapshot_ids[:1])["Snapshots"][0]
    assert {"Key": "snapship:launched", "Value": "yes"} in tagged["Tags"]

    # keep 1: g4 stays; g3 is protected (a launched instance uses it); g1 and partial g2 go
    plan = apply_retention(clients.ec2, server, 1, protected_snapshot_ids=g3.snapshot_ids[:1])
    assert sorted(g.group_id for g in plan.delete) == sorted([g1.group_id, g2.group_id])
    left = describe_groups(clients.ec2, server)
    assert [g.group_id for g in left] == [g4.group_id, g3.group_id]

    # discarding a run deletes its snapshots; a repeated delete is harmless
    assert sorted(delete_group(clients.ec2, g4)) == sorted(g4.snapshot_ids)
    delete_group(clients.ec2, g4)
    assert [g.group_id for g in describe_groups(clients.ec2, server)] == [g3.group_id]

