"""The plant's ground truth: what really happened per machine and shift, and per line, as the boards should show
it (docs/kpi.md)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from agent.config import Product
from agent.core.states import BoardState
from dashboard.kpi.shifts import ShiftWindow
from simulators.clock import US

if TYPE_CHECKING:
    from simulators.plant.world import Plant, PlantLine, PlantMachine

RATE_WINDOW_S = 900  # the boards' "current rate": units per minute over the last 15 minutes
SAMPLES_KEPT = 24 * 60  # a day of minute samples
SHIFTS_KEPT_DAYS = 2  # shift records older than this are dropped from the truth (a demo left running for weeks)


@dataclass
class _MachineTruth:
    shifts: dict[str, dict[str, Any]] = field(default_factory=dict)
    state: str = ""
    since_us: int = 0
    stop_run: list[tuple[int, int, str]] = field(default_factory=list)  # a STOPPED run not yet classified


class Truth:
    """What really happened in the plant, per machine and shift (time per board state, units per SKU, ideal
    time) and per line (staffing, material used, stock and the current rate), as the boards should show it.

    A STOPPED run shorter than `kpi.microstop_s` is a MICROSTOP (DESIGN.md's rule), decided once it ended.
    """

    def __init__(self, plant: Plant) -> None:
        self.plant = plant
        self.microstop_us = int(plant.cfg.kpi.microstop_s * US)
        self._machines: dict[tuple[str, str], _MachineTruth] = {k: _MachineTruth() for k in plant.machines}
        self._lines: dict[str, dict[str, Any]] = {ln: {"shifts": {}, "units": deque()} for ln in plant.lines}
        self._present: dict[tuple[str, str], set[str]] = {}
        self.samples: list[dict[str, Any]] = []  # per minute: each line's stock, current rate and headcount
        self.next_sample_us = -(-plant.origin_us // (60 * US)) * 60 * US

    # --- where time goes

    def _shift_key(self, w: ShiftWindow) -> str:
        return f"{w.day.isoformat()}/{w.shift}"

    def _add_time(self, mt: _MachineTruth, state: str, a: int, b: int) -> None:
        """Add [a, b) in `state` to the shift windows it overlaps."""
        cal = self.plant.calendar
        day_a = datetime.fromtimestamp(a / US, cal.zone).date()
        day_b = datetime.fromtimestamp(b / US, cal.zone).date()
        for w in cal.windows(day_a - timedelta(days=1), day_b):
            s, e = max(a, w.start_ns // 1000), min(b, w.end_ns // 1000)
            if e > s:
                shift = self._machine_shift(mt, w)
                shift["state_s"][state] = shift["state_s"].get(state, 0.0) + (e - s) / US

    def _machine_shift(self, mt: _MachineTruth, w: ShiftWindow) -> dict[str, Any]:
        key = self._shift_key(w)
        if key not in mt.shifts:
            mt.shifts[key] = {"shift": w.shift, "day": w.day.isoformat(), "start_ms": w.start_ns // 1_000_000,
                              "end_ms": w.end_ns // 1_000_000, "state_s": {}, "units": {}, "ideal_s": 0.0}
        return mt.shifts[key]

    def _close(self, mt: _MachineTruth, until: int) -> None:
        """Book the state in force since `since_us` up to `until`; a STOPPED run waits until it has ended."""
        if until <= mt.since_us or not mt.state:
            return
        if mt.state == BoardState.STOPPED.value:
            mt.stop_run.append((mt.since_us, until, mt.state))
        else:
            self._add_time(mt, mt.state, mt.since_us, until)
        mt.since_us = until

    def _flush_stop(self, mt: _MachineTruth) -> None:
        """A STOPPED run has ended: book it as a MICROSTOP when it was shorter than the threshold."""
        length = sum(b - a for a, b, _ in mt.stop_run)
        state = BoardState.MICROSTOP.value if length < self.microstop_us else BoardState.STOPPED.value
        for a, b, _ in mt.stop_run:
            self._add_time(mt, state, a, b)
        mt.stop_run = []

    def machine(self, now: int, pm: PlantMachine, state: BoardState) -> None:
        mt = self._machines[(pm.line.id, pm.id)]
        if state.value == mt.state:
            return
        self._close(mt, now)
        if state != BoardState.STOPPED and mt.stop_run:
            self._flush_stop(mt)
        mt.state, mt.since_us = state.value, now

    def unit(self, now: int, pm: PlantMachine, product: Product, rejected: bool) -> None:
        mt = self._machines[(pm.line.id, pm.id)]
        w = self.plant.calendar.window_at(now)
        if w is not None:
            shift = self._machine_shift(mt, w)
            units = shift["units"].setdefault(product.sku, {"good": 0, "reject": 0})
            units["reject" if rejected else "good"] += 1
            shift["ideal_s"] += product.ideal_cycle_s.get(pm.line.id, 0.0)
        if pm is pm.line.machines[-1]:
            recent: deque[int] = self._lines[pm.line.id]["units"]
            recent.append(now)
            while recent and recent[0] < now - 2 * RATE_WINDOW_S * US:
                recent.popleft()

    def settle(self, now: int) -> None:
        """Book every machine's time up to `now` (a STOPPED run still open stays pending)."""
        for mt in self._machines.values():
            self._close(mt, now)

    # --- lines

    def consumed(self, now: int, pl: PlantLine, material: str, qty: float) -> None:
        w = self.plant.calendar.window_at(now)
        if w is None:
            return
        shifts = self._lines[pl.id]["shifts"]
        shift = shifts.setdefault(self._shift_key(w), {"consumed": {}})
        shift["consumed"][material] = round(shift["consumed"].get(material, 0.0) + qty, 6)

    def badge(self, now: int, where: tuple[str, str], badge: str, present: bool) -> None:
        people = self._present.setdefault(where, set())
        if present:
            people.add(badge)
        else:
            people.discard(badge)

    def _line_now(self, pl: PlantLine, now: int) -> dict[str, Any]:
        """A line's stock, current rate (units of its last machine per minute over the last 15 minutes), minutes
        to shortage of the running SKU's BOM and who is at its stations, at `now`."""
        units: deque[int] = self._lines[pl.id]["units"]
        rate = sum(1 for t in units if now - RATE_WINDOW_S * US <= t < now) / (RATE_WINDOW_S / 60)
        bom = pl.order.product.bom if pl.order else {}
        stations = {st: sorted(b) for (ln, st), b in self._present.items() if ln == pl.id}
        return {"stock": {m: round(q, 3) for m, q in pl.stock.items()}, "rate_per_min": rate,
                "sku": pl.order.product.sku if pl.order else None,
                "minutes_to_shortage": {m: (pl.stock[m] / (q * rate) if rate > 0 else None)
                                        for m, q in bom.items() if m in pl.stock},
                "present": stations, "headcount": sum(len(b) for b in stations.values())}

    def _prune(self, now: int) -> None:
        """Drop shift records that ended more than SHIFTS_KEPT_DAYS ago."""
        cutoff_ms = (now - SHIFTS_KEPT_DAYS * 86400 * US) // 1000
        for mt in self._machines.values():
            for key in [k for k, v in mt.shifts.items() if v["end_ms"] < cutoff_ms]:
                del mt.shifts[key]
        for lt in self._lines.values():
            for key in [k for k in lt["shifts"] if k < self._day_key(cutoff_ms)]:
                del lt["shifts"][key]

    def _day_key(self, t_ms: int) -> str:
        return datetime.fromtimestamp(t_ms / 1000, self.plant.calendar.zone).date().isoformat()

    def sample(self, now: int) -> None:
        """Record every line as it is at `now` (a whole minute); once a day, drop old shift records."""
        if now % (86400 * US) == 0:
            self._prune(now)
        self.samples.append({"t_ms": now // 1000,
                             "lines": {ln: self._line_now(pl, now) for ln, pl in self.plant.lines.items()}})
        del self.samples[:-SAMPLES_KEPT]
        self.next_sample_us = now + 60 * US

    # --- the record

    def as_dict(self) -> dict[str, Any]:
        """The truth up to the plant's now, JSON-ready: see docs/kpi.md "Ground truth"."""
        plant = self.plant
        now = plant.now_us
        machines: dict[str, Any] = {}
        for (line_id, machine_id), mt in self._machines.items():
            shifts = {}
            pending = sum(b - a for a, b, _ in mt.stop_run)
            for key, shift in mt.shifts.items():
                record = {**shift, "state_s": dict(shift["state_s"])}
                if pending:
                    # an open stop not yet past the threshold counts as what it is so far: a micro-stop
                    for a, b, _ in mt.stop_run:
                        s, e = max(a, shift["start_ms"] * 1000), min(b, shift["end_ms"] * 1000)
                        if e > s:
                            state = "MICROSTOP" if pending < self.microstop_us else "STOPPED"
                            record["state_s"][state] = record["state_s"].get(state, 0.0) + (e - s) / US
                record["kpi"] = _iso_kpis(record)
                shifts[key] = record
            pm = plant.machines[(line_id, machine_id)]
            machines[f"{line_id}/{machine_id}"] = {
                "shifts": shifts, "state": mt.state, "since_ms": mt.since_us // 1000,
                "total": pm.total, "good": pm.good, "reject": pm.reject, "sku": pm.sku}
        lines: dict[str, Any] = {}
        for line_id, pl in plant.lines.items():
            lines[line_id] = {
                "shifts": self._lines[line_id]["shifts"],
                "order": {"order_id": pl.order.order_id, "sku": pl.order.product.sku,
                          "target_qty": pl.order.target_qty, "good": pl.order.good,
                          "start_ms": pl.order.started_us // 1000} if pl.order else None,
                **self._line_now(pl, now),
            }
        return {"until_ms": now // 1000, "origin_ms": plant.origin_us // 1000, "seed": plant.seed,
                "microstop_s": plant.cfg.kpi.microstop_s, "machines": machines, "lines": lines,
                "samples": self.samples}


def _iso_kpis(shift: dict[str, Any]) -> dict[str, float | None]:
    """ISO 22400 A, E, Q, OEE of a shift record, computed here on their own (not with the boards' code)."""
    state_s: dict[str, float] = shift["state_s"]
    planned_down = state_s.get("PLANNED_STOP", 0.0) + state_s.get("NO_SHIFT", 0.0)
    pbt = sum(state_s.values()) - planned_down
    apt = state_s.get("RUNNING", 0.0) + state_s.get("SLOW", 0.0)
    good = sum(u["good"] for u in shift["units"].values())
    produced = good + sum(u["reject"] for u in shift["units"].values())
    a = apt / pbt if pbt > 0 else None
    e = shift["ideal_s"] / apt if apt > 0 else None
    q = good / produced if produced else None
    oee = a * e * q if a is not None and e is not None and q is not None else None
    return {"pbt_s": pbt, "apt_s": apt, "availability": a, "effectiveness": e, "quality": q, "oee": oee,
            "produced": produced, "good": good}
