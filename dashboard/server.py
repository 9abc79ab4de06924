"""`shopfloor dashboard`: the app served by waitress, a production WSGI server that runs on Linux and Windows.

A live stream holds one waitress thread for as long as the screen is open, so the thread pool is sized from
dashboard.max_streams plus headroom for page and API requests; one stream more than max_streams is refused
with 503 and that screen polls instead. Connections are guarded against slow, greedy and crowding clients by
dashboard.limits (agent/webserver.py: request timeouts, connections per client address, a bounded buffer per
client). Behind a reverse proxy (docs/https.md), dashboard.trusted_proxy makes its X-Forwarded-* headers count:
the request's scheme (HTTPS, hence Secure cookies) and the client's address.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config import DashboardSettings, FactoryConfig
from agent.webserver import GuardedServer, Limits

log = logging.getLogger(__name__)
REQUEST_THREADS = 16  # threads kept for pages and API calls beside the streams


def limits_of(dashboard: DashboardSettings) -> Limits:
    """The server's limits from dashboard.limits; a trusted proxy speaks for many clients, so it has no cap."""
    lim = dashboard.limits
    return Limits(connections=dashboard.max_streams + lim.connections, per_client=lim.per_client,
                  header_timeout_s=lim.header_timeout_s, body_timeout_s=lim.body_timeout_s,
                  idle_timeout_s=lim.idle_timeout_s, send_timeout_s=lim.send_timeout_s,
                  send_buffer_bytes=lim.send_buffer_kb * 1024,
                  exempt=frozenset({str(dashboard.trusted_proxy)} if dashboard.trusted_proxy else ()))


def server_settings(dashboard: DashboardSettings) -> dict[str, Any]:
    """waitress settings besides the limits: threads, the proxy to trust, the body size refused unread."""
    # waitress refuses a body of max_request_body_size bytes or more, Flask takes up to MAX_CONTENT_LENGTH
    settings: dict[str, Any] = {"threads": dashboard.max_streams + REQUEST_THREADS, "ident": "shopfloor",
                                "max_request_body_size": dashboard.max_body_bytes + 1}
    if dashboard.trusted_proxy is not None:
        settings.update(trusted_proxy=str(dashboard.trusted_proxy), trusted_proxy_count=1,
                        trusted_proxy_headers=set(dashboard.trusted_proxy_headers),
                        clear_untrusted_proxy_headers=True)
    return settings


def serve(cfg: FactoryConfig, data_dir: Path | None = None, host: str | None = None, port: int | None = None,
          now_ns: Callable[[], int] | None = None, clock_speed: float = 1.0) -> int:
    from agent import notify
    from dashboard import create_app, shutdown, wall_clock_ns
    from dashboard.security import problem_413

    host = host or cfg.dashboard.host
    port = cfg.dashboard.port if port is None else port
    app = create_app(cfg, data_dir=data_dir, now_ns=now_ns or wall_clock_ns, clock_speed=clock_speed,
                     feed_url=f"http://{host}:{port}")
    try:
        server = GuardedServer(app, limits_of(cfg.dashboard), host=host, port=port,
                               **server_settings(cfg.dashboard))
    except OSError as exc:
        shutdown(app)
        print(f"shopfloor dashboard: cannot listen on {host}:{port}: {exc.strerror or exc} (another program has "
              "the port? choose one with --port or dashboard.port)", file=sys.stderr)
        return 3
    problem_413(server)  # waitress's own 413 (a body refused unread) as a problem document

    def on_signal(signum: int, frame: Any) -> None:
        server.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    log.info("dashboard: serving http://%s:%s (site %s, %d lines)", host, server.effective_port, cfg.site.id,
             len(cfg.lines))
    print(f"shopfloor dashboard: http://{host}:{server.effective_port}", flush=True)
    done = notify.serving(host, int(server.effective_port), "dashboard")  # systemd: ready, watchdog, stopping
    try:
        server.run(wake=app.extensions["shopfloor"]["hub"].stop)  # streams end at once, not at their heartbeat
    finally:
        done()
        shutdown(app)
    return 0
