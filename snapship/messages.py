"""Dataclasses exchanged between the console, workflows and activities.

Workflows import this module, so it is pure data: no I/O, no pyvmomi, no boto3. Every field is
JSON-friendly so the `temporal` CLI can send the same Updates and Signals as `snapship`.
Credentials never appear here: activities load them from the worker's secret store.

Every input of an activity that talks to vCenter or VDDK carries `vcenter_id` (the vCenter's
instanceUuid, `snapship.vcenters`); "" means the client's first vCenter, so histories and callers
from before several vCenters existed keep working.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from snapship.launch.messages import ServerLaunchState

# ---------------------------------------------------------------- discovery facts


@dataclass
class DiskFacts:
    device_key: int
    label: str
    capacity_bytes: int
    backing_type: str
    disk_mode: str
    file_name: str
    backing_uuid: str
    controller_key: int = 0
    unit_number: int = 0
    datastore_type: str = ""


@dataclass
class NicFacts:
    mac_address: str
    network: str = ""
    label: str = ""


@dataclass
class VmFacts:
    """What discovery learned about a VM: enough to decide eligibility and, later, to convert."""

    moref: str
    name: str
    instance_uuid: str
    bios_uuid: str = ""
    template: bool = False
    hardware_version: str = ""
    guest_id: str = ""
    guest_full_name: str = ""
    firmware: str = "bios"
    num_cpu: int = 0
    memory_mb: int = 0
    power_state: str = ""
    host: str = ""
    host_name: str = ""
    datastores: list[str] = field(default_factory=list)
    nics: list[NicFacts] = field(default_factory=list)
    disks: list[DiskFacts] = field(default_factory=list)
    snapshot_names: list[str] = field(default_factory=list)
    consolidation_needed: bool = False
    change_tracking_enabled: bool = False
    guest_free_bytes: list[int] = field(default_factory=list)
    tools_status: str = ""


@dataclass
class Eligibility:
    eligible: bool
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class DiscoveredServer:
    """Discovery's signal to a source server workflow: the VM as last seen in vCenter."""

    facts: VmFacts
    eligibility: Eligibility
    discovered_at: str
    tags: dict[str, str] = field(default_factory=dict)
    vanished: bool = False


@dataclass
class SourceServerInput:
    source_server_id: str
    vcenter_host: str
    vcenter_uuid: str
    vm_instance_uuid: str
    vm_name: str
    discovered: DiscoveredServer | None = None
    carried: SourceServerState | None = None
    continue_as_new_after_runs: int = 40
    shipping_task_queue: str = "snapship-shipping"


# ---------------------------------------------------------------- replication state


@dataclass
class DiskChain:
    """The committed replication point of one disk: keyed by backing UUID + deviceKey."""

    disk_uuid: str
    device_key: int
    capacity_bytes: int
    change_id: str
    ebs_snapshot_id: str
    file_name: str = ""


@dataclass
class DiskProgress:
    device_key: int
    label: str = ""
    total_bytes: int = 0
    blocks_total: int = 0
    blocks_done: int = 0
    bytes_shipped: int = 0
    full_sync: bool = False
    note: str = ""


@dataclass
class RunRecord:
    run_id: str
    started_at: str
    finished_at: str = ""
    outcome: str = ""
    reason: str = ""
    group_id: str = ""
    bytes_shipped: int = 0
    blocks_written: int = 0
    blocks_changed: int = 0
    full_sync_disks: int = 0


@dataclass
class ReplicationSettings:
    interval_seconds: int = 3600
    retention_groups: int = 5


@dataclass
class SourceServerState:
    """Everything carried across continue-as-new."""

    lifecycle_state: str
    data_replication_state: str
    replicating: bool = False
    paused: bool = False
    archived: bool = False
    settings: ReplicationSettings = field(default_factory=ReplicationSettings)
    chains: list[DiskChain] = field(default_factory=list)
    last_group_id: str = ""
    last_group_time: str = ""
    last_error: str = ""
    runs: list[RunRecord] = field(default_factory=list)
    run_counter: int = 0
    notes: list[str] = field(default_factory=list)
    next_run_at: str = ""
    launch: ServerLaunchState = field(default_factory=ServerLaunchState)


# ---------------------------------------------------------------- updates and queries


@dataclass
class StartReplicationRequest:
    """`not_after`: ISO UTC time after which the command is refused (snapship.command_deadline)."""

    interval_seconds: int | None = None
    retention_groups: int | None = None
    not_after: str = ""


@dataclass
class ReplicationCommand:
    """Stop, pause, resume or run-now: an optional reason for the record and a deadline.

    `not_after` (ISO UTC, empty = never) is when the sender stopped waiting: a validator that
    runs later refuses the command (snapship.command_deadline).
    """

    reason: str = ""
    not_after: str = ""


@dataclass
class CommandResult:
    accepted: bool
    message: str
    lifecycle_state: str = ""
    data_replication_state: str = ""


@dataclass
class ActivityRetry:
    """An activity attempt failed and Temporal tries again; the worker's fault boundary signals
    it so the status query and the console show why a run stays where it is."""

    activity: str
    next_attempt: int
    max_attempts: int
    """0: no cap."""
    message: str
    """One line (snapship.faults.classify)."""
    next_try_at: str
    """ISO time of the next attempt; "" once an attempt succeeded again."""
    recovered: bool = False


