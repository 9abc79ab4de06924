"""The dashboard's view of the live MQTT topics: the newest payload of every signal, and which agents are up.

One paho client subscribes to `shopfloor/v1/<site>/#` (the retained topics the agents publish, see
docs/data-model.md "Live MQTT topics"), keeps the newest payload per topic and calls `on_change(line)` when
something of a line changed, with the signal (`line` is None when every line is concerned: the broker
connection or an agent).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from agent.config import FactoryConfig, MqttSource, resolve_secret
from agent.sources.mqtt import make_client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentStatus:
    agent: str
    online: bool
    since_ms: int | None
    machines: frozenset[str]  # "<line>/<machine>"


def live_broker(cfg: FactoryConfig) -> MqttSource | None:
    """The MQTT source whose broker carries the live topics: dashboard.mqtt, else live.mqtt, else the first."""
    wanted = cfg.dashboard.mqtt or cfg.live.mqtt
    for source in cfg.sources.mqtt:
        if wanted is None or source.id == wanted:
            return source
    return None


class LiveView:
    """Newest live payload per (line, unit, signal), fed by a background MQTT client."""

    def __init__(self, cfg: FactoryConfig,
                 on_change: Callable[[str | None, str], None] = lambda line, signal: None) -> None:
        self.cfg = cfg
        self.prefix = f"shopfloor/v1/{cfg.site.id}/"
        self.on_change = on_change
        self._values: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}  # line -> (unit, signal) -> payload
        self._agents: dict[str, AgentStatus] = {}
        self._lock = threading.Lock()
        self.connected = False
        self.messages = 0
        self.malformed = 0
        self._client: mqtt.Client | None = None
        self.broker = live_broker(cfg)

    # --- connection -----------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.broker is None:
            log.warning("live view: no MQTT source in the config; boards show historian data only")
            return
        password = resolve_secret(self.broker.password, self.broker.password_file)
        client_id = f"shopfloor-dashboard-{os.getpid()}-{int(time.time() * 1000) % 100000}"
        client, host, port = make_client(client_id, self.broker.url, self.broker.protocol, self.broker.username,
                                         password, self.broker.tls)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        client.connect_async(host, port, keepalive=10)
        client.loop_start()

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("live view: broker %s refused the connection: %s", self.broker and self.broker.url, reason)
            return
        client.subscribe(self.prefix + "#", qos=0)
        if not self.connected:
            log.info("live view: connected to %s", self.broker and self.broker.url)
        self.connected = True
        self.on_change(None, "broker")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self.connected:
            log.warning("live view: lost the broker %s (%s); boards show OFFLINE until it is back",
                        self.broker and self.broker.url, reason)
        self.connected = False
        self.on_change(None, "broker")

    # --- messages -------------------------------------------------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages += 1
        change = self.accept(msg.topic, bytes(msg.payload))
        if change is not None:
            self.on_change(*change)

    def accept(self, topic: str, payload: bytes) -> tuple[str | None, str] | None:
        """Store one live message; return (line, signal) of the change, line None for a site-wide one (an agent),
        or None when the message changed nothing."""
        if not topic.startswith(self.prefix):
            return None
        parts = topic[len(self.prefix):].split("/")
        if len(parts) < 3:
            return None
        try:
            body = json.loads(payload) if payload else None
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            self.malformed += 1
            if self.malformed in (1, 100, 10000):
                log.warning("live view: %s: payload is not a JSON object (%d so far)", topic, self.malformed)
            return None
        if parts[0] == "_agents":
            if len(parts) != 3 or parts[2] != "status":
                return None  # probes
            machines = body.get("machines")
            with self._lock:
                previous = self._agents.get(parts[1])
                known = frozenset(str(m) for m in machines) if isinstance(machines, list) else (
                    previous.machines if previous else frozenset())
                self._agents[parts[1]] = AgentStatus(parts[1], body.get("v") == "online",
                                                     body.get("ts") if isinstance(body.get("ts"), int) else None,
                                                     known)
            return None, "agent"
        line, unit, signal = parts[0], parts[1], "/".join(parts[2:])
        with self._lock:
            self._values.setdefault(line, {})[(unit, signal)] = body
        return line, signal

    # --- reads ----------------------------------------------------------------------------------------------

    def line_values(self, line: str) -> dict[tuple[str, str], dict[str, Any]]:
        """A copy of the newest payload per (unit, signal) of a line."""
        with self._lock:
            return dict(self._values.get(line, {}))

    def agents(self) -> list[AgentStatus]:
        with self._lock:
            return sorted(self._agents.values(), key=lambda a: a.agent)

    def offline_reason(self, line: str, machine: str) -> str | None:
        """Why a machine's live values cannot be trusted now, or None when they can."""
        if self.broker is None:
            return "no live broker configured"
        if not self.connected:
            return "dashboard lost the live broker"
        key = f"{line}/{machine}"
        with self._lock:
            agents = list(self._agents.values())
        reading = [a for a in agents if key in a.machines]
        if not reading:
            reading = [a for a in agents if a.agent == self.cfg.agent.id]
        if reading and not any(a.online for a in reading):
            return f"agent {reading[0].agent} offline"
        return None
