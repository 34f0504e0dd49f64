"""Make "completion was requested" findable, so a resumed attempt never writes into a sealed
snapshot.

Why: CompleteSnapshot seals a snapshot (no more PutSnapshotBlock), but a worker killed after that
call and before Temporal recorded the heartbeat saying so leaves a checkpoint that still points
inside the disk. EBS has no call that tells "pending, completion requested" from "pending, open"
(DescribeSnapshots says pending for both). So before CompleteSnapshot the shipper tags the
snapshot with the block count and LINEAR checksum it is about to send (CreateTags answers only
once the tag is stored). A resumed attempt that finds the tag knows every block was put: it sends
CompleteSnapshot again with exactly those figures, which EBS checks against the blocks it holds
(and answers the same for a repeat), and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from snapship.ebs.client import EbsCallError
from snapship.ebs.groups import tag_snapshots

TAG_COMPLETION = "snapship:completion"


@dataclass(frozen=True)
class CompletionMark:
    """What CompleteSnapshot was (or is about to be) sent with."""

    changed_blocks: int
    checksum: str
    """Base64 LINEAR aggregate; empty when no block was written (no checksum is sent)."""

    def to_tag(self) -> str:
        return f"{self.changed_blocks}:{self.checksum}"

    @classmethod
    def from_tag(cls, value: str) -> CompletionMark | None:
        count, sep, checksum = value.partition(":")
        if not sep or not count.isdigit():
            return None
        return cls(int(count), checksum)


@dataclass(frozen=True)
class SnapshotState:
    """EC2's view of one snapshot: its state and our completion mark, if any."""

    state: str
    mark: CompletionMark | None


def mark_completion(ec2: Any, snapshot_id: str, mark: CompletionMark) -> None:
    """Record the completion figures on the snapshot before CompleteSnapshot is sent."""
    tag_snapshots(ec2, [snapshot_id], {TAG_COMPLETION: mark.to_tag()})


def snapshot_state(ec2: Any, snapshot_id: str) -> SnapshotState:
    """State (pending/completed/error, "" if EC2 does not know it) and completion mark."""
    try:
        resp = ec2.describe_snapshots(SnapshotIds=[snapshot_id])
    except ClientError as exc:
        if EbsCallError.from_exception("DescribeSnapshots", exc).code == "InvalidSnapshot.NotFound":
            return SnapshotState("", None)
        raise EbsCallError.from_exception("DescribeSnapshots", exc) from exc
    snaps = resp.get("Snapshots", [])
    if not snaps:
        return SnapshotState("", None)
    tags = {t["Key"]: t["Value"] for t in snaps[0].get("Tags", [])}
    raw = tags.get(TAG_COMPLETION)
    return SnapshotState(
        str(snaps[0].get("State", "")), CompletionMark.from_tag(raw) if raw else None
    )
