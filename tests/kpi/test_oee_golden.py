"""Golden tests of the KPI engine: each case's figures are worked out by hand in the comments."""

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from agent.config import Break, Shift
from agent.core.counters import counter_step
from agent.historian import StateInterval
from dashboard.kpi.oee import Count, Order, shift_oee
from dashboard.kpi.shifts import NS, shift_at, shift_window, shift_windows

SH = ZoneInfo("Asia/Shanghai")
NIGHT = Shift(id="night", name="Night", start="20:00", end="08:00",
              breaks=[Break(start="00:00", end="00:45"), Break(start="04:00", end="04:15")])


def at(day, hhmm, zone=SH):
    h, m = map(int, hhmm.split(":"))
    return int(datetime(day.year, day.month, day.day, h, m, tzinfo=zone).timestamp()) * NS


MON, TUE = date(2026, 11, 23), date(2026, 11, 24)


def states(*rows):
    """(day, from, day, to, state[, reason]) rows -> intervals of press-1."""
    return [StateInterval("line-1", "press-1", r[4], at(r[0], r[1]), at(r[2], r[3]), "", r[5] if len(r) > 5 else "")
            for r in rows]


def test_night_shift_over_midnight_with_breaks_mix_and_edges():
    window = shift_window(NIGHT, MON, SH)
    assert (window.start_ns, window.end_ns, window.seconds) == (at(MON, "20:00"), at(TUE, "08:00"), 43200)
    assert window.breaks == ((at(TUE, "00:00"), at(TUE, "00:45")), (at(TUE, "04:00"), at(TUE, "04:15")))
    log = states(
        (MON, "19:00", MON, "20:30", "RUNNING"),    # began before the shift: 1800 s inside
        (MON, "20:30", MON, "21:00", "SETUP"),      # 1800
        (MON, "21:00", MON, "23:50", "RUNNING"),    # 10200
        (MON, "23:50", TUE, "00:10", "FAULT"),      # 600 before the break, 600 in it (planned)
        (TUE, "00:10", TUE, "00:45", "PLANNED_STOP"),  # 2100, in the break
        (TUE, "00:45", TUE, "03:00", "RUNNING"),    # 8100
        (TUE, "03:00", TUE, "03:02", "MICROSTOP"),  # 120
        (TUE, "03:02", TUE, "04:00", "RUNNING"),    # 3480
        (TUE, "04:00", TUE, "04:15", "RUNNING"),    # 900: runs through the tea break, so it is production
        (TUE, "04:15", TUE, "05:00", "STOPPED", "waiting for mold"),  # 2700
        (TUE, "05:00", TUE, "06:00", "OFFLINE"),    # 3600
        (TUE, "06:00", TUE, "09:00", "RUNNING"),    # 7200 inside, the rest after the shift
    )
    orders = [Order(at(MON, "18:00"), at(TUE, "02:00"), "KT-100"), Order(at(TUE, "02:00"), at(TUE, "10:00"), "KT-200")]
    counts = [Count(at(MON, "19:30"), "total", 100),  # before the shift
              Count(at(MON, "21:30"), "total", 1500), Count(at(MON, "21:30"), "good", 1470),
              Count(at(TUE, "01:00"), "total", 1500), Count(at(TUE, "01:00"), "good", 1470),
              Count(at(TUE, "03:30"), "total", 1200), Count(at(TUE, "03:30"), "good", 1188),
              Count(at(TUE, "07:00"), "total", 1200), Count(at(TUE, "07:00"), "good", 1188),
              Count(at(TUE, "08:00"), "total", 50)]  # the shift's end is exclusive
    k = shift_oee("press-1", window, log, counts, orders, {"KT-100": 6.0, "KT-200": 5.0})
    # planned downtime: the meal break (FAULT 600 + PLANNED_STOP 2100); the tea break ran, so it is production
    assert (k.planned_s, k.planned_downtime_s, k.pbt_s) == (43200, 2700, 40500)
    assert k.apt_s == 1800 + 10200 + 8100 + 3480 + 900 + 7200 == 31680
    assert k.state_s == {"RUNNING": 31680, "SETUP": 1800, "FAULT": 600, "MICROSTOP": 120, "STOPPED": 2700,
                         "OFFLINE": 3600}
    assert k.coverage == pytest.approx((40500 - 3600) / 40500)
    assert (k.produced, k.good, k.rejected) == (5400, 5316, 84)
    assert [(o.sku, o.produced, o.good) for o in k.by_sku] == [("KT-100", 3000, 2940), ("KT-200", 2400, 2376)]
    assert k.availability == pytest.approx(31680 / 40500)                  # 0.7822
    assert k.effectiveness == pytest.approx((6 * 3000 + 5 * 2400) / 31680)  # 30000 / 31680 = 0.9470
    assert k.quality == pytest.approx(5316 / 5400)                          # 0.9844
    assert k.oee == pytest.approx(30000 / 40500 * 5316 / 5400)              # 0.7292
    assert k.oee_check == pytest.approx((6 * 2940 + 5 * 2376) / 40500)     # 0.7289: KT-100 has more rejects
    assert k.availability_tpm == pytest.approx(31800 / 40500) and k.effectiveness_tpm == pytest.approx(30000 / 31800)
    assert not k.effectiveness_flag and k.unattributed == 0
    # one failure repaired in 1200 s (600 of them in the break); ISO MTBF = APT / (failures + 1)
    assert (k.failures, k.mttr_s, k.mtbf_s) == (1, 1200, 15840)
    assert (k.microstops, k.microstop_s) == (1, 120)
    assert k.stops_by_reason == {"SETUP": 1800, "FAULT": 600, "MICROSTOP": 120, "waiting for mold": 2700,
                                 "OFFLINE": 3600}


