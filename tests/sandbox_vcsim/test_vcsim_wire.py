"""The SOAP wire: TLS, version negotiation, sessions, faults and the property collector."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from sandbox.vcsim.testing import start_simulator

from .conftest import ADMIN, connect, small_scenario

PC = vmodl.query.PropertyCollector


def test_about_and_tls_verification_with_ca(sim, si) -> None:
    about = si.content.about
    assert about.apiType == "VirtualCenter"
    assert about.apiVersion == "8.0.3.0"
    assert about.version == "8.0.3"
    assert about.instanceUuid
    assert si._stub.version == "vim.version.v8_0_3_0"
    assert len(sim.thumbprint.split(":")) == 20


def test_tls_fails_without_the_ca(sim) -> None:
    ctx = ssl.create_default_context()   # system trust store only
    with pytest.raises((ssl.SSLError, vim.fault.HostConnectFault, Exception)) as err:
        SmartConnect(host="localhost", port=sim.port, user=ADMIN, pwd="admin-pw",
                     sslContext=ctx)
    assert "CERTIFICATE_VERIFY_FAILED" in str(err.value) or isinstance(err.value, ssl.SSLError)


@pytest.mark.parametrize(("version", "api"), [("6.7", "6.7.3"), ("7.0", "7.0.3.0")])
def test_older_vcenter_profiles(tmp_path: Path, version: str, api: str) -> None:
    h = start_simulator(small_scenario(version=version), tmp_path)
    try:
        s = connect(h)
        assert s.content.about.apiVersion == api
        assert s.content.about.version.startswith(version)
        Disconnect(s)
    finally:
        h.stop()


def test_wrong_password_is_invalid_login(sim) -> None:
    with pytest.raises(vim.fault.InvalidLogin):
        connect(sim, ADMIN, "nope")


def test_unimplemented_method_is_method_not_found(si) -> None:
    vm = next(iter(si.content.rootFolder.childEntity[0].vmFolder.childEntity[0].childEntity))
    with pytest.raises(vmodl.fault.MethodNotFound):
        vm.MountToolsInstaller()
    with pytest.raises(vmodl.fault.MethodNotFound):
        si.content.rootFolder.CreateFolder("x")


def test_session_expiry_by_admin_and_by_timeout(tmp_path: Path) -> None:
    sim = start_simulator(small_scenario(), tmp_path)
    try:
        _expiry(sim)
    finally:
        sim.stop()


def _expiry(sim) -> None:
    s = connect(sim)
    assert s.content.sessionManager.currentSession.userName == ADMIN
    key = s.content.sessionManager.currentSession.key
    assert s.content.sessionManager.SessionIsActive(key, ADMIN)
    assert sim.admin.expire_sessions() >= 1
    with pytest.raises(vim.fault.NotAuthenticated):
        s.content.rootFolder.childEntity  # noqa: B018
    s2 = connect(sim)
    sim.admin.configure(session_timeout_s=0.2)
    try:
        import time

        time.sleep(0.4)
        with pytest.raises(vim.fault.NotAuthenticated):
            s2.content.rootFolder.childEntity  # noqa: B018
    finally:
        sim.admin.configure(session_timeout_s=1800)


def test_logout_ends_the_session(sim) -> None:
    s = connect(sim)
    s.content.sessionManager.Logout()
    with pytest.raises(vim.fault.NotAuthenticated):
        s.content.rootFolder.childEntity  # noqa: B018


def _vm_spec(si, paths, max_objects=None):
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine],
                                                   True)
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[
            PC.TraversalSpec(name="v", type=vim.view.ContainerView, path="view", skip=False)])],
        propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=paths)])
    return content.propertyCollector, spec, view


def test_container_view_nested_paths_and_paging(si) -> None:
    pc, spec, view = _vm_spec(si, ["name", "config.instanceUuid", "config.hardware.device",
                                   "runtime.host", "summary.config.numVirtualDisks",
                                   "config.version", "config.changeTrackingEnabled"])
    res = pc.RetrievePropertiesEx([spec], PC.RetrieveOptions(maxObjects=2))
    objs = list(res.objects)
    pages = 1
    token = res.token
    while token:
        more = pc.ContinueRetrievePropertiesEx(token)
        objs.extend(more.objects)
        token = more.token
        pages += 1
    assert pages == 3
    props = {o.obj._moId: {p.name: p.val for p in o.propSet} for o in objs}
    assert len(props) == 5
    by_name = {p["name"]: p for p in props.values()}
    web = by_name["web-01"]
    disks = [d for d in web["config.hardware.device"] if isinstance(d, vim.vm.device.VirtualDisk)]
    assert [d.capacityInKB for d in disks] == [2048, 1500]
    assert isinstance(disks[0].backing, vim.vm.device.VirtualDisk.FlatVer2BackingInfo)
    assert web["summary.config.numVirtualDisks"] == 2
    assert web["runtime.host"].name == "esx1"
    assert by_name["old"]["config.version"] == "vmx-04"
    assert by_name["web-01"]["config.changeTrackingEnabled"] is True
    view.Destroy()


def test_cancel_retrieve_and_invalid_property(si) -> None:
    pc, spec, view = _vm_spec(si, ["name"])
    res = pc.RetrievePropertiesEx([spec], PC.RetrieveOptions(maxObjects=1))
    pc.CancelRetrievePropertiesEx(res.token)
    with pytest.raises(vmodl.fault.InvalidArgument):
        pc.ContinueRetrievePropertiesEx(res.token)
    _, bad, view2 = _vm_spec(si, ["config.noSuchThing"])
    with pytest.raises(vmodl.query.InvalidProperty):
        pc.RetrievePropertiesEx([bad], PC.RetrieveOptions())
    view.Destroy()
    view2.Destroy()


def test_inventory_tree_and_datastore_types(si) -> None:
    dc = si.content.rootFolder.childEntity[0]
    assert isinstance(dc, vim.Datacenter)
    types = {ds.name: ds.summary.type for ds in dc.datastore}
    assert types == {"ds1": "VMFS", "ds2": "NFS", "vvol1": "VVOL"}
    cluster = dc.hostFolder.childEntity[0]
    assert sorted(h.name for h in cluster.host) == ["esx1", "esx2"]
    folders = {f.name for f in dc.vmFolder.childEntity}
    assert folders == {"prod", "lab"}


@pytest.mark.parametrize("name", ["demo.yaml", "edge-cases.yaml"])
def test_shipped_scenarios_load_and_serve(tmp_path: Path, name: str) -> None:
    path = Path(__file__).parents[2] / "sandbox" / "scenarios" / name
    h = start_simulator(path, tmp_path)
    try:
        s = connect(h, ADMIN, h.users[ADMIN])
        content = s.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine],
                                                       True)
        names = {vm.name for vm in view.view}
        assert len(names) >= 8
        with_snaps = [vm for vm in view.view if vm.snapshot is not None]
        assert with_snaps
        Disconnect(s)
    finally:
        h.stop()


def test_cli_serves_and_prints_endpoint(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys
    import time

    root = Path(__file__).parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "sandbox.vcsim", "--scenario",
                             str(root / "sandbox" / "scenarios" / "demo.yaml"), "--port", "0",
                             "--state-dir", str(tmp_path)], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        info_path = tmp_path / "endpoint.json"
        deadline = time.monotonic() + 30
        while not info_path.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.1)
        info = json.loads(info_path.read_text())
        creds = json.loads(Path(info["credentials_file"]).read_text())
        assert oct(Path(info["credentials_file"]).stat().st_mode)[-3:] == "600"
        ctx = ssl.create_default_context(cafile=info["ca_path"])
        s = SmartConnect(host="localhost", port=info["port"], user=ADMIN, pwd=creds[ADMIN],
                         sslContext=ctx)
        assert s.content.about.apiType == "VirtualCenter"
        Disconnect(s)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    # It prints what a person needs to continue: the install flags naming this simulator.
    text = out.decode()
    assert f"--vcenter-port {info['port']}" in text
    assert f"--vcenter-ca-path {info['ca_path']}" in text


def test_wait_for_updates_ex_times_out_then_reports_change(sim, si) -> None:
    from .conftest import find_vm

    vm = find_vm(si, "lab-01")
    pc = si.content.propertyCollector
    spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=vm)],
                         propSet=[PC.PropertySpec(type=vim.VirtualMachine,
                                                  pathSet=["runtime.host"])])
    f = pc.CreateFilter(spec, False)
    try:
        first = pc.WaitForUpdatesEx("", PC.WaitOptions(maxWaitSeconds=1))
        assert first.filterSet[0].objectSet[0].kind == "enter"
        assert pc.WaitForUpdatesEx(first.version, PC.WaitOptions(maxWaitSeconds=1)) is None
        target = "esx2" if vm.runtime.host.name == "esx1" else "esx1"
        sim.admin.vmotion("lab-01", target, delay=0.3)
        upd = pc.WaitForUpdatesEx(first.version, PC.WaitOptions(maxWaitSeconds=10))
        change = upd.filterSet[0].objectSet[0].changeSet[0]
        assert change.name == "runtime.host" and change.val.name == target
    finally:
        f.Destroy()


def test_dropped_connection_is_an_error_then_recovers(sim, si) -> None:
    sim.admin.drop_connections(1)
    with pytest.raises(Exception):   # noqa: B017 - http.client raises RemoteDisconnected
        si.content.rootFolder.childEntity  # noqa: B018
    assert si.content.rootFolder.childEntity


def test_find_by_uuid_and_runtime_flags(sim, si) -> None:
    from .conftest import find_vm

    vm = find_vm(si, "web-01")
    idx = si.content.searchIndex
    assert idx.FindByUuid(None, vm.config.instanceUuid, True, True) == vm
    assert idx.FindByUuid(None, vm.config.uuid, True, False) == vm
    assert idx.FindByUuid(None, "00000000-0000-0000-0000-000000000000", True, True) is None
    assert idx.FindAllByUuid(None, vm.config.instanceUuid, True, True) == [vm]
    sim.admin.set_flags("web-01", consolidation_needed=True)
    try:
        assert vm.runtime.consolidationNeeded is True
    finally:
        sim.admin.set_flags("web-01", consolidation_needed=False)
    assert vm.runtime.consolidationNeeded is False


def test_method_outside_the_wsdl_is_method_not_found(sim) -> None:
    import http.client

    from pyVmomi import SoapAdapter

    body = ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
            '<NoSuchMethod xmlns="urn:vim25"><_this type="Folder">group-d1</_this>'
            '<x>1</x></NoSuchMethod></soapenv:Body></soapenv:Envelope>')
    ctx = ssl.create_default_context(cafile=str(sim.ca_path))
    conn = http.client.HTTPSConnection("localhost", sim.port, context=ctx)
    conn.request("POST", "/sdk", body, {"Content-Type": "text/xml", "SOAPAction":
                                         "urn:vim25/8.0.3.0"})
    resp = conn.getresponse()
    assert resp.status == 500
    fault = SoapAdapter.SoapResponseDeserializer(None).Deserialize(resp, object)
    assert isinstance(fault, vmodl.fault.MethodNotFound)
    assert fault.method == "NoSuchMethod"
    conn.close()


@pytest.mark.parametrize("name", ["TaskInProgress", "FileFault", "InvalidPowerState",
                                  "NoPermission"])
def test_injected_faults_of_any_kind_reach_the_client(sim, si, name) -> None:
    from pyVim.task import WaitForTask

    from .conftest import find_vm

    sim.admin.fail_tasks("PowerOn", 1, name, "boom")
    with pytest.raises(vmodl.MethodFault) as err:
        WaitForTask(find_vm(si, "tmpl").PowerOnVM_Task())
    assert type(err.value).__name__.endswith(name)


def test_idle_tcp_client_does_not_block_others(sim) -> None:
    import socket

    idle = socket.create_connection(("127.0.0.1", sim.port))   # never starts TLS
    try:
        s = connect(sim)
        assert s.content.about.apiType == "VirtualCenter"
        Disconnect(s)
    finally:
        idle.close()


def test_misspelt_scenario_key_is_rejected(tmp_path: Path) -> None:
    sc = small_scenario()
    sc["datacenters"][0]["vms"][0]["disks"][0]["capacity_gb"] = 1
    with pytest.raises(ValueError, match="capacity_gb"):
        start_simulator(sc, tmp_path)
