"""SOAP wire format of the simulator, built on pyvmomi's own type system.

The server parses requests with pyvmomi's ``SoapDeserializer`` (driven by an expat handler that
walks the envelope the way ``SoapResponseDeserializer`` does on the client side) and produces
responses and faults with ``SoapSerializer``, so what goes over the wire is exactly what
pyvmomi's client parses from a real vCenter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from xml.parsers.expat import ParserCreate

from pyVmomi import SoapAdapter, VmomiSupport, vim, vmodl

NS_SEP = " "
VIM_NS = "urn:vim25"
ENVELOPE_START = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" '
    'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n<soapenv:Body>'
)
ENVELOPE_END = "</soapenv:Body>\n</soapenv:Envelope>"

# nsMap used for every serialization: the envelope declares xsi/xsd, urn:vim25 is the default
RESPONSE_NSMAP: dict[str, str] = dict(SoapAdapter.SOAP_NSMAP)
RESPONSE_NSMAP[VIM_NS] = ""


class FetchInfo:
    """Stand-in method info for pyvmomi's property accessor call ``Fetch(prop)``."""

    wsdlName = "Fetch"
    name = "Fetch"
    isTask = False
    params = (VmomiSupport.Object(name="prop", type=str, version="vmodl.version.version0",
                                  flags=0),)
    result = object
    resultFlags = 0


@dataclass
class SoapRequest:
    """A parsed SOAP call: method name, target managed object and named arguments."""

    method: str
    this: Any = None
    args: dict[str, Any] = field(default_factory=dict)
    info: Any = None


class UnknownMethod(Exception):
    """The body named a method pyvmomi's WSDL map does not know."""

    def __init__(self, name: str, this: Any = None) -> None:
        super().__init__(name)
        self.name = name
        self.this = this


class _RequestHandler(SoapAdapter.ExpatDeserializerNSHandlers):
    """Expat handler: finds the method element, hands each parameter to SoapDeserializer."""

    def __init__(self, version: str) -> None:
        super().__init__()
        self.version = version
        self.depth = 0
        self.request: SoapRequest | None = None
        self.param_types: dict[str, Any] = {}
        self.pending: tuple[str, Any, bool] | None = None
        self.deser: Any = None
        self.unknown: str | None = None
        self.parser: Any = None
        self.skipping = 0

    def _finish_pending(self) -> None:
        if self.pending is None or self.request is None:
            return
        name, _typ, is_list = self.pending
        value = self.deser.GetResult()
        if is_list:
            self.request.args.setdefault(name, []).append(value)
        elif name == "_this":
            self.request.this = value
        else:
            self.request.args[name] = value
        self.pending = None

    def StartElementHandler(self, tag: str, attr: dict[str, str]) -> None:
        self._finish_pending()
        if self.skipping:
            self.skipping += 1
            return
        local = tag.rsplit(NS_SEP, 1)[-1]
        if self.depth == 2 and self.request is None:
            if local == "Fetch":
                info: Any = FetchInfo
            else:
                try:
                    info = VmomiSupport.GetWsdlMethod(VIM_NS, local).info
                except KeyError:
                    self.unknown = local
                    info = None
            self.request = SoapRequest(method=local, info=info)
            if info is not None:
                self.param_types = {p.name: p.type for p in info.params}
            self.depth += 1
            return
        if self.depth == 3 and self.request is not None:
            if local == "_this":
                typ: Any = VmomiSupport.ManagedObject
                is_list = False
            elif self.request.info is None:      # unknown method: ignore its parameters
                self.skipping = 1
                return
            else:
                typ = self.param_types.get(local)
                if typ is None:
                    typ = object
                is_list = isinstance(typ, type) and issubclass(typ, list)
                if is_list:
                    typ = typ.Item
            self.deser = SoapAdapter.SoapDeserializer(None, self.version)
            self.deser.Deserialize(self.parser, typ, False, self.nsMap)
            self.pending = (local, typ, is_list)
            self.deser.StartElementHandler(tag, attr)
            return
        self.depth += 1

    def EndElementHandler(self, tag: str) -> None:
        self._finish_pending()
        if self.skipping:
            self.skipping -= 1
            return
        self.depth -= 1

    def CharacterDataHandler(self, data: str) -> None:
        pass


def parse_request(body: bytes, version: str) -> SoapRequest:
    """Parse one SOAP request envelope into a SoapRequest (raises UnknownMethod)."""
    parser = ParserCreate(namespace_separator=NS_SEP)
    parser.buffer_text = True
    handler = _RequestHandler(version)
    handler.parser = parser
    SoapAdapter.SetHandlers(parser, SoapAdapter.GetHandlers(handler))
    parser.Parse(body, True)
    handler._finish_pending()
    if handler.request is None:
        raise ValueError("no SOAP body")
    if handler.unknown:
        raise UnknownMethod(handler.unknown, handler.request.this)
    return handler.request


def _strip_version_attr(text: str) -> str:
    # pyvmomi's serializer tags the outermost element with versionId="..."; vCenter does not
    start = text.find(' versionId="')
    if start < 0:
        return text
    end = text.find('"', start + 12)
    return text[:start] + text[end + 1:]


