"""Adding, changing and removing a vCenter of the client (`snapship vcenter add|update|remove`).

Adding checks what install checks (port, CA file, TLS, login, version, privileges at the root:
`snapship.install.check_vcenter`, reused rather than copied) and refuses a vCenter the client
already has, by address or by instanceUuid (the id its VMs' workflow ids carry). Nothing is
written until every check passed; the password goes to the 0600 secret store under the
vCenter's own name, never into config.json.

Removing never loses a replica: it refuses while any of the vCenter's source servers replicates
(and names them), or, with `stop_replication`, stops them first and waits until each run has
removed its VMware snapshot. The source-server workflows and their EBS snapshot groups stay;
adding the same vCenter again brings its servers back under their old identity.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from snapship import vcenters
from snapship.cli import console
from snapship.config import MAX_SHIPPING_SLOTS, ClientConfig, VcenterSettings
from snapship.error_text import one_line
from snapship.install import InstallError, InstallRequest, check_ca_file, check_port, check_vcenter
from snapship.permit_messages import PermitLimits, PermitsView, coordinator_id
from snapship.secrets import Secret, SecretStore
from snapship.states import DataReplicationState

Log = Callable[[str], None]
NOT_REPLICATING = {DataReplicationState.STOPPED.value, DataReplicationState.DISCONNECTED.value}
MIN_DISCOVERY_INTERVAL_S = 60
COORDINATOR_TIMEOUT = timedelta(seconds=15)


class VcenterAdminError(Exception):
    """One line for the person at the console; nothing was changed."""


@dataclass
class AddVcenterRequest:
    host: str
    user: str
    password: Secret
    port: int = 443
    ca_path: str = ""
    disable_ssl_cert_validation: bool = False
    name: str = ""
    shipping_slots: int = 0
    discovery_interval_seconds: int = 0


def _check_inputs(cfg: ClientConfig, req: AddVcenterRequest) -> None:
    if not req.host.strip():
        raise VcenterAdminError("The vCenter host name is required (--host).")
    if not req.user.strip():
        raise VcenterAdminError("The vCenter user name is required (--user).")
    if not req.password:
        raise VcenterAdminError("The vCenter password is required (--password, or prompted).")
    if req.ca_path and req.disable_ssl_cert_validation:
        raise VcenterAdminError(
            "--ca-path and --disable-ssl-cert-validation contradict each other; give one of them."
        )
    _check_limits(req.shipping_slots, req.discovery_interval_seconds)
    for vc in vcenters.all_vcenters(cfg):
        if (vc.host.lower(), vc.port) == (req.host.strip().lower(), req.port):
            raise VcenterAdminError(
                f"vCenter {req.host}:{req.port} is already in this client "
                f"(as {vcenters.display_name(vc)})."
            )
        if req.name and req.name.lower() in {vc.name.lower(), vcenters.display_name(vc).lower()}:
            raise VcenterAdminError(f"The name {req.name!r} is taken by another vCenter.")


def add_vcenter(cfg: ClientConfig, req: AddVcenterRequest, log: Log = lambda _m: None) -> (
    VcenterSettings
):
    """Check, then record the vCenter and its password. Raises VcenterAdminError."""
    _check_inputs(cfg, req)
    try:
        check_port(req.port, "--port")
        ca_path = check_ca_file(req.ca_path)
        log(f"Connecting to vCenter {req.host}:{req.port} ...")
        target = VcenterSettings(
            host=req.host.strip(), port=req.port, user=req.user.strip(), ca_path=ca_path,
            disable_ssl_cert_validation=req.disable_ssl_cert_validation,
        )
        check = check_vcenter(_install_request(cfg, target, req.password))
    except InstallError as exc:
        raise VcenterAdminError(str(exc).replace("--vcenter-", "--")) from None
    uuid = check.instance_uuid.lower()
    for vc in vcenters.all_vcenters(cfg):
        if vcenters.vcenter_id(vc) == uuid:
            raise VcenterAdminError(
                f"{req.host} is vCenter {uuid}, which this client already has as "
                f"{vcenters.display_name(vc)}."
            )
    log(f"  {check.full_name}; all required privileges granted")
    vc = VcenterSettings(
        host=req.host.strip(),
        port=req.port,
        user=req.user.strip(),
        ca_path=ca_path,
        disable_ssl_cert_validation=req.disable_ssl_cert_validation,
        instance_uuid=uuid,
        version=check.version,
        name=req.name.strip(),
        password_secret=vcenters.password_secret_name(uuid),
        shipping_slots=req.shipping_slots,
        discovery_interval_seconds=req.discovery_interval_seconds,
    )
    # The secret first: a config naming a missing secret would fail every activity.
    SecretStore(cfg.secrets_path).set(vc.password_secret, req.password)
    cfg.vcenters.append(vc)
    cfg.save()
    return vc


def find_added(cfg: ClientConfig, key: str) -> VcenterSettings:
    """An added vCenter by id, name or address; the first one cannot be removed here."""
    try:
        vc = vcenters.find_vcenter(cfg, key, strict=True)
    except vcenters.UnknownVcenter as exc:
        raise VcenterAdminError(str(exc)) from None
    if vcenters.is_first(cfg, vc):
        raise VcenterAdminError(
            f"{vcenters.display_name(vc)} is the vCenter this client was installed with; it "
            "cannot be removed (reinstall the client to replace it)."
        )
    return vc


@dataclass
class UpdateVcenterRequest:
    """What to change; None leaves a setting as it is."""

    user: str | None = None
    password: Secret | None = None
    ca_path: str | None = None
    disable_ssl_cert_validation: bool | None = None
    shipping_slots: int | None = None
    discovery_interval_seconds: int | None = None

    def touches_connection(self) -> bool:
        return any(
            v is not None
            for v in (self.user, self.password, self.ca_path, self.disable_ssl_cert_validation)
        )


def update_vcenter(
    cfg: ClientConfig, key: str, req: UpdateVcenterRequest, log: Log = lambda _m: None
) -> VcenterSettings:
    """Change a vCenter's credentials, CA, cap or discovery interval.

    New connection details are tried first (install's checks, and the same instanceUuid); on any
    failure nothing changes and the message starts with MGN's sentence for it.
    """
    from snapship.cli.credentials import FAILURE_MESSAGE

    try:
        vc = vcenters.find_vcenter(cfg, key, strict=True)
    except vcenters.UnknownVcenter as exc:
        raise VcenterAdminError(str(exc)) from None
    new = dataclasses.replace(vc)
    if req.user is not None:
        new.user = req.user.strip()
    if req.ca_path is not None:
        new.ca_path = req.ca_path
        new.disable_ssl_cert_validation = False
    if req.disable_ssl_cert_validation:
        new.ca_path = ""
        new.disable_ssl_cert_validation = True
    if req.shipping_slots is not None:
        new.shipping_slots = req.shipping_slots
    if req.discovery_interval_seconds is not None:
        new.discovery_interval_seconds = req.discovery_interval_seconds
    _check_limits(new.shipping_slots, new.discovery_interval_seconds)
    store = SecretStore(cfg.secrets_path)
    secret = vcenters.password_secret(cfg, vc)
    if req.touches_connection():
        password = req.password if req.password is not None else store.require(secret)
        try:
            new.ca_path = check_ca_file(new.ca_path)
            log(f"Testing the new connection details against {vcenters.display_name(vc)} ...")
            check = check_vcenter(_install_request(cfg, new, password))
        except InstallError as exc:
            raise VcenterAdminError(f"{FAILURE_MESSAGE} Reason: {exc}") from None
        if vc.instance_uuid and check.instance_uuid.lower() != vc.instance_uuid.lower():
            raise VcenterAdminError(
                f"{FAILURE_MESSAGE} Reason: {vc.host} answered as another vCenter "
                f"({check.instance_uuid}, expected {vc.instance_uuid})."
            )
        if req.password is not None:
            store.set(secret, req.password)
    if vcenters.is_first(cfg, vc):
        cfg.vcenter = new
    else:
        cfg.vcenters = [new if v == vc else v for v in cfg.vcenters]
    cfg.save()
    return new


def _check_limits(shipping_slots: int, discovery_interval_seconds: int) -> None:
    if not 0 <= shipping_slots <= MAX_SHIPPING_SLOTS:
        raise VcenterAdminError(
            f"--max-shipping {shipping_slots} is outside 1-{MAX_SHIPPING_SLOTS} "
            "(VMware sends data for at most 50 servers at once)."
        )
    if discovery_interval_seconds and discovery_interval_seconds < MIN_DISCOVERY_INTERVAL_S:
        raise VcenterAdminError(
            f"--discovery-interval must be at least {MIN_DISCOVERY_INTERVAL_S} seconds."
        )


def _install_request(cfg: ClientConfig, vc: VcenterSettings, password: Secret) -> InstallRequest:
    """Install's request with only the vCenter part filled: check_vcenter reads nothing else."""
    return InstallRequest(
        data_dir=Path(cfg.data_dir),
        aws_access_key_id="",
        aws_secret_access_key=Secret(""),
        region="",
        vcenter_host=vc.host,
        vcenter_user=vc.user,
        vcenter_password=password,
        vddk_path="",
        vcenter_port=vc.port,
        vcenter_ca_path=vc.ca_path,
        disable_ssl_cert_validation=vc.disable_ssl_cert_validation,
    )


async def apply_cap(client: Client, cfg: ClientConfig, vc: VcenterSettings) -> str:
    """Hand a changed cap to the vCenter's running permit coordinator, which owns its limits
    once started (it reads the configuration only when it starts). Returns what happened."""
    handle = client.get_workflow_handle(coordinator_id(vcenters.vcenter_id(vc)))
    cap = vcenters.shipping_slots(cfg, vc)
    try:
        view: PermitsView = await handle.query(
            "permits", result_type=PermitsView, rpc_timeout=COORDINATOR_TIMEOUT
        )
        limits = dataclasses.replace(view.limits, vcenter_vms=cap)
        await handle.execute_update(
            "set_limits", limits, result_type=PermitLimits, rpc_timeout=COORDINATOR_TIMEOUT
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return f"at most {cap} of its VMs ship at once from its first run"
        raise VcenterAdminError(
            f"The cap was saved but its permit coordinator did not take it "
            f"({one_line(exc.message)}); run the command again once the worker runs."
        ) from None
    except WorkflowUpdateFailedError as exc:  # the coordinator's validator refused the limits
        why = getattr(exc.cause, "message", None) or str(exc.cause or exc)
        raise VcenterAdminError(
            f"The cap was saved but its permit coordinator refused it ({one_line(why)})."
        ) from None
    return f"at most {cap} of its VMs ship at once, from now on"


async def replicating_rows(
    client: Client, cfg: ClientConfig, vc: VcenterSettings
) -> list[console.ServerRow]:
    """The vCenter's source servers whose replication is running, paused or stalled."""
    host, extra = vcenters.visibility_scope(cfg, vc)
    rows = await console.list_rows(client, console.VIEW_ALL, host, extra=extra)
    return [r for r in rows if r.data_replication_state not in NOT_REPLICATING]


async def remove_vcenter(
    client: Client,
    cfg: ClientConfig,
    key: str,
    stop_replication: bool = False,
    log: Log = lambda _m: None,
) -> VcenterSettings:
    """Remove an added vCenter from the client; see the module's docstring for the rules."""
    vc = find_added(cfg, key)
    name = vcenters.display_name(vc)
    busy = await replicating_rows(client, cfg, vc)
    if busy and not stop_replication:
        names = ", ".join(r.vm_name for r in busy[:10]) + (" ..." if len(busy) > 10 else "")
        raise VcenterAdminError(
            f"vCenter {name} still has {len(busy)} source server(s) replicating: {names}. "
            f"Stop them first (snapship replicate stop --vcenter {name} --all) or remove with "
            "--stop-replication."
        )
    if busy:
        log(f"Stopping replication of {len(busy)} source server(s) of vCenter {name} ...")
        outcomes = await console.send_commands(
            client, busy, "stop", reason=f"vCenter {name} is being removed from the client"
        )
        for outcome in outcomes:
            if outcome.accepted:
                continue  # the Update returned once the run's VMware snapshot was removed
            try:
                status = await console.query_status(client, outcome.workflow_id)
                running = status.replicating or status.paused
            except Exception:
                running = True
            if running:
                raise VcenterAdminError(
                    f"Could not stop {outcome.vm_name}: {outcome.message}; vCenter {name} was "
                    "not removed."
                )
    schedule = client.get_schedule_handle(vcenters.discovery_schedule_id(cfg, vc))
    try:
        await schedule.delete()
    except RPCError:
        pass  # never created (no `snapship discover` yet), or already gone
    cfg.vcenters = [v for v in cfg.vcenters if v != vc]
    cfg.save()
    SecretStore(cfg.secrets_path).delete(vc.password_secret)
    return vc
