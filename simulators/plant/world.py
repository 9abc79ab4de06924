"""The simulated plant's world: lines running orders, machines making units and being interrupted, operators and
materials, all in simulated time (see the package docstring for the rules)."""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from agent.config import FactoryConfig, Line, Machine, Material, Operator, Product
from agent.core.states import BoardState
from simulators.clock import US
from simulators.plant.calendar import BREAK, OFF, WORK, WorkCalendar
from simulators.plant.truth import Truth

REJECT_RATE = 0.02
CYCLE_SLACK = 0.06  # a unit takes 0-6 % longer than ideal: real lines never beat their ideal cycle
DEFAULT_CYCLE_S = 10.0
ORDER_GAP_S = (120.0, 600.0)  # no order on the line between two orders (planned idle)
ORDER_QTY = (200, 1201, 50)
LEVEL_PERIOD_S = 5.0
ANDON_MEAN_GAP_S = 20 * 60
WANDER_MEAN_GAP_S = 45 * 60


@dataclass(frozen=True)
class Disruption:
    """A kind of interruption of RUNNING: how often per running hour, how long in seconds."""

    state: BoardState
    per_hour: float
    min_s: float
    max_s: float


DISRUPTIONS = (
    Disruption(BoardState.STOPPED, 4.0, 5, 300),  # the shorter ones are micro-stops (kpi.microstop_s)
    Disruption(BoardState.FAULT, 0.2, 3 * 60, 20 * 60),
    Disruption(BoardState.STARVED, 0.4, 60, 8 * 60),
    Disruption(BoardState.BLOCKED, 0.3, 60, 6 * 60),
)


# --- what the plant hands out ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FloorMessage:
    """One message of the line's MQTT devices, before it gets its timestamp (the line simulator's job)."""

    due_us: int
    topic: str
    body: dict[str, Any]
    signal: str


@dataclass(frozen=True)
class MachineSnapshot:
    """What a machine's PLC shows from `at_us` on: the board state it is in and its counters."""

    at_us: int
    line: str
    machine: str
    state: BoardState
    total: int
    good: int
    reject: int
    alarm: int
    sku: str
    rate_per_min: float


# --- machines and lines ---------------------------------------------------------------------------------------

IDLE = "IDLE"  # no order: shown as PLANNED_STOP


@dataclass
class PlantMachine:
    line: PlantLine
    machine: Machine
    alarm_codes: list[int]
    rng: random.Random
    process: str = IDLE  # IDLE, SETUP, RUNNING, or a disruption's board state
    epoch: int = 0  # bumped on every change of process: events scheduled before it are stale
    unit_left_us: int = 0  # working time the unit in progress still needs
    unit_due_us: int = 0
    cycle_us: int = 0
    alarm: int = 0
    forced: BoardState | None = None
    sku: str = ""
    total: int = 0
    good: int = 0
    reject: int = 0

    @property
    def id(self) -> str:
        return self.machine.id


@dataclass
class Order:
    order_id: str
    product: Product
    target_qty: int
    started_us: int
    good: int = 0


@dataclass
class PlantLine:
    line: Line
    skus: list[Product]
    materials: list[Material]
    point_of_use: dict[str, str]
    stock: dict[str, float]
    rng: random.Random
    machines: list[PlantMachine] = field(default_factory=list)
    order: Order | None = None
    setup_until_us: int = 0
    open_calls: dict[str, str] = field(default_factory=dict)
    last_sku: Product | None = None

    @property
    def id(self) -> str:
        return self.line.id


@dataclass
class _OperatorState:
    operator: Operator
    home: tuple[str, str]
    at: tuple[str, str] | None = None
    epoch: int = 0  # bumped by breaks and shift changes so that earlier personal moves are dropped


