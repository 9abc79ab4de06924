"""The historian interface every backend implements (SQLite embedded; InfluxDB), and its result types.

Writes are idempotent: the same (measurement, tags, time) written twice is one point. Reads are the ones the
boards and the capacity job need: state intervals, count sums per bucket, last values, series and events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from agent.core.schema import Point


class HistorianError(Exception):
    """A write or read failed. `retry` says whether trying the same request again can succeed;
    `retry_after` (seconds), when set, is the earliest the backend wants to see it again."""

    def __init__(self, message: str, retry: bool = True, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.retry_after = retry_after


@dataclass
class WriteResult:
    """What the historian kept: `accepted` points, and rejected ones with the server's reason."""

    accepted: int
    rejected: list[tuple[Point, str]] = field(default_factory=list)


class StateInterval(NamedTuple):
    """A machine in one board state over [start_ns, end_ns). A tuple: a month of a line is tens of
    thousands of them, built on every board and capacity read."""

    line: str
    machine: str
    state: str
    start_ns: int
    end_ns: int
    raw: str = ""
    reason: str = ""


class CountBucket(NamedTuple):
    """The sum of one counter's deltas of one machine over the bucket starting at `bucket_start_ns`."""

    line: str
    machine: str
    counter: str
    bucket_start_ns: int
    delta: int


class Historian(Protocol):
    """A backend may also have `in_flight`, an int: how many `write` calls the agent's drain may have going at
    once, from as many threads (agent/pipeline.py). Without it, writes come one after the other from one
    thread."""

    def write(self, points: Sequence[Point]) -> WriteResult:
        """Store points durably; return only after the backend confirmed them."""
        ...

    def state_intervals(self, start_ns: int, end_ns: int, line: str | None = None,
                        machine: str | None = None) -> list[StateInterval]:
        """Each machine's states over [start, end): the state in force at `start` is carried in."""
        ...

    def count_sums(self, start_ns: int, end_ns: int, bucket_s: int, line: str | None = None,
                   machine: str | None = None) -> list[CountBucket]:
        """Sum of counter deltas per machine, counter and bucket of `bucket_s` seconds (aligned to the epoch)."""
        ...

    def last_values(self, measurement: str, **tags: str) -> list[Point]:
        """The newest point of every series of `measurement` matching the tag filters."""
        ...

    def series(self, measurement: str, field_name: str, start_ns: int, end_ns: int,
               **tags: str) -> list[tuple[int, Any]]:
        """(time_ns, value) of one field over [start, end), oldest first; points without the field are left
        out; values in the field's schema type (a bool field gives True/False)."""
        ...

    def events(self, measurement: str, start_ns: int, end_ns: int, **tags: str) -> list[Point]:
        """Every point of `measurement` over [start, end), oldest first."""
        ...

    def apply_retention(self, now_ns: int) -> int:
        """Delete what is older than the retention period; return how many points went."""
        ...

    def close(self) -> None: ...
