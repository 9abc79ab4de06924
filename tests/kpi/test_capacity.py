"""Golden capacity cases worked out by hand, and the invariant Total = Committed + Available + Unattainable in
every bucket over random calendars, orders and constraints (hypothesis)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import Break, Shift
from dashboard.kpi.capacity import REASONS, Constraint, Demand, OeeBasis, line_capacity, plan_buckets
from dashboard.kpi.shifts import NS

SH = "Asia/Shanghai"
MON = date(2026, 11, 23)
DAY = Shift(id="day", name="Day", start="08:00", end="20:00",
            breaks=[Break(start="12:00", end="12:45"), Break(start="16:00", end="16:15")])
NIGHT = Shift(id="night", name="Night", start="20:00", end="08:00", breaks=[Break(start="00:00", end="00:45")])
COLD = OeeBasis(0.6, "configured")
# KT-100: 6 s a unit, 25 min changeover; KT-200: 5 s, 25 min
SKUS = {"KT-100": (6.0, 1500.0), "KT-200": (5.0, 1500.0)}


def at(day, hhmm):
    h, m = map(int, hhmm.split(":"))
    return int(datetime(day.year, day.month, day.day, h, m, tzinfo=ZoneInfo(SH)).timestamp()) * NS


def day_buckets(**kw):
    return plan_buckets([DAY], SH, ["line-1"], MON, kw.pop("days", 1), **kw)


def test_a_day_shift_with_breaks():
    (b,) = line_capacity("line-1", day_buckets(), COLD, [], [], SKUS, at(MON, "07:00")).buckets
    # 12 h - 45 min lunch - 15 min tea = 11 h = 39,600 s; Total = 0.6 x 39,600 = 23,760 s
    assert (b.key, b.pbt_s, b.total_s, b.basis) == ("2026-11-23/day", 39600, pytest.approx(23760), "configured")
    assert b.available_s == pytest.approx(23760) and b.committed_s == 0 and b.unattainable_s == {}
    # KT-100: (23,760 - 1,500 setup) / 6 = 3,710; KT-200: 22,260 / 5 = 4,452
    assert b.available_qty == {"KT-100": 3710, "KT-200": 4452}


def test_a_holiday_and_a_maintenance_window():
    buckets = day_buckets(days=3, holidays=[MON + timedelta(days=1)],
                          maintenance=[("line-1", at(MON, "08:00"), at(MON, "10:00"))])
    assert [b.key for b in buckets] == ["2026-11-23/day", "2026-11-25/day"]  # Tuesday is a holiday
    first, third = line_capacity("line-1", buckets, COLD, [], [], SKUS, at(MON, "07:00")).buckets
    assert first.pbt_s == 39600 - 7200 and third.pbt_s == 39600  # maintenance 08:00-10:00 on Monday only


def test_only_the_time_after_now_counts():
    (b,) = line_capacity("line-1", day_buckets(), COLD, [], [], SKUS, at(MON, "14:00")).buckets
    assert b.pbt_s == 6 * 3600 - 15 * 60  # 14:00-20:00 less the tea break


def test_a_machine_down_until_its_expected_repair():
    down = Constraint("line-1", "machine_down", at(MON, "08:00"), at(MON, "09:00"))
    (b,) = line_capacity("line-1", day_buckets(), COLD, [], [down], SKUS, at(MON, "08:00")).buckets
    assert b.unattainable_s == {"machine_down": pytest.approx(0.6 * 3600)}  # an hour of the line at its OEE
    assert b.available_s == pytest.approx(23760 - 2160)


def test_a_product_mix_of_open_orders_and_holds_first_come_first_served():
    demands = [Demand("line-1", "SO-1", "order", "KT-100", 1000, 6.0),  # running: no setup; 6,000 s
               Demand("line-1", "H-1", "hold", "KT-200", 500, 5.0, setup_s=1500)]  # 1,500 + 2,500 = 4,000 s
    (b,) = line_capacity("line-1", day_buckets(), COLD, demands, [], SKUS, at(MON, "07:00")).buckets
    assert b.committed_s == pytest.approx(10000) and b.committed == (("SO-1", 6000), ("H-1", 4000))
    assert b.available_s == pytest.approx(13760)
    assert b.available_qty["KT-100"] == (13760 - 1500) // 6


def test_demand_spills_into_the_next_buckets_and_beyond_the_horizon():
    buckets = plan_buckets([DAY], SH, ["line-1"], MON, 2)
    big = [Demand("line-1", "SO-9", "order", "KT-100", 10_000, 6.0)]  # 60,000 s against 2 x 23,760
    cap = line_capacity("line-1", buckets, COLD, big, [], SKUS, at(MON, "07:00"))
    assert [b.committed_s for b in cap.buckets] == [pytest.approx(23760), pytest.approx(23760)]
    assert [b.available_s for b in cap.buckets] == [0, 0] and cap.overbooked_s == pytest.approx(60000 - 47520)


def test_the_basis_is_in_the_output():
    median = OeeBasis(0.72, "trailing_median", shifts=40)
    (b,) = line_capacity("line-1", day_buckets(), median, [], [], SKUS, at(MON, "07:00")).buckets
    assert (b.oee, b.basis, b.total_s) == (0.72, "trailing_median", pytest.approx(0.72 * 39600))


def test_day_buckets_take_a_night_shift_by_the_day_it_starts():
    buckets = plan_buckets([DAY, NIGHT], SH, ["line-1"], MON, 1, by="day")
    (b,) = buckets
    assert b.key == "2026-11-23" and b.pbt_s(0) == 39600 + 11.25 * 3600


# --- the invariant ------------------------------------------------------------------------------------------

hhmm = st.integers(0, 23).map(lambda h: f"{h:02d}:00")


@st.composite
def calendars(draw):
    shifts = []
    for i in range(draw(st.integers(1, 3))):
        start, end = draw(hhmm), draw(hhmm)
        if start == end:
            continue
        breaks = [Break(start=b, end=f"{int(b[:2]):02d}:30") for b in draw(st.lists(hhmm, max_size=2))]
        shifts.append(Shift(id=f"s{i}", name="S", start=start, end=end, breaks=breaks))
    return shifts or [DAY]


@settings(max_examples=150, deadline=None)
@given(shifts=calendars(), days=st.integers(1, 5), oee=st.floats(0.0, 1.2),
       orders=st.lists(st.tuples(st.sampled_from(sorted(SKUS)), st.integers(0, 20_000), st.floats(0, 3600)),
                       max_size=6),
       constraints=st.lists(st.tuples(st.sampled_from(REASONS), st.integers(0, 5 * 86400), st.integers(0, 86400),
                                      st.floats(0.0, 1.0)), max_size=5),
       now_h=st.integers(0, 48), by=st.sampled_from(["shift", "day"]),
       holiday=st.integers(0, 6), maintenance=st.lists(st.tuples(st.integers(0, 5 * 86400), st.integers(0, 43200)),
                                                      max_size=3))
def test_total_is_committed_plus_available_plus_unattainable_in_every_bucket(
        shifts, days, oee, orders, constraints, now_h, by, holiday, maintenance):
    t0 = at(MON, "00:00")
    buckets = plan_buckets(shifts, SH, ["line-1"], MON, days, holidays=[MON + timedelta(days=holiday)],
                           maintenance=[("line-1", t0 + a * NS, t0 + (a + n) * NS) for a, n in maintenance], by=by)
    demands = [Demand("line-1", f"SO-{i}", "order", sku, qty, SKUS[sku][0], setup)
               for i, (sku, qty, setup) in enumerate(orders)]
    limits = [Constraint("line-1", reason, t0 + a * NS, t0 + (a + n) * NS, share) for reason, a, n, share in constraints]
    cap = line_capacity("line-1", buckets, OeeBasis(oee, "configured"), demands, limits, SKUS, t0 + now_h * 3600 * NS)
    asked = sum(d.seconds for d in demands)
    for b in cap.buckets:
        assert min(b.total_s, b.committed_s, b.available_s, *b.unattainable_s.values(), 0) == 0
        assert b.total_s == pytest.approx(b.committed_s + b.available_s + b.unattainable_total_s, abs=1e-6)
        assert all(q >= 0 for q in b.available_qty.values())
    assert sum(b.committed_s for b in cap.buckets) + cap.overbooked_s == pytest.approx(asked, abs=1e-6)


def test_an_order_finishes_later_while_a_constraint_slows_the_line():
    # from 08:00 at 60 %: 3 operators of 5 missing (share 0.6) until 10:00, so 0.24 of the ideal rate;
    # an order of 1,500 units at 6 s (9,000 s of work) and no setup:
    #   08:00-10:00 makes 0.24 x 7,200 = 1,728 s; the remaining 7,272 s at 0.6 take 12,120 s from 10:00,
    #   and the 12:00-12:45 lunch falls in them: 10:00 + 12,120 s + 45 min = 14:07:00
    short = Constraint("line-1", "operators_missing", at(MON, "08:00"), at(MON, "10:00"), 0.6)
    order = Demand("line-1", "PO-1", "order", "KT-100", 1500, 6.0)
    cap = line_capacity("line-1", day_buckets(), COLD, [order], [short], SKUS, at(MON, "08:00"))
    assert cap.completion_ns("PO-1") == at(MON, "14:07")
    # without the constraint: 9,000 s at 0.6 = 15,000 s from 08:00, plus lunch: 12:55
    free = line_capacity("line-1", day_buckets(), COLD, [order], [], SKUS, at(MON, "08:00"))
    assert free.completion_ns("PO-1") == at(MON, "12:55")


def test_overlapping_constraints_never_take_more_than_the_whole_line():
    # a machine down 08:00-09:00 stops the line; 2 of 4 operators missing from 08:30 to 10:00 lose half of it:
    # 08:00-09:00 the line is down (the operators take nothing more), 09:00-10:00 half of it is lost
    down = Constraint("line-1", "machine_down", at(MON, "08:00"), at(MON, "09:00"))
    staff = Constraint("line-1", "operators_missing", at(MON, "08:30"), at(MON, "10:00"), 0.5)
    (b,) = line_capacity("line-1", day_buckets(), COLD, [], [down, staff], SKUS, at(MON, "08:00")).buckets
    assert b.unattainable_s == {"machine_down": pytest.approx(0.6 * 3600), "operators_missing": pytest.approx(0.6 * 1800)}


def test_work_not_before_the_frozen_horizon_is_placed_in_time_and_never_double_booked():
    # from 10:00 the day shift has 9 h of work time (less lunch and tea) at 60 %: 19,440 s of ideal work.
    # Hold A (3 h of work) may not start before 10:00: it takes 5 h of time plus lunch, done 15:45.
    # Hold B (3 h) may not start before 10:01, but A is on the line until 15:45: only 8,640 s fit by 20:00.
    a = Demand("line-1", "A", "hold", "KT-100", 1800, 6.0, 0.0, at(MON, "10:00"))
    b = Demand("line-1", "B", "hold", "KT-100", 1800, 6.0, 0.0, at(MON, "10:01"))
    cap = line_capacity("line-1", day_buckets(), COLD, [a, b], [], SKUS, at(MON, "08:00"))
    (bucket,) = cap.buckets
    assert cap.completion_ns("A") == at(MON, "15:45") and cap.completion_ns("B") is None
    assert bucket.committed == (("A", 10800.0), ("B", pytest.approx(8640.0)))
    assert cap.overbooked_s == pytest.approx(2160.0)
    # 08:00-10:00 stays available (4,320 s), though nothing after 10:00 can use it
    assert bucket.available_s == pytest.approx(23760 - 19440)
