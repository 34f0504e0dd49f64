"""Several vCenters in one client: how each is identified, and what each one owns.

MGN allows one vCenter client per AWS account; snapship lets one deployment replicate from several.
The first vCenter is the one `snapship install` wrote (`ClientConfig.vcenter`); further ones are
`ClientConfig.vcenters`. A vCenter's id is its `about.instanceUuid` (lower case): the VM's
workflow id `snapship-<vcenter uuid>-<vm instance uuid>` already carries it, so a VM keeps its
identity whichever vCenters sit beside it, and two vCenters can never claim the same workflow ids.

What each vCenter owns, derived here so the worker, discovery and the console agree:
- its password in the secret store under its own name (the first keeps `vcenter_password`);
- its shipping task queue (the first keeps the client's), whose worker slots are its cap;
- its discovery schedule (`snapship-discovery-<id>`; the first keeps `snapship-discovery`).
"""

from __future__ import annotations

from snapship.config import MAX_SHIPPING_SLOTS, ClientConfig, VcenterSettings, source_server_id
from snapship.secrets import VCENTER_PASSWORD

DISCOVERY_SCHEDULE_PREFIX = "snapship-discovery"


class UnknownVcenter(LookupError):
    """A vCenter key names no configured vCenter; the message lists the ones there are."""


def vcenter_id(vc: VcenterSettings) -> str:
    return vc.instance_uuid.lower()


def all_vcenters(cfg: ClientConfig) -> list[VcenterSettings]:
    """The first vCenter, then the added ones, in the order they were added."""
    return [cfg.vcenter, *cfg.vcenters]


def is_first(cfg: ClientConfig, vc: VcenterSettings) -> bool:
    """By value: a worker re-reads config.json, so the objects change while the values stay."""
    return vc == cfg.vcenter


def display_name(vc: VcenterSettings) -> str:
    """What people call it: the given name, else host (with the port when it is not 443)."""
    if vc.name:
        return vc.name
    return vc.host if vc.port == 443 else f"{vc.host}:{vc.port}"


def find_vcenter(cfg: ClientConfig, key: str = "", strict: bool = False) -> VcenterSettings:
    """The vCenter a key names: "" is the first; else its id, name, host or host:port.

    An activity of a single-vCenter client always resolves to that vCenter, whatever key it
    carries (workflows started before this field existed, or by harnesses that made up a uuid);
    `strict` (what a person typed) refuses an unknown key even then.
    """
    if not key:
        return cfg.vcenter
    wanted = key.strip().lower()
    for vc in all_vcenters(cfg):
        names = {vcenter_id(vc), vc.name.lower(), display_name(vc).lower()}
        names.add(f"{vc.host}:{vc.port}".lower())
        if vc.port == 443:
            names.add(vc.host.lower())
        if wanted in names - {""}:
            return vc
    if not cfg.vcenters and not strict:
        return cfg.vcenter
    known = ", ".join(f"{display_name(v)} ({vcenter_id(v) or 'no id'})" for v in all_vcenters(cfg))
    raise UnknownVcenter(f"No vCenter {key!r} is configured in this client; it has: {known}.")


def password_secret(cfg: ClientConfig, vc: VcenterSettings) -> str:
    if is_first(cfg, vc) or not vc.password_secret:
        return VCENTER_PASSWORD
    return vc.password_secret


def password_secret_name(instance_uuid: str) -> str:
    """The secret-store name of an added vCenter's password."""
    return f"{VCENTER_PASSWORD}.{instance_uuid.lower()}"


def shipping_slots(cfg: ClientConfig, vc: VcenterSettings) -> int:
    """The vCenter's cap on VMs shipping at once: its own, else the client's, never above 50."""
    slots = vc.shipping_slots or cfg.replication.shipping_slots
    return max(1, min(MAX_SHIPPING_SLOTS, slots))


def shipping_task_queue(cfg: ClientConfig, vc: VcenterSettings) -> str:
    """One queue per vCenter, so each vCenter's cap is the slot count of its own queue."""
    base = cfg.temporal.shipping_task_queue
    return base if is_first(cfg, vc) else f"{base}.{vcenter_id(vc)}"


def discovery_schedule_id(cfg: ClientConfig, vc: VcenterSettings) -> str:
    if is_first(cfg, vc):
        return DISCOVERY_SCHEDULE_PREFIX
    return f"{DISCOVERY_SCHEDULE_PREFIX}-{vcenter_id(vc)}"


def discovery_interval_seconds(cfg: ClientConfig, vc: VcenterSettings) -> int:
    return int(vc.discovery_interval_seconds or cfg.replication.discovery_interval_seconds)


def workflow_id_prefix(vc: VcenterSettings) -> str:
    """Every source-server workflow of this vCenter starts with it."""
    return source_server_id(vcenter_id(vc), "")


def visibility_scope(cfg: ClientConfig, vc: VcenterSettings | None) -> tuple[str, list[str]]:
    """Visibility filter of one vCenter's servers, or (None) of every vCenter of the client.

    A single-vCenter client keeps today's filter (the vCenter host) so workflows started before
    several vCenters existed stay listed; otherwise servers are told apart by the vCenter id
    their workflow id starts with, since two vCenters may share a host name.
    """
    if vc is None:
        if not cfg.vcenters:
            return cfg.vcenter.host, []
        clauses = [
            f"WorkflowId STARTS_WITH '{workflow_id_prefix(v)}'"
            for v in all_vcenters(cfg)
            if vcenter_id(v)
        ]
        return "", [f"({' OR '.join(clauses)})"] if clauses else []
    if not vcenter_id(vc):
        return vc.host, []
    return vc.host, [f"WorkflowId STARTS_WITH '{workflow_id_prefix(vc)}'"]
