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
  (the same for a held quantity), booked first come first served into the earliest buckets, each bucket up to
  Total - Unattainable; what does not fit in the horizon is `overbooked_s`;
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

    @property
    def unattainable_total_s(self) -> float:
        return sum(self.unattainable_s.values())


@dataclass
class LineCapacity:
    line: str
    buckets: list[BucketCapacity] = field(default_factory=list)
    overbooked_s: float = 0.0  # demand that did not fit in the horizon
    unbooked: tuple[tuple[str, float], ...] = ()  # (ref, seconds) of that demand
    constraints: tuple[Constraint, ...] = ()  # the line's known losses

    def finish_ns(self, b: BucketCapacity, work_s: float, start_ns: int = 0) -> int:
        """The moment `work_s` seconds of work at the ideal rate are done in bucket `b`, working from the start
        of its working time (or `start_ns`) at the line's OEE, slowed by the constraints in force (a share lost
        while each lasts); the end of the bucket's working time when it is not reached."""
        left = work_s * NS
        work = [(max(a, start_ns), e) for a, e in b.work if e > max(a, start_ns)]
        for x, y, lost, _ in _slices(work, self.constraints):
            rate = b.oee * (1.0 - lost)
            if rate <= 0:
                continue
            if left <= rate * (y - x):
                return x + int(left / rate)
            left -= rate * (y - x)
        return b.work[-1][1] if b.work else b.end_ns

    def completion_ns(self, ref: str) -> int | None:
        """When demand `ref` is expected to be done: in the last bucket it is booked into, once its booking and
        what was booked before it there are made (`finish_ns`). None when it does not fit in the horizon (or is
        not booked)."""
        if any(r == ref for r, _ in self.unbooked):
            return None
        for b in reversed(self.buckets):
            refs = [r for r, _ in b.committed]
            if ref in refs and b.oee > 0:
                return self.finish_ns(b, sum(s for _, s in b.committed[:refs.index(ref) + 1]))
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
                              tuple(sorted(p for p in work if p[1] > p[0]))))
    return sorted(out, key=lambda b: (b.line, b.start_ns))


def _overlap_s(work: Sequence[tuple[int, int]], start_ns: int, end_ns: int) -> float:
    return sum(max(0, min(b, end_ns) - max(a, start_ns)) for a, b in work) / NS


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
        room = max(0.0, total - sum(unattainable.values()))
        booked: list[tuple[str, float]] = []
        work_start = work[0][0] if work else b.end_ns
        waiting: list[tuple[str, float, int]] = []
        for ref, left, not_before in queue:  # first come, first served; one that may not start yet lets others by
            take = min(left, room)
            if not_before > work_start:
                take = min(take, oee * _overlap_s(work, not_before, b.end_ns))
            if take > 0:
                booked.append((ref, take))
                room -= take
                left -= take
            if left > 1e-9:
                waiting.append((ref, left, not_before))
        queue = waiting
        committed = sum(s for _, s in booked)
        available = max(0.0, total - committed - sum(unattainable.values()))
        qty = {sku: max(0, math.floor((available - setup) / pru)) if pru > 0 else 0
               for sku, (pru, setup) in sorted(skus.items())}
        out.buckets.append(BucketCapacity(line, b.key, b.start_ns, b.end_ns, pbt, oee, basis.basis, total, committed,
                                          unattainable, available, qty, tuple(booked), work))
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
    """Where `qty` units of `sku` fit soonest in the Available time of the lines from `earliest_ns` on (after the
    frozen horizon and the material lead time): on each line that makes the SKU, its setup plus qty x PRU is
    taken from the earliest buckets with Available time, and the line that finishes first is chosen. In a bucket,
    the Available time comes after what is committed and unattainable in it, so the completion is the moment
    the bucket's work reaches (Total - Available + taken) at the line's OEE."""
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
            usable = b.available_s
            if b.work and earliest_ns > b.work[0][0]:
                usable = min(usable, b.oee * _overlap_s(b.work, earliest_ns, b.end_ns))
            take = min(need, usable)
            if take <= 1e-9:
                continue
            steps.append((b, take))
            need -= take
            if need <= 1e-9:
                done = max(cap.finish_ns(b, b.committed_s + take), cap.finish_ns(b, take, earliest_ns))
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