@pytest.mark.parametrize(("day", "seconds", "break_utc"), [
    # spring forward in the night of Sat 28 to Sun 29 March: 22:00 CET (21:00 UTC) to 06:00 CEST (04:00 UTC)
    (date(2026, 3, 28), 7 * 3600, ("00:00", "00:30")),
    # fall back in the night of Sat 24 to Sun 25 October: 22:00 CEST (20:00 UTC) to 06:00 CET (05:00 UTC)
    (date(2026, 10, 24), 9 * 3600, ("23:00", "23:30")),
])
def test_a_night_shift_over_a_dst_change_lasts_what_the_clock_on_the_wall_says(day, seconds, break_utc):
    berlin = ZoneInfo("Europe/Berlin")
    shift = Shift(id="n", name="N", start="22:00", end="06:00", breaks=[Break(start="01:00", end="01:30")])
    window = shift_window(shift, day, berlin)
    assert window.seconds == seconds
    utc = ZoneInfo("UTC")
    (b0, b1), = window.breaks
    got = tuple(datetime.fromtimestamp(t / NS, utc).strftime("%H:%M") for t in (b0, b1))
    assert got == break_utc
    # running the whole night at the ideal rate of 10 s: 2,520 parts in spring, 3,240 in autumn
    running = [StateInterval("l", "m", "RUNNING", window.start_ns, window.end_ns)]
    parts = (seconds - 1800) // 10
    k = shift_oee("m", window, running, [Count(window.start_ns + NS, "total", parts)],
                  [Order(window.start_ns, window.end_ns, "X")], {"X": 10.0})
    # the machine ran through its break: production time is the whole night
    assert (k.pbt_s, k.apt_s, k.availability) == (seconds, seconds, 1.0)
    assert k.effectiveness == pytest.approx(parts * 10 / seconds)


def test_counts_through_a_counter_rollover_are_whole():
    # a counter that wraps at 10,000, read as 9,990, 9,995, 3, 10: 5 + 8 + 7 = 20 parts after the baseline
    last, deltas = None, []
    for reading in (9990, 9995, 3, 10):
        step = counter_step(last, reading, 10000)
        deltas.append(step.delta)
        last = reading
    window = shift_window(Shift(id="d", name="D", start="08:00", end="09:00"), MON, SH)
    counts = [Count(window.start_ns + i * 60 * NS, "total", d) for i, d in enumerate(deltas)]
    running = [StateInterval("l", "m", "RUNNING", window.start_ns, window.end_ns)]
    k = shift_oee("m", window, running, counts, [Order(window.start_ns, window.end_ns, "X")], {"X": 90.0})
    assert k.produced == 20 and k.effectiveness == pytest.approx(20 * 90 / 3600)  # 0.5


def test_offline_gaps_and_missing_data_are_coverage_not_hidden():
    window = shift_window(Shift(id="d", name="D", start="08:00", end="10:00"), MON, SH)
    # no state at all for the first 30 min (the agent was not running), OFFLINE 09:00-09:15
    log = states((MON, "08:30", MON, "09:00", "RUNNING"), (MON, "09:00", MON, "09:15", "OFFLINE"),
                 (MON, "09:15", MON, "10:00", "RUNNING"))
    k = shift_oee("press-1", window, log, [], [], {})
    assert (k.pbt_s, k.apt_s, k.offline_s) == (7200, 4500, 2700)
    assert k.coverage == pytest.approx(4500 / 7200)
    assert k.availability == pytest.approx(4500 / 7200)
    assert (k.produced, k.quality, k.oee, k.effectiveness) == (0, None, None, 0.0)


