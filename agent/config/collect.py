"""Plain tags to collect: under `collect:`, per source id, a list of tags with a name and an address, stored as
process values with no machine model (no line, machine type or state map needed).

A collected tag's points are `process_value` points tagged `site`, `line: _collect`, `machine: <source id>` and
`name: <the tag's name>`: `_collect` cannot be a line id (ids start with a letter or digit), so the boards and
KPIs, which ask for the lines of the config, never see them, and the same name on two sources is two series.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from agent.config.addresses import ADDRESS_NAMES, ADDRESS_PARSERS
from agent.config.base import Issue, Model, unique
from agent.config.machine_types import Deadband
from agent.core.plan import TagBinding, TagPlan
from agent.core.states import StateMapper

# The line tag of every collected point; not a valid line id, so no board or KPI reads it.
COLLECT_LINE = "_collect"
# OPC UA samples a collected tag at this period unless it says otherwise (a tag of a machine type samples at
# 100 ms: collection is about many tags, not fast ones).
DEFAULT_OPCUA_INTERVAL_MS = 1000


class CollectTag(Model):
    """One tag collected from a source as a process value."""

    name: Annotated[str, Field(min_length=1, max_length=200,
                               description="the series name (the `name` tag of its points), e.g. Boiler1.Temperature")]
    address: Annotated[str, Field(min_length=1, description="where the source reads it, in the source's syntax: "
                                                            "an OPC UA NodeId, a Modbus or an S7 address")]
    unit: str | None = Field(default=None, description="engineering unit, for people reading the config")
    interval_ms: Annotated[float, Field(ge=50)] | None = Field(
        default=None, description="OPC UA: the sampling interval (or the poll period with read: poll), default "
                                  "1000; Modbus and S7: the poll period, default the source's poll_ms")
    read: Literal["subscribe", "poll"] | None = Field(
        default=None, description="OPC UA: subscribe (default) or poll; Modbus and S7 always poll")
    deadband: Deadband | None = None
    scale: float = Field(default=1.0, description="the value stored is raw * scale + offset")
    offset: float = 0.0

    @field_validator("name")
    @classmethod
    def _storable_name(cls, value: str) -> str:
        if "\n" in value or "\r" in value or value.endswith("\\") or value != value.strip():
            raise ValueError("a name without line breaks, surrounding spaces or a trailing backslash")
        if any(c in value for c in "/+#\0"):
            # the name is one level of a live MQTT topic (docs/data-model.md, "Live MQTT topics")
            raise ValueError("a name without '/', '+' or '#' (it is one level of a live MQTT topic)")
        return value

    def plan(self, kind: str) -> TagPlan:
        """The tag as the mapper and its source read it: a process value named `name`."""
        interval = self.interval_ms
        if kind == "opcua":
            period = interval if interval is not None else DEFAULT_OPCUA_INTERVAL_MS
            poll_ms = round(period) if self.read == "poll" else None
            sampling_ms = float(period)
        else:
            poll_ms = round(interval) if interval is not None else None
            sampling_ms = 100.0
        return TagPlan(self.name, "process_value", name=self.name, poll_ms=poll_ms, sampling_ms=sampling_ms,
                       deadband=(self.deadband.kind, self.deadband.value) if self.deadband else None,
                       scale=self.scale, offset=self.offset)


# per source id, the tags collected from it
Collect = dict[str, list[CollectTag]]


def collect_bindings(site: str, collect: Collect, tag_kinds: dict[str, str]) -> list[TagBinding]:
    """The bindings of every collected tag (`tag_kinds`: source id -> kind), in config order; each is read by
    its source like a machine's process value, with no machine (an empty `machine`)."""
    no_states = StateMapper.for_codes({})
    out = []
    for source_id, tags in collect.items():
        kind = tag_kinds[source_id]
        for tag in tags:
            pv_tags = {"site": site, "line": COLLECT_LINE, "machine": source_id, "name": tag.name}
            out.append(TagBinding(source_id, tag.address, "", "", tag.plan(kind), no_states, {}, pv_tags))
    return out


def check_collect(collect: Collect, tag_kinds: dict[str, str]) -> list[Issue]:
    """Each key of `collect` is a source that reads tags; a tag's name is unique on its source; its address
    is in its source's syntax; `read: subscribe` is for OPC UA only."""
    out: list[Issue] = []
    for source_id, tags in collect.items():
        loc = ("collect", source_id)
        kind = tag_kinds.get(source_id)
        if kind is None:
            out.append((loc, source_id, "the id of an OPC UA, Modbus or S7 source: "
                        + (", ".join(sorted(tag_kinds)) or "(none defined)")))
            continue
        out += unique([t.name for t in tags], loc, "name", "tag name on this source")
        parse = ADDRESS_PARSERS[kind]
        for ti, tag in enumerate(tags):
            try:
                parse(tag.address)
            except ValueError as exc:
                out.append((loc + (ti, "address"), tag.address, f"{exc} ({ADDRESS_NAMES[kind]} of {kind} source "
                                                                 f"{source_id})"))
            if kind != "opcua" and tag.read == "subscribe":
                out.append((loc + (ti, "read"), tag.read, f"poll or nothing ({kind} sources are polled)"))
    return out
