"""OEE of one machine over one shift, following ISO 22400-2, from the state log and the counts.

Time model (seconds of the shift window, states split at the shift's edges):
- planned operation time = the shift window;
- planned downtime = breaks, and PLANNED_STOP / NO_SHIFT states; a machine that runs through a break is
  producing, so that time is not planned downtime;
- PBT (planned busy time) = planned operation time - planned downtime;
- APT (actual production time) = RUNNING + SLOW (ISO view); the TPM view also counts MICROSTOP as run time,
  moving micro-stops from the availability loss to the performance loss. OEE is the same in both views.
- OFFLINE (and time with no state at all) inside PBT is data the board does not have: shown as coverage,
  counted as downtime, never hidden.

Quantities: PQ (produced) = the `total` counter, or good + reject when the machine has no total counter;
GQ (good) = the `good` counter, or PQ - reject. Each count is attributed to a SKU for the per-SKU ideal cycle
time (PRU): the SKU the machine's PLC reports (a `product` tag) where the config names one, else the SKU of the
order running on the line at its time. Units made with no order running, and units the PLC made as another SKU
than the order's, are counted apart (`no_order`, `other_sku`) so a board can show them; units with no SKU at
all, or a SKU without an ideal cycle time on the line, are `unattributed` and left out of effectiveness.

A = APT / PBT; E = sum(PRU_i x PQ_i) / APT; Q = GQ / PQ; OEE = A x E x Q, cross-checked against
sum(PRU_i x GQ_i) / PBT (equal when every SKU has the same quality rate). E above 1.05 is flagged: the ideal
cycle time is wrong; it is never capped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.core.states import BoardState
from agent.historian import StateInterval
from dashboard.kpi.shifts import NS, ShiftWindow

RUN_STATES = frozenset({BoardState.RUNNING, BoardState.SLOW})
PLANNED_STATES = frozenset({BoardState.PLANNED_STOP, BoardState.NO_SHIFT})
NO_DATA = BoardState.OFFLINE.value
EFFECTIVENESS_FLAG = 1.05


@dataclass(frozen=True)
class Order:
    """An order running on the line over [start_ns, end_ns)."""

    start_ns: int
    end_ns: int
    sku: str


@dataclass(frozen=True)
class Count:
    """A counter delta of the machine at `time_ns` (`counter`: total, good or reject)."""

    time_ns: int
    counter: str
    delta: int


@dataclass(frozen=True)
class SkuOutput:
    sku: str
    produced: int
    good: int
    ideal_cycle_s: float | None  # None: the SKU has no ideal cycle time on this line


@dataclass(frozen=True)
class ShiftOee:
    """ISO 22400 figures of one machine over one shift. Ratios are None when their denominator is 0."""

    machine: str
    shift: str
    planned_s: float
    planned_downtime_s: float
    pbt_s: float
    apt_s: float
    state_s: dict[str, float]  # unplanned time by state, inside PBT (RUNNING/SLOW included)
    offline_s: float
    coverage: float | None  # share of PBT with data
    produced: int
    good: int
    rejected: int
    by_sku: tuple[SkuOutput, ...]
    unattributed: int  # produced units without a SKU or an ideal cycle time: not in effectiveness
    availability: float | None
    effectiveness: float | None
    quality: float | None
    oee: float | None
    oee_check: float | None  # sum(PRU x GQ) / PBT
    availability_tpm: float | None
    effectiveness_tpm: float | None
    effectiveness_flag: bool  # above 105%: the ideal cycle time is wrong
    failures: int  # FAULT events (consecutive FAULT pieces are one)
    mtbf_s: float | None  # ISO 22400: APT / (failures + 1)
    mttr_s: float | None  # FAULT time in the shift (through breaks too) / failures
    microstops: int
    microstop_s: float
    stops_by_reason: dict[str, float] = field(default_factory=dict)
    no_order: int = 0  # produced units while no order ran on the line
    other_sku: int = 0  # produced units the PLC made as another SKU than the running order's
    up_to_ns: int = 0  # the end of the time the figures cover (the shift's end, now, or the data's reach)


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def _segments(window: ShiftWindow, intervals: Sequence[StateInterval]) -> list[tuple[int, int, str, str]]:
    """(start, end, state, reason) pieces covering the window; gaps without a state are NO_DATA."""
    pieces = sorted((max(i.start_ns, window.start_ns), min(i.end_ns, window.end_ns), i.state, i.reason or "")
                    for i in intervals if i.end_ns > window.start_ns and i.start_ns < window.end_ns)
    out: list[tuple[int, int, str, str]] = []
    cursor = window.start_ns
    for start, end, state, reason in pieces:
        if start > cursor:
            out.append((cursor, start, NO_DATA, ""))
        start = max(start, cursor)
        if end > start:
            out.append((start, end, state, reason))
            cursor = end
    if cursor < window.end_ns:
        out.append((cursor, window.end_ns, NO_DATA, ""))
    return out


def _split_at_breaks(start: int, end: int, breaks: Sequence[tuple[int, int]]) -> list[tuple[int, int, bool]]:
    """[start, end) cut into (start, end, in_break) pieces."""
    out = []
    cursor = start
    for b0, b1 in breaks:
        if b1 <= cursor or b0 >= end:
            continue
        if b0 > cursor:
            out.append((cursor, b0, False))
        out.append((max(cursor, b0), min(end, b1), True))
        cursor = min(end, b1)
    if cursor < end:
        out.append((cursor, end, False))
    return out


def _sku_at(spans: Sequence[Order], t_ns: int) -> str | None:
    return next((o.sku for o in spans if o.start_ns <= t_ns < o.end_ns), None)


def shift_oee(machine: str, window: ShiftWindow, intervals: Sequence[StateInterval], counts: Sequence[Count],
              orders: Sequence[Order], ideal_cycle_s: dict[str, float],
              products: Sequence[Order] | None = None) -> ShiftOee:
    """The ISO 22400 figures of `machine` over `window` (see the module docstring for the rules). `products`:
    what the machine's PLC reported making, as spans, when its type has a product tag (None: it has none)."""
    state_s: dict[str, float] = defaultdict(float)
    planned_down = fault_s = 0.0
    stops_by_reason: dict[str, float] = defaultdict(float)
    failures = microstops = 0
    last_state = None
    for start, end, state, reason in _segments(window, intervals):
        if state != last_state:
            failures += state == BoardState.FAULT
            microstops += state == BoardState.MICROSTOP
        last_state = state
        if state == BoardState.FAULT:
            fault_s += (end - start) / NS  # a repair is timed in full, even through a break
        for p0, p1, in_break in _split_at_breaks(start, end, window.breaks):
            seconds = (p1 - p0) / NS
            if state not in RUN_STATES and (in_break or state in PLANNED_STATES):
                planned_down += seconds
                continue
            state_s[state] += seconds
            if state not in RUN_STATES:
                stops_by_reason[reason or state] += seconds
    planned_s = window.seconds
    pbt = planned_s - planned_down
    apt = sum(state_s.get(s, 0.0) for s in RUN_STATES)
    offline = state_s.get(NO_DATA, 0.0)
    microstop_s = state_s.get(BoardState.MICROSTOP, 0.0)

    # quantities per SKU: the PLC's product where it reports one, else the order running at each count's time
    per_sku: dict[str | None, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    apart: dict[str, dict[str, int]] = {"no_order": defaultdict(int), "other_sku": defaultdict(int)}
    ordered = sorted(orders, key=lambda o: o.start_ns)
    made = sorted(products, key=lambda o: o.start_ns) if products is not None else None
    for c in counts:
        if not window.start_ns <= c.time_ns < window.end_ns:
            continue
        order_sku = _sku_at(ordered, c.time_ns)
        sku = order_sku
        if made is not None:
            sku = _sku_at(made, c.time_ns) or order_sku
            if order_sku is not None and sku != order_sku:
                apart["other_sku"][c.counter] += c.delta
        if order_sku is None:
            apart["no_order"][c.counter] += c.delta
        per_sku[sku][c.counter] += c.delta
    has_total = any("total" in v for v in per_sku.values())
    has_good = any("good" in v for v in per_sku.values())
    outputs = []
    unattributed = 0
    for sku, tally in per_sku.items():
        produced = tally["total"] if has_total else tally["good"] + tally["reject"]
        good = tally["good"] if has_good else produced - tally["reject"]
        pru = ideal_cycle_s.get(sku) if sku is not None else None
        if pru is None:
            unattributed += produced
        outputs.append(SkuOutput(sku or "", produced, good, pru))
    outputs.sort(key=lambda o: o.sku)
    no_order, other_sku = (tally["total"] if has_total else tally["good"] + tally["reject"]
                           for tally in (apart["no_order"], apart["other_sku"]))
    produced = sum(o.produced for o in outputs)
    good = sum(o.good for o in outputs)
    rejected = produced - good
    ideal_s = sum(o.ideal_cycle_s * o.produced for o in outputs if o.ideal_cycle_s is not None)
    ideal_good_s = sum(o.ideal_cycle_s * o.good for o in outputs if o.ideal_cycle_s is not None)

    availability = _ratio(apt, pbt)
    effectiveness = _ratio(ideal_s, apt)
    quality = _ratio(good, produced)
    parts = (availability, effectiveness, quality)
    oee = parts[0] * parts[1] * parts[2] if None not in parts else None  # type: ignore[operator]
    fe = failures
    return ShiftOee(
        machine=machine, shift=window.shift, planned_s=planned_s, planned_downtime_s=planned_down, pbt_s=pbt,
        apt_s=apt, state_s=dict(state_s), offline_s=offline, coverage=_ratio(pbt - offline, pbt),
        produced=produced, good=good, rejected=rejected, by_sku=tuple(outputs), unattributed=unattributed,
        availability=availability, effectiveness=effectiveness, quality=quality, oee=oee,
        oee_check=_ratio(ideal_good_s, pbt),
        availability_tpm=_ratio(apt + microstop_s, pbt), effectiveness_tpm=_ratio(ideal_s, apt + microstop_s),
        effectiveness_flag=effectiveness is not None and effectiveness > EFFECTIVENESS_FLAG,
        failures=fe, mtbf_s=apt / (fe + 1), mttr_s=_ratio(fault_s, fe),
        microstops=microstops, microstop_s=microstop_s, stops_by_reason=dict(stops_by_reason),
        no_order=no_order, other_sku=other_sku, up_to_ns=window.end_ns)
