"""Login sessions kept on the server: the cookie carries only a random session id; what the session holds (the
user, when it started, its CSRF token, the version of the user's password it was opened with) lives in
`<data-dir>/dashboard-sessions.sqlite3`, keyed by the SHA-256 of the id, so a copy of the file opens no session.

Logging out deletes the record, so a cookie copied before still opens nothing after. A user's sessions end when
their password (the hash in the config, or the password itself) changes: users.py compares the version kept here
with the config's on every request, and `revoke_stale` drops them at start-up. Sessions unused for
`dashboard.session_idle_h` end; sessions without a user (a login form's CSRF token) after an hour.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

SCHEMA = """
CREATE TABLE IF NOT EXISTS session (
    id_sha256 TEXT PRIMARY KEY,
    user TEXT,                -- NULL before login
    password_version TEXT,    -- users.password_version() of the user at login
    created_s REAL NOT NULL,
    seen_s REAL NOT NULL,
    data TEXT NOT NULL        -- JSON: user, csrf, pwv and whatever else the session holds
);
CREATE INDEX IF NOT EXISTS session_user ON session (user);
CREATE INDEX IF NOT EXISTS session_seen ON session (seen_s);
"""
ANONYMOUS_IDLE_S = 3600.0
TOUCH_EVERY_S = 60.0  # how stale `seen_s` may get before a request writes it again
MAX_SESSIONS = 50000  # beyond this many, the oldest sessions without a user go first


def _key(sid: str) -> str:
    return hashlib.sha256(sid.encode("utf-8")).hexdigest()


class SessionStore:
    """The session table; one connection shared by the server's threads under a lock."""

    def __init__(self, path: Path, idle_s: float, clock: Callable[[], float] = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.idle_s, self.clock = idle_s, clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        path.chmod(0o600)
        self._inserts = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get(self, sid: str) -> tuple[dict[str, Any], float] | None:
        """The session's data and when it was last used; None when there is none (or it has ended)."""
        with self._lock:
            row = self._db.execute("SELECT data, seen_s, user FROM session WHERE id_sha256 = ?",
                                   (_key(sid),)).fetchone()
        if row is None:
            return None
        idle = self.idle_s if row[2] is not None else ANONYMOUS_IDLE_S
        if self.clock() - row[1] > idle:
            self.delete(sid)
            return None
        data = json.loads(row[0])
        return (data, row[1]) if isinstance(data, dict) else None

    def put(self, sid: str, data: dict[str, Any]) -> None:
        now = self.clock()
        user = data.get("user") if isinstance(data.get("user"), str) else None
        with self._lock:
            self._db.execute(
                "INSERT INTO session (id_sha256, user, password_version, created_s, seen_s, data) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id_sha256) DO UPDATE SET user = excluded.user, "
                "password_version = excluded.password_version, seen_s = excluded.seen_s, data = excluded.data",
                (_key(sid), user, data.get("pwv"), now, now, json.dumps(data)))
            self._inserts += 1
            if self._inserts % 500 == 0:
                self._prune(now)

    def touch(self, sid: str) -> None:
        with self._lock:
            self._db.execute("UPDATE session SET seen_s = ? WHERE id_sha256 = ?", (self.clock(), _key(sid)))

    def delete(self, sid: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM session WHERE id_sha256 = ?", (_key(sid),))

    def revoke_stale(self, versions: dict[str, str]) -> int:
        """Delete the sessions of users who are gone or whose password version is not `versions[user]`; how many."""
        with self._lock:
            rows = self._db.execute("SELECT id_sha256, user, password_version FROM session "
                                    "WHERE user IS NOT NULL").fetchall()
            stale = [(r[0],) for r in rows if versions.get(r[1]) != r[2]]
            self._db.executemany("DELETE FROM session WHERE id_sha256 = ?", stale)
            self._prune(self.clock())
        return len(stale)

    def users(self) -> dict[str, int]:
        """Open sessions per user."""
        with self._lock:
            return dict(self._db.execute("SELECT user, count(*) FROM session WHERE user IS NOT NULL GROUP BY user"))

    def _prune(self, now: float) -> None:
        self._db.execute("DELETE FROM session WHERE (user IS NULL AND seen_s < ?) OR seen_s < ?",
                         (now - ANONYMOUS_IDLE_S, now - self.idle_s))
        (count,) = self._db.execute("SELECT count(*) FROM session").fetchone()
        if count > MAX_SESSIONS:
            self._db.execute("DELETE FROM session WHERE id_sha256 IN (SELECT id_sha256 FROM session WHERE user IS "
                             "NULL ORDER BY seen_s LIMIT ?)", (count - MAX_SESSIONS,))


class ServerSession(CallbackDict[str, Any], SessionMixin):
    """Flask's `session` for one request; `rotate()` gives it a new id (at login, against session fixation)."""

    def __init__(self, data: dict[str, Any] | None = None, sid: str | None = None, seen_s: float = 0.0) -> None:
        def on_update(_self: Any) -> None:
            self.modified = True

        super().__init__(data, on_update)
        self.sid, self.seen_s = sid, seen_s
        self.modified = False
        self.rotated = False

    def rotate(self) -> None:
        self.rotated = self.modified = True


class ServerSessionInterface(SessionInterface):
    def __init__(self, store: SessionStore, secure: Callable[[Request], bool]) -> None:
        self.store, self.secure = store, secure

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        sid = request.cookies.get(self.get_cookie_name(app))
        if sid and len(sid) <= 128:
            found = self.store.get(sid)
            if found is not None:
                return ServerSession(found[0], sid, found[1])
        return ServerSession()

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, ServerSession)
        name, path = self.get_cookie_name(app), self.get_cookie_path(app)
        domain = self.get_cookie_domain(app)
        if session.accessed:
            response.vary.add("Cookie")
        if not session:
            if session.sid is not None:  # emptied: logged out
                self.store.delete(session.sid)
                response.delete_cookie(name, domain=domain, path=path, secure=self.secure_now(),
                                       httponly=True, samesite="Lax")
            return
        if session.rotated and session.sid is not None:
            self.store.delete(session.sid)
            session.sid = None
        if session.sid is None:
            session.sid = secrets.token_urlsafe(32)
            self.store.put(session.sid, dict(session))
            # a browser-session cookie: a shared PC's browser, once closed, is logged out
            response.set_cookie(name, session.sid, domain=domain, path=path, secure=self.secure_now(),
                                httponly=True, samesite="Lax")
        elif session.modified:
            self.store.put(session.sid, dict(session))
        elif self.store.clock() - session.seen_s > TOUCH_EVERY_S:
            self.store.touch(session.sid)

    def secure_now(self) -> bool:
        from flask import request

        return self.secure(request)
