"""What each e-board shows, as JSON-ready dicts: built from historian reads (queries.py), the KPI engine (kpi/)
and the live view (live.py). No Flask here; the blueprints and the stream serve these dicts as they are.

Two halves per line: `line_history` (shift KPIs, people, materials: historian reads, refreshed every few seconds)
and `with_live` (machine states, alarms and process values from the live topics, applied on every change).
Times are epoch milliseconds; ratios are fractions (0.853), null when they cannot be computed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from agent.config import FactoryConfig, Line
from agent.core.states import BoardState
from agent.historian import Historian
from dashboard import queries
from dashboard.kpi.andon import andon_calls
from dashboard.kpi.materials import outlook, rate_per_min
from dashboard.kpi.oee import Order, ShiftOee
from dashboard.kpi.people import output_per_operator, presences, staffing
from dashboard.kpi.plan import planned_units
from dashboard.kpi.shifts import NS, ShiftWindow, shift_at, shift_windows
from dashboard.live import LiveView
from dashboard.states import STOP_STATES

MS = 1_000_000
RATE_WINDOW_S = 900  # "the current rate" of minutes-to-shortage: units per minute over the last 15 minutes


def ms(t_ns: int | None) -> int | None:
    return None if t_ns is None else t_ns // MS


def find_line(cfg: FactoryConfig, line_id: str) -> Line | None:
    return next((ln for ln in cfg.lines if ln.id == line_id), None)


# --- shift --------------------------------------------------------------------------------------------------


def current_shift(cfg: FactoryConfig, now_ns: int) -> tuple[ShiftWindow | None, bool]:
    """The shift in force at `now` (True), else the latest one that ended (False); None without any in a week."""
    window = shift_at(cfg.shifts, cfg.site.timezone, now_ns)
    if window is not None:
        return window, True
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    today = datetime.fromtimestamp(now_ns / NS, ZoneInfo(cfg.site.timezone)).date()
    past = [w for w in shift_windows(cfg.shifts, cfg.site.timezone, today - timedelta(days=7), today)
            if w.end_ns <= now_ns]
    return (past[-1] if past else None), False


def so_far(window: ShiftWindow, now_ns: int) -> ShiftWindow:
    """The part of the shift up to now: KPIs of a running shift count only the time that has passed."""
    return queries.up_to(window, now_ns)


def shift_json(cfg: FactoryConfig, window: ShiftWindow | None, on: bool) -> dict[str, Any] | None:
    if window is None:
        return None
    shift = next(s for s in cfg.shifts if s.id == window.shift)
    return {"id": shift.id, "name": shift.name, "day": window.day.isoformat(), "on": on,
            "start_ms": ms(window.start_ns), "end_ms": ms(window.end_ns),
            "breaks": [[ms(a), ms(b)] for a, b in window.breaks]}


def planned_output(cfg: FactoryConfig, line_id: str, window: ShiftWindow, end_ns: int,
                   orders: Sequence[Order]) -> int | None:
    """Units the plan expects from the window's start up to `end_ns`: each order's busy time (breaks out) after
    its planned changeover, at its SKU's planned rate (config `kpi`); the hour in progress counts only the part
    that has passed."""
    ideal = queries.ideal_cycles(cfg, line_id)
    setup_ns = {p.sku: int(p.setup_min * 60 * NS) for p in cfg.products}

    def rate(sku: str) -> float | None:
        return cfg.kpi.planned_units_per_hour(line_id, sku, ideal[sku]) if sku in ideal else None

    # an order's planned changeover (its SKU's setup_min) is planned time without output
    producing = [Order(o.start_ns + setup_ns.get(o.sku, 0), o.end_ns, o.sku) for o in orders]
    units = planned_units(window.start_ns, min(end_ns, window.end_ns), window.breaks, producing, rate)
    return None if units is None else round(units)


def _r(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def oee_json(k: ShiftOee) -> dict[str, Any]:
    """Ratios to 4 decimals and times to 0.1 s: what a board shows, and small patches."""
    return {"availability": _r(k.availability, 4), "effectiveness": _r(k.effectiveness, 4),
            "quality": _r(k.quality, 4), "oee": _r(k.oee, 4), "oee_check": _r(k.oee_check, 4),
            "coverage": _r(k.coverage, 4), "effectiveness_flag": k.effectiveness_flag, "pbt_s": _r(k.pbt_s, 1),
            "apt_s": _r(k.apt_s, 1), "offline_s": _r(k.offline_s, 1), "produced": k.produced, "good": k.good,
            "rejected": k.rejected, "unattributed": k.unattributed,
            "availability_tpm": _r(k.availability_tpm, 4), "effectiveness_tpm": _r(k.effectiveness_tpm, 4),
            "failures": k.failures, "mtbf_s": _r(k.mtbf_s, 1), "mttr_s": _r(k.mttr_s, 1),
            "microstops": k.microstops, "microstop_s": _r(k.microstop_s, 1),
            "no_order": k.no_order, "other_sku": k.other_sku, "up_to_ms": ms(k.up_to_ns)}


# --- the historian half of a line board ---------------------------------------------------------------------


def line_history(cfg: FactoryConfig, historian: Historian, line_id: str, now_ns: int,
                 clock_speed: float = 1.0) -> dict[str, Any]:
    """Shift KPIs per machine, people and materials of a line, read from the historian. `clock_speed`: how much
    faster than real time the board's clock runs (a demo's), so a lag is judged in real seconds."""
    line = find_line(cfg, line_id)
    assert line is not None
    window, on = current_shift(cfg, now_ns)
    order = queries.running_order(historian, line_id, now_ns)
    product = next((p for p in cfg.products if order and p.sku == order["sku"]), None)
    # each machine's figures go up to the time its data reaches (its watermark), never to now by assumption
    reach = queries.watermarks(historian, cfg, line_id, now_ns)
    out: dict[str, Any] = {"shift": shift_json(cfg, window, on), "computed_ms": ms(now_ns),
                           "order": None, "machines": {}, "output": None,
                           "lag_ms": cfg.kpi.watermark_lag_s * 1000 * clock_speed}
    if order is not None:
        out["order"] = {"order_id": order["order_id"], "sku": order["sku"], "target_qty": order["target_qty"],
                        "start_ms": ms(order["start_ns"]), "product": product.name if product else None}
    since_order = queries.counts_since(historian, line_id, order["start_ns"], now_ns) if order else {}
    data = None
    kpis: dict[str, ShiftOee] = {}
    if window is not None:
        part = so_far(window, now_ns)
        data = queries.read_line_shift(historian, line_id, part, cfg)
        kpis = {k.machine: k for k in queries.shift_oee_of(cfg, line_id, part, data, reach)}
    last_machine = line.machines[-1].id if line.machines else None
    for machine in line.machines:
        k = kpis.get(machine.id)
        states = data.states(machine.id) if data else []
        out["machines"][machine.id] = {
            "oee": oee_json(k) if k else None,
            "order_count": since_order.get(machine.id, {}),
            "reach_ms": ms(reach.get(machine.id)),
            # the state in force now in the historian, with the reason given to it (a stop may have begun
            # before the shift: its interval then starts at the shift's start, so it is matched by state)
            "current": {"state": states[-1].state, "reason": states[-1].reason} if states else None,
        }
    if window is not None and last_machine is not None:
        # the line's output is what its last machine (the end of the line in the config) made
        k = kpis.get(last_machine)
        up_to = k.up_to_ns if k else now_ns
        out["output"] = {"machine": last_machine, "produced": k.produced if k else 0, "good": k.good if k else 0,
                         "no_order": k.no_order if k else 0, "other_sku": k.other_sku if k else 0,
                         "plan": planned_output(cfg, line_id, window, up_to, data.orders if data else []),
                         "up_to_ms": ms(up_to)}
    out["people"] = _people(cfg, historian, line, window, data, now_ns)
    rate_until = reach.get(last_machine, now_ns) if last_machine else now_ns
    out["materials"] = _materials(cfg, historian, line, product.bom if product else {}, now_ns, rate_until)
    return out


def _people(cfg: FactoryConfig, historian: Historian, line: Line, window: ShiftWindow | None,
            data: queries.LineShift | None, now_ns: int) -> dict[str, Any]:
    start = now_ns - queries.PEOPLE_LOOKBACK_S * NS
    stays = presences(queries.line_events(historian, "operator_event", line.id, start, now_ns + 1), now_ns + 1)
    by_badge = {o.badge: o for o in cfg.operators}
    stations: list[dict[str, Any]] = []
    for st, conf in zip(staffing(line.stations, stays, cfg.operators, now_ns), line.stations, strict=True):
        stations.append({
            "id": st.station, "name": conf.name, "skill": conf.skill, "planned": st.planned,
            "present": [{"badge": b, "operator": by_badge[b].id if b in by_badge else None,
                         "name": by_badge[b].name if b in by_badge else None, "skilled": b not in st.unskilled}
                        for b in st.present],
            "missing": max(0, st.planned - len(st.present))})
    output = {}
    if window is not None and data is not None:
        machine_of_station = {m.station: m.id for m in line.machines if m.station}
        per_badge = output_per_operator(stays, machine_of_station,
                                        {m.id: data.counts(m.id) for m in line.machines},
                                        window.start_ns, min(window.end_ns, now_ns))
        output = {b: n for b, n in per_badge.items()}
    calls = andon_calls(queries.line_events(historian, "andon_event", line.id, start, now_ns + 1))
    in_shift = [c for c in calls if window is not None and c.called_ns is not None
                and window.start_ns <= c.called_ns < window.end_ns]
    to_ack = [c.time_to_acknowledge_s for c in in_shift if c.time_to_acknowledge_s is not None]
    to_resolve = [c.time_to_resolve_s for c in in_shift if c.time_to_resolve_s is not None]
    present = sum(len(s["present"]) for s in stations)
    good = 0
    if data is not None and line.machines:
        good = sum(c.delta for c in data.counts(line.machines[-1].id) if c.counter == "good")
    return {
        "stations": stations,
        "headcount": {"planned": sum(s.planned_headcount for s in line.stations), "present": present},
        "output_per_operator": round(good / present, 1) if present else None,
        "operator_output": output,
        "andon": [{"call_id": c.call_id, "station": c.station, "kind": c.kind, "called_ms": ms(c.called_ns),
                   "acked_ms": ms(c.acked_ns)} for c in calls if c.open and c.called_ns is not None],
        "andon_shift": {"calls": len(in_shift),
                        "mean_ack_s": sum(to_ack) / len(to_ack) if to_ack else None,
                        "mean_resolve_s": sum(to_resolve) / len(to_resolve) if to_resolve else None},
    }


def _materials(cfg: FactoryConfig, historian: Historian, line: Line, bom: dict[str, float], now_ns: int,
               rate_until_ns: int) -> dict[str, Any]:
    """Line-side stock against the current rate; the rate is measured up to `rate_until_ns`, how far the line's
    output data reaches, not into time the historian has no counts for yet."""
    levels = queries.material_levels(historian, line.id, now_ns)
    last = line.machines[-1].id if line.machines else None
    rate = 0.0
    if last is not None:
        # counts come in minute buckets: read whole buckets and divide by the time they really cover
        counts = queries.machine_count_points(historian, line.id, last, rate_until_ns - RATE_WINDOW_S * NS,
                                              rate_until_ns + 1)
        rate = rate_per_min(counts, rate_until_ns + 1, RATE_WINDOW_S)
    known = {m.id: m for m in cfg.materials}
    items = []
    for material_id in list(bom) + sorted(m for m in levels if m not in bom):
        conf = known.get(material_id)
        level = levels.get(material_id)
        o = outlook(material_id, level[0], bom.get(material_id, 0.0), rate,
                    conf.reorder_point if conf else 0.0) if level else None
        items.append({"id": material_id, "name": conf.name if conf else material_id,
                      "unit": conf.unit if conf else "", "stock": level[0] if level else None,
                      "stock_ms": ms(level[1]) if level else None, "per_unit": bom.get(material_id),
                      "use_per_min": round(bom.get(material_id, 0.0) * rate, 3),
                      "minutes_to_shortage": None if o is None or o.minutes_to_shortage is None
                      else round(o.minutes_to_shortage, 1),
                      "reorder_point": conf.reorder_point if conf else None,
                      "below_reorder": bool(o and o.below_reorder_point), "in_bom": material_id in bom})
    events = queries.line_events(historian, "material_event", line.id,
                                 now_ns - queries.PEOPLE_LOOKBACK_S * NS, now_ns + 1)
    lots: dict[tuple[str, str], dict[str, Any]] = {}
    calls: dict[str, dict[str, Any]] = {}
    for e in events:
        station, material, event = e.tags["station"], e.tags["material"], e.tags["event"]
        if event == "lot_loaded":
            lots[(station, material)] = {"station": station, "material": material, "lot": e.fields.get("lot"),
                                         "qty": e.fields.get("qty"), "since_ms": ms(e.time_ns)}
        elif event == "call" and e.fields.get("call_id"):
            calls[str(e.fields["call_id"])] = {"call_id": e.fields["call_id"], "station": station,
                                               "material": material, "qty": e.fields.get("qty"),
                                               "called_ms": ms(e.time_ns)}
        elif event == "delivered" and e.fields.get("call_id"):
            calls.pop(str(e.fields["call_id"]), None)
    return {"rate_per_min": round(rate, 2), "items": items,
            "lots": sorted(lots.values(), key=lambda x: (x["station"], x["material"])),
            "calls": sorted(calls.values(), key=lambda x: x["called_ms"])}


# --- the live half, and the whole board ---------------------------------------------------------------------


def with_live(cfg: FactoryConfig, line: Line, history: dict[str, Any], live: LiveView,
              now_ns: int) -> dict[str, Any]:
    """The full line board: the historian half with every machine's live state, alarm and values on top."""
    values = live.line_values(line.id)
    on = bool(history["shift"] and history["shift"]["on"])
    machines: dict[str, dict[str, Any]] = {}
    for machine in line.machines:
        h = history["machines"].get(machine.id, {})
        state = values.get((machine.id, "state"), {})
        alarm = values.get((machine.id, "alarm"), {})
        offline = live.offline_reason(line.id, machine.id)
        board_state = BoardState.OFFLINE.value if offline else str(state.get("v") or BoardState.OFFLINE.value)
        since = state.get("ts") if not offline else None
        if board_state == BoardState.STOPPED and isinstance(since, int) \
                and now_ns // MS - since < cfg.kpi.microstop_s * 1000:
            board_state = BoardState.MICROSTOP.value  # not (yet) longer than the micro-stop threshold (kpi.microstop_s)
        if board_state == BoardState.OFFLINE and not offline:
            offline = str(state.get("raw") or "no data yet")
        mtype = cfg.machine_types.get(machine.type)
        units = {t.name: t.unit for t in mtype.tags if t.name} if mtype else {}
        pvs = {}
        for (unit, signal), payload in values.items():
            if unit == machine.id and signal.startswith("pv/"):
                name = signal[3:]
                pvs[name] = {"value": None if offline else payload.get("v"), "unit": units.get(name) or "",
                             "q": payload.get("q"), "ts_ms": payload.get("ts")}
        order = history.get("order")
        kpi = h.get("oee") or {}
        if order:
            count = {**h.get("order_count", {}), "scope": "order"}
        else:  # between orders the tile shows what the shift made, not the (empty) count of no order
            count = {"good": kpi.get("good", 0), "total": kpi.get("produced", 0), "reject": kpi.get("rejected", 0),
                     "scope": "shift"}
        current = h.get("current") or {}
        reach = h.get("reach_ms")
        computed = history.get("computed_ms") or 0
        reason = (current.get("reason") or None) if current.get("state") == board_state else None
        machines[machine.id] = {
            "id": machine.id, "name": machine.name or machine.id, "type": machine.type, "station": machine.station,
            "state": board_state, "since_ms": since, "offline_reason": offline,
            "stop": {"state": board_state, "since_ms": since, "reason": reason}
            if board_state in STOP_STATES and since else None,
            "alarm": {"code": alarm.get("v"), "text": alarm.get("text", ""), "since_ms": alarm.get("ts")}
            if alarm.get("v") and not offline else None,
            "order": {"order_id": order["order_id"], "sku": order["sku"]} if order else None,
            "count": {"good": count.get("good", 0), "total": count.get("total", 0),
                      "reject": count.get("reject", 0), "target": order.get("target_qty") if order else None,
                      "scope": count["scope"]},
            "oee": h.get("oee"),
            # how far the machine's data reaches; shown as "data up to ..." when it lags the figures' time
            "reach_ms": reach,
            "data_lags": reach is None or computed - reach > history.get("lag_ms", cfg.kpi.watermark_lag_s * 1000),
            "unattributed": {"no_order": kpi.get("no_order", 0), "other_sku": kpi.get("other_sku", 0)},
            "pv": dict(sorted(pvs.items())),
        }
    mix: dict[str, int] = {}
    for m in machines.values():
        mix[m["state"]] = mix.get(m["state"], 0) + 1
    return {
        "kind": "line", "line": {"id": line.id, "name": line.name}, "now_ms": ms(now_ns),
        "shift": history["shift"], "shift_on": on, "order": history.get("order"),
        "live": {"broker": live.connected, "agents": {a.agent: a.online for a in live.agents()}},
        "states": mix, "output": history.get("output"), "machine_ids": list(machines), "machines": machines,
        "people": history["people"], "materials": history["materials"], "computed_ms": history["computed_ms"],
        "history_error": history.get("history_error"),
    }


