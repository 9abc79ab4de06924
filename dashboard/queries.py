"""The only code of the dashboard that reads the historian: it turns historian reads into KPI inputs.

Works on any backend of the historian interface (agent/historian.py), so the boards read SQLite and InfluxDB
alike.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, NamedTuple

from agent.config import FactoryConfig
from agent.core.schema import MEASUREMENTS, Point, SchemaError, validate
from agent.core.states import BoardState
from agent.historian import CountBucket, Historian, HistorianError, StateInterval
from dashboard.kpi.andon import AndonCall, andon_calls
from dashboard.kpi.oee import Count, Order, ShiftOee, shift_oee
from dashboard.kpi.shifts import NS, ShiftWindow
from dashboard.states import STOP_STATES

# An order still running at a shift's start was started at most this long before it; older starts are not read.
ORDER_LOOKBACK_S = 14 * 86400
# Counts are read in buckets of this length; each bucket's units go to the order running at its start.
COUNT_BUCKET_S = 60


def orders(historian: Historian, line: str, start_ns: int, end_ns: int) -> list[Order]:
    """Orders running on `line` over [start, end), from its `order_event` points: an order runs from its
    start until its stop or the next order's start on the line, whichever comes first. Its stop is part of it:
    the unit counted at the very moment an order stops is the one that completed it."""
    events = historian.events("order_event", start_ns - ORDER_LOOKBACK_S * NS, end_ns, line=line)
    out: list[Order] = []
    running: tuple[int, str, str] | None = None  # (since, order_id, sku)
    for e in events:
        if running is not None and (e.tags["event"] == "start" or e.fields.get("order_id") == running[1]):
            own_stop = e.tags["event"] == "stop"
            out.append(Order(running[0], e.time_ns + 1 if own_stop else e.time_ns, running[2]))
            running = None
        if e.tags["event"] == "start":
            running = (e.time_ns, str(e.fields["order_id"]), str(e.fields["sku"]))
    if running is not None:
        out.append(Order(running[0], end_ns, running[2]))
    return [o for o in out if o.end_ns > start_ns and o.start_ns < end_ns]


def product_spans(historian: Historian, cfg: FactoryConfig, line: str, start_ns: int,
                  end_ns: int) -> dict[str, list[Order]]:
    """What each machine of `line` whose type has a product tag reported making over [start, end), as spans
    from one report to the next (machines without a product tag are not in the result)."""
    line_conf = next(ln for ln in cfg.lines if ln.id == line)
    with_tag = {m.id for m in line_conf.machines
                if any(t.signal == "product" for t in cfg.machine_types[m.type].tags)}
    if not with_tag or "machine_product" not in MEASUREMENTS:
        return {}
    out: dict[str, list[Order]] = {m: [] for m in with_tag}
    last: dict[str, tuple[int, str]] = {}
    for e in historian.events("machine_product", start_ns - ORDER_LOOKBACK_S * NS, end_ns, line=line):
        machine = e.tags["machine"]
        if machine not in with_tag:
            continue
        if machine in last:
            out[machine].append(Order(last[machine][0], e.time_ns, last[machine][1]))
        last[machine] = (e.time_ns, str(e.fields["sku"]))
    for machine, (since, sku) in last.items():
        out[machine].append(Order(since, end_ns, sku))
    return {m: [o for o in spans if o.end_ns > start_ns] for m, spans in out.items()}


# The measurements a machine's PLC data arrives in: the newest of their points is how far its data reaches.
MACHINE_MEASUREMENTS = ("machine_state", "machine_count", "process_value", "alarm")
# A point stamped further ahead of the board's clock than this is a wrong clock, not data that reaches now.
FUTURE_TOLERANCE_S = 60


def watermarks(historian: Historian, cfg: FactoryConfig, line: str, now_ns: int) -> dict[str, int]:
    """How far each machine's data reaches, up to now: the newest of the points the historian holds from it and
    the newest heartbeat of its source (the agent writes one every few seconds, so a machine whose values do
    not change still reaches now while its agent runs). A machine point more than a minute ahead of now (a PLC
    clock set wrong) does not count."""
    ahead = now_ns + FUTURE_TOLERANCE_S * NS
    out: dict[str, int] = {}
    for measurement in MACHINE_MEASUREMENTS:
        for p in historian.last_values(measurement, line=line):
            if p.time_ns <= ahead:
                machine = p.tags["machine"]
                out[machine] = max(out.get(machine, 0), p.time_ns)
    # a heartbeat is stamped by the agent's clock, not a PLC's: one later than now means the agent was alive
    # beyond now (the board looks at a past moment), so the data reaches now
    heartbeats = {p.tags["source"]: p.time_ns for p in historian.last_values("source_heartbeat")}
    line_conf = next(ln for ln in cfg.lines if ln.id == line)
    for m in line_conf.machines:
        if m.source in heartbeats:
            out[m.id] = max(out.get(m.id, 0), heartbeats[m.source])
    return {m: min(t, now_ns) for m, t in out.items()}


class LineShift(NamedTuple):
    """What the historian holds of one line over a shift window: the reads every board of the line is built from."""

    intervals: list[StateInterval]
    buckets: list[CountBucket]
    orders: list[Order]
    products: dict[str, list[Order]] = {}

    def counts(self, machine: str) -> list[Count]:
        return [Count(b.bucket_start_ns, b.counter, b.delta) for b in self.buckets if b.machine == machine]

    def states(self, machine: str) -> list[StateInterval]:
        return [i for i in self.intervals if i.machine == machine]


def read_line_shift(historian: Historian, line_id: str, window: ShiftWindow,
                    cfg: FactoryConfig | None = None) -> LineShift:
    """The line's states, counts (minute buckets; the buckets an order or product change falls in are read
    point by point, so every unit goes to the SKU it was made as), orders and products over the window."""
    order_list = orders(historian, line_id, window.start_ns, window.end_ns)
    products = product_spans(historian, cfg, line_id, window.start_ns, window.end_ns) if cfg else {}
    buckets = historian.count_sums(window.start_ns, window.end_ns, COUNT_BUCKET_S, line=line_id)
    bucket_ns = COUNT_BUCKET_S * NS
    edges = {t // bucket_ns * bucket_ns for span in (order_list, *products.values()) for o in span
             for t in (o.start_ns, o.end_ns) if window.start_ns <= t < window.end_ns and t % bucket_ns}
    if edges:
        buckets = [b for b in buckets if b.bucket_start_ns not in edges]
        for start in sorted(edges):
            for p in historian.events("machine_count", max(start, window.start_ns),
                                      min(start + bucket_ns, window.end_ns), line=line_id):
                buckets.append(CountBucket(line_id, p.tags["machine"], p.tags["counter"], p.time_ns,
                                           int(p.fields["delta"])))
    return LineShift(historian.state_intervals(window.start_ns, window.end_ns, line=line_id), buckets, order_list,
                     products)


def ideal_cycles(cfg: FactoryConfig, line_id: str) -> dict[str, float]:
    """PRU: ideal cycle time in seconds per SKU on the line."""
    return {p.sku: p.ideal_cycle_s[line_id] for p in cfg.products if line_id in p.ideal_cycle_s}


def shift_oee_of(cfg: FactoryConfig, line_id: str, window: ShiftWindow, data: LineShift,
                 reach_ns: dict[str, int] | None = None) -> list[ShiftOee]:
    """ISO 22400 figures of every machine of the line from its shift reads; with `reach_ns`, each machine's up
    to the time its data reaches (its watermark), never beyond."""
    line = next(ln for ln in cfg.lines if ln.id == line_id)
    ideal = ideal_cycles(cfg, line_id)
    out = []
    for m in line.machines:
        part = window
        if reach_ns is not None and m.id in reach_ns:
            part = up_to(window, reach_ns[m.id])
        out.append(shift_oee(m.id, part, data.states(m.id), data.counts(m.id), data.orders, ideal,
                             data.products.get(m.id)))
    return out


def up_to(window: ShiftWindow, end_ns: int) -> ShiftWindow:
    """The part of a shift window up to `end_ns` (at least 1 ns long), its breaks clipped."""
    end = max(min(window.end_ns, end_ns), window.start_ns + 1)
    breaks = tuple((max(a, window.start_ns), min(b, end)) for a, b in window.breaks if a < end)
    return ShiftWindow(window.shift, window.day, window.start_ns, end, breaks)


def line_shift_oee(historian: Historian, cfg: FactoryConfig, line_id: str, window: ShiftWindow) -> list[ShiftOee]:
    """ISO 22400 figures of every machine of the line over the shift window (up to its end or now)."""
    return shift_oee_of(cfg, line_id, window, read_line_shift(historian, line_id, window, cfg))


def running_order(historian: Historian, line: str, now_ns: int) -> dict[str, Any] | None:
    """The order running on the line at `now_ns`: order_id, sku, target_qty and start_ns; None when none runs."""
    running: dict[str, Any] | None = None
    for e in historian.events("order_event", now_ns - ORDER_LOOKBACK_S * NS, now_ns + 1, line=line):
        if e.tags["event"] == "start":
            running = {"order_id": str(e.fields["order_id"]), "sku": str(e.fields["sku"]),
                       "target_qty": e.fields.get("target_qty"), "start_ns": e.time_ns}
        elif running is not None and e.fields.get("order_id") == running["order_id"]:
            running = None
    return running


def counts_since(historian: Historian, line: str, start_ns: int, end_ns: int) -> dict[str, dict[str, int]]:
    """Units per machine and counter over [start, end)."""
    out: dict[str, dict[str, int]] = {}
    bucket_s = max(60, (end_ns - start_ns) // NS + 60)
    for b in historian.count_sums(start_ns, end_ns, int(bucket_s), line=line):
        per = out.setdefault(b.machine, {})
        per[b.counter] = per.get(b.counter, 0) + b.delta
    return out


def machine_counts(historian: Historian, line: str, machine: str, start_ns: int, end_ns: int) -> list[Count]:
    """A machine's counter deltas over [start, end) in minute buckets."""
    return [Count(b.bucket_start_ns, b.counter, b.delta)
            for b in historian.count_sums(start_ns, end_ns, COUNT_BUCKET_S, line=line, machine=machine)]


