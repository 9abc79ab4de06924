"""`shopfloor dashboard`: the app served by waitress, a production WSGI server that runs on Linux and Windows.

A live stream holds one waitress thread for as long as the screen is open, so the thread pool is sized from
dashboard.max_streams plus headroom for page and API requests; one stream more than max_streams is refused
with 503 and that screen polls instead.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config import FactoryConfig

log = logging.getLogger(__name__)
REQUEST_THREADS = 16  # threads kept for pages and API calls beside the streams


def serve(cfg: FactoryConfig, data_dir: Path | None = None, host: str | None = None, port: int | None = None,
          now_ns: Callable[[], int] | None = None, clock_speed: float = 1.0) -> int:
    import waitress

    from dashboard import create_app, shutdown, wall_clock_ns

    host = host or cfg.dashboard.host
    port = cfg.dashboard.port if port is None else port
    app = create_app(cfg, data_dir=data_dir, now_ns=now_ns or wall_clock_ns, clock_speed=clock_speed,
                     feed_url=f"http://{host}:{port}")
    try:
        server: Any = waitress.create_server(
            app, host=host, port=port, threads=cfg.dashboard.max_streams + REQUEST_THREADS,
            connection_limit=cfg.dashboard.max_streams + 100, channel_timeout=60, ident="shopfloor")
    except OSError as exc:
        shutdown(app)
        print(f"shopfloor dashboard: cannot listen on {host}:{port}: {exc.strerror or exc} (another program has "
              "the port? choose one with --port or dashboard.port)", file=sys.stderr)
        return 3

    def on_signal(signum: int, frame: Any) -> None:
        server.close()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    log.info("dashboard: serving http://%s:%s (site %s, %d lines)", host, server.effective_port, cfg.site.id,
             len(cfg.lines))
    print(f"shopfloor dashboard: http://{host}:{server.effective_port}", flush=True)
    try:
        server.run()
    except OSError:
        pass  # the socket map closes under the loop on a signal
    finally:
        shutdown(app)
    return 0
