"""What the C2M platform is told, read from the historian: capacity per line, SKU and bucket, finished-goods stock,
prices, first-pass yield and each order's progress with its genealogy.

The arithmetic is pure (dashboard/kpi/capacity.py); this module gathers its inputs: the finished shifts of each
line over the trailing window (their OEE, yield and repair times, as a pandas frame), the open orders, and the
constraints in force now (a machine down, operators missing, material short). It imports no Flask, so the
capacity job can run without the dashboard.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from agent.config import FactoryConfig, Line
from agent.historian import Historian
from dashboard import board, queries
from dashboard.holds import HoldStore
from dashboard.kpi.capacity import (
    Bucket,
    Constraint,
    Demand,
    LineCapacity,
    OeeBasis,
    line_capacity,
    plan_buckets,
)
from dashboard.kpi.shifts import NS, ShiftWindow, shift_windows

# Operators badge in over the first minutes of a shift: staffing is not judged before this.
BADGE_IN_S = 15 * 60
# A finished shift counts towards a line's OEE only when its data covers this share of its planned busy time.
MIN_COVERAGE = 0.9
# The repair of a machine down now is expected this long after its fault began when its history has no repair.
DEFAULT_REPAIR_S = 1800.0
# Feed figures are computed as of the start of the minute, so a snapshot (and its ETag) holds for a minute.
AS_OF_STEP_NS = 60 * NS


def as_of(now_ns: int) -> int:
    return now_ns // AS_OF_STEP_NS * AS_OF_STEP_NS


# --- the trailing history of a line ---------------------------------------------------------------------


@dataclass(frozen=True)
class ShiftRecord:
    """One finished shift of a line, as its last machine (the one whose output the line delivers) saw it."""

    line: str
    key: str  # "2026-12-01/day"
    start_ns: int
    end_ns: int
    pbt_s: float
    coverage: float | None
    oee: float | None
    planned_s: float  # the calendar's planned busy time: the shift minus its breaks
    realized: float | None  # ideal time of the good units over planned_s: the OEE capacity is planned with
    good: dict[str, int]  # per SKU
    produced: dict[str, int]  # per SKU
    fault_s: dict[str, float]  # per machine of the line: FAULT time
    failures: dict[str, int]  # per machine of the line


class ShiftHistory:
    """Finished shifts of every line, read once each: a shift is kept once the line's data reaches its end."""

    def __init__(self, cfg: FactoryConfig, historian: Historian) -> None:
        self.cfg = cfg
        self.historian = historian
        self._kept: dict[tuple[str, str], ShiftRecord] = {}
        self._lock = threading.Lock()

    def frame(self, line: Line, now_ns: int, days: int) -> pd.DataFrame:
        """One row per finished shift of `line` that ended in the `days` before `now_ns`: key, start_ns, pbt_s,
        coverage, oee, good, produced (units over every SKU) and the records themselves (column `record`)."""
        zone = ZoneInfo(self.cfg.site.timezone)
        today = datetime.fromtimestamp(now_ns / NS, zone).date()
        windows = [w for w in shift_windows(self.cfg.shifts, self.cfg.site.timezone,
                                            today - timedelta(days=days + 1), today)
                   if w.end_ns <= now_ns and w.end_ns > now_ns - days * 86400 * NS]
        reach: int | None = None
        rows = []
        for w in windows:
            key = f"{w.day.isoformat()}/{w.shift}"
            with self._lock:
                record = self._kept.get((line.id, key))
            if record is None:
                if reach is None:
                    marks = queries.watermarks(self.historian, self.cfg, line.id, now_ns)
                    last = line.machines[-1].id if line.machines else None
                    reach = marks.get(last, 0) if last else 0
                record = self._read(line, w, key)
                if w.end_ns <= reach:  # the data of the whole shift is in: it will not change any more
                    with self._lock:
                        self._kept[(line.id, key)] = record
            rows.append({"key": key, "start_ns": record.start_ns, "pbt_s": record.pbt_s,
                         "coverage": record.coverage, "oee": record.oee, "realized": record.realized,
                         "good": sum(record.good.values()),
                         "produced": sum(record.produced.values()), "record": record})
        return pd.DataFrame(rows, columns=["key", "start_ns", "pbt_s", "coverage", "oee", "realized", "good",
                                           "produced", "record"])

    def _read(self, line: Line, window: ShiftWindow, key: str) -> ShiftRecord:
        kpis = queries.line_shift_oee(self.historian, self.cfg, line.id, window)
        last = kpis[-1] if kpis else None
        planned = window.seconds - sum(b - a for a, b in window.breaks) / NS
        pru = queries.ideal_cycles(self.cfg, line.id)
        good_ideal = sum(s.good * pru.get(s.sku, 0.0) for s in last.by_sku) if last else 0.0
        return ShiftRecord(
            line=line.id, key=key, start_ns=window.start_ns, end_ns=window.end_ns,
            pbt_s=last.pbt_s if last else 0.0, coverage=last.coverage if last else None,
            oee=last.oee if last else None, planned_s=planned,
            # above 1 only if the line ran through its breaks or the ideal cycle time is too slow: capped, so
            # capacity never exceeds the planned time
            realized=min(1.0, good_ideal / planned) if planned > 0 and last else None,
            good={s.sku: s.good for s in last.by_sku} if last else {},
            produced={s.sku: s.produced for s in last.by_sku} if last else {},
            fault_s={k.machine: k.state_s.get("FAULT", 0.0) for k in kpis},
            failures={k.machine: k.failures for k in kpis})


