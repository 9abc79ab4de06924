"""The e-board dashboard: a Flask app factory and its blueprints (pages, JSON API with the live stream).

`create_app(cfg)` wires the historian, the live view of the MQTT topics and the board hub; `shopfloor dashboard`
serves it with waitress (dashboard/server.py).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import FactoryConfig, resolve_secret
from agent.historian import Historian
from agent.sinks import open_historian

if TYPE_CHECKING:  # the capacity push and `shopfloor sync` import this package and never load Flask
    from flask import Flask


log = logging.getLogger(__name__)


def wall_clock_ns() -> int:
    return time.time_ns()


def session_key(cfg: FactoryConfig, data_dir: Path) -> str:
    """The key that signs login sessions: configured, else a random one kept in <data-dir>/dashboard-secret so
    logins survive a restart."""
    configured = resolve_secret(cfg.dashboard.secret_key, cfg.dashboard.secret_key_file)
    if configured:
        return configured
    path = data_dir / "dashboard-secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


def create_app(cfg: FactoryConfig, data_dir: Path | None = None, historian: Historian | None = None,
               now_ns: Callable[[], int] = wall_clock_ns, start_live: bool = True,
               test_config: dict[str, Any] | None = None, clock_speed: float = 1.0,
               feed_url: str | None = None) -> Flask:
    """The dashboard app for a factory config.

    `historian` defaults to the one the config names (the agent's SQLite file under `data_dir`, or InfluxDB);
    `now_ns` is the clock every board uses (the demo passes its simulated clock); `start_live=False` leaves the
    MQTT live view, the board thread and the capacity push stopped (for tests of pages without a broker);
    `clock_speed` is how much faster than real time that clock runs (a lag is judged in real seconds);
    `feed_url` is where the platform reaches this dashboard's /v1 feed (named in thin push events).
    """
    from flask import Flask

    from dashboard import api, auth, boards, feed, security, status
    from dashboard.c2m import CapacityService
    from dashboard.holds import HoldStore
    from dashboard.hub import BoardHub
    from dashboard.live import LiveView
    from dashboard.sessions import ServerSessionInterface, SessionStore
    from dashboard.users import password_versions

    data_dir = Path(data_dir or cfg.agent.data_dir)
    app = Flask(__name__)
    app.config.update(SECRET_KEY=session_key(cfg, data_dir), SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_HTTPONLY=True, JSON_SORT_KEYS=False, SEND_FILE_MAX_AGE_DEFAULT=3600,
                      MAX_CONTENT_LENGTH=cfg.dashboard.max_body_bytes)
    if test_config:
        app.config.update(test_config)
    historian = historian or open_historian(cfg, data_dir)
    live = LiveView(cfg)
    hub = BoardHub(cfg, historian, live, now_ns, cfg.dashboard.stream_interval_ms / 1000,
                   cfg.dashboard.kpi_refresh_s, clock_speed=clock_speed)
    app.extensions["shopfloor"] = {"cfg": cfg, "historian": historian, "live": live, "hub": hub, "now_ns": now_ns,
                                   "streams": 0}
    holds = HoldStore(data_dir / "c2m-holds.sqlite3")
    capacity = CapacityService(cfg, historian, now_ns, holds)
    push = None
    if cfg.capacity.push.endpoints and cfg.capacity.push.in_dashboard:
        from dashboard.push import PushBusy, PushJob

        try:
            push = PushJob(cfg, capacity, data_dir, feed_url, now_ns)
        except PushBusy as exc:
            log.error("capacity push: not from this dashboard: %s", exc)
    app.extensions["shopfloor"].update(holds=holds, capacity=capacity, push=push)
    if push is not None:
        hub.platform = push.summary
    app.json.sort_keys = False  # type: ignore[attr-defined]
    sessions = SessionStore(data_dir / "dashboard-sessions.sqlite3", cfg.dashboard.session_idle_h * 3600)
    revoked = sessions.revoke_stale(password_versions(cfg))
    if revoked:
        log.info("dashboard: %d login session(s) ended: their user's password changed or the user is gone", revoked)
    secure = cfg.dashboard.secure_cookies
    app.session_interface = ServerSessionInterface(
        sessions, (lambda req: req.is_secure) if secure == "auto" else (lambda req: bool(secure)))
    app.extensions["shopfloor"]["sessions"] = sessions
    security.install(app)
    auth.install(app)
    app.register_blueprint(boards.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(feed.bp)
    app.register_blueprint(status.bp)
    if start_live:
        live.start()
        hub.start()
        if push is not None:
            push.start()
    return app


def shutdown(app: Flask) -> None:
    """Stop the live view and the board thread and close the historian."""
    ext = app.extensions["shopfloor"]
    if ext.get("push") is not None:
        ext["push"].stop()
    ext["hub"].stop()
    ext["live"].stop()
    ext["historian"].close()
    ext["holds"].close()
    ext["sessions"].close()
