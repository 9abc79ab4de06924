"""Where the S7 simulator shows each machine tag, and the DB layout it suggests for a machine type (pure).

The simulator serves every tag at the address the config gives it (the machine's `node_ids[node]`, else
`node_prefix` + the tag's `node`), the same address the agent reads; the config is the memory map. For machines
that have no S7 addresses yet, `suggest_layout` lays a machine type out in one DB the way a PLC programmer would
declare it (a standard-access DB, in the order of the type's tags):

    state          INT (a code state map) or STRING[24] (a PackML name)
    state_bit      BOOL, packed eight to a byte in tag order
    count          UDINT (a PLC counter wraps at 2^32 unless the tag's `rollover` says otherwise)
    alarm          INT
    product        INT (a tag with `codes`) or STRING[24] (the SKU)
    process_value  REAL

Words, double words and strings start at even bytes, as in a standard DB. `shopfloor simulate s7
--print-layout` prints the suggestion as `node_ids` for every machine of the source (DB 1 for the first, DB 2
for the next...), ready to paste into the config.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from agent.config import FactoryConfig, MachineType
from agent.sources.s7.model import S7Address
from agent.sources.s7.values import FORMATS

STRING_LENGTH = 24
INTEGER_TYPES = {"BYTE": (8, False), "SINT": (8, True), "INT": (16, True), "UINT": (16, False),
                 "WORD": (16, False), "DINT": (32, True), "UDINT": (32, False), "DWORD": (32, False)}


def suggest_layout(mtype: MachineType, state_kind: str, db: int) -> dict[str, str]:
    """node -> S7 address of every tag of a machine type, laid out in DB `db`."""
    out: dict[str, str] = {}
    offset = 0
    bit: int | None = None  # the next free bit of the current BOOL byte, if one is open
    for tag in mtype.tags:
        if tag.signal == "state" and state_kind == "bits":
            continue  # a bits state map is read from the state_bit tags
        if tag.signal == "state_bit":
            if bit is None or bit == 8:
                offset, bit = offset + (1 if bit == 8 else 0), 0
            out[tag.node] = f"DB{db}.DBX{offset}.{bit}"
            bit += 1
            continue
        if bit is not None:
            offset, bit = offset + 1, None
        offset += offset % 2
        text = (tag.signal == "state" and state_kind == "packml") or (tag.signal == "product" and not tag.codes)
        if text:
            out[tag.node] = f"DB{db}.DBB{offset}:STRING[{STRING_LENGTH}]"
            offset += STRING_LENGTH + 2
        elif tag.signal in ("state", "alarm", "product"):
            out[tag.node] = f"DB{db}.DBW{offset}"
            offset += 2
        elif tag.signal == "count":
            out[tag.node] = f"DB{db}.DBD{offset}:UDINT"
            offset += 4
        else:
            out[tag.node] = f"DB{db}.DBD{offset}:REAL"
            offset += 4
    return out


def print_layout(cfg: FactoryConfig, source: str | None, first_db: int = 1) -> str:
    """YAML `node_ids` blocks, one DB each: for every machine of `source`, or (a source without machines yet)
    for every machine type of the config."""
    machines = [(f"{line.id}.{machine.id} (type {machine.type})", machine.type) for line, machine in cfg.machines()
                if source is not None and machine.source == source]
    if machines:
        lines = [f"# S7 layout for the machines of source {source}: paste each node_ids into its machine"]
    else:
        machines = [(f"a machine of type {name}", name) for name in cfg.machine_types]
        lines = ["# S7 layout for one machine of each type (give each machine a DB of its own)"]
    for k, (title, type_name) in enumerate(machines):
        mtype = cfg.machine_types[type_name]
        layout = suggest_layout(mtype, cfg.state_maps[mtype.state_map].kind, first_db + k)
        lines.append(f"# {title}")
        lines.append("node_ids: {" + ", ".join(f'{node}: "{address}"' for node, address in layout.items()) + "}")
    return "\n".join(lines) + "\n"


def area_sizes(addresses: Iterable[S7Address]) -> dict[tuple[str, int], int]:
    """The bytes each area (a DB, M, I, Q) needs to hold the addresses, rounded up to even."""
    sizes: dict[tuple[str, int], int] = {}
    for address in addresses:
        key = (address.area, address.db)
        end = address.start + address.size
        sizes[key] = max(sizes.get(key, 0), end + end % 2)
    return sizes


def encode(address: S7Address, value: bool | int | float | str, into: bytearray) -> None:
    """Write a raw tag value at its address, as the PLC holds it: integers wrap at the type's width, text is
    cut to the STRING's declared length. ValueError when the address type cannot show the value at all."""
    if address.type == "BOOL":
        if isinstance(value, str):
            raise ValueError(f"{address} (BOOL) cannot show the text {value!r}")
        mask = 1 << address.bit
        into[address.start] = into[address.start] | mask if value else into[address.start] & ~mask
        return
    if address.type == "STRING":
        if not isinstance(value, str):
            raise ValueError(f"{address} (STRING) shows text, not {value!r}")
        raw = value.encode("utf-8")[:address.length]
        into[address.start:address.start + address.size] = bytes([address.length, len(raw)]) + raw.ljust(
            address.length, b"\0")
        return
    if isinstance(value, str):
        raise ValueError(f"{address} ({address.type}) cannot show the text {value!r}: use a STRING address")
    if address.type == "REAL":
        struct.pack_into(">f", into, address.start, float(value))
        return
    bits, signed = INTEGER_TYPES[address.type]
    number = round(value) % (1 << bits)
    if signed and number >= 1 << (bits - 1):
        number -= 1 << bits
    struct.pack_into(FORMATS[address.type], into, address.start, number)


def undecodable(address: S7Address, signal: str, into: bytearray) -> bool:
    """Write a value the agent cannot use at this address, where its type has one: NaN in a REAL, bytes that are
    not UTF-8 in a STRING, -1 in a signed counter. False when there is none (a BOOL, an unsigned integer)."""
    if address.type == "REAL":
        struct.pack_into(">f", into, address.start, float("nan"))
    elif address.type == "STRING":
        bad = b"\xff\xfe"[:address.length]
        into[address.start:address.start + 2 + len(bad)] = bytes([address.length, len(bad)]) + bad
    elif signal == "count" and address.type in ("SINT", "INT", "DINT"):
        struct.pack_into(FORMATS[address.type], into, address.start, -1)
    else:
        return False
    return True

