"""SOAP method implementations of the simulated vCenter (the /sdk endpoint's logic).

``VimService.handle`` takes one HTTP request body and returns the HTTP status and response
envelope. Every method not implemented here answers ``MethodNotFound`` exactly as vCenter
does for a method it does not know: the simulator never fakes a success.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim, vmodl

from sandbox.vcsim import model
from sandbox.vcsim.auth import Session, User
from sandbox.vcsim.model import VM, Entity, Host, SnapshotEntity
from sandbox.vcsim.propcollector import Collector, CollectorState, FilterEntity, ViewEntity
from sandbox.vcsim.simulator import Simulator, TaskEntity
from sandbox.vcsim.soap import (
    SoapRequest,
    UnknownMethod,
    fault_envelope,
    parse_request,
    response_envelope,
    serialize_value,
    version_from_soap_action,
)

PC = vmodl.query.PropertyCollector
UNAUTHENTICATED_OK = {"RetrieveServiceContent", "Login", "CurrentTime"}


class _RawXml(str):
    """A handler result that is already serialized <returnval> XML."""


class SingletonEntity(Entity):
    """Fixed service objects (ServiceInstance, SessionManager, ...)."""

    def __init__(self, sim: Simulator, moref: str, wsdl: str, vim_type: Any,
                 props: dict[str, Callable[[], Any]] | None = None) -> None:
        super().__init__(sim.inv, moref, moref, None)
        self.wsdl = wsdl
        self.vim_type = vim_type
        self.props = props or {}

    def get(self, prop: str) -> Any:
        if prop in self.props:
            return self.props[prop]()
        raise KeyError(prop)

    def all_props(self) -> list[str]:
        return list(self.props)


@dataclass
class Call:
    """Context of one SOAP call."""

    req: SoapRequest
    session: Session
    version: str

    @property
    def user(self) -> User:
        assert self.session.user is not None
        return self.session.user

    def arg(self, name: str, default: Any = None) -> Any:
        return self.req.args.get(name, default)


class VimService:
    """Dispatches parsed SOAP calls to the simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.inv = sim.inv
        self.collector = Collector(sim.inv, self._can_view, sim.page_size)
        self.default_version = "vim.version." + {
            "6.7.3": "version15", "7.0.3.0": "v7_0_3_0", "8.0.3.0": "v8_0_3_0"}[
            sim.api_version]
        self.current_session: dict[int, Session] = {}
        self._local = threading.local()   # the calling session, for currentSession
        for moref, wsdl, typ in [
            ("propertyCollector", "PropertyCollector", PC),
            ("ViewManager", "ViewManager", vim.view.ViewManager),
            ("AuthorizationManager", "AuthorizationManager", vim.AuthorizationManager),
            ("TaskManager", "TaskManager", vim.TaskManager),
            ("EventManager", "EventManager", vim.event.EventManager),
            ("SearchIndex", "SearchIndex", vim.SearchIndex),
            ("FileManager", "FileManager", vim.FileManager),
            ("VirtualDiskManager", "VirtualDiskManager", vim.VirtualDiskManager),
            ("CustomFieldsManager", "CustomFieldsManager", vim.CustomFieldsManager),
            ("OptionManager", "OptionManager", vim.option.OptionManager),
            ("UserDirectory", "UserDirectory", vim.UserDirectory),
            ("LicenseManager", "LicenseManager", vim.LicenseManager),
            ("ExtensionManager", "ExtensionManager", vim.ExtensionManager),
        ]:
            self.inv.add(SingletonEntity(sim, moref, wsdl, typ))
        self.inv.add(SingletonEntity(sim, "ServiceInstance", "ServiceInstance",
                                     vim.ServiceInstance, {"content": self.content,
                                                           "capability": self._capability,
                                                           "serverClock": model.now}))
        self.inv.add(SingletonEntity(sim, "SessionManager", "SessionManager",
                                     vim.SessionManager,
                                     {"currentSession": self._current_session_info,
                                      "sessionList": self._session_list}))
        self.handlers: dict[str, Callable[[Call], Any]] = {
            "RetrieveServiceContent": lambda c: self.content(),
            "CurrentTime": lambda c: model.now(),
            "Fetch": self.fetch,
            "Login": self.login,
            "Logout": self.logout,
            "SessionIsActive": self.session_is_active,
            "TerminateSession": self.terminate_session,
            "RetrieveProperties": self.retrieve_properties,
            "RetrievePropertiesEx": self.retrieve_properties_ex,
            "ContinueRetrievePropertiesEx": self.continue_retrieve,
            "CancelRetrievePropertiesEx": self.cancel_retrieve,
            "CreateFilter": self.create_filter,
            "DestroyPropertyFilter": self.destroy_filter,
            "WaitForUpdates": self.wait_for_updates,
            "WaitForUpdatesEx": self.wait_for_updates_ex,
            "CheckForUpdates": self.check_for_updates,
            "CreateContainerView": self.create_container_view,
            "DestroyView": self.destroy_view,
            "HasPrivilegeOnEntities": self.has_privilege_on_entities,
            "HasPrivilegeOnEntity": self.has_privilege_on_entity,
            "FetchUserPrivilegeOnEntities": self.fetch_user_privileges,
            "FindByUuid": self.find_by_uuid,
            "FindAllByUuid": self.find_all_by_uuid,
            "CreateSnapshot_Task": self.create_snapshot,
            "RemoveSnapshot_Task": self.remove_snapshot,
            "QueryChangedDiskAreas": self.query_changed_disk_areas,
            "ReconfigVM_Task": self.reconfig,
            "RelocateVM_Task": self.relocate,
            "MigrateVM_Task": self.migrate,
            "PowerOnVM_Task": self.power_on,
            "PowerOffVM_Task": self.power_off,
            "ShutdownGuest": self.shutdown_guest,
        }

    # ----- plumbing -------------------------------------------------------------------------
    def handle(self, body: bytes, session: Session, soap_action: str | None
               ) -> tuple[int, bytes]:
        version = version_from_soap_action(soap_action, self.default_version)
        try:
            req = parse_request(body, version)
        except UnknownMethod as e:
            return 500, fault_envelope(vmodl.fault.MethodNotFound(
                msg=f"Method {e.name} not found", method=e.name,
                receiver=e.this if e.this is not None else vim.ServiceInstance(
                    "ServiceInstance")), version)
        except Exception as e:
            return 500, fault_envelope(vmodl.fault.InvalidRequest(msg=f"bad request: {e}"),
                                       version)
        call = Call(req, session, version)
        self._local.session = session
        try:
            handler = self.handlers.get(req.method)
            if req.method in self.sim.faults.missing_methods:
                handler = None
            if handler is None:
                raise vmodl.fault.MethodNotFound(
                    msg=f"The method {req.method} is not implemented by this simulator",
                    receiver=req.this, method=req.method)
            delay = self.sim.faults.delay_calls.get(req.method, 0.0)
            if delay > 0:
                time.sleep(delay)
            if req.method not in UNAUTHENTICATED_OK and session.user is None:
                raise vim.fault.NotAuthenticated(
                    msg="The session is not authenticated.", object=req.this,
                    privilegeId="System.View")
            result = handler(call)
            if isinstance(result, _RawXml):
                return 200, response_envelope(req.method, str(result))
            if req.info is None or req.info.result is None or result is None:
                return 200, response_envelope(req.method, "")
            typ = req.info.result
            if req.method == "Fetch":
                typ = object
            return 200, response_envelope(req.method,
                                          serialize_value(result, "returnval", typ, version))
        except vmodl.MethodFault as f:
            return 500, fault_envelope(f, version)
        except Exception as e:
            return 500, fault_envelope(vmodl.fault.SystemError(
                msg=f"{type(e).__name__}: {e}", reason=str(e)), version)

    def _state(self, call: Call) -> CollectorState:
        if call.session.pc_state is None:
            call.session.pc_state = CollectorState()
        st: CollectorState = call.session.pc_state
        return st

    def _can_view(self, user: User, obj: Entity) -> bool:
        if not isinstance(obj, (model.Datacenter, model.Folder, VM, Host, model.Datastore,
                                model.Network, model.ComputeResource, SnapshotEntity)):
            return True
        if obj is self.inv.root:
            return True
        return "System.View" in self.sim.privileges(user, obj)

    def _vm(self, call: Call) -> VM:
        obj = self.inv.get_ref(call.req.this)
        if not isinstance(obj, VM):
            raise vmodl.fault.InvalidArgument(msg="not a virtual machine",
                                              invalidProperty="_this")
        return obj

    # ----- service instance, sessions ---------------------------------------------------------
    def content(self) -> Any:
        M = vim
        return vim.ServiceInstanceContent(
            rootFolder=M.Folder(self.inv.root.moref),
            propertyCollector=PC("propertyCollector"),
            viewManager=M.view.ViewManager("ViewManager"),
            about=self.sim.about(),
            setting=M.option.OptionManager("VpxSettings"),
            userDirectory=M.UserDirectory("UserDirectory"),
            sessionManager=M.SessionManager("SessionManager"),
            authorizationManager=M.AuthorizationManager("AuthorizationManager"),
            taskManager=M.TaskManager("TaskManager"),
            eventManager=M.event.EventManager("EventManager"),
            searchIndex=M.SearchIndex("SearchIndex"),
            fileManager=M.FileManager("FileManager"),
            virtualDiskManager=M.VirtualDiskManager("VirtualDiskManager"),
            customFieldsManager=M.CustomFieldsManager("CustomFieldsManager"),
            licenseManager=M.LicenseManager("LicenseManager"),
            extensionManager=M.ExtensionManager("ExtensionManager"))

    def _capability(self) -> Any:
        return vim.Capability(provisioningSupported=True, multiHostSupported=True,
                              userShellAccessSupported=False)

    def _user_session(self, s: Session) -> Any:
        assert s.user is not None
        return vim.UserSession(
            key=s.key, userName=s.user.name, fullName=s.user.name,
            loginTime=dt.datetime.fromtimestamp(s.login_time, dt.UTC),
            lastActiveTime=dt.datetime.fromtimestamp(s.last_active, dt.UTC),
            locale="en", messageLocale="en", extensionSession=False, ipAddress="127.0.0.1",
            userAgent="pyvmomi", callCount=0)

    def _current_session_info(self) -> Any:
        s: Session | None = getattr(self._local, "session", None)
        return self._user_session(s) if s and s.user else None

    def _session_list(self) -> Any:
        return [self._user_session(s) for s in self.sim.sessions.active()]

    def fetch(self, call: Call) -> Any:
        obj = self.inv.get_ref(call.req.this)
        prop = call.arg("prop")
        if not self._can_view(call.user, obj):
            raise vim.fault.NoPermission(
                msg=f"Permission to perform this operation was denied. (System.View on "
                    f"{obj.name})", object=obj.ref(), privilegeId="System.View")
        if obj.moref == "SessionManager" and prop == "currentSession":
            return self._user_session(call.session) if call.session.user else None
        try:
            return obj.get(prop)
        except KeyError:
            raise vmodl.query.InvalidProperty(name=prop, msg=f"invalid property {prop}") from None

    def login(self, call: Call) -> Any:
        name, pw = call.arg("userName"), call.arg("password")
        user = self.sim.users.get(name)
        if user is None or user.password != pw:
            raise vim.fault.InvalidLogin(msg="Cannot complete login due to an incorrect user "
                                             "name or password.")
        call.session.user = user
        call.session.expired = False
        call.session.login_time = time.time()
        return self._user_session(call.session)

    def logout(self, call: Call) -> None:
        call.session.user = None
        self.sim.sessions.drop(call.session.key)

    def session_is_active(self, call: Call) -> bool:
        s = self.sim.sessions.get(call.arg("sessionID"))
        return bool(s and s.user and s.user.name == call.arg("userName"))

    def terminate_session(self, call: Call) -> None:
        for key in call.arg("sessionId") or []:
            self.sim.sessions.drop(key)

    # ----- property collector ------------------------------------------------------------------
    def retrieve_properties(self, call: Call) -> Any:
        return self.collector.retrieve_legacy(call.arg("specSet") or [], call.user)

    def retrieve_properties_ex(self, call: Call) -> Any:
        xml = self.collector.retrieve_ex(self._state(call), call.arg("specSet") or [],
                                         call.arg("options"), call.user, call.version)
        return None if xml is None else _RawXml(xml)

    def continue_retrieve(self, call: Call) -> Any:
        xml = self.collector.continue_ex(self._state(call), call.arg("token"), call.version)
        return None if xml is None else _RawXml(xml)

    def cancel_retrieve(self, call: Call) -> None:
        self.collector.cancel(self._state(call), call.arg("token"))

    def create_filter(self, call: Call) -> Any:
        spec = call.arg("spec")
        for os_ in spec.objectSet:
            self.inv.get_ref(os_.obj)
        f = FilterEntity(self.inv, self.inv.next_id("session[filter]"), spec,
                         bool(call.arg("partialUpdates")))
        self.inv.add(f)
        st = self._state(call)
        with st.lock:
            st.filters[f.moref] = f
        return f.ref()

    def destroy_filter(self, call: Call) -> None:
        f = self.inv.get_ref(call.req.this)
        st = self._state(call)
        with st.lock:
            st.filters.pop(f.moref, None)
        self.inv.remove(f.moref)

    def wait_for_updates(self, call: Call) -> Any:
        upd = None
        while upd is None:
            upd = self.collector.wait(self._state(call), call.user, call.arg("version"), 60.0)
        return upd

    def wait_for_updates_ex(self, call: Call) -> Any:
        opts = call.arg("options")
        wait = opts.maxWaitSeconds if opts is not None and opts.maxWaitSeconds is not None \
            else None
        st = self._state(call)
        if wait is None:
            upd = None
            while upd is None:
                upd = self.collector.wait(st, call.user, call.arg("version"), 60.0)
            return upd
        return self.collector.wait(st, call.user, call.arg("version"), float(wait))

    def check_for_updates(self, call: Call) -> Any:
        return self.collector.wait(self._state(call), call.user, call.arg("version"), 0.0)

    def create_container_view(self, call: Call) -> Any:
        container = self.inv.get_ref(call.arg("container"))
        v = ViewEntity(self.inv, self.inv.next_id("session[view]"), container,
                       list(call.arg("type") or []), bool(call.arg("recursive")))
        self.inv.add(v)
        return v.ref()

    def destroy_view(self, call: Call) -> None:
        self.inv.get_ref(call.req.this)
        self.inv.remove(call.req.this._moId)

    # ----- authorization --------------------------------------------------------------------
    def _user_for_session_id(self, session_id: str | None, call: Call) -> User:
        if not session_id:
            return call.user
        s = self.sim.sessions.get(session_id)
        if s is None or s.user is None:
            raise vmodl.fault.InvalidArgument(msg="unknown session", invalidProperty="sessionId")
        return s.user

    def has_privilege_on_entities(self, call: Call) -> Any:
        user = self._user_for_session_id(call.arg("sessionId"), call)
        out = []
        for ref in call.arg("entity") or []:
            ent = self.inv.get_ref(ref)
            have = self.sim.privileges(user, ent)
            out.append(vim.AuthorizationManager.EntityPrivilege(
                entity=ref, privAvailability=[
                    vim.AuthorizationManager.PrivilegeAvailability(privId=p, isGranted=p in have)
                    for p in call.arg("privId") or []]))
        return out

    def has_privilege_on_entity(self, call: Call) -> Any:
        user = self._user_for_session_id(call.arg("sessionId"), call)
        have = self.sim.privileges(user, self.inv.get_ref(call.arg("entity")))
        return [p in have for p in call.arg("privId") or []]

    def fetch_user_privileges(self, call: Call) -> Any:
        name = call.arg("userName")
        user = self.sim.users.get(name)
        if user is None:
            raise vim.fault.NotFound(msg=f"user {name} not found")
        out = []
        for ref in call.arg("entities") or []:
            ent = self.inv.get_ref(ref)
            out.append(vim.AuthorizationManager.UserPrivilegeResult(
                entity=ref, privileges=sorted(self.sim.privileges(user, ent))))
        return out

    # ----- search index ---------------------------------------------------------------------
    def _by_uuid(self, call: Call) -> list[Entity]:
        uuid = str(call.arg("uuid") or "").lower()
        if not call.arg("vmSearch"):
            return []        # hosts have no UUIDs in the simulator
        dc_ref = call.arg("datacenter")
        dc = self.inv.get_ref(dc_ref) if dc_ref is not None else None
        out: list[Entity] = []
        for vm in self.inv.vms():
            value = vm.instance_uuid if call.arg("instanceUuid") else vm.bios_uuid
            if value.lower() != uuid:
                continue
            if dc is not None and dc not in vm.ancestors():
                continue
            if self._can_view(call.user, vm):
                out.append(vm)
        return out

    def find_by_uuid(self, call: Call) -> Any:
        found = self._by_uuid(call)
        return found[0].ref() if found else None

    def find_all_by_uuid(self, call: Call) -> Any:
        return [vm.ref() for vm in self._by_uuid(call)]

    # ----- VM operations -------------------------------------------------------------------------
    def _task(self, call: Call, entity: Entity, fn: Callable[[TaskEntity], Any]) -> Any:
        return self.sim.start_task(call.req.method, entity, call.user.name, fn).ref()

    def create_snapshot(self, call: Call) -> Any:
        vm = self._vm(call)
        self.sim.check(call.user, vm, "VirtualMachine.State.CreateSnapshot")
        name = call.arg("name")
        desc = call.arg("description") or ""

        def run(task: TaskEntity) -> Any:
            return self.sim.create_snapshot(vm, name, desc).ref()

        return self._task(call, vm, run)

    def remove_snapshot(self, call: Call) -> Any:
        ent = self.inv.get_ref(call.req.this)
        if not isinstance(ent, SnapshotEntity):
            raise vmodl.fault.InvalidArgument(msg="not a snapshot", invalidProperty="_this")
        vm = ent.snap.vm
        self.sim.check(call.user, vm, "VirtualMachine.State.RemoveSnapshot")
        children = bool(call.arg("removeChildren"))

        def run(task: TaskEntity) -> Any:
            self.sim.remove_snapshot(vm, ent.snap, children, task)
            return None

        return self._task(call, vm, run)

    def query_changed_disk_areas(self, call: Call) -> Any:
        vm = self._vm(call)
        self.sim.check(call.user, vm, "VirtualMachine.Provisioning.DiskRandomRead")
        snap_ref = call.arg("snapshot")
        snap = self.sim.find_snapshot(vm, snap_ref._moId) if snap_ref is not None else None
        return self.sim.query_changed_areas(vm, snap, int(call.arg("deviceKey")),
                                            int(call.arg("startOffset")),
                                            str(call.arg("changeId")))

    def reconfig(self, call: Call) -> Any:
        vm = self._vm(call)
        spec = call.arg("spec")
        if spec.changeTrackingEnabled is not None:
            self.sim.check(call.user, vm, "VirtualMachine.Config.ChangeTracking")
        if spec.deviceChange:
            self.sim.check(call.user, vm, "VirtualMachine.Config.Settings")

        def run(task: TaskEntity) -> Any:
            if spec.changeTrackingEnabled is not None:
                self.sim.set_cbt(vm, bool(spec.changeTrackingEnabled))
            for ch in spec.deviceChange or []:
                dev = ch.device
                if not isinstance(dev, vim.vm.device.VirtualDisk):
                    raise vmodl.fault.NotSupported(
                        msg=f"simulator reconfigures only disks, not {type(dev).__name__}")
                op = ch.operation
                if op == "add":
                    kb = dev.capacityInKB or (dev.capacityInBytes or 0) // 1024
                    mode = getattr(dev.backing, "diskMode", None) or "persistent"
                    self.sim.add_disk(vm, {"capacity_kb": kb, "mode": mode})
                elif op == "edit":
                    size = dev.capacityInBytes or (dev.capacityInKB or 0) * 1024
                    self.sim.extend_disk(vm, dev.key, int(size))
                elif op == "remove":
                    self.sim.remove_disk(vm, dev.key, ch.fileOperation == "destroy")
            if spec.name:
                vm.name = spec.name
                vm.changed()
            return None

        return self._task(call, vm, run)

    def relocate(self, call: Call) -> Any:
        vm = self._vm(call)
        spec = call.arg("spec")
        host = self.inv.get_ref(spec.host) if spec.host is not None else None
        ds = self.inv.get_ref(spec.datastore) if spec.datastore is not None else None
        self.sim.check(call.user, vm, "Resource.HotMigrateVM" if vm.power_state == "poweredOn"
                       else "Resource.ColdMigrateVM")

        disk_targets: dict[int, model.Datastore] = {}
        for loc in spec.disk or []:
            target = self.inv.get_ref(loc.datastore)
            if not isinstance(target, model.Datastore):
                raise vmodl.fault.InvalidArgument(msg="disk locator datastore",
                                                  invalidProperty="spec.disk.datastore")
            disk_targets[int(loc.diskId)] = target
        keys = {d.key for d in vm.disks}
        if not set(disk_targets) <= keys:
            raise vmodl.fault.InvalidArgument(msg="unknown diskId in spec.disk",
                                              invalidProperty="spec.disk.diskId")

        def run(task: TaskEntity) -> Any:
            self.sim.relocate(vm, host if isinstance(host, Host) else None,
                              ds if isinstance(ds, model.Datastore) else None, disk_targets)
            return None

        return self._task(call, vm, run)

    def migrate(self, call: Call) -> Any:
        vm = self._vm(call)
        host_ref = call.arg("host")
        host = self.inv.get_ref(host_ref) if host_ref is not None else None
        self.sim.check(call.user, vm, "Resource.HotMigrateVM")

        def run(task: TaskEntity) -> Any:
            self.sim.relocate(vm, host if isinstance(host, Host) else None, None)
            return None

        return self._task(call, vm, run)

    def power_on(self, call: Call) -> Any:
        vm = self._vm(call)
        self.sim.check(call.user, vm, "VirtualMachine.Interact.PowerOn")

        def run(task: TaskEntity) -> Any:
            if vm.power_state == "poweredOn":
                raise vim.fault.InvalidPowerState(
                    msg="The attempted operation cannot be performed in the current state "
                        "(Powered on).", requestedState="poweredOn", existingState="poweredOn")
            self.sim.power(vm, "poweredOn")
            return None

        return self._task(call, vm, run)

    GUEST_SHUTDOWN_SECONDS = 0.5

    def shutdown_guest(self, call: Call) -> Any:
        """VMware Tools asks the guest OS to shut down: vCenter answers at once, the VM reaches
        poweredOff a little later (a clean, soft power-off). Needs running Tools."""
        vm = self._vm(call)
        self.sim.check(call.user, vm, "VirtualMachine.Interact.PowerOff")
        if vm.power_state != "poweredOn":
            raise vim.fault.InvalidPowerState(
                msg="The attempted operation cannot be performed in the current state "
                    "(Powered off).", requestedState="poweredOn", existingState=vm.power_state)
        if vm.tools()[1] != "guestToolsRunning":
            raise vim.fault.ToolsUnavailable(
                msg="Cannot complete operation because VMware Tools is not running in this "
                    "virtual machine.")

        def off() -> None:
            time.sleep(self.GUEST_SHUTDOWN_SECONDS)
            if vm.power_state == "poweredOn":
                self.sim.power(vm, "poweredOff")

        threading.Thread(target=off, name=f"guest-shutdown-{vm.moref}", daemon=True).start()
        return None

    def power_off(self, call: Call) -> Any:
        vm = self._vm(call)
        self.sim.check(call.user, vm, "VirtualMachine.Interact.PowerOff")

        def run(task: TaskEntity) -> Any:
            if vm.power_state == "poweredOff":
                raise vim.fault.InvalidPowerState(
                    msg="The attempted operation cannot be performed in the current state "
                        "(Powered off).", requestedState="poweredOff",
                    existingState="poweredOff")
            self.sim.power(vm, "poweredOff")
            return None

        return self._task(call, vm, run)
