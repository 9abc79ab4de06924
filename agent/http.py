"""The agent's HTTP endpoints: GET /healthz (JSON; 503 when a source is down) and GET /metrics (Prometheus)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agent.health import AgentState
from agent.outbox import Outbox
from agent.webserver import GuardedServer, Limits

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
            "last_error": historian_error(state, points, oldest, now) or None,
            "stalled_s": round(historian_stall_s(state, points, oldest, now), 3),
        },
    }
    if state.workers:  # MQTT receiver processes, each with its own outbox (agent/sources/mqtt/workers.py)
        body["workers"] = {name: dict(worker) for name, worker in state.workers.items()}
    return (200 if healthy else 503), body


def historian_error(state: AgentState, points: int, oldest: int | None, now: float) -> str:
    """The agent's own historian error, else the first an MQTT worker reports (each drains its own outbox)."""
    return state.historian_error(points, oldest, now) or next(
        (f"MQTT worker {name}: {w['historian_error']}" for name, w in state.workers.items()
         if w.get("historian_error")), "")


def historian_stall_s(state: AgentState, points: int, oldest: int | None, now: float) -> float:
    """The longest stall of the agent's own drain and the MQTT workers' (agent/health.py STALL_AFTER_S)."""
    return max([state.historian_stall_s(points, oldest, now),
                *(float(str(w.get("historian_stalled_s") or 0.0)) for w in state.workers.values())])


def refresh_gauges(state: AgentState, outbox: Outbox) -> None:
    m = state.metrics
    _, points, size = outbox.depth()
    m.outbox_points.set(points)
    m.outbox_bytes.set(size)
    oldest = outbox.oldest_ns() if points else None
    m.outbox_oldest_age.set(max(0.0, time.time() - oldest / 1e9) if oldest else 0.0)
    m.historian_stalled.set(historian_stall_s(state, points, oldest, time.time()))
    m.dropped.set(outbox.dropped_points)


# A GET route: () -> (status, content type, body)
Route = Callable[[], tuple[int, str, bytes]]

# Who reads these endpoints: a monitoring scraper, a health check, a person with curl. A few threads serve them
# all; a client holding connections open without asking anything is closed after the header timeout, and one
# address holds at most `per_client` connections (agent/webserver.py).
THREADS = 4
LIMITS = Limits(connections=512, per_client=16, header_timeout_s=10, body_timeout_s=10, idle_timeout_s=30,
                send_timeout_s=10)


class ListenError(OSError):
    """The HTTP endpoints cannot listen on their address (most often: another program has the port)."""

    def __init__(self, host: str, port: int, errno: int | None, reason: str) -> None:
        super().__init__(errno, reason)  # errno and strerror as the OSError it stands for
        self.host = host
        self.port = port

    def __str__(self) -> str:
        return f"cannot listen on {self.host}:{self.port}: {self.strerror}"


def routes_app(routes: dict[str, Route]) -> Callable[..., Iterable[bytes]]:
    """A WSGI application answering GET on the fixed paths of `routes`: 404 elsewhere, 405 for other methods."""
    missing = json.dumps({"error": "not found: try " + " or ".join(routes)}).encode()
    not_allowed = json.dumps({"error": "only GET is served here"}).encode()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        extra: list[tuple[str, str]] = []
        if environ["REQUEST_METHOD"] != "GET":
            status, ctype, body = 405, "application/json", not_allowed
            extra.append(("Allow", "GET"))
        else:
            route = routes.get(environ.get("PATH_INFO", ""))
            status, ctype, body = route() if route else (404, "application/json", missing)
        start_response(f"{status} {HTTPStatus(status).phrase}",
                       [("Content-Type", ctype), ("Content-Length", str(len(body))), *extra])
        return [body]

    return app


class StatusServer:
    """A small HTTP server on a daemon thread answering GET on fixed paths (health and metrics endpoints), on a
    bounded pool of THREADS threads with the limits of LIMITS; ListenError when it cannot listen on `host:port`."""

    def __init__(self, host: str, port: int, routes: dict[str, Route], name: str = "shopfloor-http",
                 limits: Limits = LIMITS) -> None:
        try:
            self.server = GuardedServer(routes_app(routes), limits, host=host, port=port, threads=THREADS,
                                        ident=name, max_request_body_size=0, expose_tracebacks=False)
        except OSError as exc:
            raise ListenError(host, port, exc.errno, exc.strerror or str(exc)) from exc
        self.thread = threading.Thread(target=self.server.run, name=name, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.effective_port)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.stop()
        if self.thread.is_alive():
            self.thread.join(timeout=10)


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
