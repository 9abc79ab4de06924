"""Capacity holds the platform places (`POST /v1/promises`): kept in a SQLite file beside the dashboard's data, so
they survive a restart and count as Committed capacity until they expire or are released.

Placing a hold is one transaction under the file's write lock: the capacity left is computed with every active
hold and the new one is written only if it fits, so concurrent requests (threads or processes) never book the
same time twice. Each hold is keyed by the client's Idempotency-Key: the same key with the same body gets the same
answer, the same key with another body is refused.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS hold (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,  -- the feed token's name: a platform sees and releases its own holds only
    idempotency_key TEXT NOT NULL,
    body_sha256 TEXT NOT NULL,
    line TEXT NOT NULL,
    sku TEXT NOT NULL,
    qty INTEGER NOT NULL,
    pru_s REAL NOT NULL,
    setup_s REAL NOT NULL,
    not_before_ns INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    expires_ns INTEGER NOT NULL,
    released_ns INTEGER,
    answer TEXT NOT NULL,
    UNIQUE (owner, idempotency_key)
);
CREATE INDEX IF NOT EXISTS hold_active ON hold (expires_ns) WHERE released_ns IS NULL;
"""


@dataclass(frozen=True)
class Hold:
    id: str
    line: str
    sku: str
    qty: int
    pru_s: float
    setup_s: float
    not_before_ns: int
    created_ns: int
    expires_ns: int
    released_ns: int | None
    answer: dict[str, Any]

    def status(self, now_ns: int) -> str:
        if self.released_ns is not None:
            return "released"
        return "active" if self.expires_ns > now_ns else "expired"


class KeyReused(Exception):
    """The Idempotency-Key was used before with another body."""


_COLUMNS = "id, line, sku, qty, pru_s, setup_s, not_before_ns, created_ns, expires_ns, released_ns, answer"


def _hold(row: tuple[Any, ...]) -> Hold:
    return Hold(id=row[0], line=row[1], sku=row[2], qty=row[3], pru_s=row[4], setup_s=row[5], not_before_ns=row[6],
                created_ns=row[7], expires_ns=row[8], released_ns=row[9], answer=json.loads(row[10]))


class HoldStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # `decide` reads the active holds while `place` holds it
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._writes = 0  # this store's own writes; PRAGMA data_version counts the other processes'
        self._read_version: tuple[int, int] | None = None
        self._read_at = 0  # the time the kept holds were read for (expired ones are not read)
        self._unreleased: list[Hold] = []

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def active(self, at_ns: int) -> list[Hold]:
        """Holds in force at `at_ns`, oldest first (the order they are booked in). The unreleased holds are read
        again only when this store or another process changed the file (every feed request asks)."""
        with self._lock:
            version = (self._writes, self._db.execute("PRAGMA data_version").fetchone()[0])
            if version != self._read_version or at_ns < self._read_at:
                rows = self._db.execute(f"SELECT {_COLUMNS} FROM hold WHERE released_ns IS NULL AND expires_ns > ? "
                                        "ORDER BY created_ns, id", (at_ns,)).fetchall()
                self._unreleased = [_hold(r) for r in rows]
                self._read_version, self._read_at = version, at_ns
            return [h for h in self._unreleased if h.expires_ns > at_ns]

    def get(self, hold_id: str, owner: str) -> Hold | None:
        """`owner`'s hold `hold_id`; None when there is none (or it is another platform's)."""
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM hold WHERE id = ? AND owner = ?",
                                   (hold_id, owner)).fetchone()
        return _hold(row) if row else None

    def place(self, owner: str, key: str, body_sha256: str,
              decide: Callable[[], tuple[Hold | None, dict[str, Any]]]) -> tuple[bool, Hold | None, dict[str, Any]]:
        """(replayed, hold, answer). A key seen before with the same body returns its hold again
        (`replayed`); with another body, KeyReused. Otherwise `decide` runs under the write lock (it sees every
        active hold) and the hold it returns, if any, is written; a refusal is not kept, so the same request
        may succeed later."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(f"SELECT {_COLUMNS}, body_sha256 FROM hold WHERE owner = ? AND "
                                       "idempotency_key = ?", (owner, key)).fetchone()
                if row is not None:
                    if row[11] != body_sha256:
                        raise KeyReused(key)
                    kept = _hold(row[:11])
                    self._db.execute("COMMIT")
                    return True, kept, kept.answer
                # `decide` reads the active holds through this connection, inside this transaction
                hold, answer = decide()
                if hold is not None:
                    self._db.execute(
                        "INSERT INTO hold (id, owner, idempotency_key, body_sha256, line, sku, qty, pru_s, setup_s, "
                        "not_before_ns, created_ns, expires_ns, released_ns, answer) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                        (hold.id, owner, key, body_sha256, hold.line, hold.sku, hold.qty, hold.pru_s, hold.setup_s,
                         hold.not_before_ns, hold.created_ns, hold.expires_ns, json.dumps(answer)))
                self._db.execute("COMMIT")
                self._writes += 1
                return False, hold, answer
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def release(self, hold_id: str, owner: str, now_ns: int) -> bool:
        """Release `owner`'s hold; False when it has no such hold. Releasing twice is harmless."""
        with self._lock:
            cur = self._db.execute("UPDATE hold SET released_ns = ? WHERE id = ? AND owner = ? AND released_ns IS NULL",
                                   (now_ns, hold_id, owner))
            self._writes += 1
            if cur.rowcount:
                return True
            return self._db.execute("SELECT 1 FROM hold WHERE id = ? AND owner = ?",
                                    (hold_id, owner)).fetchone() is not None
