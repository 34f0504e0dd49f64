"""Retention of snapshot groups: keep the newest N complete groups, delete the rest.

Why deleting old groups is safe with EBS: incremental EBS snapshots share unchanged blocks, but
each snapshot is restorable on its own. When a snapshot is deleted, EBS keeps every block that a
remaining snapshot still references (AWS: "Deleting a snapshot ... only the data unique to that
snapshot is removed"). So deleting an old group never breaks the newer groups whose chain passed
through it, and the next run's parent (the newest complete group) is always kept because N >= 1.

Rules, in order:
- the newest complete group is never deleted, whatever N says (never delete the only one);
- complete groups beyond the newest N are deleted;
- incomplete groups older than the newest complete group are leftovers of failed or discarded runs
  and are deleted; incomplete groups newer than it may still be in flight and are kept;
- a group holding any protected snapshot id (the committed chain's parents, snapshots behind a
  launched test instance's image, ...) is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from snapship.ebs.groups import SnapshotGroup, delete_group, describe_groups

log = logging.getLogger(__name__)


@dataclass
class RetentionPlan:
    keep: list[SnapshotGroup] = field(default_factory=list)
    delete: list[SnapshotGroup] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    """group id -> why it is deleted or kept (for logs and the run record)."""


def plan_retention(
    groups: Iterable[SnapshotGroup],
    keep_complete: int,
    protected_snapshot_ids: Iterable[str] = (),
) -> RetentionPlan:
    """Decide which groups to delete; pure so it is tested without AWS."""
    keep_n = max(1, keep_complete)
    protected = set(protected_snapshot_ids)
    ordered = sorted(groups, key=lambda g: (g.point_in_time, g.group_id), reverse=True)
    plan = RetentionPlan()
    complete_seen = 0
    newest_complete_time: str | None = None
    for group in ordered:
        if group.complete:
            complete_seen += 1
            if newest_complete_time is None:
                newest_complete_time = group.point_in_time
        if protected.intersection(group.snapshot_ids):
            plan.keep.append(group)
            plan.reasons[group.group_id] = "protected snapshot"
        elif group.complete and complete_seen <= keep_n:
            plan.keep.append(group)
            plan.reasons[group.group_id] = f"complete, #{complete_seen} newest"
        elif group.complete:
            plan.delete.append(group)
            plan.reasons[group.group_id] = f"complete, beyond the newest {keep_n}"
        elif newest_complete_time is not None and group.point_in_time <= newest_complete_time:
            plan.delete.append(group)
            plan.reasons[group.group_id] = "incomplete and superseded by a complete group"
        else:
            plan.keep.append(group)
            plan.reasons[group.group_id] = "incomplete, newer than any complete group"
    return plan


def apply_retention(
    ec2: Any,
    source_server: str,
    keep_complete: int,
    protected_snapshot_ids: Iterable[str] = (),
) -> RetentionPlan:
    """Describe the server's groups, plan, and delete what the plan says."""
    plan = plan_retention(
        describe_groups(ec2, source_server), keep_complete, protected_snapshot_ids
    )
    for group in plan.delete:
        log.info("retention: deleting group %s (%s)", group.group_id, plan.reasons[group.group_id])
        delete_group(ec2, group)
    return plan
