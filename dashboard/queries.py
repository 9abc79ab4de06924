"""The only code of the dashboard that reads the historian: it turns historian reads into KPI inputs.

Works on any backend of the historian interface (agent/historian.py), so the boards read SQLite and InfluxDB
alike.
"""

from __future__ import annotations

from agent.config import FactoryConfig
from agent.historian import Historian
from dashboard.kpi.oee import Count, Order, ShiftOee, shift_oee
from dashboard.kpi.shifts import NS, ShiftWindow

# An order still running at a shift's start was started at most this long before it; older starts are not read.
ORDER_LOOKBACK_S = 14 * 86400
# Counts are read in buckets of this length; each bucket's units go to the order running at its start.
COUNT_BUCKET_S = 60


def orders(historian: Historian, line: str, start_ns: int, end_ns: int) -> list[Order]:
    """Orders running on `line` over [start, end), from its `order_event` points: an order runs from its
    start until its stop or the next order's start on the line, whichever comes first."""
    events = historian.events("order_event", start_ns - ORDER_LOOKBACK_S * NS, end_ns, line=line)
    out: list[Order] = []
    running: tuple[int, str, str] | None = None  # (since, order_id, sku)
    for e in events:
        if running is not None and (e.tags["event"] == "start" or e.fields.get("order_id") == running[1]):
            out.append(Order(running[0], e.time_ns, running[2]))
            running = None
        if e.tags["event"] == "start":
            running = (e.time_ns, str(e.fields["order_id"]), str(e.fields["sku"]))
    if running is not None:
        out.append(Order(running[0], end_ns, running[2]))
    return [o for o in out if o.end_ns > start_ns and o.start_ns < end_ns]


def line_shift_oee(historian: Historian, cfg: FactoryConfig, line_id: str, window: ShiftWindow) -> list[ShiftOee]:
    """ISO 22400 figures of every machine of the line over the shift window (up to its end or now)."""
    line = next(ln for ln in cfg.lines if ln.id == line_id)
    ideal = {p.sku: p.ideal_cycle_s[line_id] for p in cfg.products if line_id in p.ideal_cycle_s}
    intervals = historian.state_intervals(window.start_ns, window.end_ns, line=line_id)
    buckets = historian.count_sums(window.start_ns, window.end_ns, COUNT_BUCKET_S, line=line_id)
    running = orders(historian, line_id, window.start_ns, window.end_ns)
    out = []
    for machine in line.machines:
        counts = [Count(b.bucket_start_ns, b.counter, b.delta) for b in buckets if b.machine == machine.id]
        states = [i for i in intervals if i.machine == machine.id]
        out.append(shift_oee(machine.id, window, states, counts, running, ideal))
    return out
