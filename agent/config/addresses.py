"""Where a machine's tag is read: the address syntax of each kind of PLC source (an OPC UA NodeId in its text
form, a Modbus or S7 address; each syntax lives with its source's config model, agent/sources/<kind>/model.py)."""

from __future__ import annotations

from collections.abc import Callable

from agent.sources.modbus.model import parse_address as parse_modbus_address
from agent.sources.opcua.model import parse_node_id
from agent.sources.s7.model import parse_address as parse_s7_address

# How each kind of PLC source reads a tag's address; a ValueError says what is expected.
ADDRESS_PARSERS: dict[str, Callable[[str], object]] = {
    "opcua": parse_node_id, "modbus": parse_modbus_address, "s7": parse_s7_address}
ADDRESS_NAMES = {"opcua": "NodeId", "modbus": "Modbus address", "s7": "S7 address"}
