"""Sessions, users, roles and privileges of the simulated vCenter.

Permissions are (entity, role, propagate) per user, as in vSphere; a privilege granted on an
entity with propagate=True holds on every descendant (folders -> datacenters -> hosts/VMs).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

ALL_PRIVILEGES = [
    "System.Anonymous", "System.View", "System.Read",
    "Sessions.ValidateSession", "Sessions.TerminateSession", "Global.Settings",
    "Datastore.Browse", "Datastore.FileManagement", "Datastore.AllocateSpace",
    "Resource.HotMigrateVM", "Resource.ColdMigrateVM", "Resource.AssignVMToPool",
    "VirtualMachine.State.CreateSnapshot", "VirtualMachine.State.RemoveSnapshot",
    "VirtualMachine.State.RevertToSnapshot", "VirtualMachine.Provisioning.DiskRandomRead",
    "VirtualMachine.Provisioning.DiskRandomAccess", "VirtualMachine.Provisioning.GetVmFiles",
    "VirtualMachine.Config.DiskLease", "VirtualMachine.Config.ChangeTracking",
    "VirtualMachine.Config.Settings", "VirtualMachine.Config.AddNewDisk",
    "VirtualMachine.Config.RemoveDisk", "VirtualMachine.Config.DiskExtend",
    "VirtualMachine.Config.Resource", "VirtualMachine.Interact.PowerOn",
    "VirtualMachine.Interact.PowerOff", "Host.Config.Storage",
]
BUILTIN_ROLES: dict[str, list[str]] = {
    "Admin": ALL_PRIVILEGES,
    "ReadOnly": ["System.Anonymous", "System.View", "System.Read"],
    "NoAccess": [],
}


@dataclass
class Permission:
    entity: str          # moref
    privileges: frozenset[str]
    propagate: bool = True


@dataclass
class User:
    name: str
    password: str
    permissions: list[Permission] = field(default_factory=list)


@dataclass
class Session:
    key: str
    user: User | None = None
    created: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.time)
    login_time: float = 0.0
    expired: bool = False
    pc_state: Any = None     # the session's property-collector filters and versions


class SessionTable:
    """Cookie -> Session, with idle expiry and an admin "expire everything"."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def new(self) -> Session:
        s = Session(key=secrets.token_hex(20))
        with self._lock:
            self._sessions[s.key] = s
        return s

    def get(self, key: str | None) -> Session | None:
        if not key:
            return None
        with self._lock:
            s = self._sessions.get(key)
        if s is None:
            return None
        now = time.time()
        if s.user is not None and (s.expired or now - s.last_active > self.timeout_s):
            s.user = None
            s.expired = True
        s.last_active = now
        return s

    def drop(self, key: str) -> None:
        with self._lock:
            self._sessions.pop(key, None)

    def expire_all(self) -> int:
        with self._lock:
            sessions = list(self._sessions.values())
        n = 0
        for s in sessions:
            if s.user is not None:
                s.expired = True
                n += 1
        return n

    def active(self) -> list[Session]:
        with self._lock:
            return [s for s in self._sessions.values() if s.user is not None and not s.expired]