def oee_basis(cfg: FactoryConfig, history: pd.DataFrame) -> OeeBasis:
    """The OEE a line's capacity is planned with: the median, over the finished shifts whose data covers at least
    90 % of their busy time, of the ideal time of the good units made over the calendar's planned busy time (the
    shift minus its breaks: the same PBT the capacity applies it to, so changeovers, waiting for orders and
    every other loss count as they will in the promise). With fewer than `capacity.min_shifts` such shifts, a
    cold start: the configured efficiency. Never a blend of the two."""
    usable = history[(history["coverage"].fillna(0) >= MIN_COVERAGE) & history["realized"].notna()
                     & (history["pbt_s"] > 0)] if len(history) else history
    if len(usable) < cfg.capacity.min_shifts:
        return OeeBasis(cfg.capacity.cold_start_oee, "configured", len(usable))
    return OeeBasis(float(usable["realized"].astype(float).median()), "trailing_median", len(usable))


def first_pass_yield(history: pd.DataFrame) -> dict[str, float | None]:
    """Good units over units made, per SKU, over the trailing shifts (units reworked are not told apart)."""
    good: dict[str, int] = {}
    made: dict[str, int] = {}
    for record in history["record"] if len(history) else ():
        for sku, n in record.produced.items():
            made[sku] = made.get(sku, 0) + n
            good[sku] = good.get(sku, 0) + record.good.get(sku, 0)
    return {sku: (good[sku] / n if n else None) for sku, n in sorted(made.items())}


def repair_s(history: pd.DataFrame, machine: str) -> float:
    """Mean time to repair of a machine over the trailing shifts (FAULT time / faults), or a default."""
    fault = failures = 0.0
    for record in history["record"] if len(history) else ():
        fault += record.fault_s.get(machine, 0.0)
        failures += record.failures.get(machine, 0)
    return fault / failures if failures else DEFAULT_REPAIR_S


# --- the inputs of a line's capacity ---------------------------------------------------------------------


def skus_of(cfg: FactoryConfig, line: str) -> dict[str, tuple[float, float]]:
    """SKU -> (ideal cycle time PRU in s, setup in s) of the SKUs made on `line`."""
    return {p.sku: (p.ideal_cycle_s[line], p.setup_min * 60) for p in cfg.products if line in p.ideal_cycle_s}


