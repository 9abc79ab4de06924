"""One MQTT receiver process of a source with `workers: N` (agent/sources/mqtt/workers.py starts it as
`python -m agent.mqtt_worker <name>`; the name only shows in the process list).

It is the agent's data path in small, wired here beside the runner (a source builds no sink): a connection on
the shared subscription, a pipeline (mapper, outbox commit, acknowledgements after the commit, drain to the
historian) and nothing else. Its spec comes as the
first line of its input; `pause` and `stop` lines follow; the end of its input stops it too, in the same order
as the agent stops: take nothing new, commit and acknowledge what arrived, disconnect, drain what the historian
accepts within the time left.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.clock import SimulatedClock
from agent.config import FactoryConfig, resolve_secret
from agent.core.schema import Point
from agent.health import UNKNOWN_ID_KINDS, AgentState
from agent.mqtt_client import make_client
from agent.outbox import Outbox
from agent.pipeline import Pipeline
from agent.sinks import open_historian
from agent.sinks.live import live_values
from agent.sources.base import SourceContext
from agent.sources.mqtt.sessions import session_dir
from agent.sources.mqtt.source import MqttConnection
from agent.sources.mqtt.workers import RETIRE_AGAIN, STATUS_EVERY_S

log = logging.getLogger("agent.mqtt_worker")

RETIRE_QUIET_S = 3.0  # retiring a session: nothing more for this long after the connect means all is taken in


class Worker:
    def __init__(self, spec: dict[str, Any]) -> None:
        cfg = FactoryConfig.model_validate(spec["config"])
        source = next(s for s in cfg.sources.mqtt if s.id == spec["source"])
        self.source_id = source.id
        self.name = str(spec["name"])
        self.retiring = spec.get("mode") == "retire"
        data_dir = Path(spec["data_dir"])
        self.own = session_dir(data_dir, source.id, spec["client_id"])
        own = self.own
        self.state = AgentState(spec["agent_id"])
        # The source's share of the outbox quota: the workers' outboxes together stay within `outbox.quota_mb`.
        quota = int(cfg.outbox.quota_mb * 1024 * 1024) // max(1, int(spec["workers"]))
        self.outbox = Outbox(own / "outbox.sqlite3", quota, cfg.outbox.dead_letter_payload_max_bytes)
        self.historian = open_historian(cfg, data_dir)
        self._out_lock = threading.Lock()
        self.live = LiveForwarder(cfg.site.id, self._write) if cfg.live.enabled else None
        self.live_every = max(cfg.live.min_interval_ms, 50) / 1000
        clock = SimulatedClock.from_spec(spec["clock"]) if spec.get("clock") else time.time_ns
        self.pipeline = Pipeline(cfg, self.outbox, self.historian, self.state, self.live, now_ns=clock)
        ctx = SourceContext(self.pipeline, self.state, [], data_dir, cfg.site.id, spec["agent_id"], clock)
        mine = source.model_copy(update={"client_id": spec["client_id"]})
        self.cfg = mine
        self.connection = MqttConnection(mine, ctx, share_group=spec["share_group"], health_id=source.id,
                                         stale_filters=spec.get("stale_filters") or [],
                                         subscribe=not self.retiring)
        self._taken, self._taken_at = 0.0, 0.0  # messages taken in so far, and when that last changed
        self._done = threading.Event()

    def run(self) -> int:
        self.pipeline.start()
        self.connection.start()
        log.info("MQTT worker %s started (pid %s)", self.name, os.getpid())
        reporter = threading.Thread(target=self._report_loop, name="worker-status", daemon=True)
        reporter.start()
        commands = threading.Thread(target=self._read_commands, name="worker-commands", daemon=True)
        commands.start()
        if self.live is not None:
            threading.Thread(target=self._live_loop, name="worker-live", daemon=True).start()
        taken_in = False
        while not self._done.wait(0.5):
            if not self.pipeline.running:
                log.error("MQTT worker %s stops: %s", self.name, self.pipeline.fatal)
                break
            if self.retiring and self._session_empty():
                taken_in = True
                break
        self.connection.pause()
        self.pipeline.flush()
        if taken_in:
            time.sleep(0.5)  # the last acknowledgements leave before the DISCONNECT queued behind them
        self.connection.stop()
        ended = taken_in and self._end_session()
        failed = self.pipeline.fatal is not None
        self.pipeline.stop()
        if self.live is not None:
            self.live.flush()
        self._report()
        left = self.outbox.depth()[1]
        if self.pipeline.stopped:
            self.outbox.close()
            self.historian.close()
        log.info("MQTT worker %s stopped; %s points wait in its outbox", self.name, left)
        if failed:
            return 1
        if self.retiring:
            if not (ended and left == 0):
                return RETIRE_AGAIN
            shutil.rmtree(self.own, ignore_errors=True)
            log.info("MQTT worker %s: session %s retired", self.name, self.cfg.client_id)
        return 0

    def _session_empty(self) -> bool:
        """Retiring: connected a while, and no message taken in for RETIRE_QUIET_S (queued messages come
        first after the connect)."""
        c = self.connection
        if not c.client.is_connected() or not c.connected_at:
            return False
        now = time.monotonic()
        taken = self.state.metrics.registry.get_sample_value(
            "shopfloor_messages_in_total", {"source": self.source_id}) or 0.0
        if taken != self._taken:
            self._taken, self._taken_at = taken, now
        return now - c.connected_at > RETIRE_QUIET_S and now - self._taken_at > RETIRE_QUIET_S

    def _end_session(self) -> bool:
        """End the retired session at the broker: connect once more with a clean start and no expiry."""
        cfg = self.cfg
        client, host, port = make_client(cfg.client_id, cfg.url, cfg.protocol, cfg.username,
                                         resolve_secret(cfg.password, cfg.password_file), cfg.tls, clean=True)
        connected = threading.Event()

        def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if reason.is_failure:
                log.warning("MQTT worker %s: the broker refused ending session %s: %s", self.name, cfg.client_id,
                            reason)
            else:
                connected.set()
        client.on_connect = on_connect
        props = None
        if cfg.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0
        try:
            # MQTT 3.1.1: the client was made with clean session on, which ends the stored session
            client.connect(host, port, keepalive=30,
                           clean_start=True if cfg.protocol == "5" else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                           properties=props)
            client.loop_start()
            ok = connected.wait(10)
            client.disconnect()
            client.loop_stop()
        except OSError as exc:
            log.warning("MQTT worker %s: cannot end session %s: %s", self.name, cfg.client_id, exc)
            return False
        return ok

    def _read_commands(self) -> None:
        for line in sys.stdin:
            command = line.strip()
            if command == "pause":
                self.connection.pause()
            elif command == "stop":
                break
        self._done.set()  # "stop", or the agent is gone

    def _live_loop(self) -> None:
        assert self.live is not None
        while not self._done.wait(self.live_every):
            self.live.flush()

    def _report_loop(self) -> None:
        while not self._done.wait(STATUS_EVERY_S):
            self._report()

    def _report(self) -> None:
        registry = self.state.metrics.registry
        health = self.connection.health

        def sample(name: str, labels: dict[str, str] | None = None) -> float:
            return registry.get_sample_value(name, labels or {}) or 0.0

        _, points, size = self.outbox.depth()
        oldest, now = (self.outbox.oldest_ns() if points else None), time.time()
        status = {
            "connected": health.connected, "last_error": health.last_error, "reconnects": health.reconnects,
            "last_data_ns": health.last_data_ns, "last_received": health.last_received,
            "messages_in": sample("shopfloor_messages_in_total", {"source": self.source_id}),
            "points_in": sample("shopfloor_points_in_total"),
            "points_out": sample("shopfloor_points_out_total", {"sink": "historian"}),
            "dead_letters": sample("shopfloor_dead_letters_total", {"source": self.source_id}),
            "dead_letters_total": self.outbox.dead_letters_total,
            **{f"unknown_ids/{kind}": sample("shopfloor_unknown_ids_total", {"kind": kind}) for kind in UNKNOWN_ID_KINDS},
            "outbox_points": points, "outbox_bytes": size, "dropped_points": self.outbox.dropped_points,
            # a failed write, or a stall no failure explains (a write waiting on the historian's lock)
            "historian_error": self.state.historian_error(points, oldest, now),
            "historian_stalled_s": self.state.historian_stall_s(points, oldest, now),
            "lag_s": registry.get_sample_value("shopfloor_source_lag_seconds", {"source": self.source_id}),
        }
        self._write(status)

    def _write(self, line: dict[str, Any]) -> None:
        """One line to the agent (status or live values)."""
        with self._out_lock:
            try:
                sys.stdout.write(json.dumps(line) + "\n")
                sys.stdout.flush()
            except (OSError, ValueError):
                self._done.set()  # nobody reads: the agent is gone


class LiveForwarder:
    """The worker's live publisher: the newest value per topic of what its historian confirmed, sent to the
    agent every `live.min_interval_ms` as one line; the agent's publisher keeps the newest of all workers by
    timestamp (agent/sinks/live.py `offer`)."""

    def __init__(self, site: str, write: Callable[[dict[str, Any]], None]) -> None:
        self.site = site
        self.write = write
        self.skipped = 0
        self._pending: dict[str, tuple[int, bytes]] = {}
        self._lock = threading.Lock()

    def publish(self, points: Sequence[Point]) -> None:
        self.offer(live_values(self.site, points, self._skip))

    def offer(self, values: Iterable[tuple[str, int, bytes]]) -> None:
        with self._lock:
            for topic, ts, payload in values:
                self._pending[topic] = (ts, payload)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        if pending:
            self.write({"live": [[topic, ts, payload.decode()] for topic, (ts, payload) in pending.items()]})

    def _skip(self, what: str, exc: Exception) -> None:
        self.skipped += 1
        if self.skipped in (1, 100, 10000):
            log.warning("MQTT worker: %s has no live topic (%s); %d so far, the historian has them", what, exc,
                        self.skipped)


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("paho").setLevel(logging.WARNING)
    line = sys.stdin.readline()
    if not line:
        return 0
    return Worker(json.loads(line)).run()


if __name__ == "__main__":
    sys.exit(main())
