"""Shift windows in the site's time zone, as UTC nanosecond intervals.

A shift's start and end are local wall times: a shift that ends earlier on the clock than it starts crosses
midnight and ends the next day. Each end is converted to UTC on its own date, so a night shift over a
daylight-saving change lasts an hour less or more, as the people on it experience. A wall time that does not
exist (in the hour skipped in spring) is read with the offset in force before the change, so it lands an
hour later on the clock (02:30 becomes 03:30); a wall time that happens twice (autumn) means its first
occurrence.

Breaks: a break that starts earlier on the clock than its shift lies after midnight (in a night shift); one
that ends earlier on the clock than it starts crosses midnight; one that ends when it starts is empty and
excludes nothing (it never means 24 hours). Breaks are clipped to their shift, and an empty one is left out.
This is the site's only calendar: the simulated plant and the benchmarks read their shifts from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from agent.config import Shift

NS = 1_000_000_000
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class ShiftWindow:
    """One shift on one day: [start_ns, end_ns) in UTC, and its breaks (clipped to the shift, in order)."""

    shift: str
    day: date  # the local date the shift starts on
    start_ns: int
    end_ns: int
    breaks: tuple[tuple[int, int], ...] = ()

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / NS


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def local_ns(day: date, hhmm: str, zone: ZoneInfo) -> int:
    """A local wall time on `day` as UTC nanoseconds (fold 0: the first occurrence of a repeated time; a
    skipped time an hour later)."""
    minutes = _minutes(hhmm)
    wall = datetime(day.year, day.month, day.day, minutes // 60, minutes % 60, tzinfo=zone)
    return int(wall.timestamp()) * NS


def shift_window(shift: Shift, day: date, zone: ZoneInfo) -> ShiftWindow:
    """The window of `shift` starting on local date `day` (whether or not it works that weekday)."""
    start_min, end_min = _minutes(shift.start), _minutes(shift.end)
    end_day = day + timedelta(days=1) if end_min <= start_min else day
    start_ns, end_ns = local_ns(day, shift.start, zone), local_ns(end_day, shift.end, zone)
    breaks = []
    for pause in shift.breaks:
        # a break earlier on the clock than the shift's start lies after midnight
        pause_day = day + timedelta(days=1) if _minutes(pause.start) < start_min else day
        pause_end_day = pause_day + timedelta(days=1) if _minutes(pause.end) < _minutes(pause.start) else pause_day
        b0 = max(start_ns, local_ns(pause_day, pause.start, zone))
        b1 = min(end_ns, local_ns(pause_end_day, pause.end, zone))
        if b1 > b0:
            breaks.append((b0, b1))
    return ShiftWindow(shift.id, day, start_ns, end_ns, tuple(sorted(breaks)))


def shift_windows(shifts: Sequence[Shift], timezone: str, first_day: date, last_day: date) -> list[ShiftWindow]:
    """Every worked shift starting on a local date in [first_day, last_day], in time order."""
    zone = ZoneInfo(timezone)
    out = []
    day = first_day
    while day <= last_day:
        for shift in shifts:
            if WEEKDAYS[day.weekday()] in shift.days:
                out.append(shift_window(shift, day, zone))
        day += timedelta(days=1)
    return sorted(out, key=lambda w: w.start_ns)


def shift_at(shifts: Sequence[Shift], timezone: str, t_ns: int) -> ShiftWindow | None:
    """The worked shift in force at `t_ns`, or None outside every shift."""
    local_day = datetime.fromtimestamp(t_ns / NS, ZoneInfo(timezone)).date()
    for window in shift_windows(shifts, timezone, local_day - timedelta(days=1), local_day):
        if window.start_ns <= t_ns < window.end_ns:
            return window
    return None