def open_orders(cfg: FactoryConfig, historian: Historian, line: Line, now_ns: int) -> list[Demand]:
    """The order running on the line: its remaining quantity at its SKU's ideal cycle time, plus what is left of
    its changeover (the SKU's setup from the order's start) while the line's last machine has made none of it."""
    order = queries.running_order(historian, line.id, now_ns)
    if order is None or not line.machines:
        return []
    skus = skus_of(cfg, line.id)
    pru, setup = skus.get(order["sku"], (0.0, 0.0))
    made = queries.counts_since(historian, line.id, order["start_ns"], now_ns + 1).get(line.machines[-1].id, {})
    left = max(0, int(order["target_qty"] or 0) - made.get("good", 0))
    setup_left = max(0.0, setup - (now_ns - order["start_ns"]) / NS) if not made.get("good") else 0.0
    return [Demand(line.id, order["order_id"], "order", order["sku"], left, pru, setup_left)]


def constraints_now(cfg: FactoryConfig, historian: Historian, line: Line, now_ns: int,
                    history: pd.DataFrame, current: dict[str, Any]) -> list[Constraint]:
    """Known losses of capacity from `current` (the line's board history, dashboard/board.py):
    - a machine in FAULT now stops the line until its expected repair: the fault's start plus the machine's
      mean time to repair; a fault already longer than that is expected to last another half of it from now;
    - stations short of operators against plan lose their share of the line for the next
      `capacity.constraint_horizon_min` (not in a break, nor in a shift's first 15 minutes, while people
      badge in);
    - a material of the running SKU that runs out within that horizon at the current rate, with no material
      call open for it, stops the line from then to the end of the horizon.
    Operators and materials end with the shift at the latest; a machine down lasts until its expected repair."""
    out: list[Constraint] = []
    window, on = board.current_shift(cfg, now_ns)
    shift_end = window.end_ns if window is not None and on else now_ns
    horizon_end = min(shift_end, now_ns + int(cfg.capacity.constraint_horizon_min * 60 * NS))
    for machine in line.machines:
        state = (current["machines"].get(machine.id) or {}).get("current") or {}
        if state.get("state") != "FAULT":
            continue
        since = queries.stop_start(historian, line.id, machine.id, "FAULT", now_ns)
        mttr = repair_s(history, machine.id)
        end = since + int(mttr * NS)
        if end <= now_ns:
            end = now_ns + int(mttr * NS / 2)
        out.append(Constraint(line.id, "machine_down", now_ns, end, 1.0))
    heads = current["people"]["headcount"]
    settled = window is not None and on and now_ns >= window.start_ns + BADGE_IN_S * NS \
        and not any(a <= now_ns < b for a, b in window.breaks)
    if settled and horizon_end > now_ns and heads["planned"] > 0 and heads["present"] < heads["planned"]:
        out.append(Constraint(line.id, "operators_missing", now_ns, horizon_end,
                              (heads["planned"] - heads["present"]) / heads["planned"]))
    called = {c["material"] for c in current["materials"]["calls"]}  # a delivery is on its way
    short = [i["minutes_to_shortage"] for i in current["materials"]["items"]
             if i["in_bom"] and i["minutes_to_shortage"] is not None and i["id"] not in called]
    if short:
        at = now_ns + int(min(short) * 60 * NS)
        if at < horizon_end:
            out.append(Constraint(line.id, "material_short", at, horizon_end, 1.0))
    return out


def maintenance_windows(cfg: FactoryConfig) -> list[tuple[str, int, int]]:
    zone = ZoneInfo(cfg.site.timezone)

    def ns(t: datetime) -> int:
        return int((t if t.tzinfo else t.replace(tzinfo=zone)).timestamp() * NS)

    return [(w.line, ns(w.start), ns(w.end)) for w in cfg.capacity.maintenance]


