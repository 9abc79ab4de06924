"""Synthetic shop-floor history for the query benchmark, and the shift OEE the boards compute from it.

`history` writes what 6 machines of config/factory.yaml do over N days (state changes, counts per cycle,
process values), seeded, so InfluxDB and SQLite get the same points. The shifts are the dashboard's calendar
(dashboard.kpi.shifts) and the OEE is the boards' own ISO 22400 engine (dashboard.kpi.oee), so a query benchmark
times what a shift board really does with the reads. The history has no orders: every machine makes one
product, BENCH_SKU, at its line's first product's ideal cycle time, over the whole shift.
"""

from __future__ import annotations

import bisect
import random
import statistics
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from agent.config import FactoryConfig
from agent.core.schema import Point
from agent.historian import CountBucket, StateInterval
from dashboard.kpi.oee import Count, Order, ShiftOee
from dashboard.kpi.oee import shift_oee as board_shift_oee
from dashboard.kpi.shifts import NS, ShiftWindow, local_ns
from dashboard.kpi.shifts import shift_windows as calendar_windows

BENCH_SKU = "BENCH"  # the one product of the synthetic history, at each machine's ideal cycle time


def shift_windows(cfg: FactoryConfig, first_day: date, days: int) -> list[ShiftWindow]:
    """The config's worked shifts starting on [first_day, first_day + days), as the dashboard's calendar has
    them; a shift that crosses midnight belongs to the day it starts and must end inside the period to be
    listed."""
    zone = ZoneInfo(cfg.site.timezone)
    period_end = local_ns(first_day + timedelta(days=days), "00:00", zone)
    windows = calendar_windows(cfg.shifts, cfg.site.timezone, first_day, first_day + timedelta(days=days - 1))
    return [w for w in windows if w.end_ns <= period_end]


def planned_windows(shifts: Sequence[ShiftWindow], start_ns: int, end_ns: int) -> list[tuple[int, int]]:
    """When no one plans to produce: breaks and the time outside every shift, merged and sorted."""
    windows: list[tuple[int, int]] = []
    t = start_ns
    for w in shifts:
        if w.start_ns > t:
            windows.append((t, w.start_ns))
        windows += list(w.breaks)
        t = max(t, w.end_ns)
    if t < end_ns:
        windows.append((t, end_ns))
    merged: list[tuple[int, int]] = []
    for a, b in sorted(windows):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