class Plant:
    """The factory of a config in simulated time: `advance(until)` runs it and returns what its PLCs show and
    what its MQTT devices say, in time order. `truth` records what really happened."""

    def __init__(self, cfg: FactoryConfig, seed: int = 1, origin_us: int = 0) -> None:
        self.cfg = cfg
        self.seed = seed
        self.origin_us = origin_us
        self.now_us = origin_us
        self.calendar = WorkCalendar(cfg)
        self.tz = ZoneInfo(cfg.site.timezone)
        self._heap: list[tuple[int, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self._messages: list[FloorMessage] = []
        self._snapshots: list[MachineSnapshot] = []
        self._ids = {name: itertools.count(1) for name in ("andon", "material", "order", "lot")}
        self.people_rng = random.Random(f"{seed}:people")
        materials = {m.id: m for m in cfg.materials}
        self.lines: dict[str, PlantLine] = {}
        self.machines: dict[tuple[str, str], PlantMachine] = {}
        for line in cfg.lines:
            skus = [p for p in cfg.products if line.id in p.ideal_cycle_s]
            used = list(dict.fromkeys(m for p in skus for m in p.bom if m in materials))
            rng = random.Random(f"{seed}:{line.id}")
            pl = PlantLine(line, skus, [materials[m] for m in used], _points_of_use(line, skus, used), {}, rng)
            pl.stock = {m: _initial_stock(materials[m], all(m in p.bom for p in skus), rng) for m in used}
            for machine in line.machines:
                mtype = cfg.machine_types.get(machine.type)
                pm = PlantMachine(pl, machine, sorted(mtype.alarm_texts) if mtype and mtype.alarm_texts else [1],
                                  random.Random(f"{seed}:{line.id}:{machine.id}"))
                pl.machines.append(pm)
                self.machines[(line.id, machine.id)] = pm
            self.lines[line.id] = pl
        self.operators = _assign_homes(cfg)
        self.truth = Truth(self)
        self._begin()

    # --- scheduling ------------------------------------------------------------------------------------------

    def _at(self, due_us: int, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._heap, (due_us, next(self._seq), fn, args))

    def _emit(self, due_us: int, topic: str, body: dict[str, Any], signal: str) -> None:
        self._messages.append(FloorMessage(due_us, topic, body, signal))

    def _after(self, rng: random.Random, low_s: float, high_s: float) -> int:
        return int(rng.uniform(low_s, high_s) * US)

    def next_due(self) -> int | None:
        """Simulated time of the next scheduled happening."""
        return self._heap[0][0] if self._heap else None

    def advance(self, until_us: int) -> tuple[list[MachineSnapshot], list[FloorMessage]]:
        """Run everything due up to `until_us`: the machine snapshots and floor messages, each in time order
        (the first call also hands out those of the plant's start)."""
        while self._heap and self._heap[0][0] <= until_us:
            due = self._heap[0][0]
            while self.truth.next_sample_us <= due:  # the minute samples see what happened before them
                self.now_us = self.truth.next_sample_us
                self.truth.sample(self.now_us)
            due, _, fn, args = heapq.heappop(self._heap)
            self.now_us = due
            fn(due, *args)
        while self.truth.next_sample_us <= until_us:
            self.now_us = self.truth.next_sample_us
            self.truth.sample(self.now_us)
        self.now_us = max(self.now_us, until_us)
        self.truth.settle(self.now_us)
        out = self._snapshots, self._messages
        self._snapshots, self._messages = [], []
        return out

    def _local_date(self, at_us: int) -> date:
        return datetime.fromtimestamp(at_us / US, self.tz).date()

    def _begin(self) -> None:
        now = self.origin_us
        for pm in self.machines.values():
            self._show(now, pm)
        for op in self.operators:
            if self.calendar.status(now)[0] == WORK:
                self._at(now + self._after(self.people_rng, 0, 60), self._badge_in, op, None)
        for pl in self.lines.values():
            if pl.skus:
                self._order_start(now, pl, setup=False)
            for material in pl.materials:
                self._at(now + self._after(pl.rng, 0, 20), self._load_lot, pl, material, pl.stock[material.id])
                self._at(now + self._after(pl.rng, 0, LEVEL_PERIOD_S), self._level, pl, material)
            for station in pl.line.stations:
                gap = int(self.people_rng.expovariate(1 / ANDON_MEAN_GAP_S) * US)
                self._at(now + gap, self._andon_call, pl.line.id, station.id)
        self._schedule_boundaries(now)

    def _schedule_boundaries(self, after_us: int) -> None:
        """Shift and break edges over the next day, then again a day later (the people's moves, and what every
        machine shows)."""
        until = after_us + 86400 * US
        for t, action in self.calendar.boundaries(after_us, until):
            self._at(t, self._boundary, action)
        self._at(until, self._schedule_next_boundaries, until)

    def _schedule_next_boundaries(self, due: int, after_us: int) -> None:
        self._schedule_boundaries(after_us)

    # --- machines --------------------------------------------------------------------------------------------

    def shown_state(self, pm: PlantMachine, at_us: int) -> BoardState:
        """The board state the machine is in, as its PLC would show it had it a code for every state."""
        if pm.forced is not None:
            return pm.forced
        status, _ = self.calendar.status(at_us)
        if status == OFF:
            return BoardState.NO_SHIFT
        if status == BREAK:
            return BoardState.PLANNED_STOP
        if pm.process == IDLE:
            return BoardState.PLANNED_STOP
        return BoardState(pm.process)

    def _snapshot(self, pm: PlantMachine, now: int) -> MachineSnapshot:
        state = self.shown_state(pm, now)
        rate = round(60.0 * US / pm.cycle_us, 2) if state == BoardState.RUNNING and pm.cycle_us else 0.0
        alarm = pm.alarm if state == BoardState.FAULT else 0
        if pm.forced == BoardState.FAULT:
            alarm = pm.alarm_codes[0]
        return MachineSnapshot(now, pm.line.id, pm.id, state, pm.total, pm.good, pm.reject, alarm, pm.sku, rate)

    def snapshot(self, line_id: str, machine_id: str) -> MachineSnapshot:
        """What a machine's PLC shows now."""
        return self._snapshot(self.machines[(line_id, machine_id)], self.now_us)

    def _show(self, now: int, pm: PlantMachine) -> None:
        snap = self._snapshot(pm, now)
        self._snapshots.append(snap)
        self.truth.machine(now, pm, snap.state)

    def force(self, line_id: str, machine_id: str, state: BoardState | None) -> None:
        """Pin a machine in a board state (None: release it), as a PLC's manual mode would; from now on."""
        pm = self.machines[(line_id, machine_id)]
        pm.forced = state
        self._show(self.now_us, pm)

    def take_snapshots(self) -> list[MachineSnapshot]:
        """Snapshots made outside `advance` (forces), handed out once."""
        out, self._snapshots = self._snapshots, []
        return out

    def _cycle(self, pm: PlantMachine) -> int:
        order = pm.line.order
        ideal = order.product.ideal_cycle_s.get(pm.line.id, DEFAULT_CYCLE_S) if order else DEFAULT_CYCLE_S
        return int(ideal * (1.0 + pm.rng.uniform(0.0, CYCLE_SLACK)) * US)

    def _set_process(self, now: int, pm: PlantMachine, process: str) -> None:
        pm.process = process
        pm.epoch += 1
        self._show(now, pm)

    def _run(self, now: int, pm: PlantMachine) -> None:
        """Start or resume running the line's order: the unit in progress, then the next disruption."""
        if pm.unit_left_us <= 0:
            pm.cycle_us = self._cycle(pm)
            pm.unit_left_us = pm.cycle_us
        self._set_process(now, pm, BoardState.RUNNING.value)
        pm.unit_due_us = self.calendar.add_work(now, pm.unit_left_us)
        self._at(pm.unit_due_us, self._unit, pm, pm.epoch)
        total_rate = sum(d.per_hour for d in DISRUPTIONS)
        pick = pm.rng.uniform(0.0, total_rate)
        disruption = DISRUPTIONS[-1]
        for d in DISRUPTIONS:
            pick -= d.per_hour
            if pick <= 0:
                disruption = d
                break
        run_us = int(pm.rng.expovariate(total_rate / 3600.0) * US)
        self._at(self.calendar.add_work(now, run_us), self._disrupt, pm, pm.epoch, disruption)

    def _unit(self, now: int, pm: PlantMachine, epoch: int) -> None:
        if epoch != pm.epoch:
            return
        pl = pm.line
        order = pl.order
        assert order is not None
        held = pm.forced is not None and pm.forced != BoardState.RUNNING
        if not held:
            rejected = pm.rng.random() < REJECT_RATE
            pm.total += 1
            pm.reject += rejected
            pm.good += not rejected
            self.truth.unit(now, pm, order.product, rejected)
            if pm is pl.machines[-1]:
                self._consume(pl, order.product)
                order.good += not rejected
        pm.cycle_us = self._cycle(pm)
        pm.unit_left_us = pm.cycle_us
        pm.unit_due_us = self.calendar.add_work(now, pm.cycle_us)
        self._at(pm.unit_due_us, self._unit, pm, pm.epoch)
        self._show(now, pm)
        if order.good >= order.target_qty:
            self._order_stop(now, pl)

    def _disrupt(self, now: int, pm: PlantMachine, epoch: int, disruption: Disruption) -> None:
        if epoch != pm.epoch:
            return
        pm.unit_left_us = self.calendar.work_between(now, pm.unit_due_us)
        if disruption.state == BoardState.FAULT:
            pm.alarm = pm.rng.choice(pm.alarm_codes)
        self._set_process(now, pm, disruption.state.value)
        lasts = int(pm.rng.uniform(disruption.min_s, disruption.max_s) * US)
        self._at(self.calendar.add_work(now, lasts), self._recover, pm, pm.epoch)

    def _recover(self, now: int, pm: PlantMachine, epoch: int) -> None:
        if epoch != pm.epoch:
            return
        pm.alarm = 0
        self._resume(now, pm)

    def _resume(self, now: int, pm: PlantMachine) -> None:
        """What a machine does when it is free: run the order, finish the changeover, or wait for an order."""
        pl = pm.line
        if pl.order is None:
            pm.unit_left_us = 0
            self._set_process(now, pm, IDLE)
        elif now < pl.setup_until_us:
            self._set_process(now, pm, BoardState.SETUP.value)
            self._at(pl.setup_until_us, self._setup_done, pm, pm.epoch)
        else:
            self._run(now, pm)

    def _setup_done(self, now: int, pm: PlantMachine, epoch: int) -> None:
        if epoch == pm.epoch:
            self._run(now, pm)

    # --- orders ----------------------------------------------------------------------------------------------

    def _order_start(self, now: int, pl: PlantLine, setup: bool = True) -> None:
        product = pl.rng.choice(pl.skus)
        qty_low, qty_high, qty_step = ORDER_QTY
        target = pl.rng.randrange(qty_low, qty_high, qty_step)
        order_id = f"SO-{self._local_date(now):%Y%m%d}-{next(self._ids['order']):03d}"
        pl.order = Order(order_id, product, target, now)
        setup_s = max(product.setup_min * 60, 60) * pl.rng.uniform(0.8, 1.3) if setup else 0.0
        pl.setup_until_us = self.calendar.add_work(now, int(setup_s * US)) if setup else now
        self._emit(now, f"line/{pl.id}/order",
                   {"order_id": order_id, "sku": product.sku, "target_qty": target, "event": "start"}, "order_event")
        for pm in pl.machines:
            pm.sku = product.sku
            pm.unit_left_us = 0
            if pm.process in (IDLE, BoardState.RUNNING.value, BoardState.SETUP.value):
                self._resume(now, pm)
            else:
                self._show(now, pm)  # finishes its disruption first; the product is shown at once

    def _order_stop(self, now: int, pl: PlantLine) -> None:
        order = pl.order
        assert order is not None
        pl.order = None
        pl.last_sku = order.product
        self._emit(now, f"line/{pl.id}/order", {"order_id": order.order_id, "sku": order.product.sku,
                                               "target_qty": order.target_qty, "event": "stop"}, "order_event")
        for pm in pl.machines:
            if pm.process in (BoardState.RUNNING.value, BoardState.SETUP.value):
                self._resume(now, pm)  # to IDLE; a machine in a disruption goes idle when it ends
        gap = int(pl.rng.uniform(*ORDER_GAP_S) * US)
        self._at(self.calendar.add_work(now, gap), self._order_start, pl)

    # --- shift edges -----------------------------------------------------------------------------------------

    def _boundary(self, due: int, action: str) -> None:
        for pm in self.machines.values():
            self._show(due, pm)
        rng = self.people_rng
        for op in self.operators:
            op.epoch += 1
            if action == "in":  # after those leaving at the same instant (back-to-back shifts) have gone
                self._at(due + self._after(rng, 150, 600), self._badge_in, op, op.epoch)
            elif action == "out" or rng.random() < 0.9:  # at a break a few stay at their machine
                self._at(due + self._after(rng, 0, 120), self._badge_out, op)

    # --- people ----------------------------------------------------------------------------------------------

    def _choose_station(self, op: _OperatorState) -> tuple[str, str]:
        rng = self.people_rng
        roll = rng.random()
        stations = [(ln.id, st.id, st.skill) for ln in self.cfg.lines for st in ln.stations]
        if roll < 0.10:
            other = [(li, si) for li, si, skill in stations if skill in op.operator.skills and (li, si) != op.home]
            if other:
                return rng.choice(other)
        elif roll < 0.15:
            wrong = [(li, si) for li, si, skill in stations if skill is not None and skill not in op.operator.skills]
            if wrong:
                return rng.choice(wrong)
        return op.home

    def _badge(self, due: int, where: tuple[str, str], op: _OperatorState, action: str) -> None:
        self._emit(due, f"line/{where[0]}/{where[1]}/badge", {"badge": op.operator.badge, "action": action},
                   "operator_event")
        self.truth.badge(due, where, op.operator.badge, action == "in")

    def _badge_in(self, due: int, op: _OperatorState, epoch: int | None) -> None:
        if op.at is not None or (epoch is not None and epoch != op.epoch):
            return
        if self.calendar.status(due)[0] != WORK:
            return
        op.at = self._choose_station(op)
        self._badge(due, op.at, op, "in")
        self._at(due + int(self.people_rng.expovariate(1 / WANDER_MEAN_GAP_S) * US), self._step_away, op, op.epoch)

    def _badge_out(self, due: int, op: _OperatorState) -> None:
        if op.at is None:
            return
        self._badge(due, op.at, op, "out")
        op.at = None

    def _step_away(self, due: int, op: _OperatorState, epoch: int) -> None:
        if epoch != op.epoch or op.at is None:
            return
        self._badge_out(due, op)
        self._at(due + self._after(self.people_rng, 120, 600), self._badge_in, op, epoch)

    def _someone_at(self, line_id: str, station_id: str) -> Operator:
        present = [op.operator for op in self.operators if op.at == (line_id, station_id)]
        return self.people_rng.choice(present or [op.operator for op in self.operators])

    def _andon_call(self, due: int, line_id: str, station_id: str) -> None:
        rng = self.people_rng
        self._at(due + int(rng.expovariate(1 / ANDON_MEAN_GAP_S) * US), self._andon_call, line_id, station_id)
        if not self.operators:
            return
        call_id = f"A-{next(self._ids['andon']):06d}"
        kind = rng.choices(("maintenance", "quality", "material"), weights=(4, 3, 3))[0]
        self._andon(due, line_id, station_id, call_id, "call", kind, self._someone_at(line_id, station_id))
        self._at(due + self._after(rng, 30, 300), self._andon_ack, line_id, station_id, call_id, kind)

    def _andon_ack(self, due: int, line_id: str, station_id: str, call_id: str, kind: str) -> None:
        responder = self.people_rng.choice(self.operators).operator
        self._andon(due, line_id, station_id, call_id, "ack", kind, responder)
        self._at(due + self._after(self.people_rng, 60, 1200), self._andon_resolve, line_id, station_id, call_id,
                 kind, responder)

    def _andon_resolve(self, due: int, line_id: str, station_id: str, call_id: str, kind: str,
                       responder: Operator) -> None:
        self._andon(due, line_id, station_id, call_id, "resolve", kind, responder)

    def _andon(self, due: int, line_id: str, station_id: str, call_id: str, event: str, kind: str,
               who: Operator) -> None:
        self._emit(due, f"line/{line_id}/{station_id}/andon",
                   {"call_id": call_id, "event": event, "kind": kind, "badge": who.badge}, "andon_event")

    # --- material --------------------------------------------------------------------------------------------

    def _consume(self, pl: PlantLine, product: Product) -> None:
        for material_id, per_unit in product.bom.items():
            if material_id in pl.stock:
                pl.stock[material_id] = max(0.0, pl.stock[material_id] - per_unit)
                self.truth.consumed(self.now_us, pl, material_id, per_unit)

    def _level(self, due: int, pl: PlantLine, material: Material) -> None:
        level = round(pl.stock[material.id], 2)
        self._emit(due, f"line/{pl.id}/material/{material.id}/level", {"level": level}, "material_level")
        if level < material.reorder_point and material.id not in pl.open_calls:
            call_id = f"M-{next(self._ids['material']):06d}"
            qty = int(max(material.reorder_point * 2, 50) // 10 * 10)
            pl.open_calls[material.id] = call_id
            self._material_call(due, pl, material, call_id, "call", qty)
            self._at(due + self._after(pl.rng, 300, 1500), self._deliver, pl, material, call_id, qty)
        self._at(due + self._after(pl.rng, 0.8 * LEVEL_PERIOD_S, 1.2 * LEVEL_PERIOD_S), self._level, pl, material)

    def _material_call(self, due: int, pl: PlantLine, material: Material, call_id: str, event: str,
                       qty: int) -> None:
        self._emit(due, f"line/{pl.id}/{pl.point_of_use[material.id]}/material-call",
                   {"material": material.id, "event": event, "call_id": call_id, "qty": qty}, "material_event")

    def _deliver(self, due: int, pl: PlantLine, material: Material, call_id: str, qty: int) -> None:
        pl.stock[material.id] += qty
        pl.open_calls.pop(material.id, None)
        self._material_call(due, pl, material, call_id, "delivered", qty)
        self._load_lot(due, pl, material, qty)
        # the scale sees the delivery at once, not at its next periodic report
        self._emit(due, f"line/{pl.id}/material/{material.id}/level", {"level": round(pl.stock[material.id], 2)},
                   "material_level")

    def _load_lot(self, due: int, pl: PlantLine, material: Material, qty: float) -> None:
        lot = f"L{self._local_date(due):%Y%m%d}-{next(self._ids['lot']):04d}"
        self._emit(due, f"line/{pl.id}/{pl.point_of_use[material.id]}/lot",
                   {"material": material.id, "lot": lot, "qty": int(qty)}, "material_event")


def _points_of_use(line: Line, skus: list[Product], used: list[str]) -> dict[str, str]:
    """Station where each material is called and loaded.

    The config does not say; by convention a BOM lists packaging last, so the last item of a BOM goes to the
    last station and the rest are spread over the others in order.
    """
    stations = [s.id for s in line.stations] or ["line"]
    packaging = {list(p.bom)[-1] for p in skus if p.bom} if len(stations) > 1 else set()
    others = stations[:-1] if packaging else stations
    out, n = {}, 0
    for material_id in used:
        if material_id in packaging:
            out[material_id] = stations[-1]
        else:
            out[material_id] = others[n % len(others)]
            n += 1
    return out


def _initial_stock(material: Material, used_by_every_sku: bool, rng: random.Random) -> float:
    base = max(material.reorder_point, 50)
    # What every SKU consumes starts just above its reorder point, so a short run still sees material calls and
    # deliveries; the rest starts comfortably stocked.
    factor = rng.uniform(1.02, 1.1) if used_by_every_sku else rng.uniform(1.5, 3.0)
    return round(base * factor, 2)


def _assign_homes(cfg: FactoryConfig) -> list[_OperatorState]:
    skill = {(ln.id, st.id): st.skill for ln in cfg.lines for st in ln.stations}
    # Fill the emptiest station the operator is qualified for, measured against its planned headcount.
    free = {(ln.id, st.id): max(st.planned_headcount, 1) for ln in cfg.lines for st in ln.stations}
    out = []
    for op in cfg.operators:
        if not free:
            break
        fitting = [k for k in free if skill[k] is None or skill[k] in op.skills] or list(free)
        home = max(fitting, key=lambda k: free[k])
        free[home] -= 1
        out.append(_OperatorState(op, home))
    return out
