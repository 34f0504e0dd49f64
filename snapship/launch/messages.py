"""Messages of the launch side of the lifecycle: launch settings, jobs, their log.

Pure dataclasses with MGN's names (StartTest/StartCutover jobs, launchStatus, job log events), so a
user who knows MGN reads a snapship job without a glossary. Workflows import this module.

No `from __future__ import annotations` here: inside Temporal's workflow sandbox the converter's
get_type_hints could not resolve this module's string annotations of nested dataclasses
(NameError for VolumeSettings when decoding an Update's LaunchSettings); real annotations need no
lookup.
"""

from dataclasses import dataclass, field
from enum import StrEnum


class JobType(StrEnum):
    LAUNCH = "LAUNCH"
    TERMINATE = "TERMINATE"


class InitiatedBy(StrEnum):
    START_TEST = "START_TEST"
    START_CUTOVER = "START_CUTOVER"
    TERMINATE = "TERMINATE"


class JobStatus(StrEnum):
    PENDING = "PENDING"
    STARTED = "STARTED"
    COMPLETED = "COMPLETED"


class LaunchStatus(StrEnum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    LAUNCHED = "LAUNCHED"
    FAILED = "FAILED"
    TERMINATED = "TERMINATED"


class JobEvent(StrEnum):
    JOB_START = "JOB_START"
    SERVER_SKIPPED = "SERVER_SKIPPED"
    CLEANUP_START = "CLEANUP_START"
    CLEANUP_END = "CLEANUP_END"
    CLEANUP_FAIL = "CLEANUP_FAIL"
    SNAPSHOT_START = "SNAPSHOT_START"
    SNAPSHOT_END = "SNAPSHOT_END"
    SNAPSHOT_FAIL = "SNAPSHOT_FAIL"
    USING_PREVIOUS_SNAPSHOT = "USING_PREVIOUS_SNAPSHOT"
    LAUNCH_START = "LAUNCH_START"
    LAUNCH_FAILED = "LAUNCH_FAILED"
    JOB_CANCEL = "JOB_CANCEL"
    JOB_END = "JOB_END"


@dataclass
class VolumeSettings:
    """EBS settings of one disk's volume (keyed by the VM's device key)."""

    device_key: int
    volume_type: str = "gp3"
    iops: int | None = None
    throughput: int | None = None


@dataclass
class LaunchSettings:
    """Per-server launch configuration (MGN's launch configuration + template).

    Changes affect only later launches. `instance_type` is used as given with right-sizing NONE;
    with BASIC the smallest current-generation type fitting the VM's vCPUs and memory wins.
    """

    instance_type: str = "t3.medium"
    right_sizing: str = "BASIC"
    subnet_id: str = ""
    security_group_ids: list[str] = field(default_factory=list)
    launch_disposition: str = "STARTED"
    boot_mode: str = "USE_SOURCE"
    copy_tags: bool = True
    copy_private_ip: bool = False
    private_ip: str = ""
    volume_type: str = "gp3"
    volumes: list[VolumeSettings] = field(default_factory=list)
    encrypted: bool = False
    kms_key_id: str = ""


@dataclass
class GroupDisk:
    """One member of the snapshot group a launch reads from."""

    device_key: int
    snapshot_id: str
    size_gib: int


@dataclass
class LaunchTarget:
    """Everything a job needs to launch one server: resolved once, when the server joins."""

    source_server_id: str
    vm_name: str
    group_id: str
    disks: list[GroupDisk]
    settings: LaunchSettings
    instance_type: str  # resolved by the launch activity when empty (right-sizing)
    boot_mode: str  # EC2's name; resolved from settings + firmware when empty
    kind: str  # "test" or "cutover", tagged on the instance
    tags: dict[str, str] = field(default_factory=dict)
    terminate_first: list[str] = field(default_factory=list)
    num_cpu: int = 0
    memory_mb: int = 0
    firmware: str = "bios"


@dataclass
class JobLogEntry:
    event: str
    time: str
    source_server_id: str = ""
    instance_id: str = ""
    error: str = ""
    detail: str = ""
    attempt: int = 0


@dataclass
class ParticipatingServer:
    source_server_id: str
    launch_status: str = LaunchStatus.PENDING.value
    instance_id: str = ""
    image_id: str = ""
    error: str = ""
    launched_at: str = ""


@dataclass
class LaunchJobInput:
    """A job over several servers. Targets come in the input (a server that starts its own job)
    or join later by signal from the servers listed in `expected` (a console command over a
    selection: each server validates its command, then joins the job)."""

    job_id: str
    initiated_by: str
    targets: list[LaunchTarget] = field(default_factory=list)
    terminate: dict[str, list[str]] = field(default_factory=dict)
    expected: list[str] = field(default_factory=list)
    notify_servers: bool = True
    join_timeout_seconds: int = 6 * 3600


@dataclass
class ServerSkip:
    """Signal to a job: this server does not take part, and why."""

    source_server_id: str
    reason: str


@dataclass
class LaunchJobState:
    job_id: str
    type: str
    initiated_by: str
    status: str
    creation_time: str
    end_time: str = ""
    servers: list[ParticipatingServer] = field(default_factory=list)
    log: list[JobLogEntry] = field(default_factory=list)


@dataclass
class LaunchServerInput:
    """Activity input: launch one target under one job (the ClientToken comes from both)."""

    job_id: str
    target: LaunchTarget
    region: str = ""


@dataclass
class LaunchServerResult:
    instance_id: str
    image_id: str
    launched_at: str
    state: str


@dataclass
class TerminateInput:
    job_id: str
    source_server_id: str
    instance_ids: list[str]


@dataclass
class TerminateResult:
    terminated: list[str]


@dataclass
class LaunchOutcome:
    """Signal from a job to a source server: how its launch ended."""

    job_id: str
    initiated_by: str
    source_server_id: str
    launch_status: str
    instance_id: str = ""
    launched_at: str = ""
    error: str = ""


@dataclass
class LaunchRecord:
    """MGN's lastTest / lastCutover: initiated {time, jobID}, reverted, finalized."""

    job_id: str = ""
    initiated_at: str = ""
    instance_id: str = ""
    launch_status: str = ""
    launched_at: str = ""
    error: str = ""
    reverted_at: str = ""
    finalized_at: str = ""
    source_stopped_at: str = ""
    downtime_seconds: float | None = None
    group_id: str = ""
    snapshot_ids: list[str] = field(default_factory=list)
    """The group launched from: retention keeps it (EC2 refuses to delete a snapshot an image
    uses, and a test or cutover must stay re-launchable from the same point)."""


@dataclass
class StopSourceInput:
    vm_moref: str
    mode: str = "shutdown"  # shutdown | power-off | leave-running
    vcenter_id: str = ""


@dataclass
class StopSourceResult:
    was_powered_on: bool
    action: str
    powered_off_by_us: bool
    stopped_at: str


@dataclass
class StartSourceInput:
    vm_moref: str
    vcenter_id: str = ""


@dataclass
class ValidateSettingsInput:
    settings: LaunchSettings
    firmware: str = "bios"
    num_cpu: int = 0
    memory_mb: int = 0


@dataclass
class ValidateSettingsResult:
    problems: list[str] = field(default_factory=list)
    instance_type: str = ""


@dataclass
class ServerLaunchState:
    """What a source server keeps about its launches (shown by `servers show`)."""

    settings: LaunchSettings = field(default_factory=LaunchSettings)
    last_test: LaunchRecord | None = None
    last_cutover: LaunchRecord | None = None
    job_in_progress: str = ""
    test_instances: list[str] = field(default_factory=list)
    cutover_instances: list[str] = field(default_factory=list)
    powered_off_by_snapship: bool = False
    final_sync_group: str = ""
    cutover_stop_mode: str = "shutdown"
    finalized: bool = False


@dataclass
class LaunchRequest:
    """Input of the start_test / start_cutover Updates.

    `job_id` empty: the server starts a job of its own; set: the server joins that job (a console
    command over several servers started it). A cutover stops the guest (`stop_mode`: shutdown
    through VMware Tools, power-off, or leave-running) and runs a final sync first, unless
    `final_sync` is false (then it launches from the newest group as it is).
    """

    job_id: str = ""
    final_sync: bool = True
    stop_mode: str = "shutdown"
    not_after: str = ""  # ISO UTC; a later delivery is refused (snapship.command_deadline)


@dataclass
class LifecycleCommand:
    """Input of the other lifecycle Updates (mark/revert/finalize/terminate/disconnect/archive)."""

    job_id: str = ""
    terminate_test_instances: bool = False
    reason: str = ""
    not_after: str = ""  # ISO UTC; a later delivery is refused (snapship.command_deadline)
