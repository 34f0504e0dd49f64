"""The admin API: what a test or the demo does to the world behind vCenter's back.

Guest writes, power changes, (storage) vMotion, disk changes, foreign snapshots and fault
injection. JSON over plain HTTP on a loopback port; see README.md for every route.
"""

from __future__ import annotations

import base64
import random
import threading
import time
from typing import TYPE_CHECKING, Any

from pyVmomi import vmodl

from sandbox.vcsim.model import VM, Datastore, Disk, Host
from sandbox.vcsim.simulator import Simulator, fault_by_name

if TYPE_CHECKING:
    from sandbox.vcsim.server import SimulatorServer


class AdminError(Exception):
    """A bad admin request (HTTP 400/404)."""

    def __init__(self, status: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status


def _later(delay: float, fn: Any) -> None:
    def run() -> None:
        time.sleep(delay)
        try:
            fn()
        except Exception:
            pass

    threading.Thread(target=run, daemon=True).start()


class AdminApi:
    """Routes admin requests to the Simulator."""

    def __init__(self, sim: Simulator, server: SimulatorServer | None = None) -> None:
        self.sim = sim
        self.server = server

    def dispatch(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        parts = [p for p in path.split("?")[0].split("/") if p]
        try:
            return 200, self._route(method, parts, body)
        except AdminError as e:
            return e.status, {"error": str(e)}
        except vmodl.MethodFault as f:
            return 409, {"error": getattr(f, "msg", None) or type(f).__name__,
                         "fault": type(f).__name__}
        except (KeyError, ValueError) as e:
            return 400, {"error": f"{type(e).__name__}: {e}"}

    # ----- routing ----------------------------------------------------------------------------
    def _route(self, method: str, p: list[str], b: dict[str, Any]) -> Any:
        if p == ["health"]:
            return {"ok": True}
        if p == ["info"] and self.server is not None:
            return {"url": self.server.url, "ca_path": str(self.server.tls.ca_cert),
                    "thumbprint": self.server.tls.thumbprint_sha1,
                    "users": {u.name: u.password for u in self.sim.users.values()},
                    "api_version": self.sim.api_version, "state_dir": str(self.sim.state_dir)}
        if p == ["vms"]:
            return [{"name": v.name, "moref": v.moref, "instance_uuid": v.instance_uuid}
                    for v in self.sim.inv.vms()]
        if len(p) >= 2 and p[0] == "vms":
            vm = self._vm(p[1])
            action = p[2] if len(p) > 2 else ""
            if method == "GET" or action == "":
                return self.vm_state(vm)
            fn = {"write": self.write, "read": self.read, "power": self.power,
                  "migrate": self.migrate, "relocate": self.relocate, "disks": self.disks,
                  "snapshot": self.snapshot, "remove-snapshot": self.remove_snapshot,
                  "cbt": self.cbt, "flags": self.flags}.get(action)
            if fn is None:
                raise AdminError(404, f"no action {action}")
            return fn(vm, b)
        if p == ["stats", "snapshots"]:
            return self.sim.census.report()
        if p == ["stats", "snapshots", "reset"] and method == "POST":
            self.sim.census.reset()
            return {"ok": True}
        if p == ["history"]:
            return list(self.sim.history)
        if p == ["config"] and method == "POST":
            if "record_snapshot_content" in b:
                self.sim.record_content = bool(b["record_snapshot_content"])
            if "consolidation_seconds" in b:
                self.sim.consolidation_seconds = float(b["consolidation_seconds"])
            if "max_changed_extents" in b:
                self.sim.max_extents = int(b["max_changed_extents"])
            if "session_timeout_s" in b:
                self.sim.sessions.timeout_s = float(b["session_timeout_s"])
            return {"ok": True}
        if len(p) == 2 and p[0] == "faults" and method == "POST":
            return self.fault(p[1], b)
        raise AdminError(404, f"no route {method} /{'/'.join(p)}")

    def _vm(self, name: str) -> VM:
        for v in self.sim.inv.vms():
            if v.name == name or v.moref == name:
                return v
        raise AdminError(404, f"no VM {name}")

    def _disk(self, vm: VM, b: dict[str, Any]) -> Disk:
        if "key" in b:
            return vm.disk_by_key(int(b["key"]))
        idx = int(b.get("disk", 0))
        if idx >= 2000:
            return vm.disk_by_key(idx)
        if idx >= len(vm.disks):
            raise AdminError(404, f"VM {vm.name} has no disk {idx}")
        return vm.disks[idx]

    # ----- VM state ----------------------------------------------------------------------------
    def vm_state(self, vm: VM) -> dict[str, Any]:
        def snap(s: Any) -> dict[str, Any]:
            return {"moref": s.moref, "name": s.name, "created": s.created.isoformat(),
                    "parent": s.parent.moref if s.parent else None,
                    "disks": {str(k): {"file": pt.file, "change_id": pt.change_id}
                              for k, pt in s.points.items()}}

        return {
            "name": vm.name, "moref": vm.moref, "instance_uuid": vm.instance_uuid,
            "bios_uuid": vm.bios_uuid, "power_state": vm.power_state,
            "host": vm.host.name if vm.host else None,
            "datastore": vm.datastore.name if vm.datastore else None, "cbt": vm.cbt,
            "cbt_active": vm.cbt_active, "busy": vm.busy, "template": vm.template,
            "snapship_client": vm.client, "hardware_version": vm.hw_version,
            "current_snapshot": vm.current.moref if vm.current else None,
            "snapshots": [snap(s) for s in vm.snapshots()],
            "disks": [{"key": d.key, "capacity": d.capacity, "backing": d.backing,
                       "mode": d.mode, "uuid": d.uuid, "datastore": d.datastore.name,
                       "file": d.store_disk.live_file if d.store_disk else d.path_hint}
                      for d in vm.disks],
        }

    # ----- guest I/O ---------------------------------------------------------------------------
    def write(self, vm: VM, b: dict[str, Any]) -> dict[str, Any]:
        d = self._disk(vm, b)
        offset = int(b.get("offset", 0))
        if "data_b64" in b:
            data = base64.b64decode(b["data_b64"])
        else:
            length = int(b["length"])
            if "random_seed" in b:
                data = random.Random(int(b["random_seed"])).randbytes(length)
            elif "pattern" in b:
                pat = bytes.fromhex(b["pattern"]) or b"\0"
                data = (pat * (length // len(pat) + 1))[:length]
            elif b.get("zero"):
                self.sim.store_disk(vm, d).zero(offset, length)
                return {"written": length, "key": d.key}
            else:
                raise AdminError(400, "give data_b64, random_seed, pattern or zero")
        if offset < 0 or offset + len(data) > d.capacity:
            raise AdminError(400, "write beyond the end of the disk")
        self.sim.store_disk(vm, d).write(offset, data)
        return {"written": len(data), "key": d.key}

    def read(self, vm: VM, b: dict[str, Any]) -> dict[str, Any]:
        d = self._disk(vm, b)
        data = self.sim.store_disk(vm, d).read(int(b.get("offset", 0)), int(b["length"]),
                                               b.get("file"))
        return {"data_b64": base64.b64encode(data).decode()}

    # ----- power, migration, disks, snapshots ----------------------------------------------------
    def power(self, vm: VM, b: dict[str, Any]) -> dict[str, Any]:
        state = str(b.get("state", "on"))
        if state == "on":
            self.sim.power(vm, "poweredOn")
        elif state == "off":
            self.sim.power(vm, "poweredOff")
        elif state == "hard-off":
            self.sim.power(vm, "poweredOff", hard=True)
        else:
            raise AdminError(400, f"unknown power state {state}")
        return {"power_state": vm.power_state}

    def migrate(self, vm: VM, b: dict[str, Any]) -> dict[str, Any]:
        host = self.sim.inv.find(Host, b["host"])
        delay = float(b.get("delay", 0))
        if delay:
            _later(delay, lambda: self.sim.relocate(vm, host, None))
            return {"scheduled_in": delay}
        self.sim.relocate(vm, host, None)
        return {"host": host.name}

    def relocate(self, vm: VM, b: dict[str, Any]) -> dict[str, Any]:
        ds = self.sim.inv.find(Datastore, b["datastore"]) if b.get("datastore") else None
        host = self.sim.inv.find(Host, b["host"]) if b.get("host") else None
        delay = float(b.get("delay", 0))
        if delay:
            _later(delay, lambda: self.sim.relocate(vm, host, ds))
            return {"scheduled_in": delay}
        self.sim.relocate(vm, host, ds)
        return {"datastore": vm.datastore.name if vm.datastore else None}

    def disks(self, vm: VM, b: dict[str, Any]) -> dict[str, Any]:
        op = b.get("op", "add")
        if op == "add":
            d = self.sim.add_disk(vm, {k: v for k, v in b.items() if k != "op"})
            return {"key": d.key}
        d = self._disk(vm, b)
        if op == "remove":
            self.sim.remove_disk(vm, d.key)
            return {"removed": d.key}
        if op == "extend":
            from sandbox.vcsim.scenario import capacity_bytes

            self.sim.extend_disk(vm, d.key, capacity_bytes(b))
            return {"key": d.key, "capacity": d.capacity}
        raise AdminError(400, f"unknown disk op {op}")

    def snapshot(self, vm: VM, b: dict[str, Any]) -> dict[str, Any]:
        s = self.sim.create_snapshot(vm, str(b.get("name", "user snapshot")),
                                     str(b.get("description", "")))
        return {"moref": s.moref, "name": s.name}

    def remove_snapshot(self, vm: VM, b: dict[str, Any]) -> dict[str, Any]:
        s = self.sim.find_snapshot(vm, b["moref"])
        self.sim.remove_snapshot(vm, s, bool(b.get("remove_children", False)))
        return {"removed": s.moref}

    def cbt(self, vm: VM, b: dict[str, Any]) -> dict[str, Any]:
        if b.get("new_epoch"):
            with vm.lock:
                for d in vm.disks:
                    self.sim.store_disk(vm, d).new_epoch()
                vm.changed()          # live backings report the new epoch's changeId
        if "enabled" in b:
            self.sim.set_cbt(vm, bool(b["enabled"]))
        return {"cbt": vm.cbt, "cbt_active": vm.cbt_active}

    def flags(self, vm: VM, b: dict[str, Any]) -> dict[str, Any]:
        """Odd runtime states: consolidation needed, tools status, CBT that never activates."""
        with vm.lock:
            if "cbt_stuck" in b:
                vm.cbt_stuck = bool(b["cbt_stuck"])
            if "consolidation_needed" in b:
                vm.consolidation_needed = bool(b["consolidation_needed"])
            if "tools" in b:
                vm.tools_status = str(b["tools"])
            vm.changed()
        return {"consolidation_needed": vm.consolidation_needed, "tools": vm.tools_status,
                "cbt_stuck": vm.cbt_stuck}

    # ----- faults ------------------------------------------------------------------------------
    def fault(self, name: str, b: dict[str, Any]) -> dict[str, Any]:
        f = self.sim.faults
        with self.sim.inv.lock:
            if name == "fail-tasks":
                kind = str(b["kind"]).replace("_Task", "").replace("VM", "")
                fault = fault_by_name(str(b.get("fault", "SystemError")),
                                      str(b.get("message", "injected fault")))
                f.fail_tasks[kind] = [int(b.get("count", 1)), fault]
            elif name == "delay-tasks":
                kind = str(b["kind"]).replace("_Task", "").replace("VM", "")
                f.delay_tasks[kind] = float(b.get("seconds", 1.0))
            elif name == "delay-calls":
                f.delay_calls[str(b["method"])] = float(b.get("seconds", 1.0))
            elif name == "expire-sessions":
                return {"expired": self.sim.sessions.expire_all()}
            elif name == "drop-connections":
                f.drop_connections = int(b.get("count", 1))
            elif name == "qcda-filefault":
                f.qcda_filefault = int(b.get("count", 1))
                key = b.get("device_key")
                f.qcda_filefault_key = None if key is None else int(key)
            elif name == "missing-methods":
                f.missing_methods = {str(m) for m in b.get("methods", [])}
            elif name == "clear":
                f.missing_methods.clear()
                f.fail_tasks.clear()
                f.delay_tasks.clear()
                f.delay_calls.clear()
                f.qcda_filefault = 0
                f.qcda_filefault_key = None
                f.drop_connections = 0
            else:
                raise AdminError(404, f"no fault {name}")
        return {"ok": True}