class MachineHistory:
    """One machine's synthetic history, generated forward in time with a seeded random generator.

    States alternate RUNNING and a stop (MICROSTOP, STOPPED, FAULT, sometimes SETUP); planned windows are
    PLANNED_STOP. While RUNNING, a cycle of `parts` parts takes parts x ideal cycle x 1.05-1.35 and writes
    the three counters; a speed process value is written every 10 s in every state.
    """

    STOPS = (("MICROSTOP", 0.66, 10, 90), ("STOPPED", 0.22, 120, 900), ("FAULT", 0.10, 300, 2700))

    def __init__(self, rng: random.Random, tags: dict[str, str], ideal_cycle_s: float, setup_s: float,
                 pv_name: str, planned: list[tuple[int, int]], start_ns: int) -> None:
        self.rng = rng
        self.tags = tags
        self.ideal_cycle_s = ideal_cycle_s
        self.parts = max(1, round(24 / ideal_cycle_s))  # a multi-part cycle of about 24 s at ideal speed
        self.setup_s = setup_s
        self.planned = planned
        self.planned_starts = [a for a, _ in planned]
        self.count_tags = {c: {**tags, "counter": c} for c in ("total", "good", "reject")}
        self.pv_tags = {**tags, "name": pv_name}
        self.values = dict.fromkeys(self.count_tags, 0)
        self.state = ""
        self.seg_start = self.seg_end = start_ns
        self.done_to = start_ns  # points are written up to here
        self.cycle_end = 0
        self.next_pv = start_ns

    def _next_segment(self, t: int) -> tuple[str, int]:
        i = bisect.bisect_right(self.planned_starts, t) - 1
        if i >= 0 and t < self.planned[i][1]:
            return "PLANNED_STOP", self.planned[i][1]
        next_planned = self.planned_starts[i + 1] if i + 1 < len(self.planned) else 2**62
        rng = self.rng
        if self.state != "RUNNING":
            state, seconds = "RUNNING", max(30.0, rng.expovariate(1 / 480))
        elif rng.random() < 0.02:
            state, seconds = "SETUP", self.setup_s * rng.uniform(0.9, 1.4)
        else:
            state, _, low, high = rng.choices(self.STOPS, [share for _, share, _, _ in self.STOPS])[0]
            seconds = rng.uniform(low, high)
        return state, min(t + int(seconds * NS), next_planned)

    def advance(self, until_ns: int) -> list[Point]:
        """Every point of this machine with a time in [where the last call stopped, until_ns)."""
        out: list[Point] = []
        while self.done_to < until_ns:
            if self.done_to >= self.seg_end:
                state, end = self._next_segment(self.seg_end)
                self.seg_start = self.seg_end
                if state != self.state:
                    out.append(Point("machine_state", self.tags, {"state": state, "raw": state}, self.seg_start))
                self.state, self.seg_end = state, end
                if state == "RUNNING":
                    self.cycle_end = self.seg_start + self._cycle_ns()
            upto = min(self.seg_end, until_ns)
            while self.state == "RUNNING" and self.cycle_end < upto:
                out += self._cycle(self.cycle_end)
                self.cycle_end += self._cycle_ns()
            while self.next_pv < upto:
                speed = 60 * self.parts * NS / self._cycle_ns() if self.state == "RUNNING" else 0.0
                out.append(Point("process_value", self.pv_tags,
                                 {"status": 0, "quality": "good", "value": round(speed, 2)}, self.next_pv))
                self.next_pv += 10 * NS
            self.done_to = upto
        return out

    def _cycle_ns(self) -> int:
        return int(self.parts * self.ideal_cycle_s * self.rng.uniform(1.05, 1.35) * NS)

    def _cycle(self, t: int) -> list[Point]:
        reject = sum(1 for _ in range(self.parts) if self.rng.random() < 0.02)
        out = []
        for counter, delta in (("total", self.parts), ("good", self.parts - reject), ("reject", reject)):
            self.values[counter] += delta
            out.append(Point("machine_count", self.count_tags[counter],
                             {"delta": delta, "value": self.values[counter]}, t))
        return out


def ideal_cycles(cfg: FactoryConfig) -> dict[str, float]:
    """Ideal cycle time per part of each machine: its line's first product's (ISO 22400 PRU)."""
    out = {}
    for line, machine in cfg.machines():
        cycles = [p.ideal_cycle_s[line.id] for p in cfg.products if line.id in p.ideal_cycle_s]
        out[machine.id] = cycles[0] if cycles else 30.0
    return out


def history(cfg: FactoryConfig, first_day: date, days: int, seed: int = 22400) -> Iterator[list[Point]]:
    """`days` of synthetic history of every machine of the config, one list of points per day."""
    zone = ZoneInfo(cfg.site.timezone)
    start, end = local_ns(first_day, "00:00", zone), local_ns(first_day + timedelta(days=days), "00:00", zone)
    planned = planned_windows(shift_windows(cfg, first_day, days), start, end)
    rng = random.Random(seed)
    ideal = ideal_cycles(cfg)
    machines = []
    for line, machine in cfg.machines():
        setups = [p.setup_min * 60 for p in cfg.products if line.id in p.ideal_cycle_s] or [1800.0]
        pv_name = next((t.name for t in cfg.machine_types[machine.type].tags
                        if t.signal == "process_value" and t.name), "speed")
        machines.append(MachineHistory(rng, {"site": cfg.site.id, "line": line.id, "machine": machine.id},
                                       ideal[machine.id], setups[0], pv_name, planned, start))
    for d in range(days):
        day_end = min(end, start + (d + 1) * 86400 * NS)
        yield [p for m in machines for p in m.advance(day_end)]


