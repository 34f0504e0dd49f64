"""Errors raised by snapship's vSphere client.

Every message says what went wrong and what the operator can do about it, because these texts end
up in the CLI, in workflow status and in logs read by someone who cannot see our code. None of them
ever carries a password: constructors take only what they print.
"""

from __future__ import annotations


class VsphereError(Exception):
    """Base class of everything this package raises on purpose."""


class VcenterUnreachable(VsphereError):
    def __init__(self, host: str, port: int, detail: str) -> None:
        self.host = host
        self.port = port
        super().__init__(
            f"Cannot reach vCenter at {host}:{port} ({detail}). Check the host name and port "
            "(--vcenter-host, --vcenter-port), DNS, and that a firewall allows outbound TCP "
            f"from this client to {host}:{port}."
        )


class TlsVerificationFailed(VsphereError):
    def __init__(self, host: str, port: int, detail: str, ca_path: str | None) -> None:
        self.host = host
        self.port = port
        source = f"the CA file {ca_path}" if ca_path else "the system's trusted CAs"
        # The CA bundle is served where vCenter answers: keep a non-default port in the link.
        where = host if port == 443 else f"{host}:{port}"
        super().__init__(
            f"The TLS certificate of vCenter {host}:{port} could not be verified against "
            f"{source}: {detail}. Download vCenter's root CA from "
            f"https://{where}/certs/download.zip "
            "and pass it with --vcenter-ca-path (connect by the host name the certificate names, "
            "not by IP), or — only if you accept the risk — use --disable-ssl-cert-validation."
        )


class CaFileUnusable(VsphereError):
    def __init__(self, ca_path: str, detail: str) -> None:
        self.ca_path = ca_path
        super().__init__(
            f"The vCenter CA file {ca_path} cannot be used ({detail}). Make sure it exists, is a "
            "PEM certificate, and is readable by the user snapship runs as (--vcenter-ca-path)."
        )


class InvalidCredentials(VsphereError):
    def __init__(self, host: str, user: str) -> None:
        self.host = host
        self.user = user
        super().__init__(
            f"vCenter rejected the user name or password (user {user!r} at {host}). Check the "
            "credentials (--vcenter-user / --vcenter-password, or vcenter_configuration_update)."
        )


class UnsupportedVcenter(VsphereError):
    def __init__(self, host: str, detail: str) -> None:
        self.host = host
        super().__init__(
            f"{host} is not a supported vCenter: {detail}. snapship supports vCenter Server 6.7, "
            "7.0 and 8.0."
        )


class VcenterProtocolError(VsphereError):
    """The endpoint answered, but not like a vSphere SOAP API."""

    def __init__(self, host: str, port: int, detail: str) -> None:
        super().__init__(
            f"{host}:{port} did not answer like a vCenter SOAP API ({detail}). Check that the "
            "host and port point at vCenter Server (usually port 443), not at another service."
        )


class ObjectNotFound(VsphereError):
    def __init__(self, kind: str, moref: str) -> None:
        self.kind = kind
        self.moref = moref
        super().__init__(
            f"The {kind} {moref} no longer exists in vCenter (deleted, or unregistered and "
            "re-registered under a new id). Run discovery again."
        )


class TaskFailed(VsphereError):
    def __init__(
        self, what: str, detail: str, fault_type: str | None = None, fault: object = None
    ) -> None:
        self.what = what
        self.detail = detail
        self.fault_type = fault_type
        self.fault = fault  # the vmodl.MethodFault, for callers that branch on its type
        super().__init__(f"vCenter task '{what}' failed: {detail}")


class TaskTimedOut(VsphereError):
    def __init__(self, what: str, timeout_s: float, task_moref: str) -> None:
        self.what = what
        self.task_moref = task_moref
        super().__init__(
            f"vCenter task '{what}' ({task_moref}) did not finish within {timeout_s:g} s. vCenter "
            "may be overloaded; the task may still finish later."
        )


class CbtResetRequired(VsphereError):
    """The changeId is unusable (FileFault): the caller must do a full resync of the disk."""

    def __init__(self, vm: str, device_key: int, detail: str) -> None:
        self.vm = vm
        self.device_key = device_key
        super().__init__(
            f"Changed Block Tracking data of disk {device_key} on VM {vm} cannot answer a query "
            f"from the stored changeId ({detail}). CBT was reset or corrupted (hard power-off, "
            "storage migration failure, hardware upgrade); a full resync of the disk is required."
        )


class CbtNotTracking(VsphereError):
    """CBT is enabled but the disks still report no changeId after an activation snapshot."""

    def __init__(self, vm: str, device_keys: list[int]) -> None:
        self.vm = vm
        self.device_keys = list(device_keys)
        keys = ", ".join(str(k) for k in device_keys)
        super().__init__(
            f"Changed Block Tracking on VM {vm} is enabled but disk(s) {keys} still report no "
            "changeId after an activation snapshot. Check the VM's datastore (free space, the "
            "-ctk.vmdk files), then disable and re-enable CBT on the VM (power cycle or "
            "snapshot) and start replication again."
        )


class ChangedAreasInvalid(VsphereError):
    def __init__(self, vm: str, device_key: int, detail: str) -> None:
        super().__init__(
            f"vCenter returned an unusable changed-area answer for disk {device_key} on VM {vm}: "
            f"{detail}. Not trusting it; retry the run, or force a full resync if it persists."
        )


class SnapshotRemovalInProgress(VsphereError):
    def __init__(self, vm: str, detail: str) -> None:
        self.vm = vm
        super().__init__(
            f"Not creating a snapshot on VM {vm}: {detail}. Creating a snapshot while another is "
            "being removed or consolidated can corrupt the guest file system; the run will retry "
            "once vCenter has finished."
        )


class ForeignSnapshotsPresent(VsphereError):
    def __init__(self, vm: str, names: list[str]) -> None:
        self.vm = vm
        self.names = list(names)
        super().__init__(
            f"VM {vm} has snapshots snapship did not create ({', '.join(names)}). Replication "
            "needs a VM without snapshots: delete them (Snapshot Manager > Delete) and retry."
        )


class SnapshotTimedOut(VsphereError):
    def __init__(self, vm: str, name: str, timeout_s: float, cleaned_up: bool) -> None:
        self.vm = vm
        self.name = name
        self.cleaned_up = cleaned_up
        tail = (
            "The snapshot it created late has been removed."
            if cleaned_up
            else "If vCenter still creates it, the next run removes it (its name marks it as "
            "snapship's)."
        )
        super().__init__(
            f"Creating snapshot {name!r} on VM {vm} did not finish within {timeout_s:g} s. {tail}"
        )


class VmMovedDuringRun(VsphereError):
    def __init__(self, vm: str, summary: str) -> None:
        self.vm = vm
        super().__init__(
            f"VM {vm} moved during the replication run ({summary}). vMotion/Storage vMotion "
            "during a run is not supported: the run's data is discarded and the run retried."
        )


class MissingPrivileges(VsphereError):
    def __init__(self, user: str, missing: dict[str, list[str]]) -> None:
        self.user = user
        self.missing = {k: list(v) for k, v in missing.items()}
        parts = [f"{entity}: {', '.join(names)}" for entity, names in sorted(missing.items())]
        super().__init__(
            f"The vCenter user {user!r} lacks required privileges ({'; '.join(parts)}). Grant a "
            "role with Acquire disk lease, Toggle disk change tracking, Allow read-only disk "
            "access, Allow virtual machine download, Create snapshot and Remove snapshot on these "
            "objects (propagate to children)."
        )
