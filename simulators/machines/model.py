"""The machines of one source of the simulated plant, as the raw tags their machine types declare.

Protocol-neutral: an OPC UA, Modbus TCP or S7 simulator builds a `MachineTags` for its source, advances it with
its clock and shows each tag's current raw value in its own protocol. The plant (simulators/plant/) decides what
each machine does; this model turns every machine snapshot into raw values:

- state: the code, PackML name or bits (one bool per `state_bit` tag) the state map gives for the board state;
- count: the counter modulo its rollover (2^32 when none is configured);
- process_value: the machine's speed (units per minute) for a speed tag, else a bounded random walk near a
  nominal value that drifts up while the machine is in FAULT;
- alarm: the alarm code (0 = none); product: the SKU as text, or its code when the tag maps codes to SKUs;
- truth (beside the raw tags, `Truth.Total`, `Truth.Good`, `Truth.Reject`, `Truth.State`): the unwrapped counts
  and the board state the raw state really maps to (NO_SHIFT as such).

Every change comes in a `TagBatch` stamped with the simulated time it happened at, in time order.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agent.config import FactoryConfig, TagSpec
from agent.core.states import BoardState
from simulators.machines.codec import RawStateCodec
from simulators.plant import DEFAULT_CYCLE_S, US, MachineSnapshot, Plant, PlantMachine

log = logging.getLogger(__name__)

COUNTER_WRAP = 2**32

TagType = Literal["bool", "int32", "uint32", "uint64", "double", "string"]
RawValue = bool | int | float | str
TRUTH_TAGS = ("Truth.Total", "Truth.Good", "Truth.Reject", "Truth.State")
_ZERO: dict[str, RawValue] = {"bool": False, "int32": 0, "uint32": 0, "uint64": 0, "double": 0.0, "string": ""}
_SHOW_RANK = {"state": 0, "state_bit": 0, "count": 1, "process_value": 2, "alarm": 3, "product": 4, "truth": 5}


@dataclass(frozen=True)
class Tag:
    """One raw tag of a machine: its name within the machine, its type, and what it shows.

    `name` is the config tag's `node` (for a truth tag, `Truth.<Counter>`); `signal` is the config tag's signal,
    or "truth"; `spec` is the config tag (None for truth tags), for a protocol's own addressing fields;
    `eu_range` is the engineering range of a process value (what a percent deadband is taken of).
    """

    name: str
    type: TagType
    signal: str
    spec: TagSpec | None = None
    eu_range: tuple[float, float] | None = None

    @property
    def truth(self) -> bool:
        """Whether this is ground truth shown beside the raw tags (not something a real PLC has)."""
        return self.signal == "truth"


@dataclass
class ProcessValue:
    """A bounded random walk near a nominal value (temperature, pressure, load...)."""

    nominal: float
    low: float
    high: float
    value: float
    fault_rise: float

    def step(self, rng: random.Random, dt: float, fault: bool) -> float:
        target = self.nominal + (self.fault_rise if fault else 0.0)
        span = self.high - self.low
        pull = min(1.0, dt / 120.0)  # settles towards the target over a couple of simulated minutes
        noise = rng.gauss(0.0, 0.002 * span * math.sqrt(dt))
        self.value = min(self.high, max(self.low, self.value + (target - self.value) * pull + noise))
        return round(self.value, 3)


def _process_value_for(tag: TagSpec, rng: random.Random) -> ProcessValue:
    unit = (tag.unit or "").lower()
    low, high, nominal = {"degc": (0.0, 150.0, 60.0), "bar": (0.0, 16.0, 6.0), "%": (0.0, 100.0, 45.0)}.get(
        unit, (0.0, 100.0, 50.0)
    )
    nominal *= rng.uniform(0.9, 1.1)  # machines of one type are not identical
    return ProcessValue(nominal, low, high, nominal, fault_rise=0.06 * (high - low))


def is_speed(tag: TagSpec) -> bool:
    """Whether a process value tag is the machine's speed (shown from the plant, not a random walk)."""
    return tag.node.lower() == "speed" or (tag.name or "").lower() == "speed" or "/min" in (tag.unit or "")


@dataclass
class Machine:
    """One simulated machine: its tags in declaration order (raw tags, then truth) and their current values."""

    line_id: str
    machine_id: str
    codec: RawStateCodec
    tags: dict[str, Tag] = field(default_factory=dict)
    values: dict[str, RawValue] = field(default_factory=dict)
    last: MachineSnapshot | None = None  # the last snapshot shown
    _pv_rng: random.Random = field(default_factory=random.Random, repr=False)
    _process_values: dict[str, ProcessValue] = field(default_factory=dict, repr=False)
    _shown: list[Tag] = field(default_factory=list, repr=False)  # the tags a snapshot sets, in writing order

    @property
    def key(self) -> str:
        """`<line>.<machine>`, the usual prefix of its tags' addresses."""
        return f"{self.line_id}.{self.machine_id}"


