"""PropertyCollector helpers: read many properties in one round trip instead of one per attribute.

Reading ``vm.config.hardware.device`` through pyvmomi attribute access costs a round trip per
attribute and fetches whole objects; a ``RetrievePropertiesEx`` with a path set fetches exactly
what is needed, in one call.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pyVmomi import vim, vmodl

from snapship.vsphere.errors import ObjectNotFound
from snapship.vsphere.session import VcenterSession

PropertyCollector = vmodl.query.PropertyCollector


def object_props(content: Any) -> dict[str, Any]:
    """``ObjectContent.propSet`` as a dict (missing/unset properties are simply absent)."""
    return {p.name: p.val for p in (content.propSet or ())}


def retrieve_paged(
    session: VcenterSession,
    filter_spec: Any,
    max_objects: int = 1000,
) -> list[Any]:
    """All ObjectContents for ``filter_spec``, following ContinueRetrievePropertiesEx tokens."""
    pc = session.content.propertyCollector
    options = PropertyCollector.RetrieveOptions(maxObjects=max_objects)
    result = pc.RetrievePropertiesEx([filter_spec], options)
    out: list[Any] = []
    while result is not None:
        out.extend(result.objects or ())
        if not result.token:
            break
        result = pc.ContinueRetrievePropertiesEx(result.token)
    return out


def retrieve_objects(
    session: VcenterSession,
    kind: type,
    morefs: Sequence[str],
    paths: Iterable[str],
) -> dict[str, dict[str, Any]]:
    """Properties of several objects of one type by moref id, in one call (plus pages)."""
    if not morefs:
        return {}
    stub = session.stub
    spec = PropertyCollector.FilterSpec(
        objectSet=[PropertyCollector.ObjectSpec(obj=kind(m, stub), skip=False) for m in morefs],
        propSet=[PropertyCollector.PropertySpec(type=kind, pathSet=list(paths), all=False)],
        reportMissingObjectsInResults=True,
    )
    try:
        contents = retrieve_paged(session, spec)
    except vmodl.fault.ManagedObjectNotFound as exc:
        raise ObjectNotFound(kind.__name__.rsplit(".", 1)[-1], str(exc.obj._moId)) from None
    out: dict[str, dict[str, Any]] = {}
    for c in contents:
        if any(
            isinstance(m.fault, vmodl.fault.ManagedObjectNotFound) for m in (c.missingSet or ())
        ):
            continue  # the object is gone: absent from the result, like an unknown moref
        out[c.obj._moId] = object_props(c)
    return out


def retrieve_object(
    session: VcenterSession, kind: type, moref: str, paths: Iterable[str]
) -> dict[str, Any]:
    """Properties of one object; raises ObjectNotFound if vCenter no longer has it."""
    found = retrieve_objects(session, kind, [moref], paths)
    if moref not in found:
        raise ObjectNotFound(kind.__name__.rsplit(".", 1)[-1], moref)
    return found[moref]


def vm_ref(session: VcenterSession, moref: str) -> Any:
    return vim.VirtualMachine(moref, session.stub)