def test_effectiveness_above_105_percent_is_flagged_never_capped():
    window = shift_window(Shift(id="d", name="D", start="08:00", end="09:00"), MON, SH)
    running = [StateInterval("l", "m", "RUNNING", window.start_ns, window.end_ns)]
    counts = [Count(window.start_ns, "good", 380), Count(window.start_ns, "reject", 20)]  # no total counter
    k = shift_oee("m", window, running, counts, [Order(window.start_ns, window.end_ns, "X")], {"X": 10.0})
    assert (k.produced, k.good, k.rejected) == (400, 380, 20)
    assert k.effectiveness == pytest.approx(4000 / 3600) and k.effectiveness_flag  # 111%: the PRU is wrong


def test_units_without_an_order_or_ideal_cycle_are_left_out_of_effectiveness_and_counted():
    window = shift_window(Shift(id="d", name="D", start="08:00", end="09:00"), MON, SH)
    running = [StateInterval("l", "m", "RUNNING", window.start_ns, window.end_ns)]
    counts = [Count(at(MON, "08:10"), "total", 100), Count(at(MON, "08:40"), "total", 50),
              Count(at(MON, "08:50"), "total", 30)]
    orders = [Order(at(MON, "08:30"), at(MON, "08:45"), "X"), Order(at(MON, "08:45"), at(MON, "09:00"), "NEW")]
    k = shift_oee("m", window, running, counts, orders, {"X": 12.0})
    assert k.unattributed == 130 and k.produced == 180
    assert k.effectiveness == pytest.approx(50 * 12 / 3600)


def test_the_sku_the_plc_reports_decides_effectiveness_and_mismatches_are_counted():
    window = shift_window(Shift(id="d", name="D", start="08:00", end="09:00"), MON, SH)
    running = [StateInterval("l", "m", "RUNNING", window.start_ns, window.end_ns)]
    # the order says X (10 s) all hour; the PLC made X until 08:30, then Y (20 s), and went on with Y after
    # the order ended at 08:50
    orders = [Order(at(MON, "08:00"), at(MON, "08:50"), "X")]
    products = [Order(at(MON, "07:00"), at(MON, "08:30"), "X"), Order(at(MON, "08:30"), at(MON, "09:00"), "Y")]
    counts = [Count(at(MON, "08:10"), "total", 150), Count(at(MON, "08:40"), "total", 30),
              Count(at(MON, "08:55"), "total", 10)]
    k = shift_oee("m", window, running, counts, orders, {"X": 10.0, "Y": 20.0}, products)
    assert (k.produced, k.other_sku, k.no_order, k.unattributed) == (190, 30, 10, 0)
    # E = (150 x 10 + 40 x 20) / 3600, every unit at the SKU it was made as
    assert k.effectiveness == pytest.approx((150 * 10 + 40 * 20) / 3600)
    # without a product tag the order decides: 180 units of X, 10 made with no order and no SKU
    k = shift_oee("m", window, running, counts, orders, {"X": 10.0, "Y": 20.0})
    assert (k.other_sku, k.no_order, k.unattributed) == (0, 10, 10)
    assert k.effectiveness == pytest.approx(180 * 10 / 3600)


def test_shift_calendar_lookups():
    day = Shift(id="day", name="Day", start="08:00", end="20:00")
    windows = shift_windows([day, NIGHT], "Asia/Shanghai", MON, TUE)
    assert [(w.shift, w.day) for w in windows] == [("day", MON), ("night", MON), ("day", TUE), ("night", TUE)]
    assert shift_at([day, NIGHT], "Asia/Shanghai", at(TUE, "03:00")).day == MON  # the night that began Monday
    sunday = date(2026, 11, 22)
    assert shift_at([day, NIGHT], "Asia/Shanghai", at(sunday, "12:00")) is None  # no shift works on Sunday


def test_andon_time_to_acknowledge_and_resolve():
    from agent.core.schema import Point
    from dashboard.kpi.andon import andon_calls

    def event(call_id, kind_of_event, minute, kind="quality"):
        return Point("andon_event", {"site": "s", "line": "line-1", "station": "mold-1", "event": kind_of_event,
                                     "kind": kind}, {"call_id": call_id}, at(MON, "09:00") + minute * 60 * NS)
    calls = andon_calls([event("A-2", "call", 30, "material"), event("A-1", "resolve", 20),
                         event("A-1", "call", 0), event("A-1", "ack", 4), event("A-1", "ack", 6)])
    first, second = calls
    assert (first.call_id, first.time_to_acknowledge_s, first.time_to_resolve_s, first.open) == ("A-1", 240, 1200, False)
    assert (second.call_id, second.kind, second.time_to_acknowledge_s, second.open) == ("A-2", "material", None, True)
    assert second.age_s(at(MON, "09:45")) == 900 and first.age_s(at(MON, "09:45")) is None
