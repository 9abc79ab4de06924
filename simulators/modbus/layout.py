"""A Modbus register layout for a machine type: the addresses a simple PLC program would give its tags.

Used to build Modbus versions of the OPC UA machine types of a config (tests, benchmarks, the demo), so that
one plant can be read over either protocol. Per machine (one unit id each, behind one gateway, or one device):

    hr:0            state code (uint16)
    hr:1            alarm code (uint16)
    hr:2            product code (uint16)
    hr:10, 12, 14   counters total, good, reject (uint32, two registers each, high word first)
    ir:0, 2, 4, ... process values in the order the machine type lists them (float32)
    co:0, 1, ...    state bits, in the order the machine type lists them

The tags keep everything else (counter, rollover, name, unit, deadband, poll_ms, codes); only `node` becomes the
address. A machine then sets `node_prefix: "<unit>/"`.
"""

from __future__ import annotations

from typing import Any

HOLDING = {"state": "hr:0", "alarm": "hr:1", "product": "hr:2"}
COUNTERS = {"total": "hr:10:uint32", "good": "hr:12:uint32", "reject": "hr:14:uint32"}


def modbus_tags(tags: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The machine type's tags (as in the YAML) with Modbus addresses as their nodes, in the layout above."""
    out: list[dict[str, Any]] = []
    process_values = bits = 0
    for tag in tags:
        signal = tag["signal"]
        if signal in HOLDING:
            node = HOLDING[signal]
        elif signal == "count":
            node = COUNTERS[tag["counter"]]
        elif signal == "process_value":
            node = f"ir:{2 * process_values}:float32"
            process_values += 1
        elif signal == "state_bit":
            node = f"co:{bits}"
            bits += 1
        else:
            raise ValueError(f"no Modbus layout for signal {signal!r}")
        out.append({**tag, "node": node})
    return out


def read_over_modbus(data: dict[str, Any], source: dict[str, Any], units: dict[str, int]) -> dict[str, Any]:
    """Change a config (as loaded from YAML, changed in place and returned): the machines named in `units` are
    read through the Modbus source `source` (added to sources.modbus, in place of one with its id), each on its
    unit id, with a Modbus version of its machine type (`<type>-modbus`, the layout above)."""
    sources = data.setdefault("sources", {}).setdefault("modbus", [])
    sources[:] = [s for s in sources if s["id"] != source["id"]] + [source]  # replaces a source of that id
    types = data["machine_types"]
    for line in data["lines"]:
        for machine in line["machines"]:
            if machine["id"] not in units:
                continue
            name = f"{machine['type']}-modbus"
            if name not in types:
                types[name] = {**types[machine["type"]], "tags": modbus_tags(types[machine["type"]]["tags"])}
            machine.update(type=name, source=source["id"], node_prefix=f"{units[machine['id']]}/")
            machine.pop("node_ids", None)
    return data
