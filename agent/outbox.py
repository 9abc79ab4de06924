"""The durable outbox: points wait here, on disk, until the historian has confirmed them.

Transactions, in the manner of a write buffer: `enqueue` commits a batch of points together with the mapper
state that produced them (counter readings, last states) and any dead letters, in one SQLite transaction;
`claim` hands out the oldest batches; `settle` deletes them once the historian confirmed the write. A crash
between write and settle replays the batch, which the historian's idempotent writes absorb.

The outbox is bounded by a disk quota: past it, the oldest batches are dropped, and every dropped point is
counted (persisted across restarts), logged, and exposed on /metrics.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.mapping import DeadLetter
from agent.core.schema import Point

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch (
    -- AUTOINCREMENT: ids never reused after a settle deleted the newest batch, so the claim cursor
    -- (id > last claimed) never skips a batch
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_ns INTEGER NOT NULL,
    oldest_ns INTEGER NOT NULL,
    n_points INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS mapper_state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY,
    received_ns INTEGER NOT NULL,
    source TEXT NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    payload BLOB NOT NULL,
    payload_bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tally (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Batch:
    id: int
    points: list[Point]
    oldest_ns: int


# Batches are stored as a pickle of plain tuples, dicts, strings and numbers: three times faster than JSON
# on the hot path, and half the size because the tag dict a series shares is stored once per batch. Loading
# goes through an unpickler that refuses every class, so a batch can only ever decode to plain data.


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"outbox batches hold plain data only, not {module}.{name}")


def encode_points(points: Sequence[Point]) -> bytes:
    return pickle.dumps([tuple(p) for p in points], protocol=5)


def decode_points(body: bytes) -> list[Point]:
    return [Point(m, t, f, ts) for m, t, f, ts in _PlainUnpickler(io.BytesIO(body)).load()]


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before a source is acknowledged, so a power cut loses nothing acknowledged.
    conn.execute("PRAGMA synchronous=FULL")
    return conn


class Outbox:
    """Durable queue of point batches with dead letters and mapper state; safe for one writer and one drainer."""

    def __init__(self, path: Path, quota_bytes: int, dead_letter_payload_max: int = 65536,
                 dead_letter_max_rows: int = 10_000) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write = _connect(path)
        self._write.executescript(_SCHEMA)
        self._read = _connect(path)
        # One thread at a time on the read connection: the drainer claims and settles on it while /healthz and
        # /metrics read the outbox's age from HTTP threads; a read open on the connection when the settle
        # begins its write transaction fails the settle with "database is locked".
        self._reader = threading.Lock()
        self._lock = threading.Lock()  # guards the in-memory tallies below
        # Writers take this before BEGIN IMMEDIATE: waiting on a Python lock is immediate, while SQLite's busy
        # handler sleeps in steps of up to 100 ms and would stall the ingest and drain threads.
        self._tx = threading.Lock()
        self.quota_bytes = quota_bytes
        self.dead_letter_payload_max = dead_letter_payload_max
        self.dead_letter_max_rows = dead_letter_max_rows
        row = self._write.execute("SELECT COUNT(*), COALESCE(SUM(n_points),0), COALESCE(SUM(bytes),0) FROM batch")
        self._batches, self._points, self._bytes = row.fetchone()
        self._claimed_up_to = 0
        # Batches committed by this process, kept in memory until settled so the drainer does not have to
        # decode what the ingest side just encoded; after a restart batches come from disk.
        self._recent: dict[int, list[Point]] = {}
        self._recent_points = 0
        self.recent_limit = 500_000
        self.dropped_points = self._tally("dropped_points")
        self.dead_letters_total = self._tally("dead_letters")

    def _tally(self, name: str) -> int:
        row = self._write.execute("SELECT value FROM tally WHERE name=?", (name,)).fetchone()
        return int(row[0]) if row else 0

    # --- writer side ---

    def load_state(self) -> dict[str, Any]:
        """The mapper state as of the last committed batch."""
        return {k: json.loads(v) for k, v in self._write.execute("SELECT key, value FROM mapper_state")}

    def enqueue(self, points: Sequence[Point], dead_letters: Sequence[DeadLetter] = (),
                state: dict[str, Any] | None = None, now_ns: int | None = None) -> None:
        """Commit points, dead letters and mapper state atomically. When this returns, they are on disk."""
        if not points and not dead_letters and not state:
            return
        now_ns = now_ns or time.time_ns()
        body = encode_points(points) if points else b""
        conn = self._write
        with self._tx:
            batch_id, dropped = self._enqueue_tx(conn, points, body, dead_letters, state, now_ns)
            # Still holding the transaction lock: the drainer cannot settle this batch before it is recorded
            # here, so every entry of _recent is removed by its settle.
            with self._lock:
                if batch_id is not None and self._recent_points + len(points) <= self.recent_limit:
                    self._recent[batch_id] = list(points)
                    self._recent_points += len(points)
        with self._lock:
            if points:
                self._batches += 1
                self._points += len(points)
                self._bytes += len(body)
            self.dead_letters_total += len(dead_letters)
            if dropped:
                batches, n_points, n_bytes = dropped
                self._batches -= batches
                self._points -= n_points
                self._bytes -= n_bytes
                self.dropped_points += n_points
        if dropped:
            log.warning("outbox over its quota of %s bytes: dropped %s oldest points (%s dropped in all)",
                        self.quota_bytes, dropped[1], self.dropped_points)

    def _enqueue_tx(self, conn: sqlite3.Connection, points: Sequence[Point], body: bytes,
                    dead_letters: Sequence[DeadLetter], state: dict[str, Any] | None,
                    now_ns: int) -> tuple[int | None, tuple[int, int, int] | None]:
        batch_id = None
        conn.execute("BEGIN IMMEDIATE")
        try:
            if points:
                oldest = min(p.time_ns for p in points)
                batch_id = conn.execute(
                    "INSERT INTO batch (created_ns, oldest_ns, n_points, bytes, body) VALUES (?,?,?,?,?)",
                    (now_ns, oldest, len(points), len(body), body)).lastrowid
            if dead_letters:
                self._insert_dead_letters(conn, dead_letters)
            if state:
                conn.executemany("INSERT OR REPLACE INTO mapper_state (key, value) VALUES (?, ?)",
                                 [(k, json.dumps(v)) for k, v in state.items()])
            dropped = self._enforce_quota(conn, len(body))
            conn.execute("COMMIT")
            return batch_id, dropped
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _insert_dead_letters(self, conn: sqlite3.Connection, dead_letters: Sequence[DeadLetter]) -> None:
        limit = self.dead_letter_payload_max
        conn.executemany(
            "INSERT INTO dead_letter (received_ns, source, topic, reason, payload, payload_bytes) VALUES (?,?,?,?,?,?)",
            [(d.time_ns, d.source, d.topic, d.reason, d.payload[:limit], len(d.payload)) for d in dead_letters])
        conn.execute("INSERT INTO tally (name, value) VALUES ('dead_letters', ?) "
                     "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (len(dead_letters),))
        # Keep the table bounded (rows x payload limit): the newest dead letters are the useful ones.
        # The total stays countable in `tally` even after old rows go.
        conn.execute("DELETE FROM dead_letter WHERE id <= (SELECT MAX(id) FROM dead_letter) - ?",
                     (self.dead_letter_max_rows,))

    def _enforce_quota(self, conn: sqlite3.Connection, added: int) -> tuple[int, int, int] | None:
        with self._lock:
            over = self._bytes + added - self.quota_bytes
        if over <= 0:
            return None
        batches = n_points = n_bytes = 0
        # Batches the drainer holds are being written right now: dropping them would count them as lost.
        floor = self._claimed_up_to  # read once: the drainer may move it meanwhile
        rows = conn.execute("SELECT id, n_points, bytes FROM batch WHERE id > ? ORDER BY id", (floor,)).fetchall()
        if not rows:
            return None
        last_id = None
        for batch_id, pts, size in rows:
            if n_bytes >= over or batch_id == rows[-1][0]:
                break
            batches += 1
            n_points += pts
            n_bytes += size
            last_id = batch_id
        if last_id is None:
            return None
        conn.execute("DELETE FROM batch WHERE id > ? AND id <= ?", (floor, last_id))
        with self._lock:
            for batch_id in [b for b in self._recent if floor < b <= last_id]:
                self._recent_points -= len(self._recent.pop(batch_id))
        conn.execute("INSERT INTO tally (name, value) VALUES ('dropped_points', ?) "
                     "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (n_points,))
        return batches, n_points, n_bytes

    # --- drainer side ---

    def claim(self, max_points: int) -> list[Batch]:
        """The oldest batches not yet handed out, up to about `max_points` points (at least one batch)."""
        out: list[Batch] = []
        total = 0
        with self._reader:
            rows = self._read.execute(
                "SELECT id, oldest_ns, n_points FROM batch WHERE id > ? ORDER BY id LIMIT 200",
                (self._claimed_up_to,)).fetchall()
        for batch_id, oldest, n_points in rows:
            if out and total + n_points > max_points:
                break
            with self._lock:
                points = self._recent.get(batch_id)
            if points is None:
                with self._reader:
                    row = self._read.execute("SELECT body FROM batch WHERE id = ?", (batch_id,)).fetchone()
                if row is None:  # dropped by the quota since the listing
                    continue
                points = decode_points(row[0])
            out.append(Batch(batch_id, points, oldest))
            total += n_points
        if out:
            self._claimed_up_to = out[-1].id
        return out

    def release(self) -> None:
        """Hand claimed but unsettled batches out again (after a failed write), oldest first. Call it only with
        no write in flight: a batch still being written would be handed out a second time."""
        self._claimed_up_to = 0

    def settle(self, batches: Iterable[Batch], rejected: Sequence[DeadLetter] = ()) -> None:
        """Delete batches the historian confirmed; points it rejected are kept as dead letters instead. Claims
        may be settled in any order: each settle deletes its own batches, and a release afterwards hands out
        the unsettled ones only."""
        ids = [b.id for b in batches]
        if not ids:
            return
        conn = self._read
        marks = ",".join("?" * len(ids))
        with self._tx, self._reader:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if rejected:
                    self._insert_dead_letters(conn, rejected)
                sizes = conn.execute(f"SELECT COUNT(*), COALESCE(SUM(n_points),0), COALESCE(SUM(bytes),0) "
                                     f"FROM batch WHERE id IN ({marks})", ids).fetchone()
                conn.execute(f"DELETE FROM batch WHERE id IN ({marks})", ids)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        with self._lock:
            for batch_id in ids:
                recent = self._recent.pop(batch_id, None)
                if recent is not None:
                    self._recent_points -= len(recent)
            self.dead_letters_total += len(rejected)
            self._batches -= sizes[0]
            self._points -= sizes[1]
            self._bytes -= sizes[2]

    # --- inspection ---

    def depth(self) -> tuple[int, int, int]:
        """(batches, points, bytes) waiting."""
        with self._lock:
            return self._batches, self._points, self._bytes

    def oldest_ns(self) -> int | None:
        """When the oldest waiting batch was committed (the outbox's age, not the data's)."""
        with self._reader:
            row = self._read.execute("SELECT MIN(created_ns) FROM batch").fetchone()
        return row[0] if row else None

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._reader:
            rows = self._read.execute(
                "SELECT received_ns, source, topic, reason, payload, payload_bytes FROM dead_letter "
                "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [{"received_ns": r[0], "source": r[1], "topic": r[2], "reason": r[3],
                 "payload": r[4], "payload_bytes": r[5]} for r in rows]

    def close(self) -> None:
        """Close both connections once no transaction or read is under way on them (closing a connection
        another thread is using can crash the process); a later call on the outbox raises sqlite3's
        ProgrammingError."""
        with self._tx, self._reader:
            self._write.close()
            self._read.close()