def machine_count_points(historian: Historian, line: str, machine: str, start_ns: int, end_ns: int) -> list[Count]:
    """A machine's counter deltas over [start, end), each at its own time (for a rate over a window that does not
    fall on minute edges)."""
    return [Count(p.time_ns, p.tags["counter"], int(p.fields["delta"]))
            for p in historian.events("machine_count", start_ns, end_ns, line=line, machine=machine)]


# People and materials read further back than the shift: a badge swiped in, an andon call or a material call
# made before the shift started is still in force.
PEOPLE_LOOKBACK_S = 24 * 3600


def line_events(historian: Historian, measurement: str, line: str, start_ns: int, end_ns: int) -> list[Point]:
    return historian.events(measurement, start_ns, end_ns, line=line)


# Scales report every few seconds: the level in force at a time is looked for this far back, then the newest.
LEVEL_LOOKBACK_S = 900


def material_levels(historian: Historian, line: str, at_ns: int | None = None) -> dict[str, tuple[float, int]]:
    """Line-side stock per material as of `at_ns` (the newest report at or before it; None: the newest of all),
    as (level, time_ns)."""
    newest = {p.tags["material"]: (float(p.fields["level"]), p.time_ns)
              for p in historian.last_values("material_level", line=line)}
    if at_ns is None or all(t <= at_ns for _, t in newest.values()):
        return newest
    out = {m: v for m, v in newest.items() if v[1] <= at_ns}
    for p in historian.events("material_level", at_ns - LEVEL_LOOKBACK_S * NS, at_ns + 1, line=line):
        out[p.tags["material"]] = (float(p.fields["level"]), p.time_ns)
    return out


