"""Free capacity of a line per bucket (a shift or a day) over a horizon, in the terms of ISA-95 operations
capability (total, committed, available, unattainable) and the ISO 22400 time model. Pure: no I/O, no clock.

Time model, per bucket of a line:
- planned busy time PBT = the bucket's working time (its shifts minus their breaks, minus holidays and the
  line's planned maintenance windows), counting only the part after `now`;
- Total = OEE x PBT: the time the line can be expected to spend producing at its ideal rate, with OEE the
  line's trailing median (or a configured efficiency on a cold start: `OeeBasis.basis` says which);
- Unattainable = what known constraints take, by reason: a machine down (until its expected repair), operators
  missing against plan, material short; at each moment the constraints in force take their shares together
  (at most the whole line), each in turn taking its share of what is left, at the line's OEE;
- Committed = open orders (the setup still to come + remaining quantity x ideal cycle time PRU) and active holds
  (the same for a held quantity), booked first come first served: each demand's work is placed in time after
  the one before (a hold not before its earliest start) at the line's OEE slowed by the constraints, so a
  bucket never takes more than Total - Unattainable; what does not fit in the horizon is `overbooked_s`;
- Available = Total - Committed - Unattainable, never below 0; per SKU, the quantity that fits in it:
  floor((Available - setup) / PRU).

Invariant in every bucket: Total = Committed + Available + Unattainable (checked by a property test).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from agent.config import Shift
from dashboard.kpi.shifts import NS, ShiftWindow, shift_windows

REASONS = ("machine_down", "operators_missing", "material_short")


@dataclass(frozen=True)
class Bucket:
    """A shift (key "2026-12-01/day") or a day (key "2026-12-01") of a line, with its working time pieces."""

    line: str
    key: str
    start_ns: int
    end_ns: int
    work: tuple[tuple[int, int], ...]  # working pieces in the bucket: breaks, holidays, maintenance cut out

    def pbt_s(self, now_ns: int) -> float:
        """Planned busy time of the bucket from `now_ns` on, in seconds."""
        return sum(max(0, b - max(a, now_ns)) for a, b in self.work) / NS


@dataclass(frozen=True)
class OeeBasis:
    """The OEE a line's Total is computed with, and where it comes from."""

    oee: float
    basis: str  # "trailing_median" (finished shifts of the history) or "configured" (a cold start)
    shifts: int = 0  # how many finished shifts the median is of


@dataclass(frozen=True)
class Demand:
    """Capacity asked for on a line: an open order or a hold, booked in this order."""

    line: str
    ref: str  # the order id or hold id
    kind: str  # "order" | "hold"
    sku: str
    qty: float
    pru_s: float  # ideal cycle time of the SKU on the line
    setup_s: float = 0.0  # changeover still to come (0 for an order already running)
    not_before_ns: int = 0  # a promise is made after the frozen horizon: its work is not booked before this

    @property
    def seconds(self) -> float:
        return self.setup_s + max(0.0, self.qty) * self.pru_s


@dataclass(frozen=True)
class Constraint:
    """A known loss of capacity on a line over [start, end): `share` of it (1: the whole line)."""

    line: str
    reason: str  # one of REASONS
    start_ns: int
    end_ns: int
    share: float = 1.0


@dataclass(frozen=True)
class BucketCapacity:
    line: str
    key: str
    start_ns: int
    end_ns: int
    pbt_s: float
    oee: float
    basis: str
    total_s: float
    committed_s: float
    unattainable_s: dict[str, float]
    available_s: float
    available_qty: dict[str, int]
    committed: tuple[tuple[str, float], ...] = ()  # (ref, seconds) booked into this bucket
    work: tuple[tuple[int, int], ...] = ()  # the bucket's working time from now on
    # the working time cut where constraints start and end: (start, end, share of the line lost)
    slices: tuple[tuple[int, int, float], ...] = ()
    cursor_ns: int = 0  # where the work booked into the bucket ends; new work starts from here
    finishes: tuple[tuple[str, int], ...] = ()  # (ref, when its work booked here is done)

    @property
    def unattainable_total_s(self) -> float:
        return sum(self.unattainable_s.values())

    def advance(self, start_ns: int, work_s: float) -> tuple[int, float]:
        """Working from `start_ns` at the line's OEE, slowed by the constraints in force: (when `work_s`
        seconds of work at the ideal rate are done, or the end of the bucket's working time; the work done)."""
        left = work_s * NS
        end = start_ns
        for x, y, lost in self.slices:
            x = max(x, start_ns)
            rate = self.oee * (1.0 - lost)
            if y <= x or rate <= 0:
                continue
            if left <= rate * (y - x):
                return x + int(left / rate), work_s
            left -= rate * (y - x)
            end = y
        return end, work_s - left / NS


