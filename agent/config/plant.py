"""The plant: lines, their stations, and the machines on them with the source and addresses each is read from."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from agent.config.addresses import ADDRESS_PARSERS
from agent.config.base import Issue, Model, Slug, unique
from agent.config.machine_types import MachineType, TagSpec


class Station(Model):
    id: Slug
    name: str = ""
    skill: str | None = Field(default=None, description="skill an operator needs to work here")
    planned_headcount: Annotated[int, Field(ge=0)] = 1


class Machine(Model):
    id: Slug
    name: str = ""
    type: str = Field(description="a key of machine_types")
    source: str = Field(description="id of the OPC UA, Modbus or S7 source that reads this machine")
    node_prefix: str | None = Field(
        default=None, description="prepended to each tag's node of the machine type, e.g. nsu=...;s=L1.M1.; "
                                  "not needed when node_ids names every tag")
    node_ids: dict[str, str] = Field(
        default={}, description="the full NodeId of a tag of this machine, by the tag's node in the machine type "
                                "(e.g. StateCode: ns=3;i=1042); such a tag does not use node_prefix")
    station: str | None = None

    def node_id(self, tag: TagSpec) -> str:
        """The NodeId this machine reads `tag` from (the config check ensures there is one)."""
        return self.node_ids.get(tag.node) or (self.node_prefix or "") + tag.node


class Line(Model):
    id: Slug
    name: str
    stations: list[Station] = []
    machines: list[Machine]


def check_line_ids(lines: list[Line]) -> list[Issue]:
    """Line ids are unique."""
    return unique([ln.id for ln in lines], ("lines",), "id", "line id")


def check_lines(lines: list[Line], machine_types: dict[str, MachineType], tag_kinds: dict[str, str]) -> list[Issue]:
    """Station ids are unique per line and machine ids per site; a machine names a machine type, a source that
    reads tags (`tag_kinds`: source id -> kind), a station of its line, and addresses its source can read."""
    out: list[Issue] = []
    for li, line in enumerate(lines):
        out += unique([s.id for s in line.stations], ("lines", li, "stations"), "id", "station id on this line")
    seen_machine: set[str] = set()
    for li, line in enumerate(lines):
        station_ids = {s.id for s in line.stations}
        for mi, machine in enumerate(line.machines):
            loc = ("lines", li, "machines", mi)
            if machine.id in seen_machine:
                out.append((loc + ("id",), machine.id, "a machine id not used before (ids are unique per site)"))
            seen_machine.add(machine.id)
            if machine.type not in machine_types:
                out.append((loc + ("type",), machine.type,
                            "one of the machine_types: " + ", ".join(sorted(machine_types))))
            if machine.source not in tag_kinds:
                out.append((loc + ("source",), machine.source,
                            "the id of an OPC UA, Modbus or S7 source: "
                            + (", ".join(sorted(tag_kinds)) or "(none defined)")))
            if machine.station is not None and machine.station not in station_ids:
                out.append((loc + ("station",), machine.station,
                            f"a station of line {line.id}: " + ", ".join(sorted(station_ids))))
            if machine.type in machine_types:
                out += _check_node_ids(machine, machine_types[machine.type], loc,
                                       tag_kinds.get(machine.source, "opcua"))
    return out


def _check_node_ids(machine: Machine, mtype: MachineType, loc: tuple[Any, ...], kind: str) -> list[Issue]:
    """Every tag of the machine has an address its source can read: from node_ids, or node_prefix + the tag's
    node, in the syntax of the source's kind (an OPC UA NodeId, a Modbus or an S7 address)."""
    out: list[Issue] = []
    parse = ADDRESS_PARSERS[kind]
    nodes = list(dict.fromkeys(t.node for t in mtype.tags))
    for node, address in machine.node_ids.items():
        if node not in nodes:
            out.append((loc + ("node_ids", node), node, f"the node of a tag of machine type {machine.type}: "
                        + ", ".join(nodes)))
            continue
        try:
            parse(address)
        except ValueError as exc:
            out.append((loc + ("node_ids", node), address, str(exc)))
    prefixed = [node for node in nodes if node not in machine.node_ids]
    if prefixed and machine.node_prefix is None and kind == "opcua":
        out.append((loc + ("node_prefix",), "nothing (key missing)",
                    "a prefix for the tags' nodes (e.g. nsu=urn:vendor:plc;s=line-1.press-1.), or a full NodeId "
                    "in node_ids for " + ", ".join(prefixed)))
        return out
    prefix = machine.node_prefix or ""
    for node in prefixed:
        try:
            parse(f"{prefix}{node}")
        except ValueError as exc:
            where = "node_prefix" if machine.node_prefix is not None else "type"
            out.append((loc + (where,), machine.node_prefix if machine.node_prefix is not None else machine.type,
                        f"{exc}, once a tag's node is appended (here {prefix}{node})"))
            break
    return out
