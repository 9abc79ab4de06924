"""Where a machine's tag is read: an OPC UA NodeId in its text form, and the address syntax of each kind of PLC
source (the Modbus and S7 syntaxes live with their source's config model)."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

from agent.sources.modbus.model import parse_address as parse_modbus_address
from agent.sources.s7.model import parse_address as parse_s7_address

NODE_ID_FORMS = "ns=<index>; or nsu=<namespace URI>; then i=<number>, s=<text>, g=<GUID> or b=<base64>"
_NODE_ID = re.compile(r"(?:ns=(?P<ns>[^;]*);|nsu=(?P<uri>.*?);)?(?P<kind>[isgb])=(?P<id>.*)\Z", re.DOTALL)
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")


def parse_node_id(text: str) -> tuple[int | str, str, str]:
    """An OPC UA NodeId in its text form as (namespace index or URI, identifier type i/s/g/b, identifier).

    No namespace means namespace 0. Raises ValueError saying what is wrong.
    """
    m = _NODE_ID.match(text)
    if m is None:
        raise ValueError(f"an OPC UA NodeId: {NODE_ID_FORMS} (e.g. ns=3;i=1042)")
    kind, identifier = m.group("kind"), m.group("id")
    namespace: int | str = 0
    if m.group("uri") is not None:
        namespace = m.group("uri")
        if not namespace:
            raise ValueError("a namespace URI after nsu= (e.g. nsu=urn:vendor:plc;i=1042)")
    elif m.group("ns") is not None:
        if not m.group("ns").isdigit() or int(m.group("ns")) > 65535:
            raise ValueError("a namespace index from 0 to 65535 after ns=")
        namespace = int(m.group("ns"))
    if kind == "i" and not (identifier.isdigit() and identifier.isascii() and int(identifier) < 2**32):
        raise ValueError("a whole number from 0 to 4294967295 after i=")
    if kind == "s" and not identifier:
        raise ValueError("a name after s=")
    if kind == "g" and not _GUID.match(identifier):
        raise ValueError("a GUID like 72962b91-fa75-4ae6-8d28-b404dc7daf63 after g=")
    if kind == "b":
        try:
            if not base64.b64decode(identifier, validate=True):
                raise ValueError
        except ValueError:
            raise ValueError("bytes in base64 (e.g. M/RbKBsRVkePCePcx24oRA==) after b=") from None
    return namespace, kind, identifier


# How each kind of PLC source reads a tag's address; a ValueError says what is expected.
ADDRESS_PARSERS: dict[str, Callable[[str], object]] = {
    "opcua": parse_node_id, "modbus": parse_modbus_address, "s7": parse_s7_address}
ADDRESS_NAMES = {"opcua": "NodeId", "modbus": "Modbus address", "s7": "S7 address"}
