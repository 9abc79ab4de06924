"""The dashboard's view of the live MQTT topics: the newest payload of every signal, and which agents are up.

One paho client subscribes to `shopfloor/v1/<site>/#` (the retained topics the agents publish, see
docs/data-model.md "Live MQTT topics"), keeps the newest payload per topic and calls `on_change(line)` when
something of a line changed, with the signal (`line` is None when every line is concerned: the broker
connection or an agent).

No message can stop it: a payload that is not a small, flat, UTF-8 JSON object (over 256 KiB, not UTF-8, not
JSON, nested too deeply, a lone surrogate such as "\\ud800", NaN or an infinite number) is counted in
`malformed` and skipped, and anything raised while taking a message is counted in `failed` and logged once per
kind. Should paho's network thread end anyway, `error` says "live view stopped", `connected` is false, and every
machine is OFFLINE with that reason: the boards say the live data is gone instead of showing the last values as
live.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from agent.config import FactoryConfig, MqttSource, resolve_secret
from agent.mqtt_client import make_client

log = logging.getLogger(__name__)

# The agents' live payloads are flat objects of a few hundred bytes (a list of machines at most); anything far
# larger or deeper is not one of them, and a deep one would exhaust the parser's recursion.
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_DEPTH = 8
STOPPED = "live view stopped"
_SURROGATE = re.compile("[\ud800-\udfff]")


class MalformedPayload(ValueError):
    """A live payload the view refuses; `kind` names the reason in a few words (logged once per kind)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


def parse_payload(payload: bytes) -> dict[str, Any]:
    """The JSON object a live payload holds, with only finite numbers and text UTF-8 can carry; MalformedPayload
    for anything else. Never raises anything else, whatever the bytes."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MalformedPayload("too large", f"{len(payload)} bytes, over {MAX_PAYLOAD_BYTES}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPayload("not UTF-8", str(exc)) from None
    try:
        body = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise MalformedPayload("nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, an integer of thousands of digits
        raise MalformedPayload("not JSON", str(exc)) from None
    if not isinstance(body, dict):
        raise MalformedPayload("not a JSON object", type(body).__name__)
    _check_values(body)
    return body


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _check_values(body: dict[str, Any]) -> None:
    """MalformedPayload for nesting past MAX_DEPTH, a lone surrogate in a key or text, or an infinite number
    (`1e400`); without recursion, so no depth can exhaust the stack."""
    pending: list[tuple[Any, int]] = [(body, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise MalformedPayload("lone surrogate", ascii(value[:40]))
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise MalformedPayload("not a finite number", repr(value))
        elif isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise MalformedPayload("nested too deeply", f"more than {MAX_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                pending.append((key, depth))  # an int index passes untouched
                pending.append((item, depth + 1))


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
        self._connected = False
        self.messages = 0
        self.malformed = 0  # payloads refused (see parse_payload)
        self.failed = 0  # exceptions caught while taking a message or telling on_change
        self._logged: set[str] = set()  # kinds of malformed payloads and failures logged once already
        self._client: mqtt.Client | None = None
        self._network: threading.Thread | None = None
        self._stopping = False
        self._stop_logged = False
        self.broker = live_broker(cfg)

    @property
    def connected(self) -> bool:
        """True while the view holds the broker and its MQTT thread runs."""
        return self._connected and self.error is None

    @connected.setter
    def connected(self, value: bool) -> None:
        self._connected = value

    @property
    def error(self) -> str | None:
        """"live view stopped" once paho's network thread has ended without stop() (nothing follows the topics
        any more, so no live value can be trusted), else None."""
        network = self._network
        if network is None or self._stopping or network.is_alive():
            return None
        if not self._stop_logged:
            self._stop_logged = True
            log.error("live view: the MQTT network thread for %s has ended; every machine shows OFFLINE (%s) "
                      "until the dashboard is restarted", self.broker and self.broker.url, STOPPED)
        return STOPPED

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
        # paho keeps its network thread here; when it ends, nothing reads the broker any more (see `error`)
        self._network = getattr(client, "_thread", None)

    def stop(self) -> None:
        self._stopping = True
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("live view: broker %s refused the connection: %s", self.broker and self.broker.url, reason)
            return
        client.subscribe(self.prefix + "#", qos=0)
        if not self._connected:
            log.info("live view: connected to %s", self.broker and self.broker.url)
        self._connected = True
        self._notify(None, "broker", "broker")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self._connected:
            log.warning("live view: lost the broker %s (%s); boards show OFFLINE until it is back",
                        self.broker and self.broker.url, reason)
        self._connected = False
        self._notify(None, "broker", "broker")

    # --- messages -------------------------------------------------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # paho's thread: whatever escapes here ends it, and with it the live view
        self.messages += 1
        topic = "(topic not UTF-8)"
        try:
            topic = msg.topic
            change = self.accept(topic, bytes(msg.payload))
        except Exception as exc:
            self._failed(topic, exc)
            return
        if change is not None:
            self._notify(*change, topic)

    def _notify(self, line: str | None, signal: str, topic: str) -> None:
        try:
            self.on_change(line, signal)
        except Exception as exc:
            self._failed(topic, exc)

    def _failed(self, topic: str, exc: Exception) -> None:
        self.failed += 1
        kind = type(exc).__name__
        if kind not in self._logged:
            self._logged.add(kind)
            log.error("live view: %s: %s raised in the MQTT callback; skipped, the view goes on (logged once "
                      "per kind, %d so far)", topic, kind, self.failed, exc_info=exc)

    def accept(self, topic: str, payload: bytes) -> tuple[str | None, str] | None:
        """Store one live message; return (line, signal) of the change, line None for a site-wide one (an agent),
        or None when the message changed nothing."""
        if not topic.startswith(self.prefix):
            return None
        parts = topic[len(self.prefix):].split("/")
        if len(parts) < 3:
            return None
        if parts[0] == "_agents" and (len(parts) != 3 or parts[2] != "status"):
            return None  # the agents' probes (payload `probe`, agent/sources/mqtt/source.py): not live values
        try:
            body = parse_payload(payload)
        except MalformedPayload as exc:
            self.malformed += 1
            if exc.kind not in self._logged or self.malformed in (100, 10000):
                self._logged.add(exc.kind)
                log.warning("live view: %s: payload refused, %s (%d refused so far; the last good value stays)",
                            topic, exc, self.malformed)
            return None
        if parts[0] == "_agents":
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
        if self.error is not None:
            return self.error
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
