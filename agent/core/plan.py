"""What the mapper needs to know of a factory, as plain data.

The config (agent/config/) checks a YAML file and compiles it into a `MappingPlan`; the core never sees the
config's models, so it can be tested, benchmarked and reused with a plan built by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.core.states import StateMapper


@dataclass(frozen=True)
class TagPlan:
    """One tag of a machine type."""

    node: str  # the tag's node in its machine type; its address is the machine's prefix + node
    signal: str  # state, state_bit, count, process_value, alarm, product
    bit: str | None = None
    name: str | None = None
    counter: str | None = None  # total, good, reject
    rollover: int | None = None
    poll_ms: int | None = None
    sampling_ms: float = 100.0
    queue_size: int = 10
    deadband: tuple[str, float] | None = None
    codes: dict[int, str] | None = None
    scale: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class TagBinding:
    """One PLC tag of one machine, as its source reads it."""

    source: str
    node_id: str  # the tag's address on its source (an OPC UA NodeId, a Modbus or an S7 address)
    line: str
    machine: str
    spec: TagPlan
    mapper: StateMapper
    alarm_texts: dict[int, str]
    pv_tags: dict[str, str]  # the tags of this tag's process_value points, shared by all of them


@dataclass(frozen=True)
class RoutePlan:
    """An MQTT route: which topics it takes and where a point's tags, fields and time are in the payload."""

    pattern: str
    signal: str
    tags: dict[str, str] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    time: str | None = "$.ts"


@dataclass(frozen=True)
class MappingPlan:
    site: str
    stations: dict[str, frozenset[str]]  # per line id, its station ids
    machines: dict[str, tuple[str, str]]  # per machine id, (line id, source id)
    materials: frozenset[str]
    skus: frozenset[str]
    badges: dict[str, str]  # badge -> operator id
    routes: dict[str, list[RoutePlan]]  # per MQTT source id
    max_payload: dict[str, int]  # per MQTT source id
    bindings: list[TagBinding]
    microstop_s: float = 0.0