def overview(cfg: FactoryConfig, boards: Sequence[dict[str, Any]], now_ns: int) -> dict[str, Any]:
    """The factory overview from every line's board."""
    lines: dict[str, dict[str, Any]] = {}
    for b in boards:
        tiles = [b["machines"][m] for m in b["machine_ids"]]
        oees = [m["oee"]["oee"] for m in tiles if m.get("oee") and m["oee"]["oee"] is not None]
        coverage = [m["oee"]["coverage"] for m in tiles if m.get("oee") and m["oee"]["coverage"] is not None]
        lines[b["line"]["id"]] = {
            "id": b["line"]["id"], "name": b["line"]["name"], "states": b["states"],
            "machines": [{"id": m["id"], "name": m["name"], "state": m["state"], "since_ms": m["since_ms"]}
                         for m in tiles],
            "output": b["output"], "order": b["order"],
            # the line's OEE is its last machine's, the one whose output the line delivers
            "oee": tiles[-1]["oee"] if tiles else None,
            "oee_mean": sum(oees) / len(oees) if oees else None,
            "coverage": min(coverage) if coverage else None,
            "andon_open": len(b["people"]["andon"]),
            "headcount": b["people"]["headcount"],
            "shortages": [i["id"] for i in b["materials"]["items"]
                          if i["below_reorder"] or (i["minutes_to_shortage"] is not None
                                                    and i["minutes_to_shortage"] < 60)],
        }
    shift = boards[0]["shift"] if boards else None
    site = {"id": cfg.site.id, "name": cfg.site.name or cfg.site.id}  # a site without a name goes by its id
    return {"kind": "overview", "site": site, "now_ms": ms(now_ns),
            "shift": shift, "line_ids": list(lines), "lines": lines,
            "live": boards[0]["live"] if boards else {"broker": False, "agents": {}}}


