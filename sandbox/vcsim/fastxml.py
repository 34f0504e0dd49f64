"""Serialized-XML templates: pyvmomi's exact output, rendered without pyvmomi per object.

Serializing tens of thousands of device objects through pyvmomi costs tens of seconds. A
template is made once per object *shape* (which optional fields are set, list lengths, booleans)
by building and serializing the object with sentinel values, then splitting the XML at the
sentinels. Rendering substitutes escaped values, so the output is byte-identical to what
pyvmomi would have produced (a test checks exactly that).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

from pyVmomi import SoapAdapter

from sandbox.vcsim.soap import serialize_value

_INT_BASE = 7_770_000_000_000
_cache: dict[Any, tuple[list[str], list[str]]] = {}
_lock = threading.Lock()


def _make(build: Callable[[dict[str, Any]], Any], vals: dict[str, Any], elem: str,
          typ: Any, version: str, fixed: tuple[str, ...]) -> tuple[list[str], list[str]]:
    tokens: dict[str, str] = {}
    sent: dict[str, Any] = {}
    n = 0

    def token(name: str, v: Any) -> Any:
        nonlocal n
        n += 1
        if isinstance(v, str):
            t = f"\x02{n}\x03"
            tokens[t] = name
            return t
        tv = _INT_BASE + n
        tokens[str(tv)] = name
        return tv

    for k, v in vals.items():
        if v is None or isinstance(v, bool) or k in fixed:
            sent[k] = v
        elif isinstance(v, list):
            sent[k] = [token(f"{k}#{i}", x) for i, x in enumerate(v)]
        else:
            sent[k] = token(k, v)
    xml = serialize_value(build(sent), elem, typ, version)
    if not tokens:
        return [xml], []
    pattern = re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))
    parts: list[str] = []
    names: list[str] = []
    pos = 0
    for m in pattern.finditer(xml):
        parts.append(xml[pos:m.start()])
        names.append(tokens[m.group(0)])
        pos = m.end()
    parts.append(xml[pos:])
    return parts, names


def render(build: Callable[[dict[str, Any]], Any], shape: str, vals: dict[str, Any], elem: str,
           typ: Any, version: str, fixed: tuple[str, ...] = ("kind",)) -> str:
    """XML of ``build(vals)`` serialized as element ``elem`` of static type ``typ``.

    Values named in ``fixed``, booleans and None are part of the shape (not substituted).
    """
    key = (shape, elem, version, tuple(
        (k, v) if v is None or isinstance(v, bool) or k in fixed
        else (k, len(v)) if isinstance(v, list)
        else (k, type(v) is str) for k, v in vals.items()))
    tpl = _cache.get(key)
    if tpl is None:
        tpl = _make(build, vals, elem, typ, version, fixed)
        with _lock:
            _cache[key] = tpl
    parts, names = tpl
    out = [parts[0]]
    for name, part in zip(names, parts[1:], strict=True):
        if "#" in name:
            base, _, idx = name.partition("#")
            v = vals[base][int(idx)]
        else:
            v = vals[name]
        out.append(SoapAdapter.XmlEscape(v) if isinstance(v, str) else str(v))
        out.append(part)
    return "".join(out)
