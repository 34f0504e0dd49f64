"""Messages of the shipping permits: requests, grants, releases, limits and the console's view.

Pure data shared by the VM workflows, the coordinator workflow, its activities and the console.
Every field is JSON-friendly so the `temporal` CLI can send the same signals and updates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

MAX_VCENTER_VMS = 50


class RunPriority(IntEnum):
    """Lower value = served first."""

    CUTOVER_FINAL_SYNC = 0
    INITIAL_SYNC = 1
    INCREMENTAL = 2

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


@dataclass
class PermitLimits:
    """The caps and budgets of one vCenter; 0 means "no cap" for disk caps and budgets."""

    vcenter_vms: int = 5
    host_disks: int = 8
    datastore_disks: int = 15
    total_mbps: int = 0
    vm_mbps: int = 0
    ebs_requests_per_second: int = 1000
    blackout_windows: list[str] = field(default_factory=list)

    def clamped(self) -> PermitLimits:
        """VMware sends data for at most 50 servers of one vCenter at once."""
        return PermitLimits(
            vcenter_vms=max(1, min(MAX_VCENTER_VMS, self.vcenter_vms)),
            host_disks=max(0, self.host_disks),
            datastore_disks=max(0, self.datastore_disks),
            total_mbps=max(0, min(10_000, self.total_mbps)),
            vm_mbps=max(0, min(10_000, self.vm_mbps)),
            ebs_requests_per_second=max(0, self.ebs_requests_per_second),
            blackout_windows=list(self.blackout_windows),
        )


@dataclass
class PermitRequest:
    """A VM's request for one run's permit (sent with signal-with-start to the coordinator)."""

    holder_id: str  # the SourceServerWorkflow's id: grants are signalled there
    # Unique across VMs (the VM's id + run + attempt); a repeated request with the same key is
    # the same request.
    request_key: str
    vm_name: str
    priority: int
    host: str
    host_label: str
    disk_datastores: list[str]
    requested_at: str
    vm_mbps: int = 0  # the VM's own Mbit/s limit; 0 = only the global one


@dataclass
class PermitGrant:
    request_key: str
    coordinator_id: str
    granted_at: str


@dataclass
class PermitRelease:
    holder_id: str
    request_key: str


@dataclass
class PermitWaiting:
    """Sent to a waiting VM when what it waits for changes (shown in its status)."""

    request_key: str
    waiting_for: str


@dataclass
class Share:
    """A holder's part of the shared budgets; 0 = unlimited."""

    mbps: float = 0.0
    requests_per_second: float = 0.0


@dataclass
class HolderView:
    holder_id: str
    vm_name: str
    priority: str
    host: str
    disks: int
    since: str
    share: Share


@dataclass
class WaiterView:
    holder_id: str
    vm_name: str
    priority: str
    since: str
    waiting_for: str


@dataclass
class PermitsView:
    """The coordinator's query: the same facts the console and the metrics show."""

    coordinator_id: str
    limits: PermitLimits
    holders: list[HolderView]
    waiting: list[WaiterView]
    vms_in_use: int
    disks_per_host: dict[str, int]
    disks_per_datastore: dict[str, int]


@dataclass
class Plan:
    grant: list[PermitRequest]
    waiting_for: dict[str, str]  # request_key -> why it waits


COORDINATOR_PREFIX = "snapship-permits-"


def coordinator_id(vcenter_id: str) -> str:
    """One coordinator per vCenter: its caps are VMware's, per vCenter."""
    return f"{COORDINATOR_PREFIX}{vcenter_id.lower()}"


@dataclass
class CoordinatorInput:
    vcenter_id: str
    limits: PermitLimits
    holders: list[PermitRequest] = field(default_factory=list)
    waiting: list[PermitRequest] = field(default_factory=list)
    granted_at: dict[str, str] = field(default_factory=dict)


@dataclass
class RequestPermitInput:
    """The request activity's input: start the coordinator if needed and enqueue the request."""

    vcenter_id: str
    task_queue: str  # where the coordinator runs: the control queue of the requesting VM
    request: PermitRequest


@dataclass
class LivenessInput:
    holder_ids: list[str]


@dataclass
class LivenessResult:
    gone: list[str]


@dataclass
class ShareQuery:
    request_key: str
