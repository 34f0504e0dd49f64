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