def buckets_for(cfg: FactoryConfig, now_ns: int, by: str) -> list[Bucket]:
    """Every line's buckets over the horizon from the local day of `now_ns` (a night shift that began the day
    before and is still on is included)."""
    zone = ZoneInfo(cfg.site.timezone)
    today = datetime.fromtimestamp(now_ns / NS, zone).date()
    days = cfg.capacity.horizon_days
    end_ns = now_ns + days * 86400 * NS
    found = plan_buckets(cfg.shifts, cfg.site.timezone, [ln.id for ln in cfg.lines], today - timedelta(days=1),
                         days + 2, cfg.capacity.holidays, maintenance_windows(cfg), by)
    return [b for b in found if b.end_ns > now_ns and b.start_ns < end_ns]


@dataclass(frozen=True)
class LineBase:
    """What a line's capacity is computed from, read from the historian once a minute: its buckets, its OEE,
    its open orders and the constraints in force."""

    line: str
    buckets: list[Bucket]
    basis: OeeBasis
    orders: list[Demand]
    constraints: list[Constraint]
    fpy: dict[str, float | None]
    skus: dict[str, tuple[float, float]]
    data_up_to_ns: int | None = None  # how far the data of the line's machines reaches (the least of them)


def line_base(cfg: FactoryConfig, historian: Historian, history: ShiftHistory, line: Line, now_ns: int,
              by: str) -> LineBase:
    past = history.frame(line, now_ns, cfg.capacity.trailing_days)
    current = board.line_history(cfg, historian, line.id, now_ns)
    reach: list[int | None] = [(current["machines"].get(m.id) or {}).get("reach_ms") for m in line.machines]
    known = [r for r in reach if r is not None]
    up_to = min(known) * 1_000_000 if known and len(known) == len(reach) else None
    return LineBase(line.id, [b for b in buckets_for(cfg, now_ns, by) if b.line == line.id], oee_basis(cfg, past),
                    open_orders(cfg, historian, line, now_ns), constraints_now(cfg, historian, line, now_ns, past,
                                                                               current),
                    first_pass_yield(past), skus_of(cfg, line.id), up_to)


@dataclass
class LineSnapshot:
    """A line's capacity with what it was computed from."""

    capacity: LineCapacity
    basis: OeeBasis
    demands: list[Demand]
    constraints: list[Constraint]
    fpy: dict[str, float | None]
    data_up_to_ns: int | None = None


def line_snapshot(base: LineBase, holds: Sequence[Demand], now_ns: int) -> LineSnapshot:
    """The line's capacity with its open orders first, then the active holds in the order they were placed."""
    demands = base.orders + [h for h in holds if h.line == base.line]
    capacity = line_capacity(base.line, base.buckets, base.basis, demands, base.constraints, base.skus, now_ns)
    return LineSnapshot(capacity, base.basis, demands, base.constraints, base.fpy, base.data_up_to_ns)


def local_day(cfg: FactoryConfig, t_ns: int) -> date:
    return datetime.fromtimestamp(t_ns / NS, ZoneInfo(cfg.site.timezone)).date()


# --- the documents the platform gets ---------------------------------------------------------------------


