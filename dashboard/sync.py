"""`shopfloor sync`: the capacity push on its own, beside a dashboard or without one. It reads the historian and the
holds the dashboard keeps, and serves /healthz and /metrics on a small HTTP server of its own (no Flask)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.config import FactoryConfig
from dashboard import wall_clock_ns

log = logging.getLogger(__name__)


def run_sync(cfg: FactoryConfig, args: argparse.Namespace) -> int:
    from agent.runner import open_historian
    from dashboard.c2m import CapacityService
    from dashboard.holds import HoldStore
    from dashboard.push import PushBusy, PushJob

    if not cfg.capacity.push.endpoints:
        print("shopfloor sync: capacity.push.endpoints is empty: there is nowhere to push to", file=sys.stderr)
        return 2
    data_dir = Path(args.data_dir or cfg.agent.data_dir)
    historian = open_historian(cfg, data_dir)
    holds = HoldStore(data_dir / "c2m-holds.sqlite3")
    try:
        job = PushJob(cfg, CapacityService(cfg, historian, wall_clock_ns, holds), data_dir, args.feed_url)
    except PushBusy as exc:
        print(f"shopfloor sync: {exc}", file=sys.stderr)
        holds.close()
        historian.close()
        return 2

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                health = job.health()
                self._send(200, "application/json",
                           json.dumps({"status": health["status"], "push": health}, indent=1).encode())
            elif path == "/metrics":
                job.health()
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(job.metrics.registry))
            else:
                self._send(404, "application/json", b'{"error": "try /healthz or /metrics"}')

        def _send(self, status: int, ctype: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *a: Any) -> None:  # noqa: A002
            log.debug("sync http %s", format % a)

    try:
        server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    except OSError as exc:
        print(f"shopfloor sync: cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 3
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="sync-http", daemon=True).start()
    job.start()
    print(f"shopfloor sync: pushing capacity; health on http://127.0.0.1:{server.server_address[1]}/healthz",
          flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    job.stop()
    server.shutdown()
    holds.close()
    historian.close()
    return 0
