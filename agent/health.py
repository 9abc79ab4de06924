"""What the agent knows about itself: per-source connection state and the counters /metrics exposes."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass
class SourceHealth:
    """Connection state of one source; written by the source, read by /healthz and /metrics."""

    id: str
    kind: str  # "opcua" | "mqtt"
    connected: bool = False
    since: float = field(default_factory=time.time)
    last_error: str = ""
    reconnects: int = 0
    last_data_ns: int = 0  # newest source timestamp received
    last_received: float = 0.0  # wall clock when it arrived

    def up(self) -> None:
        if not self.connected:
            self.connected = True
            self.since = time.time()
            self.last_error = ""

    def down(self, error: str) -> None:
        if self.connected:
            self.reconnects += 1
            self.since = time.time()
        self.connected = False
        self.last_error = error


# The historian is stalled when it has confirmed no write for this long while points wait in the outbox: a write
# waiting (another process holding the SQLite historian's lock, a server that takes it and does not answer) or a
# drain that gets no turn. /healthz and /metrics say so before the write itself fails or times out (SQLite waits
# 30 s for a lock, and a lock released now and then may never let the write fail at all).
STALL_AFTER_S = 10.0

# what shopfloor_unknown_ids_total counts, by its `kind` label (agent/core/mapping.py UnknownIdError)
UNKNOWN_ID_KINDS = ("badge", "line", "station", "machine", "material")


class AgentMetrics:
    """Prometheus metrics of one agent, in their own registry (several agents can share a process in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.points_in = Counter("shopfloor_points_in", "Points committed to the outbox", registry=r)
        self.messages_in = Counter("shopfloor_messages_in", "Raw readings and messages received",
                                   ["source"], registry=r)
        self.points_out = Counter("shopfloor_points_out", "Points confirmed by a sink", ["sink"], registry=r)
        self.dead_letters = Counter("shopfloor_dead_letters", "Inputs kept as dead letters", ["source"],
                                    registry=r)
        self.unknown_ids = Counter("shopfloor_unknown_ids", "Messages naming an id the config does not have "
                                   "(badge, line, station, machine, material), kept as dead letters", ["kind"],
                                   registry=r)
        self.reconnects = Counter("shopfloor_source_reconnects", "Times a source lost its connection",
                                  ["source"], registry=r)
        self.write_errors = Counter("shopfloor_sink_write_errors", "Failed sink writes", ["sink"], registry=r)
        self.outbox_points = Gauge("shopfloor_outbox_depth_points", "Points waiting in the outbox", registry=r)
        self.outbox_bytes = Gauge("shopfloor_outbox_bytes", "Bytes of points waiting in the outbox", registry=r)
        self.outbox_quota = Gauge("shopfloor_outbox_quota_bytes", "The outbox's disk quota (outbox.quota_mb): "
                                  "beyond it the oldest points are dropped", registry=r)
        self.outbox_oldest_age = Gauge("shopfloor_outbox_oldest_age_seconds",
                                       "Age of the oldest point waiting in the outbox (0 when empty)", registry=r)
        self.dropped = Gauge("shopfloor_outbox_dropped_points",
                             "Points dropped because the outbox reached its disk quota (since install)", registry=r)
        self.connected = Gauge("shopfloor_source_connected", "1 while the source is connected", ["source"],
                               registry=r)
        self.lag = Gauge("shopfloor_source_lag_seconds",
                         "Time between the newest source timestamp and its arrival", ["source"], registry=r)
        self.read_errors = Counter("shopfloor_source_read_errors",
                                   "Tags whose read turned Bad: refused, unanswered or not decodable, by reason",
                                   ["source", "reason"], registry=r)
        self.publish_decoded = Counter("shopfloor_opcua_publish_responses",
                                       "OPC UA publish responses by decoder: fast, or asyncua for unusual shapes",
                                       ["source", "decoder"], registry=r)
        self.last_write = Gauge("shopfloor_historian_last_write_timestamp_seconds",
                                "Wall clock of the last confirmed historian write", registry=r)
        self.historian_stalled = Gauge("shopfloor_historian_stalled_seconds",
                                       "How long the historian has confirmed no write while points wait in the "
                                       "outbox (0 when none wait or writes go through)", registry=r)
        # MQTT receiver processes (agent/sources/mqtt/workers.py), one series per worker `<source>/w<k>`
        self.worker_restarts = Counter("shopfloor_mqtt_worker_restarts", "Times an MQTT worker process died and "
                                       "was started again", ["worker"], registry=r)
        self.worker_messages = Counter("shopfloor_mqtt_worker_messages", "Messages an MQTT worker process received",
                                       ["worker"], registry=r)
        self.worker_outbox_points = Gauge("shopfloor_mqtt_worker_outbox_depth_points",
                                          "Points waiting in an MQTT worker's own outbox", ["worker"], registry=r)
        # Series exist from the start at 0, so a dashboard or alert rule sees them before the first event.
        self.points_out.labels("historian")
        self.write_errors.labels("historian")
        self.dead_letters.labels("historian")
        for kind in UNKNOWN_ID_KINDS:
            self.unknown_ids.labels(kind)


class AgentState:
    """Shared view of the running agent for health and metrics."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self.metrics = AgentMetrics()
        self.sources: dict[str, SourceHealth] = {}
        self.last_write: float = 0.0
        self.last_write_error: str = ""
        self.started = time.time()
        self.lock = threading.Lock()
        # MQTT receiver processes by name (`<source>/w<k>`): pid, restarts, their outbox; see mqtt/workers.py
        self.workers: dict[str, dict[str, object]] = {}

    def historian_stall_s(self, points: int, oldest_ns: int | None, now: float) -> float:
        """How long the historian has confirmed nothing while points wait in the outbox; 0 when none wait."""
        if not points:
            return 0.0
        return max(0.0, now - max(self.last_write, self.started, (oldest_ns or 0) / 1e9))

    def historian_error(self, points: int, oldest_ns: int | None, now: float) -> str:
        """The historian's last_error for /healthz: the last failed write, or a stall that no failure explains."""
        if self.last_write_error:
            return self.last_write_error
        stall = self.historian_stall_s(points, oldest_ns, now)
        if stall < STALL_AFTER_S:
            return ""
        return (f"no historian write confirmed for {stall:.0f} s while {points} points wait in the outbox: a write "
                "is waiting (another process holding the historian's lock, a server that does not answer) or the "
                "drain gets no turn")

    def source(self, source_id: str, kind: str) -> SourceHealth:
        health = SourceHealth(source_id, kind)
        self.sources[source_id] = health
        m = self.metrics
        m.connected.labels(source_id).set(0)
        for labelled in (m.messages_in, m.dead_letters, m.reconnects, m.lag):
            labelled.labels(source_id)
        return health