@dataclass
class LineCapacity:
    line: str
    buckets: list[BucketCapacity] = field(default_factory=list)
    overbooked_s: float = 0.0  # demand that did not fit in the horizon
    unbooked: tuple[tuple[str, float], ...] = ()  # (ref, seconds) of that demand
    constraints: tuple[Constraint, ...] = ()  # the line's known losses

    def completion_ns(self, ref: str) -> int | None:
        """When demand `ref` is expected to be done: where its work ends in the last bucket it is booked into.
        None when it does not fit in the horizon (or is not booked)."""
        if any(r == ref for r, _ in self.unbooked):
            return None
        for b in reversed(self.buckets):
            for r, t in b.finishes:
                if r == ref:
                    return t
        return None


def _cut(pieces: list[tuple[int, int]], start_ns: int, end_ns: int) -> list[tuple[int, int]]:
    """`pieces` without [start, end)."""
    out = []
    for a, b in pieces:
        if end_ns <= a or start_ns >= b:
            out.append((a, b))
            continue
        if a < start_ns:
            out.append((a, start_ns))
        if end_ns < b:
            out.append((end_ns, b))
    return out


def _union(pieces: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Pieces of time merged where they overlap or touch (two shifts of a line overlapping are one working time)."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(p for p in pieces if p[1] > p[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return tuple(out)


def plan_buckets(shifts: Sequence[Shift], timezone: str, lines: Sequence[str], first_day: date, days: int,
                 holidays: Sequence[date] = (), maintenance: Sequence[tuple[str, int, int]] = (),
                 by: str = "shift") -> list[Bucket]:
    """Each line's buckets over `days` local days from `first_day`: one per worked shift (`by="shift"`) or per
    day (`by="day"`, the shifts starting that day together). A shift starting on a holiday is not worked;
    `maintenance` windows (line, start, end) are cut out of their line's working time."""
    windows = [w for w in shift_windows(shifts, timezone, first_day, first_day + timedelta(days=days - 1))
               if w.day not in set(holidays)]
    out = []
    for line in lines:
        grouped: dict[str, list[ShiftWindow]] = {}
        for w in windows:
            key = f"{w.day.isoformat()}/{w.shift}" if by == "shift" else w.day.isoformat()
            grouped.setdefault(key, []).append(w)
        for key, group in grouped.items():
            work: list[tuple[int, int]] = []
            for w in group:
                pieces = [(w.start_ns, w.end_ns)]
                for b0, b1 in w.breaks:
                    pieces = _cut(pieces, b0, b1)
                work += pieces
            for m_line, m0, m1 in maintenance:
                if m_line == line:
                    work = _cut(work, m0, m1)
            out.append(Bucket(line, key, min(w.start_ns for w in group), max(w.end_ns for w in group),
                              _union(work)))
    return sorted(out, key=lambda b: (b.line, b.start_ns))


def _slices(work: Sequence[tuple[int, int]], constraints: Sequence[Constraint]) -> list[tuple[int, int, float,
                                                                                              list[Constraint]]]:
    """The working time cut at every constraint's start and end: (start, end, share lost, constraints in force)
    per slice, the share lost being the constraints' shares together, at most 1."""
    out = []
    for a, e in work:
        edges = sorted({a, e, *(t for c in constraints for t in (c.start_ns, c.end_ns) if a < t < e)})
        for x, y in zip(edges, edges[1:], strict=False):
            active = [c for c in constraints if c.start_ns <= x and c.end_ns >= y]
            out.append((x, y, min(1.0, sum(max(0.0, min(1.0, c.share)) for c in active)), active))
    return out


def _losses(work: Sequence[tuple[int, int]], constraints: Sequence[Constraint], oee: float) -> dict[str, float]:
    """What the constraints take of the working time at `oee`, by reason: in each slice their shares together
    (at most the whole line), each constraint in turn taking its share of what is left."""
    out: dict[str, float] = {}
    for x, y, _, active in _slices(work, constraints):
        left = 1.0
        for c in active:
            take = min(left, max(0.0, min(1.0, c.share)))
            if take > 0:
                out[c.reason] = out.get(c.reason, 0.0) + take * oee * (y - x) / NS
                left -= take
    return out


def line_capacity(line: str, buckets: Sequence[Bucket], basis: OeeBasis, demands: Sequence[Demand],
                  constraints: Sequence[Constraint], skus: dict[str, tuple[float, float]],
                  now_ns: int) -> LineCapacity:
    """Capacity of `line` in each of its buckets from `now_ns` on (see the module docstring).

    `skus`: SKU -> (ideal cycle time PRU in seconds, setup in seconds) of the SKUs made on the line.
    """
    out = LineCapacity(line)
    queue = [(d.ref, d.seconds, d.not_before_ns) for d in demands if d.line == line and d.seconds > 0]
    mine = [c for c in constraints if c.line == line]
    oee = max(0.0, basis.oee)
    for b in sorted((b for b in buckets if b.line == line and b.end_ns > now_ns), key=lambda x: x.start_ns):
        work = tuple((max(a, now_ns), e) for a, e in b.work if e > now_ns)
        pbt = sum(e - a for a, e in work) / NS
        total = oee * pbt
        unattainable = _losses(work, mine, oee)
        slices = tuple((x, y, lost) for x, y, lost, _ in _slices(work, mine))
        cursor = work[0][0] if work else b.end_ns
        shell = BucketCapacity(line, b.key, b.start_ns, b.end_ns, pbt, oee, basis.basis, total, 0.0, {}, 0.0, {},
                               (), work, slices)
        booked: list[tuple[str, float]] = []
        finishes: list[tuple[str, int]] = []
        waiting: list[tuple[str, float, int]] = []
        # first come, first served, each demand's work placed after the one before (and not before its own
        # start, for a promise made after the frozen horizon); what does not fit waits for the next bucket
        for ref, left, not_before in queue:
            end, done = shell.advance(max(cursor, not_before), left) if oee > 0 else (cursor, 0.0)
            if done > 1e-9:
                booked.append((ref, done))
                finishes.append((ref, end))
                cursor = end
                left -= done
            if left > 1e-9:
                waiting.append((ref, left, not_before))
        queue = waiting
        committed = sum(s for _, s in booked)
        available = max(0.0, total - committed - sum(unattainable.values()))
        qty = {sku: max(0, math.floor((available - setup) / pru)) if pru > 0 else 0
               for sku, (pru, setup) in sorted(skus.items())}
        out.buckets.append(BucketCapacity(line, b.key, b.start_ns, b.end_ns, pbt, oee, basis.basis, total, committed,
                                          unattainable, available, qty, tuple(booked), work, slices, cursor,
                                          tuple(finishes)))
    out.constraints = tuple(mine)
    out.overbooked_s = sum(left for _, left, _ in queue)
    out.unbooked = tuple((ref, left) for ref, left, _ in queue)
    return out


@dataclass(frozen=True)
class PlanStep:
    """Part of a promise in one bucket: `seconds` of the line's available time, making `qty` units."""

    key: str
    start_ns: int
    end_ns: int
    seconds: float
    qty: int


@dataclass(frozen=True)
class Promise:
    """The earliest completion of `qty` units of a SKU over the lines that make it (capable to promise)."""

    sku: str
    qty: int
    line: str | None  # None: no line can make it within the horizon
    completion_ns: int | None
    plan: tuple[PlanStep, ...] = ()
    setup_s: float = 0.0
    pru_s: float = 0.0


def promise(capacities: Sequence[LineCapacity], skus: dict[str, dict[str, tuple[float, float]]], sku: str, qty: int,
            earliest_ns: int) -> Promise:
    """Where `qty` units of `sku` fit soonest on the lines from `earliest_ns` on (after the frozen horizon and the
    material lead time): on each line that makes the SKU, its setup plus qty x PRU is placed in the earliest
    buckets, after the work already booked there and not before `earliest_ns`, at the line's OEE slowed by the
    constraints; the line that finishes first is chosen."""
    best = Promise(sku, qty, None, None)
    for cap in capacities:
        if sku not in skus.get(cap.line, {}):
            continue
        pru, setup = skus[cap.line][sku]
        need = setup + qty * pru
        steps: list[tuple[BucketCapacity, float]] = []
        done: int | None = None
        for b in cap.buckets:
            if need <= 1e-9 or b.end_ns <= earliest_ns or b.oee <= 0:
                continue
            # the new work goes after what is booked in the bucket, and not before the earliest start
            end, take = b.advance(max(b.cursor_ns, earliest_ns), need)
            if take <= 1e-9:
                continue
            steps.append((b, take))
            need -= take
            if need <= 1e-9:
                done = end
        if done is None or (best.completion_ns is not None and done >= best.completion_ns):
            continue
        plan: list[PlanStep] = []
        left_setup, made = setup, 0
        for i, (b, take) in enumerate(steps):
            units = qty - made if i == len(steps) - 1 else int(max(0.0, take - left_setup) // pru)
            left_setup = max(0.0, left_setup - take)
            made += units
            plan.append(PlanStep(b.key, b.start_ns, b.end_ns, take, units))
        best = Promise(sku, qty, cap.line, done, tuple(plan), setup, pru)
    return best
