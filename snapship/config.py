"""The client's configuration: what `snapship install` writes and the worker reads.

Secrets are not here: they live in the 0600 secret store beside this file (snapship.secrets)
and are referenced by name, so this file can be shown, copied or attached to a bug report.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

CONFIG_FILE = "config.json"
SECRETS_FILE = "secrets.json"
MAX_SHIPPING_SLOTS = 50
CONTROL_TASK_QUEUE = "snapship-control"
SHIPPING_TASK_QUEUE = "snapship-shipping"


def default_data_dir() -> Path:
    env = os.environ.get("SNAPSHIP_HOME")
    return Path(env) if env else Path.home() / ".snapship"


def default_shipping_slots(cpus: int | None = None, memory_bytes: int | None = None) -> int:
    """MGN's sizing: 5 VMs at 1 core / 2 GiB, 50 at 8 cores / 16 GiB, never above 50.

    Linear in the scarcer of the two resources between those anchors.
    """
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    if memory_bytes is None:
        try:
            memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            memory_bytes = 2 << 30
    gib = memory_bytes / (1 << 30)
    by_cpu = 5 + (min(cpus, 8) - 1) * 45 / 7
    by_mem = 5 + (min(max(gib, 2), 16) - 2) * 45 / 14
    return max(1, min(MAX_SHIPPING_SLOTS, int(min(by_cpu, by_mem))))


@dataclass
class VcenterSettings:
    """One vCenter the client replicates from.

    The first (`ClientConfig.vcenter`, written by `snapship install`) uses the secret
    `vcenter_password`, the client's shipping queue and discovery schedule; every further one
    (`ClientConfig.vcenters`, added by `snapship vcenter add`) has its own secret, queue, cap and
    schedule, all derived in `snapship.vcenters`. Zero means "the client's default".
    """

    host: str = ""
    port: int = 443
    user: str = ""
    ca_path: str = ""
    disable_ssl_cert_validation: bool = False
    instance_uuid: str = ""
    version: str = ""
    name: str = ""
    password_secret: str = ""
    shipping_slots: int = 0
    discovery_interval_seconds: int = 0


@dataclass
class AwsSettings:
    region: str = ""
    endpoint_url: str = ""
    s3_endpoint_url: str = ""
    proxy_address: str = ""
    account_id: str = ""


@dataclass
class TemporalSettings:
    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    ui_port: int = 8233
    control_task_queue: str = CONTROL_TASK_QUEUE
    shipping_task_queue: str = SHIPPING_TASK_QUEUE


@dataclass
class ReplicationDefaults:
    interval_seconds: int = 3600
    retention_groups: int = 5
    shipping_slots: int = field(default_factory=default_shipping_slots)
    ebs_concurrency: int = 32
    """PutSnapshotBlock calls in flight per VM, shared by the disks it ships at once."""
    disks_in_parallel: int = 4
    """Disks of one VM shipped at once (each gets its share of ebs_concurrency)."""
    checkpoint_every_blocks: int = 256
    discovery_interval_seconds: int = 3600
    vddk_transport_modes: str = "nbdssl:nbd"
    # Caps and budgets a vCenter's permit coordinator starts with (then `snapship limits`).
    host_disk_cap: int = 8
    datastore_disk_cap: int = 15
    total_mbps: int = 0
    vm_mbps: int = 0
    ebs_requests_per_second: int = 1000
    blackout_windows: list[str] = field(default_factory=list)
    vddk_nfc_read_timeout_ms: int = 60_000
    """VDDK's NFC read timeout: a read stuck on the host fails after this (config file)."""
    vddk_reads_in_flight: int = 4
    """ReadAsync calls queued per disk handle in its reader process (2 MiB each)."""
    vddk_log_level: int = 2


@dataclass
class TelemetrySettings:
    metrics_address: str = "127.0.0.1"
    metrics_port: int = 9464
    temporal_metrics_port: int = 9465
    codec_address: str = "127.0.0.1"
    codec_port: int = 8234


@dataclass
class ClientConfig:
    client_id: str = ""
    data_dir: str = ""
    vcenter: VcenterSettings = field(default_factory=VcenterSettings)
    vcenters: list[VcenterSettings] = field(default_factory=list)
    aws: AwsSettings = field(default_factory=AwsSettings)
    temporal: TemporalSettings = field(default_factory=TemporalSettings)
    replication: ReplicationDefaults = field(default_factory=ReplicationDefaults)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    vddk_lib_path: str = ""
    client_vm_uuid: str = ""
    vcenter_client_tags: dict[str, str] = field(default_factory=dict)
    source_server_tags: dict[str, str] = field(default_factory=dict)
    installed_at: str = ""

    @property
    def path(self) -> Path:
        return Path(self.data_dir) / CONFIG_FILE

    @property
    def secrets_path(self) -> Path:
        return Path(self.data_dir) / SECRETS_FILE

    def save(self) -> None:
        """Atomic replace, so a crash mid-write never leaves a half config behind."""
        target = self.path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(self), fh, indent=2, sort_keys=True)
        os.replace(tmp, target)

    @classmethod
    def load(cls, data_dir: Path | None = None) -> ClientConfig:
        base = data_dir if data_dir is not None else default_data_dir()
        path = base / CONFIG_FILE
        if not path.exists():
            raise ConfigError(
                f"No snapship client is installed in {base} (no {CONFIG_FILE}). "
                "Run `snapship install` first, or set SNAPSHIP_HOME to the client's data directory."
            )
        raw = json.loads(path.read_text())
        cfg = cls(
            client_id=raw.get("client_id", ""),
            data_dir=str(base),
            vcenter=VcenterSettings(**raw.get("vcenter", {})),
            vcenters=[VcenterSettings(**v) for v in raw.get("vcenters", [])],
            aws=AwsSettings(**raw.get("aws", {})),
            temporal=TemporalSettings(**raw.get("temporal", {})),
            replication=ReplicationDefaults(**raw.get("replication", {})),
            telemetry=TelemetrySettings(**raw.get("telemetry", {})),
            vddk_lib_path=raw.get("vddk_lib_path", ""),
            client_vm_uuid=raw.get("client_vm_uuid", ""),
            vcenter_client_tags=dict(raw.get("vcenter_client_tags", {})),
            source_server_tags=dict(raw.get("source_server_tags", {})),
            installed_at=raw.get("installed_at", ""),
        )
        return cfg


class ConfigError(RuntimeError):
    """The configuration is missing or unusable; the message says what to run."""


def source_server_id(vcenter_uuid: str, vm_instance_uuid: str) -> str:
    """Workflow id of a VM: stable across renames and vMotions, unique across vCenters."""
    return f"snapship-{vcenter_uuid.lower()}-{vm_instance_uuid.lower()}"
