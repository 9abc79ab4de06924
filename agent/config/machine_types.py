"""Machine types and state maps: the tags a kind of machine has, what signal each gives, and how its state value
becomes a board state."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from agent.config.base import Issue, Model
from agent.core.plan import TagPlan
from agent.core.states import BitRule, BoardState, StateMapper


class Deadband(Model):
    kind: Literal["absolute", "percent"]
    value: Annotated[float, Field(ge=0)]


class TagSpec(Model):
    node: str = Field(description="node id suffix appended to the machine's node_prefix")
    signal: Literal["state", "state_bit", "count", "process_value", "alarm", "product"]
    bit: str | None = Field(default=None, description="bit name a state_bit tag feeds to the bits state map")
    name: str | None = Field(default=None, description="process value name (signal process_value)")
    counter: Literal["total", "good", "reject"] | None = None
    rollover: Annotated[int, Field(gt=1)] | None = Field(
        default=None, description="the counter wraps to 0 on reaching this value"
    )
    unit: str | None = None
    sampling_ms: Annotated[float, Field(ge=0)] = 100
    queue_size: Annotated[int, Field(ge=1)] = 10
    deadband: Deadband | None = None
    poll_ms: Annotated[int, Field(ge=50)] | None = Field(
        default=None, description="read this tag by polling at this period instead of subscribing"
    )
    codes: dict[int, Annotated[str, Field(min_length=1)]] | None = Field(
        default=None, description="signal product: the SKU each product code of the PLC stands for"
    )
    scale: float = Field(default=1.0, description="signal process_value: the value stored is raw * scale + offset")
    offset: float = 0.0

    def plan(self) -> TagPlan:
        return TagPlan(self.node, self.signal, self.bit, self.name, self.counter, self.rollover, self.poll_ms,
                       self.sampling_ms, self.queue_size,
                       (self.deadband.kind, self.deadband.value) if self.deadband else None,
                       dict(self.codes) if self.codes is not None else None, self.scale, self.offset)

    @model_validator(mode="after")
    def _signal_fields(self) -> TagSpec:
        if self.signal == "count" and self.counter is None:
            raise ValueError("a count tag needs counter: total, good or reject")
        if self.signal == "process_value" and not self.name:
            raise ValueError("a process_value tag needs a name")
        return self


class BitRuleSpec(Model):
    bit: str
    value: bool = True
    state: BoardState


class StateMapSpec(Model):
    kind: Literal["code", "packml", "bits"]
    codes: dict[int, BoardState] = {}
    names: dict[str, BoardState] = {}
    rules: list[BitRuleSpec] = []
    default: BoardState | None = None

    def mapper(self) -> StateMapper:
        if self.kind == "code":
            return StateMapper.for_codes(self.codes, self.default)
        if self.kind == "packml":
            return StateMapper.for_packml(self.names)
        return StateMapper.for_bits(
            [BitRule(r.bit, r.value, r.state) for r in self.rules], self.default or BoardState.STOPPED
        )


class MachineType(Model):
    description: str = ""
    state_map: str = Field(description="a key of state_maps")
    tags: list[TagSpec]
    alarm_texts: dict[int, str] = {}


def check_machine_types(machine_types: dict[str, MachineType], state_maps: dict[str, StateMapSpec],
                        product_skus: set[str]) -> list[Issue]:
    """Each machine type names a state map, has the state tags its state map needs, at most one count tag per
    counter, one product tag and one alarm tag, and its product codes name SKUs of this config."""
    out: list[Issue] = []
    for name, mtype in machine_types.items():
        if mtype.state_map not in state_maps:
            out.append((("machine_types", name, "state_map"), mtype.state_map,
                        "one of the state_maps: " + ", ".join(sorted(state_maps))))
        counters = [t.counter for t in mtype.tags if t.signal == "count"]
        for counter in sorted({c for c in counters if counters.count(c) > 1}, key=str):
            out.append((("machine_types", name, "tags"), f"{counters.count(counter)} tags with counter {counter}",
                        "at most one count tag per counter (total, good, reject)"))
        if sum(1 for t in mtype.tags if t.signal == "product") > 1:
            out.append((("machine_types", name, "tags"), "several product tags", "at most one tag with signal: product"))
        for ti, tag in enumerate(mtype.tags):
            if tag.codes is not None and tag.signal != "product":
                out.append((("machine_types", name, "tags", ti, "codes"), tag.codes,
                            "nothing: codes is for a tag with signal: product"))
            for code, sku in (tag.codes or {}).items() if tag.signal == "product" else ():
                if sku not in product_skus:
                    out.append((("machine_types", name, "tags", ti, "codes", code), sku,
                                "a SKU of products: " + (", ".join(sorted(product_skus)) or "(none defined)")))
        if sum(1 for t in mtype.tags if t.signal == "alarm") > 1:
            out.append((("machine_types", name, "tags"), "several alarm tags", "at most one tag with signal: alarm"))
        out += _check_state_tags(name, mtype, state_maps.get(mtype.state_map))
    return out


def _check_state_tags(name: str, mtype: MachineType, state_map: StateMapSpec | None) -> list[Issue]:
    """A bits state map takes state_bit tags, one per bit of its rules; any other takes exactly one state tag."""
    out: list[Issue] = []
    n_state = sum(1 for t in mtype.tags if t.signal == "state")
    n_bits = sum(1 for t in mtype.tags if t.signal == "state_bit")
    if state_map is not None and state_map.kind == "bits":
        if n_state or not n_bits:
            out.append((("machine_types", name, "tags"), f"{n_state} state and {n_bits} state_bit tags",
                        "state_bit tags (one per bit of the bits state map) and no state tag"))
        for ti, tag in enumerate(mtype.tags):
            if tag.signal == "state_bit" and (tag.bit or tag.node) not in {r.bit for r in state_map.rules}:
                out.append((("machine_types", name, "tags", ti, "bit"), tag.bit or tag.node,
                            "a bit named in the rules of state map " + mtype.state_map))
    elif n_state != 1 or n_bits:
        out.append((("machine_types", name, "tags"), f"{n_state} state and {n_bits} state_bit tags",
                    "exactly one tag with signal: state (state_bit tags go with a bits state map)"))
    return out
