"""The site's working time for the simulated plant: work, breaks and time off, from the dashboard's calendar
(dashboard.kpi.shifts), so that the plant and the boards agree on every shift and break edge."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from agent.config import FactoryConfig
from dashboard.kpi.shifts import ShiftWindow, shift_windows
from simulators.clock import US

WORK, BREAK, OFF = "work", "break", "off"


class WorkCalendar:
    """Whether the site works, has a break or is off at a moment, from the shift windows of the config."""

    def __init__(self, cfg: FactoryConfig) -> None:
        self.cfg = cfg
        self.zone = ZoneInfo(cfg.site.timezone)
        self._days: dict[date, list[ShiftWindow]] = {}

    def _local_day(self, t_us: int) -> date:
        return datetime.fromtimestamp(t_us / US, self.zone).date()

    def windows(self, first: date, last: date) -> list[ShiftWindow]:
        """Worked shift windows starting on local days first..last."""
        out: list[ShiftWindow] = []
        day = first
        while day <= last:
            if day not in self._days:
                self._days[day] = shift_windows(self.cfg.shifts, self.cfg.site.timezone, day, day)
            out += self._days[day]
            day += timedelta(days=1)
        return sorted(out, key=lambda w: w.start_ns)

    def window_at(self, t_us: int) -> ShiftWindow | None:
        """The worked shift in force at `t_us`, None outside every shift."""
        day = self._local_day(t_us)
        t_ns = t_us * 1000
        for w in self.windows(day - timedelta(days=1), day):
            if w.start_ns <= t_ns < w.end_ns:
                return w
        return None

    def _day_pieces(self, day: date) -> list[tuple[int, int, str]]:
        """WORK and BREAK pieces of the shifts that start on local `day`, in time order."""
        pieces: list[tuple[int, int, str]] = []
        for w in self.windows(day, day):
            cursor = w.start_ns // 1000
            for b0, b1 in w.breaks:
                pieces += [(cursor, b0 // 1000, WORK), (b0 // 1000, b1 // 1000, BREAK)]
                cursor = b1 // 1000
            pieces.append((cursor, w.end_ns // 1000, WORK))
        return sorted(p for p in pieces if p[1] > p[0])

    def segments(self, t_us: int) -> Iterator[tuple[int, int, str]]:
        """(start, end, WORK | BREAK | OFF) pieces of time from the one containing `t_us` on, without end."""
        if not self.cfg.shifts:
            while True:  # no calendar: always working
                yield t_us, t_us + 365 * 86400 * US, WORK
                t_us += 365 * 86400 * US
        day = self._local_day(t_us) - timedelta(days=1)
        cursor, empty_days = t_us, 0
        while True:
            pieces = self._day_pieces(day)
            empty_days = 0 if pieces else empty_days + 1
            for s, e, status in pieces:
                if e <= cursor:
                    continue
                s = max(s, cursor)
                if s > cursor:
                    yield cursor, s, OFF
                yield s, e, status
                cursor = e
            if empty_days > 14:  # shifts on no weekday: off for good
                yield cursor, cursor + 365 * 86400 * US, OFF
                cursor += 365 * 86400 * US
                empty_days = 0
            day += timedelta(days=1)

    def status(self, t_us: int) -> tuple[str, int]:
        """(WORK | BREAK | OFF, when that changes) at `t_us`."""
        for s, e, status in self.segments(t_us):
            if s <= t_us < e:
                return status, e
        raise AssertionError("the calendar has no end")  # pragma: no cover

    def add_work(self, t_us: int, work_us: int) -> int:
        """The moment when `work_us` of working time has passed after `t_us` (breaks and off time skipped)."""
        if not self.cfg.shifts:
            return t_us + work_us
        left = work_us
        for s, e, status in self.segments(t_us):
            if status != WORK:
                continue
            start = max(s, t_us)
            if e - start >= left:
                return start + left
            left -= e - start
        raise AssertionError("the calendar has no end")  # pragma: no cover

    def work_between(self, a_us: int, b_us: int) -> int:
        """Working time in [a, b)."""
        if b_us <= a_us:
            return 0
        if not self.cfg.shifts:
            return b_us - a_us
        total = 0
        for s, e, status in self.segments(a_us):
            if s >= b_us:
                break
            if status == WORK:
                total += min(e, b_us) - max(s, a_us)
        return total

    def boundaries(self, after_us: int, until_us: int) -> list[tuple[int, str]]:
        """Shift starts and break ends ("in"), break starts ("break") and shift ends ("out") in (after, until],
        leaving before arriving at one instant (back-to-back shifts)."""
        out: list[tuple[int, int, str]] = []
        order = {"out": 0, "break": 1, "in": 2}
        first = self._local_day(after_us) - timedelta(days=1)
        for w in self.windows(first, self._local_day(until_us)):
            moments = [(w.start_ns, "in"), (w.end_ns, "out")]
            for b0, b1 in w.breaks:
                moments += [(b0, "break"), (b1, "in")]
            for t_ns, action in moments:
                t = t_ns // 1000
                if after_us < t <= until_us:
                    out.append((t, order[action], action))
        return [(t, action) for t, _, action in sorted(set(out))]