@dataclass(frozen=True)
class MachineOee:
    """The board's OEE of one machine over one shift, the figures the benchmark compares between backends."""

    machine: str
    running_s: float
    planned_stop_s: float
    total: int
    good: int
    availability: float
    performance: float
    quality: float
    oee: float


def _figures(k: ShiftOee) -> MachineOee:
    return MachineOee(k.machine, k.apt_s, k.planned_downtime_s, k.produced, k.good, k.availability or 0.0,
                      k.effectiveness or 0.0, k.quality or 0.0, k.oee or 0.0)


def shift_oee(intervals: Sequence[StateInterval], buckets: Sequence[CountBucket], start_ns: int, end_ns: int,
              ideal_cycle_s: dict[str, float], breaks: Sequence[tuple[int, int]] = ()) -> dict[str, MachineOee]:
    """The board's ISO 22400 OEE (dashboard.kpi.oee.shift_oee) of every machine of `ideal_cycle_s` over the
    shift [start, end) with its breaks; each count bucket is a count at its start, every unit is BENCH_SKU.
    None ratios (a zero denominator) are given as 0."""
    return _shift_oee(ShiftWindow("", date.min, start_ns, end_ns, tuple(breaks)), intervals, buckets, ideal_cycle_s)


def _shift_oee(window: ShiftWindow, intervals: Sequence[StateInterval], buckets: Sequence[CountBucket],
               ideal_cycle_s: dict[str, float]) -> dict[str, MachineOee]:
    states: defaultdict[str, list[StateInterval]] = defaultdict(list)
    for iv in intervals:
        states[iv.machine].append(iv)
    counts: defaultdict[str, list[Count]] = defaultdict(list)
    for b in buckets:
        counts[b.machine].append(Count(b.bucket_start_ns, b.counter, b.delta))
    order = [Order(window.start_ns, window.end_ns, BENCH_SKU)]
    return {machine: _figures(board_shift_oee(machine, window, states[machine], counts[machine], order,
                                              {BENCH_SKU: ideal}))
            for machine, ideal in ideal_cycle_s.items()}


def every_shift_oee(intervals: list[StateInterval], buckets: list[CountBucket], shifts: Sequence[ShiftWindow],
                    ideal_cycle_s: dict[str, float]) -> list[dict[str, MachineOee]]:
    """`shift_oee` of every shift, from one period's intervals and buckets (each sorted by time per machine)."""
    by_machine: dict[str, list[StateInterval]] = {}
    for iv in intervals:
        by_machine.setdefault(iv.machine, []).append(iv)
    ends = {m: [iv.end_ns for iv in ivs] for m, ivs in by_machine.items()}
    counts = sorted(buckets, key=lambda b: b.bucket_start_ns)
    count_starts = [b.bucket_start_ns for b in counts]
    out = []
    for w in shifts:
        window: list[StateInterval] = []
        for m, ivs in by_machine.items():
            i = bisect.bisect_right(ends[m], w.start_ns)  # the first interval ending after the shift starts
            while i < len(ivs) and ivs[i].start_ns < w.end_ns:
                window.append(ivs[i])
                i += 1
        lo, hi = bisect.bisect_left(count_starts, w.start_ns), bisect.bisect_left(count_starts, w.end_ns)
        out.append(_shift_oee(w, window, counts[lo:hi], ideal_cycle_s))
    return out


def same_oee(a: dict[str, MachineOee], b: dict[str, MachineOee]) -> bool:
    """Both backends gave the same OEE figures (to a millionth: float sums may differ in the last bits)."""
    def key(r: dict[str, MachineOee]) -> list[tuple[Any, ...]]:
        return [(m.machine, m.total, m.good, round(m.running_s, 3), round(m.planned_stop_s, 3), round(m.oee, 6))
                for m in sorted(r.values(), key=lambda m: m.machine)]
    return key(a) == key(b)


def mean_oee(result: dict[str, MachineOee]) -> float:
    return round(statistics.fmean(m.oee for m in result.values()), 4)
