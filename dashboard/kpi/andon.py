"""Andon calls from their events: when each was called, acknowledged and resolved, and how long that took."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agent.core.schema import Point
from dashboard.kpi.shifts import NS


@dataclass(frozen=True)
class AndonCall:
    """One call (by call_id). Times are None until the event arrives; ages are seconds."""

    call_id: str
    line: str
    station: str
    kind: str
    called_ns: int | None
    acked_ns: int | None
    resolved_ns: int | None

    @property
    def open(self) -> bool:
        return self.resolved_ns is None

    @property
    def time_to_acknowledge_s(self) -> float | None:
        if self.called_ns is None or self.acked_ns is None:
            return None
        return (self.acked_ns - self.called_ns) / NS

    @property
    def time_to_resolve_s(self) -> float | None:
        if self.called_ns is None or self.resolved_ns is None:
            return None
        return (self.resolved_ns - self.called_ns) / NS

    def age_s(self, now_ns: int) -> float | None:
        """Seconds since the call, while it is open."""
        return (now_ns - self.called_ns) / NS if self.called_ns is not None and self.open else None


def andon_calls(events: Iterable[Point]) -> list[AndonCall]:
    """Calls from `andon_event` points in any order; a repeated event keeps its first time. Oldest call first."""
    seen: dict[str, dict[str, object]] = {}
    for p in sorted(events, key=lambda e: e.time_ns):
        call = seen.setdefault(str(p.fields["call_id"]), {
            "line": p.tags["line"], "station": p.tags["station"], "kind": p.tags["kind"]})
        call.setdefault(p.tags["event"], p.time_ns)
    calls = [AndonCall(call_id, str(c["line"]), str(c["station"]), str(c["kind"]), c.get("call"),  # type: ignore[arg-type]
                       c.get("ack"), c.get("resolve"))  # type: ignore[arg-type]
             for call_id, c in seen.items()]
    return sorted(calls, key=lambda c: (c.called_ns is None, c.called_ns or 0, c.call_id))
