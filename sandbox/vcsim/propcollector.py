"""PropertyCollector: traversal, retrieval with paging, filters and WaitForUpdates.

Results of RetrievePropertiesEx are assembled from per-(object, path) XML fragments that are
cached per object generation, which keeps a 10,000-VM inventory collection in seconds: only
objects that changed since the last collection are serialized again.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pyVmomi import VmomiSupport, vim, vmodl

from sandbox.vcsim.model import VM, Entity, Folder, Inventory
from sandbox.vcsim.soap import fast_propset, serialize_value

PC = vmodl.query.PropertyCollector
_tokens = itertools.count(1)


class ViewEntity(Entity):
    """A ContainerView: the objects of given types under a container."""

    wsdl = "ContainerView"
    vim_type = vim.view.ContainerView

    def __init__(self, inv: Inventory, moref: str, container: Entity, types: list[Any],
                 recursive: bool) -> None:
        super().__init__(inv, moref, "ContainerView", None)
        self.container = container
        self.types = types
        self.recursive = recursive

    def members(self) -> list[Entity]:
        out: list[Entity] = []
        stack: list[Entity] = list(children(self.container))
        while stack:
            o = stack.pop(0)
            if not self.types or any(issubclass(o.vim_type, t) for t in self.types):
                out.append(o)
            if self.recursive:
                stack.extend(children(o))
        return out

    def _build(self, prop: str) -> Any:
        if prop == "view":
            return VmomiSupport.GetVmodlType("vmodl.ManagedObject[]")(
                [m.ref() for m in self.members()])
        if prop == "container":
            return self.container.ref()
        if prop == "type":
            return [t._wsdlName for t in self.types]
        if prop == "recursive":
            return self.recursive
        raise KeyError(prop)

    def all_props(self) -> list[str]:
        return ["view", "container", "type", "recursive"]

    def get(self, prop: str) -> Any:   # membership changes without a gen bump: never cache
        return self._build(prop)


def children(o: Entity) -> list[Entity]:
    """Entities directly below o in the inventory tree (what a recursive view walks)."""
    from sandbox.vcsim.model import ComputeResource, Datacenter

    if isinstance(o, Folder):
        return list(o.children)
    if isinstance(o, Datacenter):
        return [o.vm_folder, o.host_folder, o.datastore_folder, o.network_folder]
    if isinstance(o, ComputeResource):
        return list(o.hosts)
    return []


class FilterEntity(Entity):
    """A PropertyFilter created by CreateFilter; remembers what it last reported."""

    wsdl = "PropertyFilter"
    vim_type = PC.Filter

    def __init__(self, inv: Inventory, moref: str, spec: Any, partial: bool) -> None:
        super().__init__(inv, moref, "filter", None)
        self.spec = spec
        self.partial = partial
        self.seen: dict[str, int] = {}

    def _build(self, prop: str) -> Any:
        if prop == "spec":
            return self.spec
        if prop == "partialUpdates":
            return self.partial
        raise KeyError(prop)


@dataclass
class CollectorState:
    """Per-session property collector state (vCenter gives each session its own view)."""

    filters: dict[str, FilterEntity] = field(default_factory=dict)
    version: int = 0
    tokens: dict[str, tuple[list[tuple[Entity, list[str]]], int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _value(obj: Entity, path: str) -> Any:
    head, _, rest = path.partition(".")
    if rest and isinstance(obj, VM):
        try:
            return obj.fast_value(path)
        except KeyError:
            pass
    try:
        val = obj.get(head)
    except KeyError:
        # vCenter omits a property the type declares but that has no value (e.g. parentVApp of
        # a VM outside a vApp); only names the type does not declare are InvalidProperty.
        try:
            obj.vim_type._GetPropertyInfo(head)
        except (AttributeError, KeyError):
            raise vmodl.query.InvalidProperty(name=path, msg=f"invalid property {path}") from None
        return None
    holder: Any = obj.vim_type
    name = head
    for part in rest.split(".") if rest else []:
        if val is None:
            return None
        if isinstance(val, list):
            raise vmodl.query.InvalidProperty(name=path, msg=f"invalid property {path}")
        holder, name = type(val), part
        try:
            val = getattr(val, part)
        except AttributeError:
            raise vmodl.query.InvalidProperty(name=path,
                                              msg=f"invalid property {path}") from None
    if type(val) is list:
        # anyType serialization needs a typed array (ArrayOfXxx): use the declared type
        try:
            declared = holder._GetPropertyInfo(name).type
            val = declared(val)
        except (AttributeError, KeyError, TypeError):
            pass
    return val


class Collector:
    """Implements the PropertyCollector methods over an Inventory."""

    def __init__(self, inv: Inventory, can_view: Any, page_size: int) -> None:
        self.inv = inv
        self.can_view = can_view     # (user, entity) -> bool
        self.page_size = page_size
        self.stopping = False

    # ----- selection --------------------------------------------------------------------
    def select(self, spec: Any, user: Any) -> list[tuple[Entity, list[str]]]:
        named: dict[str, Any] = {}

        def collect(sel: list[Any]) -> None:
            for s in sel or []:
                if isinstance(s, PC.TraversalSpec) and s.name:
                    if s.name not in named:
                        named[s.name] = s
                        collect(s.selectSet)
                elif isinstance(s, PC.TraversalSpec):
                    collect(s.selectSet)

        for os_ in spec.objectSet:
            collect(os_.selectSet)
        found: dict[str, Entity] = {}
        order: list[Entity] = []

        def add(o: Entity) -> None:
            if o.moref not in found:
                found[o.moref] = o
                order.append(o)

        for os_ in spec.objectSet:
            start = self.inv.get_ref(os_.obj)
            if not os_.skip:
                add(start)
            visited: set[tuple[str, int]] = set()
            stack: list[tuple[Entity, list[Any]]] = [(start, list(os_.selectSet or []))]
            while stack:
                obj, sels = stack.pop()
                for s in sels:
                    ts = s if isinstance(s, PC.TraversalSpec) else named.get(s.name)
                    if ts is None:
                        raise vmodl.fault.InvalidArgument(
                            msg=f"unknown selection spec {s.name}", invalidProperty="selectSet")
                    if (obj.moref, id(ts)) in visited:
                        continue
                    visited.add((obj.moref, id(ts)))
                    if not issubclass(obj.vim_type, ts.type):
                        continue
                    val = _value(obj, ts.path)
                    refs = val if isinstance(val, list) else ([val] if val is not None else [])
                    for r in refs:
                        child = self.inv.objects.get(r._moId)
                        if child is None:
                            continue
                        if not ts.skip:
                            add(child)
                        if ts.selectSet:
                            stack.append((child, list(ts.selectSet)))
        out: list[tuple[Entity, list[str]]] = []
        for o in order:
            if user is not None and not self.can_view(user, o):
                continue
            paths: list[str] = []
            matched = False
            for ps in spec.propSet:
                if issubclass(o.vim_type, ps.type):
                    matched = True
                    if ps.all:
                        paths.extend(p for p in o.all_props() if p not in paths)
                    for p in ps.pathSet or []:
                        if p not in paths:
                            paths.append(p)
            if matched:
                out.append((o, paths))
        return out

    # ----- retrieval --------------------------------------------------------------------
    def fragment(self, obj: Entity, path: str, version: str) -> str:
        """Serialized <propSet> for one property, cached per object generation."""
        key = path + "|" + version
        gen = obj.gen
        hit = obj.xml_cache.get(key)
        if hit is not None and hit[0] == gen and not isinstance(obj, ViewEntity):
            return hit[1]
        if isinstance(obj, VM) and path == "config.hardware.device":
            xml = obj.devices_xml(version)
            obj.xml_cache[key] = (gen, xml)
            return xml
        val = _value(obj, path)
        if val is None:
            xml = ""
        else:
            xml = fast_propset(path, val) or serialize_value(
                vmodl.DynamicProperty(name=path, val=val), "propSet", vmodl.DynamicProperty,
                version)
        obj.xml_cache[key] = (gen, xml)
        return xml

    def objects_xml(self, items: list[tuple[Entity, list[str]]], version: str) -> str:
        parts: list[str] = []
        for obj, paths in items:
            parts.append(f'<objects><obj type="{obj.wsdl}">{obj.moref}</obj>')
            for p in paths:
                parts.append(self.fragment(obj, p, version))
            parts.append("</objects>")
        return "".join(parts)

    def retrieve_ex(self, state: CollectorState, specs: list[Any], options: Any, user: Any,
                    version: str) -> str | None:
        """RetrievePropertiesEx: the <returnval> XML, or None when nothing matched."""
        items: list[tuple[Entity, list[str]]] = []
        seen: set[str] = set()
        for spec in specs:
            for obj, paths in self.select(spec, user):
                if obj.moref in seen:
                    continue
                seen.add(obj.moref)
                items.append((obj, paths))
        for obj, paths in items:      # validate paths before paging (InvalidProperty up front)
            for p in paths:
                self.fragment(obj, p, version)
        return self._page(state, items, options, version)

    def _page(self, state: CollectorState, items: list[tuple[Entity, list[str]]], options: Any,
              version: str) -> str | None:
        if not items:
            return None
        limit = options if isinstance(options, int) else (
            options.maxObjects if options is not None and options.maxObjects else
            self.page_size)
        page, rest = items[:limit], items[limit:]
        token = ""
        if rest:
            token = f"token-{next(_tokens)}"
            with state.lock:
                state.tokens[token] = (rest, limit)
        body = f"<token>{token}</token>" if token else ""
        return f"<returnval>{body}{self.objects_xml(page, version)}</returnval>"

    def continue_ex(self, state: CollectorState, token: str, version: str) -> str | None:
        with state.lock:
            entry = state.tokens.pop(token, None)
        if entry is None:
            raise vmodl.fault.InvalidArgument(msg=f"unknown token {token}",
                                              invalidProperty="token")
        return self._page(state, entry[0], entry[1], version)

    def cancel(self, state: CollectorState, token: str) -> None:
        with state.lock:
            state.tokens.pop(token, None)

    def retrieve_legacy(self, specs: list[Any], user: Any) -> list[Any]:
        out = []
        for spec in specs:
            for obj, paths in self.select(spec, user):
                props = []
                for p in paths:
                    v = _value(obj, p)
                    if v is not None:
                        props.append(vmodl.DynamicProperty(name=p, val=v))
                out.append(PC.ObjectContent(obj=obj.ref(), propSet=props))
        return out

    # ----- updates ----------------------------------------------------------------------
    def _updates(self, state: CollectorState, user: Any, max_updates: int | None) -> Any:
        filter_updates = []
        for f in list(state.filters.values()):
            try:
                selected = self.select(f.spec, user)
            except vmodl.fault.ManagedObjectNotFound:
                selected = []
            current = {o.moref for o, _ in selected}
            objs = []
            for o, paths in selected:
                g = o.gen
                before = f.seen.get(o.moref)
                if before == g:
                    continue
                changes = []
                for p in paths:
                    v = _value(o, p)
                    changes.append(PC.Change(name=p, op="assign", val=v))
                objs.append(PC.ObjectUpdate(kind="enter" if before is None else "modify",
                                            obj=o.ref(), changeSet=changes))
                f.seen[o.moref] = g
            for moref in [m for m in f.seen if m not in current]:
                del f.seen[moref]
                obj = self.inv.objects.get(moref)
                ref = obj.ref() if obj else vim.ManagedEntity(moref)
                objs.append(PC.ObjectUpdate(kind="leave", obj=ref, changeSet=[]))
            if objs:
                filter_updates.append(PC.FilterUpdate(filter=f.ref(), objectSet=objs))
        if not filter_updates:
            return None
        state.version += 1
        return PC.UpdateSet(version=str(state.version), filterSet=filter_updates)

    def wait(self, state: CollectorState, user: Any, version: str | None,
             max_wait: float | None) -> Any:
        """WaitForUpdates(Ex): block until a filtered object changes or max_wait passes."""
        if not version:
            for f in state.filters.values():
                f.seen.clear()
        deadline = None if max_wait is None else time.monotonic() + max_wait
        while True:
            with self.inv.cond:
                seq = self.inv.update_seq
            with state.lock:
                upd = self._updates(state, user, None)
            if upd is not None:
                return upd
            if self.stopping:
                raise vmodl.fault.RequestCanceled(msg="server shutting down")
            remaining = 1.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return None
            with self.inv.cond:
                if self.inv.update_seq == seq:
                    self.inv.cond.wait(min(remaining, 1.0))