@dataclass(frozen=True)
class TagChange:
    machine: Machine
    tag: Tag
    value: RawValue


@dataclass(frozen=True)
class TagBatch:
    """Tag changes that happened at one simulated time (epoch microseconds)."""

    at_us: int
    changes: list[TagChange]


class MachineTags:
    """The machines of one source of a config's plant and the raw values of their tags as the plant runs.

    The plant starts at `origin_us` (the demo's shared clock start, so that every simulator of a demo runs the same
    world) and is brought up to `now_us`. Call `start(now)` once, then `advance(now)` as the clock moves; both
    return the changes in time order, and `Machine.values` always holds the current raw values (what a polling
    server answers with).
    """

    def __init__(self, cfg: FactoryConfig, source: str | None, *, seed: int = 1, origin_us: int, now_us: int) -> None:
        self.cfg = cfg
        self.source = source
        self.seed = seed
        self.plant = Plant(cfg, seed, min(origin_us, now_us))
        self.plant.advance(now_us)
        self.now_us = now_us
        self.machines: list[Machine] = []
        self._by_id: dict[tuple[str, str], Machine] = {}
        for line, machine in cfg.machines():
            if source is None or machine.source != source:
                continue
            mtype = cfg.machine_types[machine.type]
            spec = cfg.state_maps[mtype.state_map]
            cycles = [p.ideal_cycle_s[line.id] for p in cfg.products if line.id in p.ideal_cycle_s]
            pv_rng = random.Random(f"{seed}:{line.id}:{machine.id}:pv")
            sim = Machine(line.id, machine.id, RawStateCodec(spec, spec.mapper()), _pv_rng=pv_rng)
            sim._process_values = {tag.node: _process_value_for(tag, pv_rng) for tag in mtype.tags
                                   if tag.signal == "process_value" and not is_speed(tag)}
            fastest_cycle_s = min(cycles, default=DEFAULT_CYCLE_S)
            for tag in mtype.tags:
                self._add_tag(sim, tag, fastest_cycle_s)
            for name in TRUTH_TAGS:
                string = name == "Truth.State"
                sim.tags[name] = Tag(name, "string" if string else "uint64", "truth")
                sim.values[name] = "" if string else 0
            # state first, then counters, speed, alarm, product and truth: the order a PLC updates them in
            sim._shown = sorted((t for t in sim.tags.values() if t.name not in sim._process_values),
                                key=lambda t: _SHOW_RANK[t.signal])
            self.machines.append(sim)
            self._by_id[(line.id, machine.id)] = sim

    @staticmethod
    def _add_tag(sim: Machine, tag: TagSpec, fastest_cycle_s: float) -> None:
        if tag.signal == "state":
            if sim.codec.kind == "bits":
                return  # a bits state map is read from state_bit tags (the config allows no state tag with it)
            kind: TagType = "string" if sim.codec.kind == "packml" else "int32"
            sim.tags[tag.node] = Tag(tag.node, kind, tag.signal, tag)
        elif tag.signal == "state_bit":
            sim.tags[tag.node] = Tag(tag.node, "bool", tag.signal, tag)
        elif tag.signal == "count":
            sim.tags[tag.node] = Tag(tag.node, "uint32", tag.signal, tag)
        elif tag.signal == "alarm":
            sim.tags[tag.node] = Tag(tag.node, "int32", tag.signal, tag)
        elif tag.signal == "product":
            # the SKU being made, as text, or as a code where the tag maps codes to SKUs
            sim.tags[tag.node] = Tag(tag.node, "int32" if tag.codes else "string", tag.signal, tag)
        elif is_speed(tag):
            sim.tags[tag.node] = Tag(tag.node, "double", tag.signal, tag,
                                     (0.0, max(1.0, round(2 * 60.0 / fastest_cycle_s, 1))))
            sim.values[tag.node] = 0.0
        else:
            pv = sim._process_values[tag.node]
            sim.tags[tag.node] = Tag(tag.node, "double", tag.signal, tag, (pv.low, pv.high))
            sim.values[tag.node] = round(pv.value, 3)
        if tag.node not in sim.values:
            sim.values[tag.node] = _ZERO[sim.tags[tag.node].type]

    # -- reading

    def machine(self, line_id: str, machine_id: str) -> Machine:
        """A machine of this source (KeyError when it has none of that id)."""
        return self._by_id[(line_id, machine_id)]

    def plant_machine(self, line_id: str, machine_id: str) -> PlantMachine:
        """The plant's machine behind a simulated one (its counts are the ground truth)."""
        return self.plant.machines[(line_id, machine_id)]

    def truth_json(self) -> str:
        """The plant's full ground truth up to now as compact JSON (docs/kpi.md)."""
        return json.dumps(self.plant.truth.as_dict(), separators=(",", ":"), ensure_ascii=False)

    # -- running

    def start(self, now_us: int) -> list[TagBatch]:
        """Run the plant up to `now_us` and give every tag of every machine its current value (all as changes)."""
        self.now_us = max(self.now_us, now_us)
        self.plant.advance(self.now_us)
        snapshots = [self.plant.snapshot(m.line_id, m.machine_id) for m in self.machines]
        batches = self._show(snapshots, first=True)
        changes = [TagChange(m, m.tags[node], self._set(m, node, round(pv.value, 3)))
                   for m in self.machines for node, pv in m._process_values.items()]
        if changes:
            batches.append(TagBatch(self.now_us, changes))
        return batches

    def advance(self, now_us: int) -> list[TagBatch]:
        """Run the plant up to `now_us`: every change its machines went through, each at its own time, then the
        process values' step at `now_us`. Nothing when the clock has not moved on."""
        if now_us <= self.now_us:
            return []
        dt_s = (now_us - self.now_us) / US
        self.now_us = now_us
        snapshots, _messages = self.plant.advance(now_us)
        batches = self._show(snapshots)
        changes: list[TagChange] = []
        for m in self.machines:
            fault = m.last is not None and m.last.state == BoardState.FAULT
            for node, pv in m._process_values.items():
                value = pv.step(m._pv_rng, dt_s, fault)
                if m.values[node] != value:
                    changes.append(TagChange(m, m.tags[node], self._set(m, node, value)))
        if changes:
            batches.append(TagBatch(now_us, changes))
        return batches

    def force(self, line_id: str, machine_id: str, wanted: str) -> bool:
        """Pin a machine in a board state given by name (empty: release it); False when the name is not a board
        state (nothing changes). The forced state shows from the next `take_forced()` or `advance()` on."""
        name = f"{line_id}.{machine_id}"
        state = wanted.strip().upper()
        if not state:
            self.plant.force(line_id, machine_id, None)
            log.info("%s: force released", name)
        elif state in BoardState.__members__:
            self.plant.force(line_id, machine_id, BoardState(state))
            log.info("%s: forced to %s", name, state)
        else:
            log.warning("%s: Force %r is not a board state (%s); ignored", name, wanted,
                        ", ".join(BoardState.__members__))
            return False
        return True

    def take_forced(self) -> list[TagBatch]:
        """The changes that forcing (or releasing) machines made, at once."""
        return self._show(self.plant.take_snapshots())

    # -- internals

    @staticmethod
    def _set(m: Machine, node: str, value: RawValue) -> RawValue:
        m.values[node] = value
        return value

    def _show(self, snapshots: Sequence[MachineSnapshot], first: bool = False) -> list[TagBatch]:
        """The tag changes of machine snapshots, one batch per snapshot, in time order."""
        batches: list[TagBatch] = []
        for snap in sorted(snapshots, key=lambda x: x.at_us):
            m = self._by_id.get((snap.line, snap.machine))
            if m is None:
                continue
            m.last = snap
            changes: list[TagChange] = []
            shown, raw = m.codec.encode(snap.state)
            counts = {"total": snap.total, "good": snap.good, "reject": snap.reject}
            for tag in m._shown:
                spec = tag.spec
                value: RawValue
                if tag.signal == "state":
                    assert not isinstance(raw, dict)
                    value = raw
                elif tag.signal == "state_bit":
                    assert spec is not None and isinstance(raw, dict)
                    value = raw.get(spec.bit or spec.node, False)
                elif tag.signal == "count":
                    assert spec is not None and spec.counter is not None
                    value = counts[spec.counter] % (spec.rollover or COUNTER_WRAP)
                elif tag.signal == "alarm":
                    value = snap.alarm
                elif tag.signal == "product":
                    assert spec is not None
                    codes = {str(sku): int(code) for code, sku in (spec.codes or {}).items()}
                    value = codes.get(snap.sku, 0) if codes else snap.sku
                elif tag.signal == "process_value":
                    value = snap.rate_per_min  # the speed (the random walks are stepped with the clock)
                elif tag.name == "Truth.State":
                    value = BoardState.NO_SHIFT.value if snap.state == BoardState.NO_SHIFT else shown.value
                else:
                    value = counts[tag.name.removeprefix("Truth.").lower()]
                if first or m.values[tag.name] != value:
                    changes.append(TagChange(m, tag, self._set(m, tag.name, value)))
            if changes:
                batches.append(TagBatch(snap.at_us, changes))
        return batches


def save_truth(path: Path, text: str) -> None:
    """Write the truth JSON to `path` through a temporary file and a rename, so a reader never sees half a file;
    a failure is logged, not raised (the simulator goes on)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write the truth file %s: %s", path, exc)