def process_trends(historian: Historian, line: str, machine: str, start_ns: int,
                   end_ns: int, max_points: int = 600) -> dict[str, list[tuple[int, float | None]]]:
    """Each process value of a machine over [start, end), thinned to at most `max_points` per name."""
    names = sorted({p.tags["name"] for p in historian.last_values("process_value", line=line, machine=machine)})
    out = {}
    for name in names:
        points = historian.series("process_value", "value", start_ns, end_ns, line=line, machine=machine, name=name)
        step = max(1, len(points) // max_points)
        out[name] = points[::step]
    return out


class StopNotFound(HistorianError):
    """No stop of the machine starts at the given time."""


class StopTooShort(HistorianError):
    """A STOPPED still going on, and shorter than the micro-stop threshold: a micro-stop so far, no reason."""


def set_stop_reason(historian: Historian, site: str, line: str, machine: str, start_ns: int, reason: str,
                    now_ns: int, microstop_s: float = 0.0) -> tuple[str, int, int]:
    """Give `reason` to the whole stop starting at `start_ns`: every state point of it, up to the next change of
    state, is rewritten with the reason (same identity, so nothing else changes). Returns (state, start, end).
    A STOPPED still going on and shorter than `microstop_s` is refused (StopTooShort): the agent may yet write it
    again as a MICROSTOP, which needs no reason."""
    points = historian.events("machine_state", start_ns, max(now_ns, start_ns) + 1, line=line, machine=machine)
    if not points or points[0].time_ns != start_ns or points[0].fields.get("state") not in STOP_STATES:
        raise StopNotFound(f"{line}/{machine}: no stop starts at {start_ns}", retry=False)
    state = points[0].fields["state"]
    stop = []
    end_ns = max(now_ns, start_ns)
    for p in points:
        if p.fields.get("state") != state:
            end_ns = p.time_ns
            break
        stop.append(p)
    if state == BoardState.STOPPED and end_ns == max(now_ns, start_ns) and now_ns - start_ns < microstop_s * NS:
        raise StopTooShort(f"{line}/{machine}: the stop at {start_ns} is a micro-stop so far "
                           f"(under {microstop_s:g} s); give it a reason once it is longer", retry=False)
    historian.write([Point("machine_state", {"site": site, "line": line, "machine": machine},
                           {"state": state, "raw": p.fields.get("raw", ""), "reason": reason}, p.time_ns)
                     for p in stop])
    return state, start_ns, end_ns


class CallNotFound(HistorianError):
    """No andon call with that id was made on the line within PEOPLE_LOOKBACK_S (the calls the board shows)."""


class CallClosed(HistorianError):
    """The andon call is already acknowledged or resolved."""


# One acknowledgement per call from this dashboard: two leads pressing at once must not both write one.
_ack_lock = threading.Lock()


def ack_andon_call(historian: Historian, site: str, line: str, call_id: str, badge: str, now_ns: int) -> AndonCall:
    """Acknowledge the open andon call `call_id` of `line` as `badge` at `now_ns`: an `andon_event` with event=ack
    and the call's station and kind, as a station's ack button writes it. Returns the call as acknowledged.
    CallNotFound for a call the board does not list (unknown id, older than PEOPLE_LOOKBACK_S, or dated after
    now); CallClosed for one already acknowledged or resolved."""
    with _ack_lock:
        events = historian.events("andon_event", now_ns - PEOPLE_LOOKBACK_S * NS, now_ns + 1, line=line)
        call = next((c for c in andon_calls(events) if c.call_id == call_id and c.called_ns is not None), None)
        if call is None or call.called_ns is None:
            raise CallNotFound(f"{line}: no andon call {call_id!r} in the last {PEOPLE_LOOKBACK_S // 3600} h",
                               retry=False)
        if call.resolved_ns is not None:
            raise CallClosed(f"{line}: andon call {call_id!r} is already resolved", retry=False)
        if call.acked_ns is not None:
            raise CallClosed(f"{line}: andon call {call_id!r} is already acknowledged", retry=False)
        try:
            point = validate(Point("andon_event", {"site": site, "line": line, "station": call.station,
                                                   "event": "ack", "kind": call.kind},
                                   {"call_id": call_id, "badge": badge}, now_ns))
        except SchemaError as exc:
            raise HistorianError(f"{line}: the acknowledgement of {call_id!r} does not fit the schema: {exc}",
                                 retry=False) from exc
        result = historian.write([point])
        if result.rejected:
            raise HistorianError(f"{line}: the historian refused the acknowledgement of {call_id!r}: "
                                 f"{result.rejected[0][1]}", retry=False)
        return dataclasses.replace(call, acked_ns=now_ns)


# How far back the start of a stop still in force is looked for; a longer stop is dated to this far back.
STOP_LOOKBACK_S = 7 * 86400


def stop_start(historian: Historian, line: str, machine: str, state: str, at_ns: int) -> int:
    """When the run of `state` in force at `at_ns` began (the first of its consecutive points)."""
    points = historian.events("machine_state", at_ns - STOP_LOOKBACK_S * NS, at_ns + 1, line=line, machine=machine)
    start = at_ns
    for p in reversed(points):
        if p.fields.get("state") != state:
            break
        start = p.time_ns
    return start


class Stop(NamedTuple):
    """One stop of a machine: its state, when it started and ended (or the window's end while it goes on) and
    the reason given to it."""

    machine: str
    state: str
    start_ns: int
    end_ns: int
    reason: str
    open: bool


def shift_stops(historian: Historian, line: str, window: ShiftWindow, now_ns: int, microstop_s: float,
                machine: str | None = None) -> list[Stop]:
    """The stops of the line's machines (or of one) over the window, as the stop-reason form lists them: a stop
    written as several points is one stop; one in force at the window's start is dated to its real start;
    micro-stops, and a STOPPED still going on and younger than `microstop_s` (a micro-stop so far), are left
    out. In the historian's order (machine, then time)."""
    micro_ns = microstop_s * NS
    out: list[Stop] = []
    for i in historian.state_intervals(window.start_ns, window.end_ns, line=line, machine=machine):
        young = (i.state == BoardState.STOPPED and i.end_ns >= window.end_ns and i.start_ns > window.start_ns
                 and now_ns - i.start_ns < micro_ns)
        if i.state not in STOP_STATES or i.state == BoardState.MICROSTOP or young:
            continue
        is_open = i.end_ns >= window.end_ns
        if out and out[-1].machine == i.machine and out[-1].state == i.state and out[-1].end_ns == i.start_ns:
            out[-1] = out[-1]._replace(end_ns=i.end_ns, open=is_open)  # one stop written as several points
            continue
        start_ns = i.start_ns
        if start_ns == window.start_ns:  # in force at the window's start: the stop began earlier
            start_ns = stop_start(historian, line, i.machine, i.state, start_ns)
        out.append(Stop(i.machine, i.state, start_ns, i.end_ns, i.reason, is_open))
    return out
