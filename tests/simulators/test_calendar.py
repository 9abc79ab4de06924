"""One shift calendar (dashboard.kpi.shifts): the simulated plant and the benchmark's history work, break and go
home exactly when the boards say, edge cases included."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from agent.config import load
from bench.shop_history import planned_windows
from bench.shop_history import shift_windows as bench_windows
from dashboard.kpi.shifts import NS, shift_windows
from simulators.plant import BREAK, WORK, WorkCalendar

FACTORY_YAML = Path(__file__).resolve().parents[2] / "config" / "factory.yaml"
MONDAY = date(2026, 11, 23)
ZONE = ZoneInfo("Asia/Shanghai")

# Each case: the shifts, and the breaks of the first worked window as local "HH:MM" pairs (day by day).
CASES = {
    "a break whose end equals its start is empty": (
        [{"id": "day", "name": "Day", "start": "08:00", "end": "20:00",
          "breaks": [{"start": "12:00", "end": "12:00"}, {"start": "16:00", "end": "16:15"}]}],
        [("16:00", "16:15")]),
    "a break after midnight in a night shift": (
        [{"id": "night", "name": "Night", "start": "20:00", "end": "08:00",
          "breaks": [{"start": "00:00", "end": "00:45"}, {"start": "22:00", "end": "22:10"}]}],
        [("22:00", "22:10"), ("00:00", "00:45")]),
    "a break partly outside its shift is clipped to it": (
        [{"id": "day", "name": "Day", "start": "08:00", "end": "20:00",
          "breaks": [{"start": "19:30", "end": "20:30"}]}],
        [("19:30", "20:00")]),
    "a break before the shift's start lies after midnight, outside a day shift": (
        [{"id": "day", "name": "Day", "start": "08:00", "end": "20:00",
          "breaks": [{"start": "07:30", "end": "07:45"}]}],
        []),
}


def config_with_shifts(tmp_path: Path, shifts: list[dict]):
    data = yaml.safe_load(FACTORY_YAML.read_text(encoding="utf-8"))
    data["shifts"] = [{**s, "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]} for s in shifts]
    path = tmp_path / "factory.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return load(path, resolve_secrets=False)


def local(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns / NS, ZONE).strftime("%H:%M")


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request, tmp_path):
    shifts, breaks = CASES[request.param]
    return config_with_shifts(tmp_path, shifts), breaks


def test_the_boards_calendar_reads_breaks_as_documented(case):
    cfg, breaks = case
    first = shift_windows(cfg.shifts, cfg.site.timezone, MONDAY, MONDAY)[0]
    assert [(local(a), local(b)) for a, b in first.breaks] == breaks
    assert all(first.start_ns <= a < b <= first.end_ns for a, b in first.breaks)


def test_the_bench_history_uses_the_boards_shifts_and_breaks(case):
    cfg, _ = case
    boards = [w for w in shift_windows(cfg.shifts, cfg.site.timezone, MONDAY, MONDAY + timedelta(days=2))
              if w.end_ns <= int(datetime(2026, 11, 26, tzinfo=ZONE).timestamp()) * NS]
    bench = bench_windows(cfg, MONDAY, 3)
    assert [(w.shift, w.start_ns, w.end_ns, w.breaks) for w in bench] == \
        [(w.shift, w.start_ns, w.end_ns, w.breaks) for w in boards]
    start, end = boards[0].start_ns, boards[-1].end_ns
    planned = planned_windows(bench, start, end)
    assert all(b > a for a, b in planned)  # no empty planned window
    for w in boards:  # the history plans no production in a break, and production in the rest of the shift
        worked = [(a, b) for a, b in planned if a < w.end_ns and b > w.start_ns]
        assert sum(min(b, w.end_ns) - max(a, w.start_ns) for a, b in worked) == sum(b - a for a, b in w.breaks)


def test_the_plant_works_breaks_and_goes_home_on_the_boards_edges(case):
    cfg, _ = case
    calendar = WorkCalendar(cfg)
    for w in shift_windows(cfg.shifts, cfg.site.timezone, MONDAY, MONDAY + timedelta(days=1)):
        for t_ns in range(w.start_ns, w.end_ns, 60 * NS):  # every minute of the shift
            in_break = any(a <= t_ns < b for a, b in w.breaks)
            assert calendar.status(t_ns // 1000)[0] == (BREAK if in_break else WORK), local(t_ns)
        worked_us = calendar.work_between(w.start_ns // 1000, w.end_ns // 1000)
        assert worked_us * 1000 == w.end_ns - w.start_ns - sum(b - a for a, b in w.breaks)
        moments = calendar.boundaries(w.start_ns // 1000 - 1, w.end_ns // 1000)
        expected = sorted([(w.start_ns // 1000, "in"), (w.end_ns // 1000, "out")]
                          + [(a // 1000, "break") for a, _ in w.breaks] + [(b // 1000, "in") for _, b in w.breaks])
        assert sorted(m for m in moments if w.start_ns // 1000 <= m[0] <= w.end_ns // 1000) == expected


def test_the_factory_calendar_is_one_for_all(factory_cfg):
    boards = shift_windows(factory_cfg.shifts, factory_cfg.site.timezone, MONDAY, MONDAY + timedelta(days=6))
    bench = bench_windows(factory_cfg, MONDAY, 7)
    assert [(w.start_ns, w.end_ns, w.breaks) for w in bench] == [(w.start_ns, w.end_ns, w.breaks) for w in boards
                                                                  if w in bench]
    assert len(bench) >= len(boards) - 1  # only the last night shift ends after the period
    calendar = WorkCalendar(factory_cfg)
    assert [(w.start_ns, w.end_ns, w.breaks) for w in calendar.windows(MONDAY, MONDAY + timedelta(days=6))] == \
        [(w.start_ns, w.end_ns, w.breaks) for w in boards]

