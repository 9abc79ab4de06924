"""Config model of a Modbus TCP source and the syntax of a Modbus tag address (no pymodbus here).

An address names one value on a device, in the order a person reads it:

    [unit/]table:offset[.bit][:type][:order]

    hr:100          holding register 100, uint16
    hr:100:u32      holding registers 100-101 as one uint32 (big-endian, high word first by default)
    ir:0:f32:cdab   input registers 0-1 as a float32, words swapped
    hr:7.3          bit 3 (0 = least significant) of holding register 7, a bool
    co:5, di:3      coil 5, discrete input 3, bools
    2/hr:100:u16    the same on unit (slave) 2 behind a gateway; without it, the source's unit_id

Tables: hr (holding registers), ir (input registers), co (coils), di (discrete inputs). Offsets are the protocol's
0-based addresses: what a device manual calls register 40001 is hr:0, 30001 is ir:0, 00001 is co:0, 10001 is di:0.
Types: int16, uint16, int32, uint32, int64, uint64, float32, float64 (or i16, u16, i32, u32, i64, u64, f32, f64),
bool for coils, discrete inputs and register bits. Orders, for values over several bytes (the letters are the
bytes of the value from most to least significant, in the order the registers carry them): abcd (big-endian,
high word first; the Modbus convention), cdab (word swapped: low word first, as many PLCs store 32-bit values),
badc (bytes swapped within each register), dcba (little-endian). A 64-bit value follows the same rule per word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

from agent.config.base import Model, Slug

REGISTER_TABLES = ("hr", "ir")
BIT_TABLES = ("co", "di")
TABLE_NAMES = {"hr": "holding register", "ir": "input register", "co": "coil", "di": "discrete input"}
# type name -> (struct format character, registers)
TYPES: dict[str, tuple[str, int]] = {
    "int16": ("h", 1), "uint16": ("H", 1), "int32": ("i", 2), "uint32": ("I", 2),
    "int64": ("q", 4), "uint64": ("Q", 4), "float32": ("f", 2), "float64": ("d", 4),
}
SHORT_TYPES = {"i16": "int16", "u16": "uint16", "i32": "int32", "u32": "uint32",
               "i64": "int64", "u64": "uint64", "f32": "float32", "f64": "float64"}
# order name -> (byte order within a register, word order across registers)
ORDERS: dict[str, tuple[str, str]] = {
    "abcd": ("big", "big"), "cdab": ("big", "little"), "badc": ("little", "big"), "dcba": ("little", "little"),
}
ORDER_NAMES = {value: key for key, value in ORDERS.items()}
MAX_OFFSET = 65535
EXAMPLES = "e.g. hr:100, hr:100:u32, ir:0:f32:cdab, hr:7.3, co:5, di:3 or 2/hr:100:u16"

Order = Literal["big", "little"]


class ModbusSourceConfig(Model):
    """One Modbus TCP connection (a device, or a gateway to several units)."""

    id: Slug
    host: str = Field(description="the device's (or gateway's) host name or IP address")
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    unit_id: Annotated[int, Field(ge=0, le=255, description="unit (slave) id of addresses without a 'unit/' "
                                                           "prefix; 1 unless the device says otherwise")] = 1
    timeout_s: Annotated[float, Field(gt=0, description="how long to wait for each answer")] = 2.0
    poll_ms: Annotated[int, Field(ge=50, description="read period of tags without their own poll_ms")] = 500
    retries: Annotated[int, Field(ge=0, le=10, description="resends of a request that timed out, before its "
                                                           "tags are read as Bad")] = 1
    max_registers_per_read: Annotated[int, Field(ge=1, le=125, description="registers in one read request "
                                                                           "(125 is the protocol's maximum)")] = 125
    max_bits_per_read: Annotated[int, Field(ge=1, le=2000, description="coils or discrete inputs in one read "
                                                                       "(2000 is the protocol's maximum)")] = 2000
    max_gap: Annotated[int, Field(ge=0, le=124, description="registers that are not configured may be read "
                                                            "to merge two reads across a gap this wide "
                                                            "(bits: 16 times as many)")] = 8
    byte_order: Order = Field(default="big", description="byte order inside a register, for addresses "
                                                         "without an order")
    word_order: Order = Field(default="big", description="order of the registers of a 32/64-bit value, for "
                                                         "addresses without an order: big = high word first")


@dataclass(frozen=True)
class ModbusAddress:
    """A parsed address: where the value is and how its registers are decoded."""

    table: str  # hr, ir, co, di
    offset: int
    type: str = "uint16"  # a key of TYPES, or "bool"
    bit: int | None = None  # a bit of a register (type bool)
    unit: int | None = None  # None: the source's unit_id
    order: str | None = None  # a key of ORDERS; None: the source's byte_order and word_order

    @property
    def count(self) -> int:
        """Registers (or bits) this value occupies."""
        return TYPES[self.type][1] if self.type in TYPES else 1

    @property
    def is_bits(self) -> bool:
        return self.table in BIT_TABLES

    def __str__(self) -> str:
        text = f"{self.unit}/" if self.unit is not None else ""
        text += f"{self.table}:{self.offset}"
        if self.bit is not None:
            return text + f".{self.bit}"
        if self.table in REGISTER_TABLES:
            text += f":{self.type}"
        return text + (f":{self.order}" if self.order else "")


_ADDRESS = re.compile(r"^(?:(?P<unit>\d+)/)?(?P<table>[a-z]+):(?P<offset>\d+)(?:\.(?P<bit>\d+))?"
                      r"(?::(?P<type>[a-z0-9]+))?(?::(?P<order>[a-z]+))?$")


def parse_address(text: str) -> ModbusAddress:
    """The parsed address; raises ValueError saying what is expected, with examples."""
    spec = text.strip().lower() if isinstance(text, str) else ""
    m = _ADDRESS.match(spec)
    if not m:
        raise ValueError(f"a Modbus address [unit/]table:offset[.bit][:type][:order], {EXAMPLES}")
    table = m["table"]
    if table not in TABLE_NAMES:
        raise ValueError(f"a Modbus table hr (holding registers), ir (input registers), co (coils) or "
                         f"di (discrete inputs) before the ':', not {table!r} ({EXAMPLES})")
    unit = int(m["unit"]) if m["unit"] is not None else None
    if unit is not None and unit > 255:
        raise ValueError(f"a unit id from 0 to 255 before the '/', not {unit} (e.g. 2/hr:100)")
    offset = int(m["offset"])
    if offset > MAX_OFFSET:
        raise ValueError(f"an offset from 0 to {MAX_OFFSET} (0-based: register 40001 of a manual is hr:0), "
                         f"not {offset}")
    type_name = SHORT_TYPES.get(m["type"] or "", m["type"] or "")
    order = m["order"]
    if order is not None and order not in ORDERS:
        raise ValueError(f"a byte order abcd, cdab, badc or dcba after the type, not {order!r} "
                         f"(e.g. ir:0:f32:cdab)")
    if table in BIT_TABLES:
        if m["bit"] is not None:
            raise ValueError(f"no bit number on a {TABLE_NAMES[table]}: it is a bit already (e.g. {table}:5)")
        if type_name not in ("", "bool") or order is not None:
            raise ValueError(f"a {TABLE_NAMES[table]} is a bool: {table}:{offset} (or {table}:{offset}:bool), "
                             f"not {text.strip()!r}")
        return ModbusAddress(table, offset, "bool", unit=unit)
    if m["bit"] is not None:
        bit = int(m["bit"])
        if bit > 15:
            raise ValueError(f"a bit from 0 to 15 of the register (e.g. {table}:{offset}.3), not {bit}")
        if type_name not in ("", "bool") or order is not None:
            raise ValueError(f"a register bit is a bool: {table}:{offset}.{bit}, not {text.strip()!r}")
        return ModbusAddress(table, offset, "bool", bit=bit, unit=unit)
    type_name = type_name or "uint16"
    if type_name not in TYPES:
        raise ValueError(f"a type int16, uint16, int32, uint32, int64, uint64, float32 or float64 "
                         f"(or i16, u16, i32, u32, i64, u64, f32, f64) for a {TABLE_NAMES[table]}, "
                         f"not {m['type']!r} (e.g. {table}:{offset}:u32)")
    address = ModbusAddress(table, offset, type_name, unit=unit, order=order)
    if offset + address.count - 1 > MAX_OFFSET:
        raise ValueError(f"a {type_name} needs {address.count} registers from {offset}, past the last "
                         f"register {MAX_OFFSET}")
    return address
