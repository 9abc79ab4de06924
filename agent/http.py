"""The agent's HTTP endpoints: GET /healthz (JSON; 503 when a source is down) and GET /metrics (Prometheus)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agent.health import AgentState
from agent.outbox import Outbox

log = logging.getLogger(__name__)


def health_report(state: AgentState, outbox: Outbox) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for /healthz: 200 when every source is connected, 503 otherwise."""
    batches, points, size = outbox.depth()
    oldest = outbox.oldest_ns() if points else None
    now = time.time()
    sources = {
        s.id: {
            "kind": s.kind,
            "connected": s.connected,
            "since": round(s.since, 3),
            "last_error": s.last_error or None,
            "reconnects": s.reconnects,
            "last_data_age_s": round(now - s.last_received, 3) if s.last_received else None,
        }
        for s in state.sources.values()
    }
    healthy = all(s.connected for s in state.sources.values())
    body: dict[str, Any] = {
        "status": "ok" if healthy else "degraded",
        "agent": state.agent_id,
        "sources": sources,
        "outbox": {
            "points": points,
            "batches": batches,
            "bytes": size,
            "oldest_age_s": round(max(0.0, now - oldest / 1e9), 3) if oldest else 0.0,
            "dropped_points": outbox.dropped_points,
            "dead_letters": outbox.dead_letters_total,
        },
        "historian": {
            "last_write": round(state.last_write, 3) if state.last_write else None,
            "last_write_age_s": round(now - state.last_write, 3) if state.last_write else None,
            "last_error": state.last_write_error or None,
        },
    }
    if state.workers:  # MQTT receiver processes, each with its own outbox (agent/sources/mqtt/workers.py)
        body["workers"] = {name: dict(worker) for name, worker in state.workers.items()}
    return (200 if healthy else 503), body


def refresh_gauges(state: AgentState, outbox: Outbox) -> None:
    m = state.metrics
    _, points, size = outbox.depth()
    m.outbox_points.set(points)
    m.outbox_bytes.set(size)
    oldest = outbox.oldest_ns() if points else None
    m.outbox_oldest_age.set(max(0.0, time.time() - oldest / 1e9) if oldest else 0.0)
    m.dropped.set(outbox.dropped_points)


# A GET route: () -> (status, content type, body)
Route = Callable[[], tuple[int, str, bytes]]


class ListenError(OSError):
    """The HTTP endpoints cannot listen on their address (most often: another program has the port)."""

    def __init__(self, host: str, port: int, errno: int | None, reason: str) -> None:
        super().__init__(errno, reason)  # errno and strerror as the OSError it stands for
        self.host = host
        self.port = port

    def __str__(self) -> str:
        return f"cannot listen on {self.host}:{self.port}: {self.strerror}"


class StatusServer:
    """A small HTTP server on a daemon thread answering GET on fixed paths (health and metrics endpoints);
    ListenError when it cannot listen on `host:port`."""

    def __init__(self, host: str, port: int, routes: dict[str, Route], name: str = "shopfloor-http") -> None:
        handler = self._handler(routes)
        try:
            self.server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ListenError(host, port, exc.errno, exc.strerror or str(exc)) from exc
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name=name, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def _handler(routes: dict[str, Route]) -> type[BaseHTTPRequestHandler]:
        missing = json.dumps({"error": "not found: try " + " or ".join(routes)}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                route = routes.get(self.path.split("?", 1)[0])
                status, ctype, body = route() if route else (404, "application/json", missing)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug("http %s", format % args)

        return Handler


class AgentHttpServer(StatusServer):
    """Serves /healthz and /metrics from a daemon thread."""

    def __init__(self, state: AgentState, outbox: Outbox, host: str, port: int) -> None:
        self.state = state
        self.outbox = outbox

        def healthz() -> tuple[int, str, bytes]:
            status, body = health_report(state, outbox)
            return status, "application/json", json.dumps(body, indent=1).encode()

        def metrics() -> tuple[int, str, bytes]:
            refresh_gauges(state, outbox)
            return 200, CONTENT_TYPE_LATEST, generate_latest(state.metrics.registry)

        super().__init__(host, port, {"/healthz": healthz, "/metrics": metrics})
