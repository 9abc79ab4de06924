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
        self.lock = threading.Lock()
        # MQTT receiver processes by name (`<source>/w<k>`): pid, restarts, their outbox; see mqtt/workers.py
        self.workers: dict[str, dict[str, object]] = {}

    def source(self, source_id: str, kind: str) -> SourceHealth:
        health = SourceHealth(source_id, kind)
        self.sources[source_id] = health
        m = self.metrics
        m.connected.labels(source_id).set(0)
        for labelled in (m.messages_in, m.dead_letters, m.reconnects, m.lag):
            labelled.labels(source_id)
        return health
