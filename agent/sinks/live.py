"""Live publisher: the newest value of every signal as a retained MQTT topic, plus agent birth and death.

Topics: `shopfloor/v1/<site>/<line>/<unit>/<signal>` where unit is a machine, a station, or `_line` for
line-level signals; payload `{"v": value, "ts": epoch ms, ...}` with signal-specific extras (`q` quality on
process values, `raw` on states). Updates are coalesced: within
`min_interval_ms` only the newest value per topic goes out. Live state is a view, not a record: the
historian has every point, so a broker outage here loses nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as mqtt

from agent.config import MqttSource, resolve_secret
from agent.core.schema import Point
from agent.sources.mqtt import make_client

log = logging.getLogger(__name__)


def status_topic(site: str, agent_id: str) -> str:
    return f"shopfloor/v1/{site}/_agents/{agent_id}/status"


def live_topic(site: str, p: Point) -> tuple[str, dict[str, Any]] | None:
    """The live topic and payload for a point, or None for measurements without a live view."""
    t, f = p.tags, p.fields
    base = f"shopfloor/v1/{site}/{t.get('line', '_site')}"
    ts = p.time_ns // 1_000_000
    m = p.measurement
    if m == "machine_state":
        return f"{base}/{t['machine']}/state", {"v": f["state"], "ts": ts, "raw": f.get("raw")}
    if m == "machine_count":
        return f"{base}/{t['machine']}/count/{t['counter']}", {"v": f["value"], "ts": ts}
    if m == "process_value":
        return f"{base}/{t['machine']}/pv/{t['name']}", {"v": f.get("value"), "ts": ts, "q": f.get("quality")}
    if m == "alarm":
        return f"{base}/{t['machine']}/alarm", {"v": f["code"] if f["active"] else 0, "ts": ts,
                                               "text": f.get("text", "")}
    if m == "operator_event":
        return f"{base}/{t['station']}/operator/{f['badge']}", {"v": t["event"], "ts": ts,
                                                               "operator": f.get("operator")}
    if m == "andon_event":
        return f"{base}/{t['station']}/andon", {"v": t["event"], "ts": ts, "kind": t["kind"],
                                                "call_id": f["call_id"]}
    if m == "material_level":
        return f"{base}/_line/material/{t['material']}", {"v": f["level"], "ts": ts}
    if m == "material_event":
        return f"{base}/{t['station']}/material_event", {"v": t["event"], "ts": ts, "material": t["material"],
                                                        **{k: v for k, v in f.items()}}
    if m == "order_event":
        return f"{base}/_line/order", {"v": t["event"], "ts": ts, **f}
    return None


class MqttLivePublisher:
    """Publishes coalesced live topics to one broker from a background thread."""

    def __init__(self, site: str, agent_id: str, broker: MqttSource, min_interval_ms: int,
                 machines: Sequence[str] = ()) -> None:
        self.site = site
        self.agent_id = agent_id
        # "<line>/<machine>" of every machine this agent reads: a board shows them OFFLINE when the agent dies
        self.machines = list(machines)
        self.min_interval = min_interval_ms / 1000
        self.status_topic = status_topic(site, agent_id)
        death = json.dumps({"v": "offline", "agent": agent_id, "machines": self.machines}).encode()
        password = resolve_secret(broker.password, broker.password_file)
        self.client, self.host, self.port = make_client(
            f"{broker.client_id}-live", broker.url, broker.protocol, broker.username, password, broker.tls,
            will=(self.status_topic, death))
        self.client.on_connect = self._on_connect
        self._latest: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._flush_loop, name="shopfloor-live", daemon=True)

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._flush()
        if self.client.is_connected():
            info = self.client.publish(self.status_topic, json.dumps(
                {"v": "offline", "agent": self.agent_id, "ts": int(time.time() * 1000), "machines": self.machines}
            ).encode(), qos=1,
                retain=True)
            info.wait_for_publish(timeout=2)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("live publisher: broker refused the connection: %s", reason)
            return
        birth = {"v": "online", "agent": self.agent_id, "ts": int(time.time() * 1000), "machines": self.machines}
        client.publish(self.status_topic, json.dumps(birth).encode(), qos=1, retain=True)

    def publish(self, points: Sequence[Point]) -> None:
        updates = {}
        for p in points:
            item = live_topic(self.site, p)
            if item is not None:
                updates[item[0]] = item[1]
        encoded = {topic: json.dumps(payload, ensure_ascii=False).encode() for topic, payload in updates.items()}
        with self._lock:
            self._latest.update(encoded)

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.min_interval or 0.05):
            self._flush()

    def _flush(self) -> None:
        if not self.client.is_connected():
            return  # keep the newest values until the broker is back, so retained topics end up current
        with self._lock:
            latest, self._latest = self._latest, {}
        if not latest:
            return
        for topic, payload in latest.items():
            self.client.publish(topic, payload, qos=0, retain=True)
