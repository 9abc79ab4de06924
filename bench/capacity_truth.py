"""Capacity truth: what the factory would have promised against what its simulated plant really made.

The simulated plant (simulators/plant/) runs for `days` simulated days, fast-forwarded in one process. What its
PLCs show becomes historian points as the agent writes them (a state point per change, a count point per counter
change, the product a machine reports), and what its MQTT devices say goes through the agent's own mapping
(agent/core/mapping.py) into the same SQLite historian. The capacity the dashboard publishes is computed from that
historian, as the feed and the push compute it:

- a day ahead of every shift (at the start of the shift 24 h before it), the Total capacity promised for it;
  compared with the ideal time of the good units the line's last machine really made in it (units x ideal
  cycle time, from the plant's own ground truth): MAPE per line;
- at every order's start, its promised completion; compared with when it really finished: the share of orders
  finished by the promised date (the local day), and by the promised time.

The first `warmup_days` build the trailing history (the OEE median) and are not scored.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from agent.config import FactoryConfig, load
from agent.core.mapping import Mapper, MappingResult
from agent.core.schema import Point
from agent.sinks.sqlite_historian import SqliteHistorian
from dashboard.c2m import CapacityService
from simulators.plant import FloorMessage, MachineSnapshot, Plant

ROOT = Path(__file__).resolve().parent.parent
NS = 1_000_000_000
US = 1_000_000


class HistorianFeed:
    """Plant output -> historian points, as the agent would write them."""

    def __init__(self, cfg: FactoryConfig, historian: SqliteHistorian) -> None:
        self.cfg = cfg
        self.historian = historian
        self.site = cfg.site.id
        self.mapper = Mapper(cfg.mapping_plan())
        self.mqtt_source = cfg.sources.mqtt[0].id
        self.last: dict[tuple[str, str], MachineSnapshot] = {}
        self.with_product = {m.id for _, m in cfg.machines()
                             if any(t.signal == "product" for t in cfg.machine_types[m.type].tags)}
        self.pending: list[Point] = []
        self.level_minute: dict[str, int] = {}

    def flush(self) -> None:
        if self.pending:
            self.historian.write(self.pending)
            self.pending = []

    def write(self, snapshots: list[MachineSnapshot], messages: list[FloorMessage]) -> None:
        """Queue the points of a step; written in batches by `flush` (before any capacity is computed)."""
        points = self.pending
        for s in snapshots:
            key = (s.line, s.machine)
            before = self.last.get(key)
            at = s.at_us * 1000
            tags = {"site": self.site, "line": s.line, "machine": s.machine}
            if before is None or before.state != s.state:
                points.append(Point("machine_state", tags, {"state": s.state.value, "raw": s.state.value}, at))
            for counter in ("total", "good", "reject"):
                delta = getattr(s, counter) - (getattr(before, counter) if before else 0)
                if delta:
                    points.append(Point("machine_count", {**tags, "counter": counter},
                                        {"delta": delta, "value": getattr(s, counter)}, at))
            if s.machine in self.with_product and s.sku and (before is None or before.sku != s.sku):
                points.append(Point("machine_product", tags, {"sku": s.sku, "raw": s.sku}, at))
            self.last[key] = s
        out = MappingResult()
        for m in messages:
            if m.signal == "material_level":  # scales report every few seconds: one a minute is plenty here
                minute = m.due_us // (60 * US)
                if self.level_minute.get(m.topic) == minute:
                    continue
                self.level_minute[m.topic] = minute
            body = {**m.body, "ts": datetime.fromtimestamp(m.due_us / US, UTC).isoformat()}
            self.mapper.mqtt_message(self.mqtt_source, m.topic, _json(body), m.due_us * 1000, out)
        points += out.points
        if len(points) > 50_000:
            self.flush()


def _json(body: dict[str, Any]) -> bytes:
    import json

    return json.dumps(body).encode()


def measure(days: int = 21, warmup_days: int = 7, seed: int = 1, step_s: int = 30,
            config: Path = ROOT / "config" / "factory.yaml") -> dict[str, Any]:
    cfg = load(config)
    zone = ZoneInfo(cfg.site.timezone)
    first = date(2026, 11, 2)  # a Monday
    origin_ns = int(datetime.combine(first, datetime.min.time(), zone).timestamp()) * NS
    end_ns = origin_ns + days * 86400 * NS
    scored_from = origin_ns + warmup_days * 86400 * NS
    plant = Plant(cfg, seed, origin_ns // 1000)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        historian = SqliteHistorian(Path(tmp) / "historian.sqlite3", retention_days=3650)
        clock = [origin_ns]
        service = CapacityService(cfg, historian, lambda: clock[0])
        feed = HistorianFeed(cfg, historian)
        last_machine = {ln.id: ln.machines[-1].id for ln in cfg.lines}
        pru = {ln.id: {p.sku: p.ideal_cycle_s[ln.id] for p in cfg.products if ln.id in p.ideal_cycle_s}
               for ln in cfg.lines}
        promised: dict[tuple[str, str], float] = {}  # (line, shift key) -> Total s promised a day ahead
        made: dict[tuple[str, str], float] = {}  # (line, shift key) -> ideal s of good units made
        orders: dict[str, dict[str, Any]] = {}
        shift_starts = sorted({w.start_ns for w in plant.calendar.windows(first, first + timedelta(days=days))})
        next_start = 0
        shifts_read: set[str] = set()
        t = origin_ns
        while t < end_ns:
            t_next = t + step_s * NS
            snapshots, messages = plant.advance(t_next // 1000)
            feed.write(snapshots, messages)
            clock[0] = t_next
            for m in messages:
                if m.signal != "order_event":
                    continue
                order_id, event = str(m.body["order_id"]), m.body["event"]
                line = m.topic.split("/")[1]
                if event == "start" and m.due_us * 1000 >= scored_from:
                    feed.flush()
                    _, snaps = service.snapshots("shift", exact=True)
                    cap = next(s.capacity for s in snaps if s.capacity.line == line)
                    orders[order_id] = {"line": line, "promised_ns": cap.completion_ns(order_id),
                                        "start_ns": m.due_us * 1000}
                elif event == "stop" and order_id in orders:
                    orders[order_id]["done_ns"] = m.due_us * 1000
            while next_start < len(shift_starts) and shift_starts[next_start] <= t_next:
                boundary = shift_starts[next_start]
                next_start += 1
                # the shifts that ended by now: what the last machine really made in them
                for (line_id, machine_id), mt in plant.truth._machines.items():
                    if machine_id != last_machine[line_id]:
                        continue
                    for key, shift in mt.shifts.items():
                        if shift["end_ms"] * 1_000_000 <= t_next and (line_id, key) not in made:
                            made[(line_id, key)] = sum(u["good"] * pru[line_id].get(sku, 0.0)
                                                       for sku, u in shift["units"].items())
                if boundary + 86400 * NS < scored_from or boundary + 86400 * NS >= end_ns:
                    continue
                feed.flush()
                _, snaps = service.snapshots("shift", exact=True)
                for snap in snaps:
                    for b in snap.capacity.buckets:
                        if b.start_ns == boundary + 86400 * NS:
                            promised[(snap.capacity.line, b.key)] = b.total_s
            t = t_next
            shifts_read.update(k for _, k in made)
        historian.close()
    elapsed = time.monotonic() - started
    per_line: dict[str, Any] = {}
    for line in (ln.id for ln in cfg.lines):
        pairs = [(promised[k], made[k]) for k in promised if k[0] == line and k in made and made[k] > 0]
        errors = [abs(p - a) / a for p, a in pairs]
        per_line[line] = {"shifts": len(pairs), "mape": statistics.mean(errors) if errors else None,
                          "bias": statistics.mean((p - a) / a for p, a in pairs) if pairs else None}
    done = [o for o in orders.values() if "done_ns" in o]
    with_promise = [o for o in done if o["promised_ns"] is not None]

    def day(ns: int) -> date:
        return datetime.fromtimestamp(ns / NS, zone).date()

    return {
        "days": days, "warmup_days": warmup_days, "seed": seed, "elapsed_s": round(elapsed, 1),
        "lines": per_line,
        "orders": len(done), "orders_with_promise": len(with_promise),
        "dates_met": (sum(day(o["done_ns"]) <= day(o["promised_ns"]) for o in with_promise) / len(with_promise)
                      if with_promise else None),
        "times_met": (sum(o["done_ns"] <= o["promised_ns"] for o in with_promise) / len(with_promise)
                      if with_promise else None),
        # how much earlier than promised the orders finished, in minutes (negative: late)
        "margin_min": _quartiles([(o["promised_ns"] - o["done_ns"]) / NS / 60 for o in with_promise]),
        "duration_min": _quartiles([(o["done_ns"] - o["start_ns"]) / NS / 60 for o in with_promise]),
    }


def _quartiles(values: list[float]) -> dict[str, float] | None:
    if len(values) < 4:
        return None
    q = statistics.quantiles(values, n=4)
    return {"min": round(min(values), 1), "q1": round(q[0], 1), "median": round(q[1], 1), "q3": round(q[2], 1),
            "max": round(max(values), 1)}


if __name__ == "__main__":
    import json
    import sys

    days = int(sys.argv[1]) if len(sys.argv) > 1 else 21
    print(json.dumps(measure(days=days, warmup_days=min(7, days // 3)), indent=1))
