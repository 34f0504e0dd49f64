"""One snapshot-shipping run driven below the workflow: the vCenter steps the activities take and
the Shipper the ship activity runs, against the sandbox, so a test or benchmark can interrupt an
attempt at an observed point or compare ways of shipping in one process."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from activities.deps import WorkerDeps
from snapship.ebs.reader import read_snapshot
from snapship.ebs.writer import EbsSnapshotWriter, WriterSettings
from snapship.messages import DiskAtSnapshot, DiskShipPlan, ShipInput, SnapshotInfo
from snapship.shipping import Shipper, VddkEndpoint
from snapship.vsphere import snapshots as vsnap
from snapship.vsphere.cbt import ensure_cbt_active
from tests.e2e.harness import Sandbox


class Run:
    """One run's VMware snapshot and the shipper's inputs, built as the workflow builds them."""

    def __init__(self, sb: Sandbox, vm: str, run_id: str) -> None:
        self.sb = sb
        self.deps = WorkerDeps(sb.config)
        self.exit = contextlib.ExitStack()
        self.session = self.exit.enter_context(self.deps.vcenter())
        inp = sb.vm_input(vm)
        self.sid = inp.source_server_id
        moref = inp.discovered.facts.moref if inp.discovered else ""
        ensure_cbt_active(self.session, moref, self.sid)
        created = vsnap.create_snapshot(self.session, moref, self.sid, f"{run_id}-a1")
        self.snapshot = SnapshotInfo(
            snapshot_moref=created.snapshot_moref,
            name=created.name,
            created_at=datetime.now(UTC).isoformat(),
            disks=[
                DiskAtSnapshot(
                    device_key=d.device_key,
                    disk_uuid=d.backing_uuid or "",
                    capacity_bytes=d.capacity_bytes,
                    change_id=d.change_id or "",
                    file_name=d.file_name or "",
                    label=d.label,
                )
                for d in created.disks
            ],
        )
        self.ship_input = ShipInput(
            source_server_id=self.sid,
            vm_name=vm,
            vm_moref=moref,
            snapshot_moref=self.snapshot.snapshot_moref,
            run_id=run_id,
            group_id=f"{self.sid}/{run_id}-a1",
            point_in_time=self.snapshot.created_at,
            disks=[
                DiskShipPlan(
                    device_key=d.device_key,
                    disk_uuid=d.disk_uuid,
                    label=d.label,
                    file_name=d.file_name,
                    capacity_bytes=d.capacity_bytes,
                    change_id=d.change_id,
                    base_change_id=None,
                    parent_snapshot_id=None,
                    reason="first sync",
                )
                for d in self.snapshot.disks
            ],
        )

    def shipper(
        self,
        on_checkpoint: Any = None,
        cancel: threading.Event | None = None,
        disks_in_parallel: int | None = None,
    ) -> Shipper:
        cfg = self.deps.config
        aws = self.deps.aws()
        return Shipper(
            self.session,
            self.deps.vddk(),
            VddkEndpoint(
                server=cfg.vcenter.host,
                port=cfg.vcenter.port,
                thumbprint=self.deps.vcenter_thumbprint(),
                username=cfg.vcenter.user,
                password=self.deps.vcenter_password(),
            ),
            aws.ebs,
            aws.ec2,
            WriterSettings(
                max_in_flight=cfg.replication.ebs_concurrency,
                checkpoint_every_blocks=cfg.replication.checkpoint_every_blocks,
            ),
            on_checkpoint=on_checkpoint,
            cancel=cancel,
            disks_in_parallel=disks_in_parallel or cfg.replication.disks_in_parallel,
        )

    def verify(self, snapshot_ids: dict[int, str]) -> None:
        """Every disk rebuilt from its EBS snapshot equals the VMware snapshot's content."""
        images = {
            int(k): Path(p)
            for h in self.sb.sim.admin.history()
            if h.get("snapshot") == self.snapshot.name
            for k, p in h["disks"].items()
        }
        assert sorted(images) == sorted(snapshot_ids)
        aws = self.deps.aws()
        writer = EbsSnapshotWriter(aws.ebs, aws.ec2, WriterSettings(wait_poll_s=0.2))
        for key, snapshot_id in snapshot_ids.items():
            writer.wait_completed(snapshot_id, timeout_s=120)
            want = images[key].read_bytes()
            assert read_snapshot(aws.ebs, snapshot_id, len(want)) == want, f"disk {key} differs"

    def remove_snapshot(self) -> None:
        vsnap.remove_snapshot(self.session, self.snapshot.snapshot_moref)
        self.exit.close()
