"""Read-only views of the agent's SQLite historian: row counts over time and when each row became visible."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any


def connect(path: Path) -> sqlite3.Connection | None:
    """A read-only connection, or None while the agent has not created the file and its tables yet."""
    if not path.exists():
        return None
    # Autocommit mode: the tracker opens its own read transactions, and a count must not hold a snapshot open.
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10, check_same_thread=False,
                           isolation_level=None)
    try:
        conn.execute("SELECT 1 FROM schema_migrations LIMIT 1").fetchall()
    except sqlite3.Error:
        conn.close()
        return None
    return conn


def wait_connect(path: Path, timeout: float = 30) -> sqlite3.Connection:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = connect(path)
        if conn is not None:
            return conn
        time.sleep(0.1)
    raise RuntimeError(f"historian {path} not created within {timeout:.0f} s")


class RowCounter:
    """`SELECT COUNT(*)` of one measurement, with the (monotonic time, rows) samples kept for rate figures."""

    def __init__(self, conn: sqlite3.Connection, measurement: str) -> None:
        self.conn = conn
        self.sql = f"SELECT COUNT(*) FROM {measurement}"  # measurement names come from our own code
        self.samples: list[tuple[float, int]] = []
        self.query_s = 0.0  # time spent counting: the bench's own load on the machine

    def poll(self) -> int:
        t0 = time.monotonic()
        rows = int(self.conn.execute(self.sql).fetchone()[0])
        t1 = time.monotonic()
        self.query_s += t1 - t0
        # The count is of the snapshot taken when the query began.
        self.samples.append((t0, rows))
        return rows

    def rows_at(self, t: float) -> float:
        """Rows at monotonic time `t`, interpolated between samples."""
        s = self.samples
        if not s:
            return 0.0
        if t <= s[0][0]:
            return float(s[0][1])
        for (ta, ra), (tb, rb) in zip(s, s[1:], strict=False):
            if ta <= t <= tb:
                return ra + (rb - ra) * (t - ta) / (tb - ta) if tb > ta else float(rb)
        return float(s[-1][1])

    def rate(self, t_start: float, t_end: float) -> float:
        """Rows committed per second between two monotonic times."""
        if t_end <= t_start:
            return 0.0
        return (self.rows_at(t_end) - self.rows_at(t_start)) / (t_end - t_start)


class LatencyTracker:
    """When each new row of some series became visible to a reader, against the row's own `time`.

    One cursor per series (all tag columns given), because `time` increases strictly within a series and the
    agent commits a series in order, so `time > cursor` sees every new row exactly once, through the primary
    key index, however other series interleave. Each poll's snapshot is taken when the query starts: a row
    first seen by poll i became visible after poll i-1 started, so a measured latency overstates the true one
    by less than the gap between two polls (reported as `resolution_ms`).
    """

    def __init__(self, conn: sqlite3.Connection, measurement: str, tag_names: tuple[str, ...],
                 series: list[tuple[Any, ...]], after_ns: int) -> None:
        self.conn = conn
        where = " AND ".join(f"{t} = ?" for t in tag_names)
        self.sql = f"SELECT time FROM {measurement} WHERE {where} AND time > ? ORDER BY time"
        self.series = series
        self.cursor = dict.fromkeys(series, after_ns)
        self.latencies_ms: list[float] = []
        self.poll_starts: list[float] = []
        self.query_s = 0.0
        # Rows stamped later than this are read (to move the cursors) but not measured: set at the end of a
        # measuring window, while the bench waits for the window's last rows.
        self.until_ns: int | None = None

    def poll(self) -> int:
        """Read the new rows of every series; returns how many were new."""
        start_wall = time.time()
        t0 = time.monotonic()
        self.poll_starts.append(t0)
        new = 0
        execute = self.conn.execute
        seen_ns = int(start_wall * 1e9)
        # One read transaction for all series, so they all come from the same snapshot (taken at start_wall).
        execute("BEGIN")
        try:
            for key in self.series:
                rows = execute(self.sql, (*key, self.cursor[key])).fetchall()
                if rows:
                    self.cursor[key] = rows[-1][0]
                    new += len(rows)
                    until = self.until_ns
                    self.latencies_ms.extend((seen_ns - r[0]) / 1e6 for r in rows if until is None or r[0] <= until)
        finally:
            execute("COMMIT")
        self.query_s += time.monotonic() - t0
        return new

    def resolution_ms(self) -> float:
        """The largest gap between two consecutive polls: the bound on how much a latency is overstated."""
        gaps = [b - a for a, b in zip(self.poll_starts, self.poll_starts[1:], strict=False)]
        return 1000.0 * max(gaps) if gaps else 0.0

    def behind_s(self, at_ns: int) -> float:
        """How far the slowest series' newest visible row is behind `at_ns`: the backlog, in seconds."""
        return max(0.0, (at_ns - min(self.cursor.values())) / 1e9)

    def summary(self) -> dict[str, float | int]:
        gaps = sorted(b - a for a, b in zip(self.poll_starts, self.poll_starts[1:], strict=False))
        return percentiles(self.latencies_ms) | {
            "samples": len(self.latencies_ms), "resolution_ms": round(self.resolution_ms(), 1),
            "median_poll_gap_ms": round(1000.0 * gaps[len(gaps) // 2], 1) if gaps else 0.0}


def percentiles(values: list[float]) -> dict[str, float | int]:
    """p50/p95/p99/max (nearest rank) of latencies in ms."""
    if not values:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    s = sorted(values)

    def rank(p: float) -> float:
        return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s))) - 1))]

    return {"p50_ms": round(rank(50), 1), "p95_ms": round(rank(95), 1), "p99_ms": round(rank(99), 1),
            "max_ms": round(s[-1], 1)}