def iso(t_ns: int) -> str:
    """RFC 3339 in UTC, to the second."""
    return datetime.fromtimestamp(t_ns // NS, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(x: float) -> float:
    return round(float(x), 1)


def capacity_document(cfg: FactoryConfig, snapshots: Sequence[LineSnapshot], as_of_ns: int, by: str) -> dict[str, Any]:
    lines = []
    lag_ns = int(cfg.kpi.watermark_lag_s * NS)
    for snap in snapshots:
        cap = snap.capacity
        up_to = snap.data_up_to_ns
        lines.append({
            "line": cap.line,
            # the constraints now are read from the line's data: where it does not reach now, they may be missing
            "data_up_to": iso(up_to) if up_to is not None else None,
            "data_lags": up_to is None or up_to < as_of_ns - lag_ns,
            "oee": {"value": round(snap.basis.oee, 4), "basis": snap.basis.basis, "shifts": snap.basis.shifts},
            "first_pass_yield": {sku: None if v is None else round(v, 4) for sku, v in snap.fpy.items()},
            "constraints": [{"reason": c.reason, "from": iso(c.start_ns), "to": iso(c.end_ns),
                             "share": round(c.share, 4)} for c in snap.constraints],
            "committed": [{"ref": d.ref, "kind": d.kind, "sku": d.sku, "qty": d.qty,
                           "seconds": _seconds(d.seconds),
                           "completion": None if (t := cap.completion_ns(d.ref)) is None else iso(t)}
                          for d in snap.demands],
            "overbooked_s": _seconds(cap.overbooked_s),
            "buckets": [{
                "key": b.key, "start": iso(b.start_ns), "end": iso(b.end_ns), "pbt_s": _seconds(b.pbt_s),
                "total_s": _seconds(b.total_s), "committed_s": _seconds(b.committed_s),
                "unattainable_s": {r: _seconds(s) for r, s in sorted(b.unattainable_s.items())},
                "available_s": _seconds(b.available_s), "available_qty": dict(b.available_qty),
            } for b in cap.buckets],
        })
    return {"site": cfg.site.id, "as_of": iso(as_of_ns), "granularity": by,
            "horizon_days": cfg.capacity.horizon_days, "lines": lines}


class AnswerCache:
    """Encoded feed answers by question; bounded, and emptied whenever the minute they are of moves on."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._kept: dict[Any, Any] = {}
        self._minute: Any = None

    def get(self, key: tuple[Any, ...]) -> Any:
        with self._lock:
            return self._kept.get(key)

    def put(self, key: tuple[Any, ...], value: Any) -> Any:
        with self._lock:
            if key[1] != self._minute or len(self._kept) >= self.size:
                self._kept.clear()
                self._minute = key[1]
            self._kept[key] = value
        return value


class CapacityService:
    """Capacity of every line. What comes from the historian is read as of the start of the current minute and
    kept for that minute; the holds are applied on every read (cheap), so a hold placed counts at once. Every
    reader within a minute and without a hold placed gets the same figures and the same ETag."""

    def __init__(self, cfg: FactoryConfig, historian: Historian, now_ns: Callable[[], int],
                 holds: HoldStore | None = None) -> None:
        self.cfg = cfg
        self.historian = historian
        self.now_ns = now_ns
        self.holds = holds
        self.history = ShiftHistory(cfg, historian)
        self.answers = AnswerCache()
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int, list[LineBase]]] = {}

    def bases(self, by: str, exact: bool = False) -> tuple[int, list[LineBase]]:
        """(as of, what each line's capacity is computed from): as of the minute and kept for it, or with
        `exact` as of now and not kept (the push, right after a significant change)."""
        if exact:
            now = self.now_ns()
            return now, [line_base(self.cfg, self.historian, self.history, line, now, by) for line in self.cfg.lines]
        at = as_of(self.now_ns())
        with self._lock:
            kept = self._cache.get(by)
            if kept is not None and kept[0] == at:
                return kept
            bases = [line_base(self.cfg, self.historian, self.history, line, at, by) for line in self.cfg.lines]
            self._cache[by] = (at, bases)
            return at, bases

    def hold_demands(self, at_ns: int) -> list[Demand]:
        if self.holds is None:
            return []
        return [Demand(h.line, h.id, "hold", h.sku, h.qty, h.pru_s, h.setup_s, h.not_before_ns)
                for h in self.holds.active(at_ns)]

    def snapshots(self, by: str, exact: bool = False) -> tuple[int, list[LineSnapshot]]:
        """(as_of, one snapshot per line) at granularity `by`, with the holds active now."""
        at, bases = self.bases(by, exact)
        holds = self.hold_demands(max(at, self.now_ns()))
        return at, [line_snapshot(base, holds, at) for base in bases]

    def capacity(self, by: str) -> dict[str, Any]:
        at, snaps = self.snapshots(by)
        return capacity_document(self.cfg, snaps, at, by)


def inventory_document(cfg: FactoryConfig, now_ns: int) -> dict[str, Any]:
    """Finished-goods stock per SKU (from `capacity.finished_goods`; a SKU not listed has none on record)."""
    return {"site": cfg.site.id, "as_of": iso(as_of(now_ns)),
            "items": [{"sku": p.sku, "qty": cfg.capacity.finished_goods.get(p.sku), "unit": "pcs",
                       "source": "config" if p.sku in cfg.capacity.finished_goods else None}
                      for p in cfg.products]}


def prices_document(cfg: FactoryConfig) -> dict[str, Any]:
    """The supply price per SKU from the products (a SKU without a price is listed with null)."""
    return {"site": cfg.site.id,
            "items": [{"sku": p.sku, "name": p.name, "price": p.price, "currency": p.currency}
                      for p in cfg.products]}


def orders_document(cfg: FactoryConfig, historian: Historian, snapshots: Sequence[LineSnapshot], start_ns: int,
                    end_ns: int, line_ids: Sequence[str]) -> dict[str, Any]:
    """Orders that ran on the lines over [start, end): progress (good and rejected units of the line's last
    machine in the order's span), the expected completion of a running order from its line's capacity, and the
    genealogy: the material lots loaded on the line for it (the lot in use at its start and every lot loaded
    while it ran)."""
    by_line = {s.capacity.line: s for s in snapshots}
    out = []
    for line in cfg.lines:
        if line.id not in line_ids or not line.machines:
            continue
        last = line.machines[-1].id
        spans = order_spans(historian, line.id, start_ns, end_ns)
        lots = queries.line_events(historian, "material_event", line.id,
                                   start_ns - queries.ORDER_LOOKBACK_S * NS, end_ns)
        lots = [e for e in lots if e.tags["event"] == "lot_loaded"]
        for o in spans:
            stop = o["stop_ns"]
            made = queries.counts_since(historian, line.id, o["start_ns"], (stop + 1) if stop else end_ns).get(
                last, {})
            in_use: dict[tuple[str, str], Any] = {}
            used = []
            for e in lots:
                key = (e.tags["station"], e.tags["material"])
                if e.time_ns <= o["start_ns"]:
                    in_use[key] = e
                elif stop is None or e.time_ns <= stop:
                    used.append(e)
            genealogy = [{"material": e.tags["material"], "lot": e.fields.get("lot"), "station": e.tags["station"],
                          "loaded": iso(e.time_ns)} for e in [*in_use.values(), *used]]
            snap = by_line.get(line.id)
            done = stop is not None
            eta = None if done or snap is None else snap.capacity.completion_ns(o["order_id"])
            out.append({"order_id": o["order_id"], "line": line.id, "sku": o["sku"],
                        "target_qty": o["target_qty"], "status": "done" if done else "running",
                        "start": iso(o["start_ns"]), "stop": iso(stop) if done else None,
                        "good": made.get("good", 0), "rejected": made.get("reject", 0),
                        "estimated_completion": iso(eta) if eta is not None else None,
                        "lots": genealogy})
    return {"site": cfg.site.id, "orders": sorted(out, key=lambda o: (o["start"], o["order_id"]))}


def order_spans(historian: Historian, line: str, start_ns: int, end_ns: int) -> list[dict[str, Any]]:
    """Orders of `line` whose span overlaps [start, end), with their ids and quantities (stop None: running)."""
    events = historian.events("order_event", start_ns - queries.ORDER_LOOKBACK_S * NS, end_ns, line=line)
    out: list[dict[str, Any]] = []
    running: dict[str, Any] | None = None
    for e in events:
        if running is not None and (e.tags["event"] == "start" or e.fields.get("order_id") == running["order_id"]):
            running["stop_ns"] = e.time_ns
            out.append(running)
            running = None
        if e.tags["event"] == "start":
            running = {"order_id": str(e.fields["order_id"]), "sku": str(e.fields["sku"]),
                       "target_qty": int(e.fields.get("target_qty") or 0), "start_ns": e.time_ns, "stop_ns": None}
    if running is not None:
        out.append(running)
    return [o for o in out if (o["stop_ns"] is None or o["stop_ns"] >= start_ns) and o["start_ns"] < end_ns]
