"""Who is at which station, from badge events; headcount against plan, missing skills, output per operator.

A badge is at one station at a time: its newest event decides. `in` at a station puts it there (and so takes
it away from any other station), `out` at that station takes it away.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agent.config import Operator, Station
from agent.core.schema import Point
from dashboard.kpi.oee import Count


@dataclass(frozen=True)
class Presence:
    """A badge at a station over [start_ns, end_ns); `end_ns` None while it is still there."""

    badge: str
    station: str
    start_ns: int
    end_ns: int | None


@dataclass(frozen=True)
class StationStaffing:
    station: str
    planned: int
    present: tuple[str, ...]  # badges, in the order they came
    unskilled: tuple[str, ...]  # badges present without the station's skill (unknown badges included)

    @property
    def missing(self) -> int:
        return max(0, self.planned - len(self.present))


def presences(events: Iterable[Point], end_ns: int) -> list[Presence]:
    """Each stay of a badge at a station, from `operator_event` points up to `end_ns` (oldest first)."""
    open_at: dict[str, tuple[str, int]] = {}  # badge -> (station, since)
    out: list[Presence] = []
    for e in sorted(events, key=lambda p: p.time_ns):
        if e.time_ns >= end_ns:
            break
        badge, station, event = str(e.fields["badge"]), e.tags["station"], e.tags["event"]
        held = open_at.get(badge)
        if event == "in":
            if held is not None and held[0] == station:
                continue  # a second swipe at the same station changes nothing
            if held is not None:
                out.append(Presence(badge, held[0], held[1], e.time_ns))
            open_at[badge] = (station, e.time_ns)
        elif held is not None and held[0] == station:
            out.append(Presence(badge, station, held[1], e.time_ns))
            del open_at[badge]
    out += [Presence(badge, station, since, None) for badge, (station, since) in open_at.items()]
    return sorted(out, key=lambda p: (p.start_ns, p.badge))


def staffing(stations: Sequence[Station], stays: Sequence[Presence], operators: Sequence[Operator],
             at_ns: int) -> list[StationStaffing]:
    """Each station's headcount at `at_ns` against its plan, and who lacks the station's skill."""
    skills = {o.badge: set(o.skills) for o in operators}
    out = []
    for station in stations:
        here = [p.badge for p in stays if p.station == station.id and p.start_ns <= at_ns
                and (p.end_ns is None or at_ns < p.end_ns)]
        unskilled = tuple(b for b in here if station.skill and station.skill not in skills.get(b, set()))
        out.append(StationStaffing(station.id, station.planned_headcount, tuple(here), unskilled))
    return out


def output_per_operator(stays: Sequence[Presence], machine_of_station: dict[str, str],
                        counts_by_machine: dict[str, Sequence[Count]], start_ns: int, end_ns: int,
                        counter: str = "good") -> dict[str, int]:
    """Units (`counter`) each badge's machines made while the badge was at their station, within
    [start, end). Stations without a machine add nothing; two badges at one station both get its units."""
    out: dict[str, int] = {}
    for stay in stays:
        machine = machine_of_station.get(stay.station)
        if machine is None:
            continue
        s0, s1 = max(start_ns, stay.start_ns), min(end_ns, stay.end_ns if stay.end_ns is not None else end_ns)
        made = sum(c.delta for c in counts_by_machine.get(machine, ()) if c.counter == counter and s0 <= c.time_ns < s1)
        out[stay.badge] = out.get(stay.badge, 0) + made
    return out