def serialize_value(val: Any, name: str, typ: Any, version: str) -> str:
    """Serialize ``val`` as element ``name`` of static type ``typ``."""
    if val is None:
        return ""
    info = VmomiSupport.Object(name=name, type=typ, version=version, flags=0)
    xml = _strip_version_attr(SoapAdapter.SerializeToStr(val, info, version, RESPONSE_NSMAP))
    # vCenter types a moref held in anyType as ManagedObjectReference (pyvmomi: ManagedObject)
    return xml.replace('xsi:type="ManagedObject" ', 'xsi:type="ManagedObjectReference" ')


def response_envelope(method: str, body_xml: str) -> bytes:
    """Wrap a serialized ``returnval`` (or nothing, for void methods) in a response envelope."""
    return (
        f'{ENVELOPE_START}\n<{method}Response xmlns="{VIM_NS}">{body_xml}</{method}Response>\n'
        f"{ENVELOPE_END}"
    ).encode()


def fault_envelope(fault: Any, version: str) -> bytes:
    """A soapenv:Fault whose detail is the vim fault, as vCenter returns it (HTTP 500)."""
    try:
        return _fault_envelope(fault, version)
    except Exception as e:   # a fault missing a required field: still answer
        msg = getattr(fault, "msg", None) or type(fault).__name__
        return _fault_envelope(vmodl.fault.SystemError(msg=msg, reason=f"{msg} ({e})"), version)


def _fault_envelope(fault: Any, version: str) -> bytes:
    wsdl = type(fault)._wsdlName
    msg = getattr(fault, "msg", None) or wsdl
    info = VmomiSupport.Object(name=wsdl + "Fault", type=object, version=version, flags=0)
    detail = SoapAdapter.SerializeFaultDetail(fault, info, version, RESPONSE_NSMAP)
    detail = _strip_version_attr(detail)
    tag = f"<{wsdl}Fault"
    if detail.startswith(tag):
        detail = f'{tag} xmlns="{VIM_NS}"' + detail[len(tag):]
    code = "ServerFaultCode"
    return (
        f"{ENVELOPE_START}\n<soapenv:Fault><faultcode>{code}</faultcode>"
        f"<faultstring>{SoapAdapter.XmlEscape(msg)}</faultstring>"
        f"<detail>{detail}</detail></soapenv:Fault>\n{ENVELOPE_END}"
    ).encode()


def service_versions_xml(api_version: str, prior: list[str]) -> bytes:
    """/sdk/vimServiceVersions.xml, which SmartConnect reads to negotiate the API version."""
    priors = "".join(f"<version>{v}</version>" for v in prior)
    return (
        '<?xml version="1.0" encoding="UTF-8" ?>\n<namespaces version="1.0">\n'
        f" <namespace>\n  <name>urn:vim25</name>\n  <version>{api_version}</version>\n"
        f"  <priorVersions>{priors}</priorVersions>\n </namespace>\n</namespaces>\n"
    ).encode()


def version_from_soap_action(action: str | None, default: str) -> str:
    """Map a SOAPAction header ("urn:vim25/8.0.3.0") to a pyvmomi version name."""
    if action:
        key = action.strip('"')
        if key.startswith("urn:"):
            key = key[4:]
        ver = VmomiSupport.versionMap.get(key)
        if ver:
            return str(ver)
    return default


__all__ = [
    "SoapRequest",
    "UnknownMethod",
    "fault_envelope",
    "parse_request",
    "response_envelope",
    "serialize_value",
    "service_versions_xml",
    "version_from_soap_action",
    "vim",
    "vmodl",
]


def fast_propset(path: str, val: Any) -> str | None:
    """<propSet> XML for common scalar values without pyvmomi (None: use serialize_value).

    Produces exactly what ``serialize_value(DynamicProperty(path, val), "propSet", ...)``
    produces for str, bool, plain int, a moref and a typed moref array.
    """
    head = f"<propSet><name>{SoapAdapter.XmlEscape(path)}</name>"
    t = type(val)
    if t is str:
        return f'{head}<val xsi:type="xsd:string">{SoapAdapter.XmlEscape(val)}</val></propSet>'
    if t is bool:
        return f'{head}<val xsi:type="xsd:boolean">{"true" if val else "false"}</val></propSet>'
    if t is int:
        return f'{head}<val xsi:type="xsd:int">{val}</val></propSet>'
    if isinstance(val, VmomiSupport.ManagedObject):
        return (f'{head}<val xsi:type="ManagedObjectReference" type="{val._wsdlName}">'
                f"{SoapAdapter.XmlEscape(val._moId)}</val></propSet>")
    if isinstance(val, list) and getattr(t, "Item", None) is not None and \
            issubclass(t.Item, VmomiSupport.ManagedObject):
        items = "".join(f'<ManagedObjectReference type="{m._wsdlName}">'
                        f"{SoapAdapter.XmlEscape(m._moId)}</ManagedObjectReference>"
                        for m in val)
        return (f'{head}<val xsi:type="ArrayOfManagedObjectReference">{items}</val>'
                "</propSet>")
    return None
