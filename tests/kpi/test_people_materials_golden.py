"""Golden tests of the people and materials figures, worked out by hand."""

from datetime import date

import pytest

from agent.config import Operator, Station
from agent.core.schema import Point
from dashboard.kpi.materials import outlook, rate_per_min
from dashboard.kpi.oee import Count
from dashboard.kpi.people import Presence, output_per_operator, presences, staffing
from dashboard.kpi.shifts import NS
from tests.kpi.test_oee_golden import at

MON = date(2026, 11, 23)
OPERATORS = [Operator(id="op-001", name="王芳", badge="B1001", skills=["molding", "assembly"]),
             Operator(id="op-002", name="李强", badge="B1002", skills=["molding"]),
             Operator(id="op-003", name="张伟", badge="B1003", skills=["assembly", "packing"])]
STATIONS = [Station(id="mold-1", skill="molding"), Station(id="assy-1", skill="assembly", planned_headcount=2),
            Station(id="pack-1", skill="packing")]


def badge(hhmm, station, event, number):
    return Point("operator_event", {"site": "s", "line": "line-1", "station": station, "event": event},
                 {"badge": number}, at(MON, hhmm))


EVENTS = [
    badge("08:00", "mold-1", "in", "B1001"),
    badge("08:02", "assy-1", "in", "B1003"),
    badge("08:05", "assy-1", "in", "B1002"),   # no assembly skill
    badge("08:06", "assy-1", "in", "B1002"),   # a second swipe: no change
    badge("10:00", "assy-1", "in", "B1001"),   # moves from mold-1 without badging out there
    badge("11:00", "assy-1", "out", "B1002"),
    badge("11:30", "pack-1", "in", "B9999"),   # a badge not in the config
    badge("12:30", "pack-1", "out", "B9999"),  # after the moment looked at
]


def test_stays_follow_the_newest_event_of_each_badge():
    stays = presences(EVENTS, at(MON, "12:00"))
    assert stays == [
        Presence("B1001", "mold-1", at(MON, "08:00"), at(MON, "10:00")),
        Presence("B1003", "assy-1", at(MON, "08:02"), None),
        Presence("B1002", "assy-1", at(MON, "08:05"), at(MON, "11:00")),
        Presence("B1001", "assy-1", at(MON, "10:00"), None),
        Presence("B9999", "pack-1", at(MON, "11:30"), None),
    ]


@pytest.mark.parametrize(("hhmm", "expected"), [
    # station: (present, unskilled, missing)
    ("09:00", {"mold-1": (("B1001",), (), 0), "assy-1": (("B1003", "B1002"), ("B1002",), 0),
               "pack-1": ((), (), 1)}),
    ("11:45", {"mold-1": ((), (), 1), "assy-1": (("B1003", "B1001"), (), 0),
               "pack-1": (("B9999",), ("B9999",), 0)}),
])
def test_headcount_against_plan_and_missing_skills(hhmm, expected):
    stays = presences(EVENTS, at(MON, "12:00"))
    got = {s.station: (s.present, s.unskilled, s.missing) for s in staffing(STATIONS, stays, OPERATORS, at(MON, hhmm))}
    assert got == expected


def test_output_per_operator_counts_what_their_machine_made_while_they_were_there():
    stays = presences(EVENTS, at(MON, "12:00"))
    press = [Count(at(MON, "07:59"), "good", 100),   # before the shift
             Count(at(MON, "09:00"), "good", 40), Count(at(MON, "09:59"), "good", 10),
             Count(at(MON, "10:30"), "good", 25),   # nobody at mold-1 any more
             Count(at(MON, "09:00"), "reject", 3)]
    got = output_per_operator(stays, {"mold-1": "press-1"}, {"press-1": press}, at(MON, "08:00"), at(MON, "20:00"))
    assert got == {"B1001": 50}  # assembly has no machine: its people get no machine output


def test_minutes_to_shortage():
    now = at(MON, "10:00")
    counts = [Count(now - 20 * 60 * NS, "total", 999),  # older than the 15 minutes looked at
              Count(now - 10 * 60 * NS, "total", 60), Count(now - 60 * NS, "total", 30), Count(now, "total", 7)]
    rate = rate_per_min(counts, now)
    assert rate == pytest.approx(90 / 15)  # 6 units a minute; the count at `now` belongs to the next window
    resin = outlook("resin-pp", 182.5, 0.42, rate, reorder_point=150)
    assert resin.minutes_to_shortage == pytest.approx(182.5 / (0.42 * 6))  # 72.4 minutes
    assert not resin.below_reorder_point
    cartons = outlook("carton-s", 120, 1, rate, reorder_point=400)
    assert cartons.minutes_to_shortage == pytest.approx(20) and cartons.below_reorder_point
    assert outlook("carton-s", 120, 1, 0.0).minutes_to_shortage is None  # the line stands: no shortage coming
    assert outlook("carton-s", -3, 1, rate).minutes_to_shortage == 0  # a scale reading below zero: out now


def test_a_machine_without_a_total_counter_has_a_rate_from_good_and_reject():
    now = at(MON, "10:00")
    counts = [Count(now - 10 * 60 * NS, "good", 85), Count(now - 5 * 60 * NS, "reject", 5)]
    assert rate_per_min(counts, now) == pytest.approx(90 / 15)  # every unit made takes its material
    assert outlook("alu-bar", 30, 0.25, rate_per_min(counts, now)).minutes_to_shortage == pytest.approx(20)
