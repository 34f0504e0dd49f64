"""The simulated vCenter: inventory built from a scenario, tasks, and the VM operations.

SOAP handlers (service.py) and the admin API (admin.py) both call into ``Simulator``; every
state change goes through ``Entity.touch`` so property-collector waiters see it.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyVmomi import VmomiSupport, vim, vmodl

from sandbox.vcsim import model
from sandbox.vcsim.auth import BUILTIN_ROLES, Permission, SessionTable, User
from sandbox.vcsim.census import SnapshotCensus
from sandbox.vcsim.disks import CbtFileFault, DiskError, DiskStore, InvalidOffset
from sandbox.vcsim.model import (
    VM,
    ComputeResource,
    Datacenter,
    Datastore,
    Disk,
    Entity,
    Folder,
    Host,
    Inventory,
    Network,
    Nic,
    Snapshot,
    SnapshotEntity,
)
from sandbox.vcsim.scenario import capacity_bytes, validate_scenario
from sandbox.vcsim.vddk_registry import StubRegistry

VERSIONS: dict[str, dict[str, Any]] = {
    "6.7": {"version": "6.7.0", "api": "6.7.3", "build": "16708996",
            "prior": ["6.7.2", "6.7.1", "6.7", "6.5", "6.0", "5.5", "5.1", "5.0"]},
    "7.0": {"version": "7.0.3", "api": "7.0.3.0", "build": "20150588",
            "prior": ["7.0.2.1", "7.0.2.0", "7.0.1.1", "7.0.1.0", "7.0.0.2", "7.0.0.1",
                      "7.0.0.0", "6.9.1", "6.8.7", "6.7.3", "6.7.2", "6.7.1", "6.7", "6.5",
                      "6.0", "5.5", "5.1", "5.0"]},
    "8.0": {"version": "8.0.3", "api": "8.0.3.0", "build": "24022515",
            "prior": ["8.0.2.0", "8.0.1.0", "8.0.0.2", "8.0.0.1", "8.0.0.0", "7.0.3.2",
                      "7.0.3.1", "7.0.3.0", "7.0.2.1", "7.0.2.0", "7.0.1.1", "7.0.1.0",
                      "7.0.0.2", "7.0.0.1", "7.0.0.0", "6.9.1", "6.8.7", "6.7.3", "6.7.2",
                      "6.7.1", "6.7", "6.5", "6.0", "5.5", "5.1", "5.0"]},
}


def fault_by_name(name: str, msg: str) -> Any:
    """Instantiate a vim/vmodl fault from its wsdl name (e.g. "FileFault", "TaskInProgress")."""
    for ns in ("urn:vim25", "urn:vmodl"):
        try:
            typ = VmomiSupport.GetWsdlType(ns, name)
            break
        except KeyError:
            continue
    else:
        typ = VmomiSupport.GuessWsdlType(name)
    fault = typ(msg=msg)
    for prop in typ._GetPropertyList():       # fill required fields vCenter would set
        if prop.flags & VmomiSupport.F_OPTIONAL or getattr(fault, prop.name) is not None:
            continue
        if isinstance(prop.type, type) and issubclass(prop.type, VmomiSupport.Enum):
            enum_type: Any = prop.type
            setattr(fault, prop.name, getattr(enum_type, enum_type.values[0]))
        elif prop.type is str:
            setattr(fault, prop.name, "")
        elif prop.type is vim.Task:
            setattr(fault, prop.name, vim.Task("task-internal"))
        elif isinstance(prop.type, type) and issubclass(prop.type, VmomiSupport.ManagedObject):
            setattr(fault, prop.name, prop.type("unknown"))
    return fault


class TaskEntity(Entity):
    """A vim.Task whose ``info`` tracks a background operation."""

    wsdl = "Task"
    vim_type = vim.Task

    def __init__(self, inv: Inventory, moref: str, method: str, entity: Entity | None,
                 user: str) -> None:
        super().__init__(inv, moref, method, None)
        self.method = method
        self.entity = entity
        self.user = user
        self.state = "queued"
        self.progress: int | None = None
        self.result: Any = None
        self.error: Any = None
        self.queued = model.now()
        self.started: dt.datetime | None = None
        self.completed: dt.datetime | None = None
        self.done = threading.Event()

    def set_state(self, state: str, result: Any = None, error: Any = None) -> None:
        self.state = state
        if state == "running":
            self.started = model.now()
            self.progress = 0
        if state in ("success", "error"):
            self.completed = model.now()
            self.progress = 100 if state == "success" else self.progress
            self.result = result
            self.error = error
        self.touch()
        if state in ("success", "error"):
            self.done.set()

    def _build(self, prop: str) -> Any:
        if prop == "info":
            try:
                name = VmomiSupport.GetWsdlMethod("urn:vim25", self.method)
            except KeyError:
                name = None
            short = self.method.replace("_Task", "")
            return vim.TaskInfo(
                key=self.moref, task=self.ref(), name=name,
                descriptionId=f"{self.entity.wsdl if self.entity else 'Task'}."
                              f"{short[:1].lower()}{short[1:]}",
                entity=self.entity.ref() if self.entity else None,
                entityName=self.entity.name if self.entity else None,
                state=self.state, cancelled=False, cancelable=False, error=self.error,
                result=self.result, progress=self.progress,
                reason=vim.TaskReasonUser(userName=self.user), queueTime=self.queued,
                startTime=self.started, completeTime=self.completed, eventChainId=0)
        raise KeyError(prop)

    def all_props(self) -> list[str]:
        return ["info"]


@dataclass
class Faults:
    """Injected faults and delays, set through the admin API."""

    fail_tasks: dict[str, list[Any]] = field(default_factory=dict)   # kind -> [count, fault]
    delay_tasks: dict[str, float] = field(default_factory=dict)
    delay_calls: dict[str, float] = field(default_factory=dict)  # SOAP method -> seconds
    qcda_filefault: int = 0
    qcda_filefault_key: int | None = None
    """Only that disk's QueryChangedDiskAreas fails (None: whichever comes first; a VM's disks
    ship at once, so "first" is not one disk)."""
    drop_connections: int = 0
    missing_methods: set[str] = field(default_factory=set)
    """Methods answered with MethodNotFound, like a vCenter that lacks them (e.g. QCDA)."""


def _kind(method: str) -> str:
    return method.replace("_Task", "").replace("VM", "") if method else method


class Simulator:
    """State and behaviour of one simulated vCenter."""

    def __init__(self, scenario: dict[str, Any], state_dir: Path) -> None:
        validate_scenario(scenario)
        self.scenario = scenario
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        vc = scenario.get("vcenter") or {}
        self.profile = VERSIONS[str(vc.get("version", "8.0"))]
        self.instance_uuid = str(vc.get("instance_uuid") or uuidlib.uuid4())
        self.consolidation_seconds = float(vc.get("consolidation_seconds", 0.1))
        self.max_extents = int(vc.get("max_changed_extents", 2000))
        self.record_content = bool(vc.get("record_snapshot_content", False))
        self.page_size = int(vc.get("default_page_size", 5000))
        self.sessions = SessionTable(float(vc.get("session_timeout_s", 1800)))
        self.store = DiskStore(self.state_dir)
        self.registry = StubRegistry(self.state_dir)
        self.faults = Faults()
        self.inv = Inventory(self.about, self._live_change_id)
        self.users: dict[str, User] = {}
        self.history: list[dict[str, Any]] = []
        self.census = SnapshotCensus()
        self._build(scenario)

    # ----- identity ---------------------------------------------------------------------
    def about(self) -> Any:
        p = self.profile
        return vim.AboutInfo(
            name="VMware vCenter Server", fullName=f"VMware vCenter Server {p['version']} "
            f"build-{p['build']}", vendor="VMware, Inc.", version=p["version"],
            build=p["build"], localeVersion="INTL", localeBuild="000", osType="linux-x64",
            productLineId="vpx", apiType="VirtualCenter", apiVersion=p["api"],
            instanceUuid=self.instance_uuid, licenseProductName="VMware VirtualCenter Server",
            licenseProductVersion=p["version"][:3])

    @property
    def api_version(self) -> str:
        return str(self.profile["api"])

    def _live_change_id(self, d: Disk) -> str | None:
        sd = d.store_disk
        if sd is None or not sd.cbt_enabled:
            return None
        epoch = getattr(sd, "_epoch", "")
        seq = getattr(sd, "_seq", 0)
        return f"{epoch}/{seq}" if epoch else None

    # ----- scenario ---------------------------------------------------------------------
    def _build(self, sc: dict[str, Any]) -> None:
        inv = self.inv
        for dc_spec in sc.get("datacenters") or []:
            dc = Datacenter(inv, inv.next_id("datacenter-"), dc_spec["name"], inv.root)
            inv.add(dc)
            inv.root.children.append(dc)
            dc.vm_folder = self._folder("vm", dc, ["Folder", "VirtualMachine", "VirtualApp"])
            dc.host_folder = self._folder("host", dc, ["Folder", "ComputeResource"])
            dc.datastore_folder = self._folder("datastore", dc, ["Folder", "Datastore"])
            dc.network_folder = self._folder("network", dc, ["Folder", "Network"])
            for ds in dc_spec.get("datastores") or [{"name": "datastore1"}]:
                cap = int(float(ds.get("capacity_gib", 1024)) * model.GiB)
                free = int(float(ds.get("free_gib", ds.get("capacity_gib", 1024) / 2)) * model.GiB)
                d = Datastore(inv, inv.next_id("datastore-"), ds["name"], dc.datastore_folder,
                              str(ds.get("type", "VMFS")).upper(), cap, free)
                inv.add(d)
                dc.datastore_folder.children.append(d)
            for net in dc_spec.get("networks") or ["VM Network"]:
                n = Network(inv, inv.next_id("network-"), net, dc.network_folder)
                inv.add(n)
                dc.network_folder.children.append(n)
            for cl in dc_spec.get("clusters") or []:
                c = ComputeResource(inv, inv.next_id("domain-c"), cl["name"], dc.host_folder,
                                    cluster=True)
                inv.add(c)
                dc.host_folder.children.append(c)
                for h in cl.get("hosts") or []:
                    self._host(h, c)
            for h in dc_spec.get("hosts") or []:
                c = ComputeResource(inv, inv.next_id("domain-s"), h, dc.host_folder,
                                    cluster=False)
                inv.add(c)
                dc.host_folder.children.append(c)
                self._host(h, c)
            if not inv.hosts():
                c = ComputeResource(inv, inv.next_id("domain-s"), "esx-default",
                                    dc.host_folder, cluster=False)
                inv.add(c)
                dc.host_folder.children.append(c)
                self._host("esx-default", c)
            folders: dict[str, Folder] = {"": dc.vm_folder}
            for path in dc_spec.get("folders") or []:
                self._vm_folder(folders, dc, path)
            for vm_spec in dc_spec.get("vms") or []:
                self._vm(vm_spec, dc, folders)
        roles = {**BUILTIN_ROLES, **(sc.get("roles") or {})}
        users = sc.get("users") or [{"name": "administrator@vsphere.local",
                                     "password": "sandbox-password",
                                     "permissions": [{"entity": "/", "role": "Admin"}]}]
        for u in users:
            perms = []
            for p in u.get("permissions") or [{"entity": "/", "role": "Admin"}]:
                ent = self._entity_by_name(str(p.get("entity", "/")))
                privs = p.get("privileges")
                if privs is None:
                    privs = roles[str(p.get("role", "ReadOnly"))]
                elif privs == "all":
                    privs = BUILTIN_ROLES["Admin"]
                perms.append(Permission(ent.moref, frozenset(privs),
                                        bool(p.get("propagate", True))))
            self.users[u["name"]] = User(u["name"], str(u["password"]), perms)
        for vm in inv.vms():
            for sname in getattr(vm, "_initial_snapshots", []):
                self.create_snapshot(vm, sname, "pre-existing snapshot")

    def _entity_by_name(self, name: str) -> Entity:
        if name in ("/", "root", ""):
            return self.inv.root
        for o in list(self.inv.objects.values()):
            if o.name == name or o.moref == name:
                return o
        raise ValueError(f"scenario permission names unknown entity {name!r}")

    def _folder(self, kind: str, parent: Entity, child_type: list[str]) -> Folder:
        prefix = {"vm": "group-v", "host": "group-h", "datastore": "group-s",
                  "network": "group-n"}[kind]
        f = Folder(self.inv, self.inv.next_id(prefix), kind, parent, child_type)
        self.inv.add(f)
        return f

    def _vm_folder(self, folders: dict[str, Folder], dc: Datacenter, path: str) -> Folder:
        if path in folders:
            return folders[path]
        parent_path, _, leaf = path.rpartition("/")
        parent = self._vm_folder(folders, dc, parent_path)
        f = Folder(self.inv, self.inv.next_id("group-v"), leaf, parent,
                   ["Folder", "VirtualMachine", "VirtualApp"])
        self.inv.add(f)
        parent.children.append(f)
        folders[path] = f
        return f

    def _host(self, name: str, parent: ComputeResource) -> Host:
        h = Host(self.inv, self.inv.next_id("host-"), name, parent)
        self.inv.add(h)
        parent.hosts.append(h)
        return h

    def _vm(self, spec: dict[str, Any], dc: Datacenter, folders: dict[str, Folder]) -> VM:
        inv = self.inv
        folder = self._vm_folder(folders, dc, str(spec.get("folder", "")))
        vm = VM(inv, inv.next_id("vm-"), spec["name"], folder)
        hosts = inv.hosts()
        vm.host = inv.find(Host, spec["host"]) if spec.get("host") else hosts[0]
        dss = [d for d in inv.datastores() if d.parent is dc.datastore_folder]
        vm.datastore = inv.find(Datastore, spec["datastore"]) if spec.get("datastore") else dss[0]
        vm.guest_id = spec.get("guest_id", "otherGuest64")
        vm.guest_full_name = spec.get("guest_full_name", _guest_name(vm.guest_id))
        vm.firmware = spec.get("firmware", "bios")
        vm.cpus = int(spec.get("cpus", 1))
        vm.memory_mb = int(spec.get("memory_mb", 1024))
        hw = spec.get("hardware_version", "vmx-19")
        vm.hw_version = hw if str(hw).startswith("vmx-") else f"vmx-{int(hw):02d}"
        vm.power_state = spec.get("power", "poweredOn")
        vm.template = bool(spec.get("template", False))
        if vm.template:
            vm.power_state = "poweredOff"
        vm.client = bool(spec.get("snapship_client", False))
        n = len(inv.by_type.get(VM, {}))
        vm.instance_uuid = spec.get("instance_uuid") or str(
            uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"{self.instance_uuid}/{spec['name']}/i{n}"))
        vm.bios_uuid = spec.get("bios_uuid") or str(
            uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"{self.instance_uuid}/{spec['name']}/b{n}"))
        vm.tools_status = spec.get("tools", "toolsOk")
        vm.ip = spec.get("ip")
        vm.hostname = spec.get("hostname", spec["name"])
        vm.cbt = bool(spec.get("cbt", False))
        vm.cbt_active = vm.cbt and not bool(spec.get("cbt_not_active", False))
        for i, d in enumerate(spec.get("disks") or []):
            self._add_disk(vm, d, i)
        nets = inv.networks()
        for i, nic in enumerate(spec.get("nics") or [{}]):
            net = inv.find(Network, nic["network"]) if nic.get("network") else nets[0]
            mac = nic.get("mac") or f"00:50:56:{(n >> 8) & 0x3F:02x}:{n & 0xFF:02x}:{i:02x}"
            vm.nics.append(Nic(4000 + i, mac, net, nic.get("type", "vmxnet3")))
        vm._initial_snapshots = list(spec.get("snapshots") or [])  # type: ignore[attr-defined]
        inv.add(vm)
        folder.children.append(vm)
        return vm

    def _add_disk(self, vm: VM, d: dict[str, Any], index: int | None = None) -> Disk:
        used = {k.key for k in vm.disks}
        key = 2000
        while key in used:
            key += 1
        units = {k.unit for k in vm.disks}
        unit = 0
        while unit in units or unit == 7:
            unit += 1
        ds = self.inv.find(Datastore, d["datastore"]) if d.get("datastore") else vm.datastore
        assert ds is not None
        backing = str(d.get("backing", "flat")).lower()
        if backing in ("rdm",):
            backing = "rdm_physical"
        if backing not in model.BACKINGS:
            raise ValueError(f"unknown disk backing {backing!r}")
        mode = str(d.get("mode", "persistent"))
        if mode not in model.DISK_MODES:
            raise ValueError(f"unknown disk mode {mode!r}")
        name = vm.name if key == 2000 else f"{vm.name}_{key - 2000}"
        disk = Disk(key=key, unit=unit, controller_key=1000, capacity=capacity_bytes(d),
                    backing=backing, mode=mode, thin=bool(d.get("thin", True)), datastore=ds,
                    folder=vm.name, name=name,
                    uuid=d.get("uuid") or str(uuidlib.uuid5(
                        uuidlib.NAMESPACE_URL, f"{vm.instance_uuid}/{key}")),
                    guest_path=d.get("guest_path", ""),
                    guest_free=int(float(d["guest_free_mib"]) * model.MiB)
                    if "guest_free_mib" in d else None)
        vm.disks.append(disk)
        return disk

    # ----- disks --------------------------------------------------------------------------
    def store_disk(self, vm: VM, d: Disk) -> Any:
        """The DiskStore disk behind a VM disk, created on first use."""
        with vm.lock:
            if d.store_disk is None:
                d.store_disk = self.store.create_disk(
                    d.datastore.name, d.folder, d.name, d.capacity, uuid=d.uuid,
                    cbt_enabled=vm.cbt_active)
            return d.store_disk

    # ----- tasks --------------------------------------------------------------------------
    def start_task(self, method: str, entity: Entity | None, user: str,
                   fn: Callable[[TaskEntity], Any]) -> TaskEntity:
        """Run fn in a thread as a Task, honouring injected failures and delays."""
        task = TaskEntity(self.inv, self.inv.next_id("task-"), method, entity, user)
        self._forget_old_tasks()
        self.inv.add(task)
        if isinstance(entity, model.VM):
            entity.recent_tasks.append(task)
            entity.touch()
        kind = _kind(method)
        fail = None
        with self.inv.lock:
            entry = self.faults.fail_tasks.get(kind)
            if entry and entry[0] > 0:
                entry[0] -= 1
                fail = entry[1]
        delay = self.faults.delay_tasks.get(kind, 0.0)

        def run() -> None:
            task.set_state("running")
            try:
                if delay:
                    time.sleep(delay)
                if fail is not None:
                    raise fail
                result = fn(task)
            except vmodl.MethodFault as f:
                task.set_state("error", error=f)
            except DiskError as e:
                task.set_state("error", error=vim.fault.FileFault(msg=str(e), file=""))
            except Exception as e:
                task.set_state("error", error=vmodl.fault.SystemError(
                    msg=f"{type(e).__name__}: {e}", reason=str(e)))
            else:
                task.set_state("success", result=result)

        threading.Thread(target=run, name=f"task-{task.moref}", daemon=True).start()
        return task

    def _forget_old_tasks(self, keep_s: float = 600.0) -> None:
        """vCenter forgets finished tasks after a while; so does the simulator (memory)."""
        cutoff = model.now() - dt.timedelta(seconds=keep_s)
        for t in self.inv.of_type(TaskEntity):
            if t.completed is not None and t.completed < cutoff:
                self.inv.remove(t.moref)

    # ----- snapshots ------------------------------------------------------------------------
    def create_snapshot(self, vm: VM, name: str, description: str = "") -> Snapshot:
        """Freeze every snapshottable disk, record the config, publish to the VDDK stub."""
        with vm.lock:
            if vm.template:
                raise vmodl.fault.NotSupported(msg="Snapshots are not supported on templates")
            if vm.busy:
                raise vim.fault.TaskInProgress(
                    msg=f"Another task is already in progress ({vm.busy}).",
                    task=vm.busy_task or vim.Task("task-internal"))
            for d in vm.disks:
                if d.backing == "rdm_physical" and not d.independent:
                    raise vim.fault.SnapshotIncompatibleDeviceInVm(
                        msg=f"Virtual machine is configured to use a device that prevents the "
                            f"snapshot operation: {d.label} is a physical-mode raw disk",
                        fault=vim.fault.SnapshotFault(msg="physical-mode RDM"))
            sid = max([s.sid for s in vm.snapshots()] + [0]) + 1
            snap = Snapshot(moref=f"snapshot-{vm.moref.split('-')[-1]}-{sid}", vm=vm,
                            name=name, description=description, sid=sid, created=model.now(),
                            power_state="poweredOff", parent=vm.current)   # no memory
            if vm.cbt and not vm.cbt_active and not vm.cbt_stuck:
                # The stun of the snapshot makes a configured CBT active, and the snapshot taken
                # at that stun already carries changeIds (backup tools enable CBT, snapshot, and
                # query "*" against that very snapshot).
                vm.cbt_active = True
                for d in vm.disks:
                    self.store_disk(vm, d).set_cbt(True)
            overrides: dict[int, tuple[str, str]] = {}
            for d in vm.disks:
                if not d.snapshottable:
                    continue
                point = self.store_disk(vm, d).snapshot()
                snap.points[d.key] = point
                overrides[d.key] = (point.file, point.change_id)
            snap.config = vm.config_info(overrides)
            if vm.current is not None:
                vm.current.children.append(snap)
            else:
                vm.roots.append(snap)
            vm.current = snap
            self.inv.add(SnapshotEntity(self.inv, snap))
            self.census.created(
                snap.moref,
                vm.moref,
                vm.host.name if vm.host is not None else "",
                [vm.disk_by_key(k).datastore.name for k in snap.points],
            )
            self.registry.publish_snapshot(vm.moref, snap.moref,
                                           [p.file for p in snap.points.values()])
            if self.record_content:
                self._record(vm, snap)
            vm.changed()
            return snap

    def _record(self, vm: VM, snap: Snapshot) -> None:
        dest = self.state_dir / "history" / vm.moref / snap.name
        dest.mkdir(parents=True, exist_ok=True)
        for key, point in snap.points.items():
            self.store_disk(vm, vm.disk_by_key(key)).export_point_in_time(
                point.file, dest / f"{key}.img")
        self.history.append({"vm": vm.name, "vm_moref": vm.moref, "snapshot": snap.name,
                             "snapshot_moref": snap.moref, "created": snap.created.isoformat(),
                             "path": str(dest),
                             "disks": {str(k): str(dest / f"{k}.img") for k in snap.points},
                             "change_ids": {str(k): p.change_id
                                            for k, p in snap.points.items()}})

    def find_snapshot(self, vm: VM, moref: str) -> Snapshot:
        for s in vm.snapshots():
            if s.moref == moref:
                return s
        raise vmodl.fault.ManagedObjectNotFound(obj=vim.vm.Snapshot(moref),
                                                msg=f"snapshot {moref} not found")

    def remove_snapshot(self, vm: VM, snap: Snapshot, remove_children: bool,
                        task: TaskEntity | None = None) -> None:
        """Delete a snapshot: withdraw it from the stub, then consolidate (takes time)."""
        with vm.lock:
            if vm.busy:
                raise vim.fault.TaskInProgress(
                    msg=f"Another task is already in progress ({vm.busy}).",
                    task=vm.busy_task or vim.Task("task-internal"))
            vm.busy = "RemoveSnapshot"
            vm.busy_task = task.ref() if task else vim.Task("task-internal")
        try:
            victims = [snap]
            if remove_children:
                stack = list(snap.children)
                while stack:
                    s = stack.pop()
                    victims.append(s)
                    stack.extend(s.children)
            for s in victims:
                self.registry.withdraw_snapshot(vm.moref, s.moref)
            if self.consolidation_seconds:
                time.sleep(self.consolidation_seconds)
            with vm.lock:
                for s in reversed(victims):
                    self._remove_one(vm, s)
                self._resolve_points(vm)
                vm.changed()
        finally:
            with vm.lock:
                vm.busy = None
                vm.busy_task = None
                vm.touch()

    def _remove_one(self, vm: VM, s: Snapshot) -> None:
        for key, point in s.points.items():
            try:
                d = vm.disk_by_key(key)
            except KeyError:
                continue
            self.store_disk(vm, d).remove_snapshot(point.file)
        siblings = s.parent.children if s.parent else vm.roots
        idx = siblings.index(s)
        siblings[idx:idx + 1] = s.children
        for c in s.children:
            c.parent = s.parent
        if vm.current is s:
            vm.current = s.parent
        self.inv.remove(s.moref)
        self.census.removed(s.moref)

    def _resolve_points(self, vm: VM, moved: dict[str, str] | None = None) -> None:
        """After consolidation or svMotion: frozen paths follow merges/moves; republish."""
        for s in vm.snapshots():
            for key, point in list(s.points.items()):
                d = vm.disk_by_key(key)
                sd = self.store_disk(vm, d)
                file = moved.get(point.file, point.file) if moved else point.file
                try:
                    file = sd.resolve(file)
                except DiskError:
                    pass
                s.points[key] = type(point)(file, point.change_id)
            devices: list[Any] = list(s.config.hardware.device) if s.config else []
            for dev in devices:
                if isinstance(dev, vim.vm.device.VirtualDisk) and dev.key in s.points:
                    backing: Any = dev.backing
                    backing.fileName = s.points[dev.key].file
            self.registry.publish_snapshot(vm.moref, s.moref,
                                           [p.file for p in s.points.values()])
            ent = self.inv.objects.get(s.moref)
            if ent is not None:
                ent.touch()

    # ----- changed block tracking -----------------------------------------------------------
    def query_changed_areas(self, vm: VM, snap: Snapshot | None, key: int, start: int,
                            change_id: str) -> Any:
        with self.inv.lock:
            wanted = self.faults.qcda_filefault_key
            if self.faults.qcda_filefault > 0 and wanted in (None, key):
                self.faults.qcda_filefault -= 1
                ds = vm.datastore.name if vm.datastore else ""
                raise vim.fault.FileFault(msg="Error accessing the change tracking file "
                                          "(injected)", file=f"[{ds}] {vm.name}/{vm.name}-ctk.vmdk")
        try:
            d = vm.disk_by_key(key)
        except KeyError:
            raise vmodl.fault.InvalidArgument(msg="A specified parameter was not correct: "
                                              "deviceKey", invalidProperty="deviceKey") from None
        sd = self.store_disk(vm, d)
        if snap is not None:
            point = snap.points.get(key)
            if point is None:
                raise vmodl.fault.InvalidArgument(
                    msg="A specified parameter was not correct: deviceKey",
                    invalidProperty="deviceKey")
            file = point.file
        else:
            file = sd.live_file
        if not vm.cbt:
            raise vim.fault.FileFault(msg="Change tracking is not enabled on this virtual "
                                      "machine", file=file)
        try:
            areas = sd.query_changed_areas(file, start, change_id, self.max_extents)
        except CbtFileFault as e:
            raise vim.fault.FileFault(msg=f"Error caused by file {file}: {e}", file=file) from None
        except InvalidOffset as e:
            raise vmodl.fault.InvalidArgument(
                msg=f"A specified parameter was not correct: startOffset ({e})",
                invalidProperty="startOffset") from None
        except DiskError as e:
            raise vim.fault.FileFault(msg=str(e), file=file) from None
        return vim.VirtualMachine.DiskChangeInfo(
            startOffset=areas.start_offset, length=areas.length,
            changedArea=[vim.VirtualMachine.DiskChangeInfo.DiskChangeExtent(start=o, length=n)
                         for o, n in areas.extents])

    def set_cbt(self, vm: VM, enabled: bool) -> None:
        with vm.lock:
            vm.cbt = enabled
            if not enabled:
                vm.cbt_active = False
                for d in vm.disks:
                    if d.store_disk is not None:
                        d.store_disk.set_cbt(False)
            elif vm.power_state != "poweredOn":
                vm.cbt_active = True
                for d in vm.disks:
                    self.store_disk(vm, d).set_cbt(True)
            # powered on: configured now, active after the next stun/unstun (snapshot)
            vm.changed()

    # ----- power, migration ---------------------------------------------------------------
    def power(self, vm: VM, state: str, hard: bool = False) -> None:
        with vm.lock:
            if vm.template:
                raise vmodl.fault.NotSupported(msg="templates cannot be powered on")
            if state == "poweredOn" and vm.cbt and not vm.cbt_active:
                vm.cbt_active = True
                for d in vm.disks:
                    self.store_disk(vm, d).set_cbt(True)
            if hard and vm.cbt_active:
                for d in vm.disks:
                    self.store_disk(vm, d).new_epoch()
            vm.power_state = state
            vm.changed()

    def relocate(self, vm: VM, host: Host | None, datastore: Datastore | None,
                 disk_targets: dict[int, Datastore] | None = None) -> None:
        """vMotion (host) and/or Storage vMotion (VM home + disks, or per-disk targets)."""
        with vm.lock:
            if vm.busy:
                raise vim.fault.TaskInProgress(msg=f"Another task is in progress ({vm.busy}).",
                                               task=vm.busy_task or vim.Task("task-internal"))
            targets: dict[int, Datastore] = {}
            if datastore is not None:
                targets = {d.key: datastore for d in vm.disks if d.datastore is vm.datastore}
            targets.update(disk_targets or {})
            for key in targets:
                vm.disk_by_key(key)            # KeyError -> InvalidArgument below
            if host is not None:
                vm.host = host
            moved: dict[str, str] = {}
            for d in vm.disks:
                target = targets.get(d.key)
                if target is not None and target is not d.datastore:
                    sd = self.store_disk(vm, d)
                    moved.update(sd.relocate(target.name, d.folder))
                    d.datastore = target
            if datastore is not None:
                vm.datastore = datastore
            if moved:
                self._resolve_points(vm, moved)
            vm.changed()

    def add_disk(self, vm: VM, spec: dict[str, Any]) -> Disk:
        with vm.lock:
            d = self._add_disk(vm, spec)
            if vm.cbt_active:
                self.store_disk(vm, d)
            vm.changed()
            return d

    def remove_disk(self, vm: VM, key: int, destroy: bool = True) -> None:
        with vm.lock:
            d = vm.disk_by_key(key)
            if any(key in s.points for s in vm.snapshots()):
                raise vim.fault.InvalidState(msg="disk has snapshots")
            vm.disks.remove(d)
            if destroy and d.store_disk is not None:
                self.store.delete_disk(d.uuid)
            vm.changed()

    def extend_disk(self, vm: VM, key: int, capacity: int) -> None:
        with vm.lock:
            d = vm.disk_by_key(key)
            if vm.roots:
                raise vim.fault.InvalidState(
                    msg="Cannot extend a virtual disk of a virtual machine with snapshots")
            if capacity < d.capacity:
                raise vmodl.fault.InvalidArgument(msg="disk cannot shrink",
                                                  invalidProperty="capacityInKB")
            if d.store_disk is not None:
                d.store_disk.extend(capacity)
            d.capacity = capacity
            vm.changed()

    # ----- privileges ----------------------------------------------------------------------
    def privileges(self, user: User, entity: Entity) -> set[str]:
        """Effective privileges: permissions on the entity, or propagating from an ancestor."""
        out: set[str] = set()
        target = entity
        if isinstance(entity, SnapshotEntity):
            target = entity.snap.vm
        if isinstance(entity, TaskEntity) and entity.entity is not None:
            target = entity.entity
        chain = {e.moref: i for i, e in enumerate(target.ancestors())}
        for p in user.permissions:
            depth = chain.get(p.entity)
            if depth is None:
                continue
            if depth == 0 or p.propagate:
                out |= p.privileges
        return out

    def check(self, user: User, entity: Entity, privilege: str) -> None:
        if privilege not in self.privileges(user, entity):
            raise vim.fault.NoPermission(
                msg=f"Permission to perform this operation was denied. ({privilege} on "
                    f"{entity.name})", object=entity.ref(), privilegeId=privilege,
                missingPrivileges=[vim.fault.NoPermission.EntityPrivileges(
                    entity=entity.ref(), privilegeIds=[privilege])])

    def close(self) -> None:
        self.store.close()


def _guest_name(guest_id: str) -> str:
    names = {"ubuntu64Guest": "Ubuntu Linux (64-bit)", "rhel8_64Guest":
             "Red Hat Enterprise Linux 8 (64-bit)", "windows2019srv_64Guest":
             "Microsoft Windows Server 2019 (64-bit)", "otherGuest64": "Other (64-bit)",
             "centos7_64Guest": "CentOS 7 (64-bit)", "winNetStandardGuest":
             "Microsoft Windows Server 2003 Standard (32-bit)"}
    return names.get(guest_id, guest_id)