@dataclass
class SourceServerStatus:
    source_server_id: str
    vm_name: str
    vcenter_host: str
    replication_type: str
    lifecycle_state: str
    data_replication_state: str
    replicating: bool
    paused: bool
    eligible: bool
    eligibility_reasons: list[str]
    warnings: list[str]
    tags: dict[str, str]
    disks: list[DiskProgress]
    last_group_id: str
    last_group_time: str
    lag_seconds: float | None
    last_error: str
    runs: list[RunRecord]
    notes: list[str]
    next_run_at: str
    vanished: bool = False
    facts: VmFacts | None = None
    waiting_for: str = ""  # which cap a VM queued for a permit waits for
    permit_coordinator_id: str = ""  # the vCenter's permit coordinator (its `permits` query)
    retry: ActivityRetry | None = None
    """Set while an activity of the current run waits for its next attempt."""
    launch: ServerLaunchState | None = None
    group_snapshot_ids: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- activities


@dataclass
class PreflightInput:
    source_server_id: str
    vm_instance_uuid: str
    run_id: str
    vm_moref: str = ""
    vcenter_id: str = ""


@dataclass
class DiskAtSnapshot:
    device_key: int
    disk_uuid: str
    capacity_bytes: int
    change_id: str
    file_name: str
    label: str = ""


@dataclass
class VmLocation:
    host: str
    datastores: list[str]
    disk_files: dict[str, str]
    disk_datastores: dict[str, str] = field(default_factory=dict)


@dataclass
class PreflightResult:
    vm_moref: str
    vm_name: str
    eligibility: Eligibility
    location: VmLocation
    removed_leftovers: list[str] = field(default_factory=list)


@dataclass
class EnsureCbtInput:
    vm_moref: str
    source_server_id: str = ""
    vcenter_id: str = ""


@dataclass
class EnsureCbtResult:
    changed: bool


@dataclass
class CreateSnapshotInput:
    source_server_id: str
    vm_moref: str
    run_id: str
    vcenter_id: str = ""


@dataclass
class SnapshotInfo:
    snapshot_moref: str
    name: str
    created_at: str
    disks: list[DiskAtSnapshot]


@dataclass
class DiskShipPlan:
    device_key: int
    disk_uuid: str
    label: str
    file_name: str
    capacity_bytes: int
    change_id: str
    base_change_id: str | None
    parent_snapshot_id: str | None
    reason: str = ""


@dataclass
class ShipInput:
    source_server_id: str
    vm_name: str
    vm_moref: str
    snapshot_moref: str
    run_id: str
    group_id: str
    point_in_time: str
    disks: list[DiskShipPlan]
    location: VmLocation | None = None
    vcenter_id: str = ""
    permit_coordinator_id: str = ""  # where the shipping side asks for its budget share
    permit_key: str = ""


@dataclass
class DiskShipResult:
    device_key: int
    disk_uuid: str
    ebs_snapshot_id: str
    full_sync: bool
    blocks_changed: int
    blocks_written: int
    zero_blocks_skipped: int
    bytes_read: int
    bytes_shipped: int
    resumed_blocks: int = 0
    resent_blocks: int = 0


@dataclass
class ShipResult:
    disks: list[DiskShipResult]


@dataclass
class LocationCheckInput:
    vm_moref: str
    before: VmLocation
    vcenter_id: str = ""


@dataclass
class LocationCheckResult:
    moved: bool
    detail: str
    after: VmLocation


@dataclass
class GroupInput:
    source_server_id: str
    group_id: str
    snapshot_ids: list[str]


@dataclass
class GroupResult:
    group_id: str
    complete: bool
    snapshot_ids: list[str]


@dataclass
class DiscardInput:
    snapshot_ids: list[str]
    reason: str


@dataclass
class RemoveSnapshotInput:
    vm_moref: str
    snapshot_moref: str
    vcenter_id: str = ""


@dataclass
class RemoveOwnSnapshotsInput:
    """Remove this workflow's VMware snapshots found by name (those of `run_id` only, if set):
    the way to clean up after an attempt that never reported its snapshot's moref."""

    source_server_id: str
    vm_instance_uuid: str
    vm_moref: str
    run_id: str = ""
    vcenter_id: str = ""


@dataclass
class RemoveOwnSnapshotsResult:
    """What was removed, and what of ours is on the VM after checking (empty: none)."""

    removed: list[str] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)


@dataclass
class RetentionInput:
    source_server_id: str
    keep_groups: int
    protected_snapshot_ids: list[str] = field(default_factory=list)
    """Groups holding one of these are kept (the launched test's and cutover's groups)."""


@dataclass
class RetentionResult:
    deleted_groups: list[str]


@dataclass
class ShippingStarted:
    """Sent by the shipping activity when it gets a slot, so the console can show the queue."""

    run_id: str


@dataclass
class ShippingProgress:
    """Sent by the shipping activity every few seconds: what the status query shows per disk."""

    run_id: str
    disks: list[DiskProgress]
