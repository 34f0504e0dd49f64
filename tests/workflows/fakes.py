"""In-memory stand-ins for the replication activities, to test the workflow's own logic.

They keep the same activity names and message types as activities/replication.py, and record
every call so tests can assert ordering rules (snapshot always removed, commit after group, ...).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from temporalio import activity
from temporalio.exceptions import ApplicationError

from snapship.messages import (
    CreateSnapshotInput,
    DiscardInput,
    DiskAtSnapshot,
    DiskShipResult,
    Eligibility,
    EnsureCbtInput,
    EnsureCbtResult,
    GroupInput,
    GroupResult,
    LocationCheckInput,
    LocationCheckResult,
    PreflightInput,
    PreflightResult,
    RemoveOwnSnapshotsInput,
    RemoveOwnSnapshotsResult,
    RemoveSnapshotInput,
    RetentionInput,
    RetentionResult,
    ShipInput,
    ShippingStarted,
    ShipResult,
    SnapshotInfo,
    VmLocation,
)


@dataclass
class FakeDisk:
    device_key: int
    uuid: str
    capacity: int
    epoch: str = "epoch-a"
    seq: int = 0


@dataclass
class FakeVm:
    moref: str = "vm-1"
    disks: list[FakeDisk] = field(
        default_factory=lambda: [
            FakeDisk(2000, "disk-a", 8 << 20),
            FakeDisk(2001, "disk-b", 4 << 20),
        ]
    )
    cbt_on: bool = False
    host: str = "host-1"
    snapshots: list[str] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    ship_delay: float = 0.0
    move_during_next_runs: int = 0
    fail_ship_times: int = 0
    fail_retention: bool = False
    discarded: list[str] = field(default_factory=list)
    plans: list[ShipInput] = field(default_factory=list)
    ineligible: bool = False
    ship_gate: asyncio.Event | None = None
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))


class FakeActivities:
    def __init__(self, vm: FakeVm) -> None:
        self.vm = vm

    def all(self) -> list:
        return [
            self.preflight,
            self.ensure_cbt,
            self.create_snapshot,
            self.ship,
            self.location_check,
            self.complete_group,
            self.discard_snapshots,
            self.remove_snapshot,
            self.remove_own_snapshots,
            self.apply_retention,
        ]

    @activity.defn(name="snapship.preflight")
    async def preflight(self, inp: PreflightInput) -> PreflightResult:
        self.vm.calls.append(("preflight", inp.run_id))
        reasons = ["hardware version vmx-04 is older than vmx-07"] if self.vm.ineligible else []
        return PreflightResult(
            vm_moref=self.vm.moref,
            vm_name="fake",
            eligibility=Eligibility(eligible=not reasons, reasons=reasons),
            location=VmLocation(host=self.vm.host, datastores=["ds1"], disk_files={}),
        )

    @activity.defn(name="snapship.ensure_cbt")
    async def ensure_cbt(self, inp: EnsureCbtInput) -> EnsureCbtResult:
        self.vm.calls.append(("ensure_cbt", ""))
        changed = not self.vm.cbt_on
        self.vm.cbt_on = True
        return EnsureCbtResult(changed=changed)

    @activity.defn(name="snapship.create_snapshot")
    async def create_snapshot(self, inp: CreateSnapshotInput) -> SnapshotInfo:
        moref = f"snapshot-{next(self.vm.counter)}"
        self.vm.snapshots.append(moref)
        self.vm.calls.append(("create_snapshot", moref))
        disks = []
        for d in self.vm.disks:
            d.seq += 1
            disks.append(
                DiskAtSnapshot(
                    d.device_key, d.uuid, d.capacity, f"{d.epoch}/{d.seq}", f"[ds1] {d.uuid}"
                )
            )
        return SnapshotInfo(moref, f"snapship-{inp.run_id}", "2026-11-25T00:00:00+00:00", disks)

    @activity.defn(name="snapship.ship")
    async def ship(self, inp: ShipInput) -> ShipResult:
        self.vm.calls.append(("ship", inp.run_id))
        await (
            activity.client()
            .get_workflow_handle(inp.source_server_id)
            .signal("shipping_started", ShippingStarted(inp.run_id))
        )
        if self.vm.ship_gate is not None:
            while not self.vm.ship_gate.is_set():
                activity.heartbeat()
                await asyncio.sleep(0.1)
        if self.vm.ship_delay:
            end = asyncio.get_running_loop().time() + self.vm.ship_delay
            while asyncio.get_running_loop().time() < end:
                activity.heartbeat()
                await asyncio.sleep(0.1)
        if self.vm.fail_ship_times > 0:
            self.vm.fail_ship_times -= 1
            raise ApplicationError("injected shipping failure")
        self.vm.plans.append(inp)
        if self.vm.move_during_next_runs > 0:
            self.vm.move_during_next_runs -= 1
            self.vm.host = f"host-{next(self.vm.counter)}"
        return ShipResult(
            [
                DiskShipResult(
                    device_key=p.device_key,
                    disk_uuid=p.disk_uuid,
                    ebs_snapshot_id=f"snap-{inp.run_id}-{p.device_key}",
                    full_sync=p.base_change_id is None,
                    blocks_changed=1,
                    blocks_written=1,
                    zero_blocks_skipped=0,
                    bytes_read=524288,
                    bytes_shipped=524288,
                )
                for p in inp.disks
            ]
        )

    @activity.defn(name="snapship.location_check")
    async def location_check(self, inp: LocationCheckInput) -> LocationCheckResult:
        after = VmLocation(host=self.vm.host, datastores=["ds1"], disk_files={})
        moved = after.host != inp.before.host
        return LocationCheckResult(
            moved, f"host {inp.before.host} -> {after.host}" if moved else "", after
        )

    @activity.defn(name="snapship.complete_group")
    async def complete_group(self, inp: GroupInput) -> GroupResult:
        self.vm.calls.append(("complete_group", inp.group_id))
        return GroupResult(inp.group_id, True, inp.snapshot_ids)

    @activity.defn(name="snapship.discard_snapshots")
    async def discard_snapshots(self, inp: DiscardInput) -> None:
        self.vm.calls.append(("discard", ",".join(inp.snapshot_ids)))
        self.vm.discarded += inp.snapshot_ids

    @activity.defn(name="snapship.remove_snapshot")
    async def remove_snapshot(self, inp: RemoveSnapshotInput) -> None:
        self.vm.calls.append(("remove_snapshot", inp.snapshot_moref))
        if inp.snapshot_moref in self.vm.snapshots:
            self.vm.snapshots.remove(inp.snapshot_moref)

    @activity.defn(name="snapship.remove_own_snapshots")
    async def remove_own_snapshots(self, inp: RemoveOwnSnapshotsInput) -> RemoveOwnSnapshotsResult:
        """The fake's creates always report their snapshot, so by name means: all of them."""
        self.vm.calls.append(("remove_own_snapshots", inp.run_id))
        removed, self.vm.snapshots = list(self.vm.snapshots), []
        return RemoveOwnSnapshotsResult(removed, [])

    @activity.defn(name="snapship.apply_retention")
    async def apply_retention(self, inp: RetentionInput) -> RetentionResult:
        self.vm.calls.append(("retention", ""))
        if self.vm.fail_retention:
            raise ApplicationError("injected retention failure", non_retryable=True)
        return RetentionResult([])
