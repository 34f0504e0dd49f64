"""The vCenter privileges snapshot shipping needs, and which of them a session lacks where.

The six are exactly MGN's list for the agentless client. They are checked for the session's own
user with ``AuthorizationManager.HasPrivilegeOnEntities`` on the objects that matter (the VM at its
current location; after a vMotion the new location's permissions apply).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pyVmomi import vim

from snapship.vsphere.errors import MissingPrivileges
from snapship.vsphere.session import VcenterSession

REQUIRED_PRIVILEGES: dict[str, str] = {
    "VirtualMachine.Config.DiskLease": "Acquire disk lease",
    "VirtualMachine.Config.ChangeTracking": "Toggle disk change tracking",
    "VirtualMachine.Provisioning.DiskRandomRead": "Allow read-only disk access",
    "VirtualMachine.Provisioning.GetVmFiles": "Allow virtual machine download",
    "VirtualMachine.State.CreateSnapshot": "Create snapshot",
    "VirtualMachine.State.RemoveSnapshot": "Remove snapshot",
}


@dataclass(frozen=True)
class MissingPrivilege:
    privilege_id: str
    name: str


@dataclass
class PrivilegeReport:
    user: str
    missing: dict[str, list[MissingPrivilege]] = field(default_factory=dict)  # moref -> missing

    @property
    def ok(self) -> bool:
        return not any(self.missing.values())

    def raise_if_missing(self) -> None:
        if not self.ok:
            raise MissingPrivileges(
                self.user,
                {m: [p.name for p in ps] for m, ps in self.missing.items() if ps},
            )


def check_privileges(
    session: VcenterSession,
    entities: Sequence[Any],
    privilege_ids: Sequence[str] = tuple(REQUIRED_PRIVILEGES),
) -> PrivilegeReport:
    """Which of ``privilege_ids`` the session's user lacks on each entity (moref -> list).

    ``entities`` are managed object references bound to ``session`` (e.g. ``session.vm(m)``,
    ``content.rootFolder``). Entities vCenter does not answer for count as lacking everything.
    """
    content = session.content
    session_key = content.sessionManager.currentSession.key
    answers = content.authorizationManager.HasPrivilegeOnEntities(
        entity=list(entities), sessionId=session_key, privId=list(privilege_ids)
    )
    granted: dict[str, set[str]] = {}
    for answer in answers or ():
        ent = str(answer.entity._moId)
        granted[ent] = {a.privId for a in answer.privAvailability or () if a.isGranted}
    report = PrivilegeReport(user=session.user)
    for entity in entities:
        moref = str(entity._moId)
        have = granted.get(moref, set())
        report.missing[moref] = [
            MissingPrivilege(p, REQUIRED_PRIVILEGES.get(p, p))
            for p in privilege_ids
            if p not in have
        ]
    return report


def check_vm_privileges(session: VcenterSession, vm_morefs: Sequence[str]) -> PrivilegeReport:
    return check_privileges(session, [vim.VirtualMachine(m, session.stub) for m in vm_morefs])