def machine_detail(cfg: FactoryConfig, historian: Historian, line: Line, machine_id: str,
                   now_ns: int, kpi: dict[str, Any] | None = None) -> dict[str, Any]:
    """One machine over its shift: state timeline, output per hour vs plan, stop Pareto, KPIs, process trends.
    `kpi`: the machine's figures as its tile shows them (the line board's), so a page shows one computation."""
    window, on = current_shift(cfg, now_ns)
    out: dict[str, Any] = {"kind": "machine", "line": {"id": line.id, "name": line.name}, "machine_id": machine_id,
                           "now_ms": ms(now_ns), "shift": shift_json(cfg, window, on), "timeline": [],
                           "hourly": [], "pareto": [], "kpi": None, "trends": {}}
    if window is None:
        return out
    part = so_far(window, now_ns)
    data = queries.read_line_shift(historian, line.id, part, cfg)
    reach = queries.watermarks(historian, cfg, line.id, now_ns)
    k = next((x for x in queries.shift_oee_of(cfg, line.id, part, data, reach) if x.machine == machine_id), None)
    out["kpi"] = kpi if kpi is not None else oee_json(k) if k else None
    # the timeline goes as far as the machine's data, like its figures
    reach_end = min(part.end_ns, reach.get(machine_id, part.start_ns))
    out["timeline"] = [{"state": i.state, "start_ms": ms(max(i.start_ns, part.start_ns)),
                        "end_ms": ms(min(i.end_ns, reach_end)), "reason": i.reason}
                       for i in data.states(machine_id) if i.end_ns > part.start_ns and i.start_ns < reach_end]
    out["reach_ms"] = ms(reach.get(machine_id))
    # missing data is not a stop: it is the coverage beside the OEE, not a bar of the Pareto
    out["pareto"] = [{"reason": r, "seconds": round(sec, 1)}
                     for r, sec in sorted((k.stops_by_reason if k else {}).items(), key=lambda x: -x[1])
                     if r != BoardState.OFFLINE]
    hour_ns = 3600 * NS
    counts = data.counts(machine_id)
    up_to = k.up_to_ns if k else part.end_ns
    t = window.start_ns
    while t < part.end_ns:
        end = min(t + hour_ns, window.end_ns)
        made = sum(c.delta for c in counts if c.counter == "good" and t <= c.time_ns < end)
        sku = next((o.sku for o in reversed(data.orders) if o.start_ns < end and o.end_ns > t), None)
        hour = dataclasses.replace(window, start_ns=t, end_ns=end,
                                   breaks=tuple((max(a, t), min(b, end)) for a, b in window.breaks if a < end and b > t))
        # the hour in progress is planned up to the time the machine's data reaches, not for the whole hour
        out["hourly"].append({"start_ms": ms(t), "good": made, "sku": sku,
                              "plan": planned_output(cfg, line.id, hour, min(end, up_to), data.orders)})
        t = end
    trend_start = max(part.start_ns, now_ns - 4 * 3600 * NS)
    out["trends"] = {name: [[ms(t), v] for t, v in points]
                     for name, points in queries.process_trends(historian, line.id, machine_id, trend_start,
                                                                now_ns + 1).items()}
    mtype = cfg.machine_types.get(next(m.type for m in line.machines if m.id == machine_id))
    out["units"] = {t.name: t.unit or "" for t in mtype.tags if t.name} if mtype else {}
    return out


def stops(cfg: FactoryConfig, historian: Historian, line: Line, now_ns: int,
          machine_id: str | None = None) -> dict[str, Any]:
    """The shift's stops of a line's machines, newest first, with their reasons: what the stop-reason form lists."""
    window, on = current_shift(cfg, now_ns)
    out: dict[str, Any] = {"line": {"id": line.id, "name": line.name}, "shift": shift_json(cfg, window, on),
                           "stops": [], "reasons": [{"code": r.code, "name": r.name} for r in cfg.dashboard.stop_reasons]}
    if window is None:
        return out
    stops = queries.shift_stops(historian, line.id, so_far(window, now_ns), now_ns, cfg.kpi.microstop_s, machine_id)
    out["stops"] = [{"id": str(s.start_ns), "machine": s.machine, "state": s.state, "start_ms": ms(s.start_ns),
                     "end_ms": ms(s.end_ns), "reason": s.reason, "open": s.open}
                    for s in sorted(stops, key=lambda s: -s.start_ns)]
    return out
