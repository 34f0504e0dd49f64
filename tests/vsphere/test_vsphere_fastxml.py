"""The ElementTree reader gives the same facts as pyvmomi's objects (no server).

The XML is produced by pyvmomi's own SOAP serializer, i.e. the wire format vCenter speaks.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import SoapAdapter, vim, vmodl

from snapship.vsphere.facts import DatastoreFacts
from snapship.vsphere.fastxml import Light, MoRef, is_a, parse_retrieve_result
from snapship.vsphere.inventory import VM_PATHS, vm_facts_from_properties
from tests.vsphere import vm_objects as v

PC = vmodl.query.PropertyCollector
GIB = 1024**3
ARRAY_TYPES: dict[str, Any] = {
    "config.hardware.device": vim.vm.device.VirtualDevice,
    "datastore": vim.Datastore,
    "guest.disk": vim.vm.GuestInfo.DiskInfo,
}


def typed(name: str, val: object) -> object:
    """A list as the typed array pyvmomi's serializer needs (vCenter's ArrayOf...)."""
    return ARRAY_TYPES[name].Array(val) if isinstance(val, list) else val


def envelope(result: object) -> bytes:
    body = SoapAdapter.SerializeToStr(result, version="vim.version.v8_0_3_0")
    start = body.index(">") + 1
    inner = body[start : body.rindex("</obj>")]
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
        '<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval>'
        f"{inner}</returnval></RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>"
    ).encode()


def test_fast_reader_matches_pyvmomi_objects():
    props = v.vm_props(
        devices=[
            v.flat_disk(change_id="52 aa bb/7"),
            v.flat_disk(2001, label="Hard disk 2", mode="independent_persistent", unit=1),
            v.rdm_disk(),
            v.sparse_disk(),
            v.vmxnet3(),
            v.dvs_nic(),
        ],
        snapshot=v.snapshot_tree("before-upgrade", "snapship-wf@r1"),
        guest_disks=[("/", 40 * GIB, GIB), ("/data", 100 * GIB, 50 * GIB)],
    )
    props["runtime.powerState"] = vim.VirtualMachine.PowerState.poweredOn
    assert set(props) <= set(VM_PATHS)
    result = PC.RetrieveResult(
        token="page-2",
        objects=[
            PC.ObjectContent(
                obj=vim.VirtualMachine("vm-42"),
                propSet=[
                    vmodl.DynamicProperty(name=k, val=typed(k, val)) for k, val in props.items()
                ],
            )
        ],
    )
    objects, token = parse_retrieve_result(envelope(result))
    assert token == "page-2"
    [(ref, fast_props)] = objects
    assert (ref._moId, ref._wsdl) == ("vm-42", "VirtualMachine")

    datastores = {"datastore-1": DatastoreFacts("datastore-1", "vmfs-1", "VMFS")}
    networks = {"dvportgroup-9": "prod-pg"}
    slow = vm_facts_from_properties("vm-42", props, datastores=datastores, networks=networks)
    fast = vm_facts_from_properties("vm-42", fast_props, datastores=datastores, networks=networks)
    assert fast == slow
    assert fast.disks[0].change_id == "52 aa bb/7" and fast.disks[0].capacity_bytes == 16 * GIB
    assert fast.snapshot_names == ["before-upgrade", "snapship-wf@r1"]
    assert fast.power_state == "poweredOn" and fast.num_cpu == 4


def test_light_objects_answer_type_questions():
    objects, token = parse_retrieve_result(
        envelope(
            PC.RetrieveResult(
                objects=[
                    PC.ObjectContent(
                        obj=vim.Datastore("datastore-3"),
                        propSet=[
                            vmodl.DynamicProperty(name="name", val="vvol-1"),
                            vmodl.DynamicProperty(name="summary.type", val="VVOL"),
                            vmodl.DynamicProperty(name="parent", val=vim.Folder("group-s5")),
                        ],
                    )
                ]
            )
        )
    )
    assert token is None
    [(ref, props)] = objects
    assert is_a(ref, vim.Datastore) and not is_a(ref, vim.VirtualMachine)
    assert props["name"] == "vvol-1" and props["summary.type"] == "VVOL"
    assert isinstance(props["parent"], MoRef) and props["parent"]._moId == "group-s5"
    assert Light("VirtualDisk", {}).capacityInKB is None
