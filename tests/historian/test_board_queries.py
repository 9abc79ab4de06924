"""The dashboard's historian reads feed the KPI engine the same figures on every backend."""

from datetime import date

import pytest

from agent.config import Shift
from agent.core.schema import Point
from dashboard.kpi.shifts import NS, shift_window
from dashboard.queries import line_shift_oee, orders
from tests.kpi.test_oee_golden import SH, at

MON = date(2026, 11, 23)
TAGS = {"site": "cixi-1", "line": "line-1"}


def state(machine, hhmm, value):
    return Point("machine_state", {**TAGS, "machine": machine}, {"state": value, "raw": "1"}, at(MON, hhmm))


def count(machine, hhmm, counter, delta):
    return Point("machine_count", {**TAGS, "machine": machine, "counter": counter},
                 {"delta": delta, "value": delta}, at(MON, hhmm) + 5 * NS)


def order(hhmm, event, order_id, sku):
    return Point("order_event", {**TAGS, "event": event}, {"order_id": order_id, "sku": sku, "target_qty": 900},
                 at(MON, hhmm))


def test_orders_from_start_and_stop_events(historian):
    historian.write([order("06:00", "start", "PO-1", "KT-100"), order("09:00", "stop", "PO-1", "KT-100"),
                     order("09:30", "start", "PO-2", "KT-200"), order("10:30", "start", "PO-3", "KT-100")])
    got = [(o.sku, o.start_ns, o.end_ns) for o in orders(historian, "line-1", at(MON, "08:00"), at(MON, "11:00"))]
    # an order's own stop is part of it (the unit counted then completed it); a new start ends the one before
    assert got == [("KT-100", at(MON, "06:00"), at(MON, "09:00") + 1), ("KT-200", at(MON, "09:30"), at(MON, "10:30")),
                   ("KT-100", at(MON, "10:30"), at(MON, "11:00"))]


def test_line_shift_oee_from_the_historian(historian, factory_cfg):
    window = shift_window(Shift(id="am", name="AM", start="08:00", end="10:00"), MON, SH)
    historian.write([
        state("press-1", "07:00", "RUNNING"), state("press-1", "09:00", "FAULT"), state("press-1", "09:30", "RUNNING"),
        order("07:30", "start", "PO-1", "KT-100"), order("09:00", "start", "PO-2", "KT-200"),
        count("press-1", "08:10", "total", 500), count("press-1", "08:10", "good", 490),   # KT-100, 6 s
        count("press-1", "09:40", "total", 300), count("press-1", "09:40", "good", 300),   # KT-200, 5 s
    ])
    by_machine = {k.machine: k for k in line_shift_oee(historian, factory_cfg, "line-1", window)}
    assert set(by_machine) == {"press-1", "press-2", "packer-1"}
    k = by_machine["press-1"]
    # RUNNING 08:00-09:00 and 09:30-10:00 = 5400 s of 7200; 500 x 6 + 300 x 5 = 4500 ideal seconds
    assert (k.pbt_s, k.apt_s, k.failures, k.mttr_s) == (7200, 5400, 1, 1800)
    assert (k.produced, k.good) == (800, 790)
    assert [(o.sku, o.produced) for o in k.by_sku] == [("KT-100", 500), ("KT-200", 300)]
    assert k.oee == pytest.approx(5400 / 7200 * 4500 / 5400 * 790 / 800)
    silent = by_machine["press-2"]  # nothing in the historian: all of the shift is missing data
    assert (silent.coverage, silent.offline_s, silent.produced) == (0.0, 7200, 0)


def test_a_stop_reason_goes_to_every_point_of_the_stop_and_nothing_else(historian):
    from dashboard.queries import StopNotFound, set_stop_reason

    historian.write([state("press-1", "08:00", "RUNNING"), state("press-1", "09:00", "STOPPED"),
                     # the agent wrote the same stop twice (a reconnect): both points belong to the one stop
                     state("press-1", "09:10", "STOPPED"), state("press-1", "09:30", "RUNNING"),
                     state("press-2", "09:00", "STOPPED")])
    now = at(MON, "10:00")
    got = set_stop_reason(historian, "cixi-1", "line-1", "press-1", at(MON, "09:00"), "material", now)
    assert got == ("STOPPED", at(MON, "09:00"), at(MON, "09:30"))
    rows = [(i.machine, i.state, i.start_ns, i.reason) for i in historian.state_intervals(at(MON, "07:00"), now)]
    assert rows == [
        ("press-1", "RUNNING", at(MON, "08:00"), ""), ("press-1", "STOPPED", at(MON, "09:00"), "material"),
        ("press-1", "STOPPED", at(MON, "09:10"), "material"), ("press-1", "RUNNING", at(MON, "09:30"), ""),
        ("press-2", "STOPPED", at(MON, "09:00"), "")]
    # a later reason replaces the first one; the raw value the agent wrote is kept
    set_stop_reason(historian, "cixi-1", "line-1", "press-1", at(MON, "09:00"), "breakdown", now)
    stop = historian.state_intervals(at(MON, "09:00"), at(MON, "09:05"), machine="press-1")
    assert [(i.state, i.raw, i.reason) for i in stop] == [("STOPPED", "1", "breakdown")]
    for start in (at(MON, "08:00"), at(MON, "09:01")):  # a run, and a time inside the stop: not a stop start
        with pytest.raises(StopNotFound):
            set_stop_reason(historian, "cixi-1", "line-1", "press-1", start, "material", now)
