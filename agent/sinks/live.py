"""Live publisher: the newest value of every signal as a retained MQTT topic, plus agent birth and death.

Topics: `shopfloor/v1/<site>/<line>/<unit>/<signal>` where unit is a machine, a station, or `_line` for
line-level signals; payload `{"v": value, "ts": epoch ms, ...}` with signal-specific extras (`q` quality on
process values, `raw` on states). Updates are coalesced: within
`min_interval_ms` only the newest value per topic goes out. Live state is a view, not a record: the
historian has every point, so a broker outage here loses nothing.

Text from the shop floor goes into topics and payloads as it came (a badge is a topic level), so one point must
never cost the others their publication: a lone surrogate (what JSON's "\\ud800" decodes to, which UTF-8 cannot
carry) is published as U+FFFD, and a point whose topic MQTT cannot carry (`+`, `#` or NUL in a level) is
skipped and counted.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import paho.mqtt.client as mqtt

from agent.config import MqttSource, resolve_secret
from agent.core.schema import Point
from agent.mqtt_client import make_client

log = logging.getLogger(__name__)

LiveValue = tuple[str, int, bytes]  # topic, ts in epoch ms, UTF-8 JSON payload

_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_IN_A_TOPIC = re.compile("[+#\x00]")


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
        self._latest: dict[str, tuple[int, bytes]] = {}  # topic -> (ts ms, payload) to publish next
        self._sent_ts: dict[str, int] = {}  # topic -> ts ms of the value last published
        self.skipped = 0  # points without a live publication (see the module docstring)
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
        """Queue the newest value of each point's topic for the next flush (the pipeline's own points, in the
        order the historian confirmed them); a point that cannot be published is logged, counted in `skipped`
        and costs no other point."""
        values = live_values(self.site, points, self._skip)
        with self._lock:
            for topic, ts, payload in values:
                self._latest[topic] = (ts, payload)

    def offer(self, values: Iterable[LiveValue]) -> None:
        """Values that receiver processes (`workers:`) mapped and stored: each replaces its topic's value only
        when it is at least as new as the newest this publisher holds or sent, since two processes confirm
        writes in no particular order between them (an andon acknowledgement stays the topic's value when its
        call is confirmed later)."""
        with self._lock:
            for topic, ts, payload in values:
                pending = self._latest.get(topic)
                newest = max(pending[0] if pending else -1, self._sent_ts.get(topic, -1))
                if ts >= newest:
                    self._latest[topic] = (ts, payload)

    def _skip(self, what: str, exc: Exception) -> None:
        self.skipped += 1
        if self.skipped in (1, 100, 10000):
            log.warning("live publisher: %s not published (%s); %d so far, the historian has them", what, exc,
                        self.skipped)

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.min_interval or 0.05):
            try:
                self._flush()
            except Exception:  # the next flush may well succeed; a dead thread would publish nothing
                log.exception("live publisher: a flush failed; the next one goes on")

    def _flush(self) -> None:
        if not self.client.is_connected():
            return  # keep the newest values until the broker is back, so retained topics end up current
        with self._lock:
            latest, self._latest = self._latest, {}
        if not latest:
            return
        for topic, (ts, payload) in latest.items():
            try:
                self.client.publish(topic, payload, qos=0, retain=True)
            except ValueError as exc:  # paho refuses a topic or payload: this one only
                self._skip(topic, exc)
                continue
            self._sent_ts[topic] = ts


def live_values(site: str, points: Sequence[Point], skip: Callable[[str, Exception], None]) -> list[LiveValue]:
    """The newest live value of each topic among `points` (the last one wins, as the points come), encoded as
    MQTT carries it; a point that cannot be published goes to `skip` and costs no other point."""
    out: dict[str, LiveValue] = {}
    for p in points:
        try:
            item = live_topic(site, p)
            if item is None:
                continue
            topic, payload = _encode(*item)
        except Exception as exc:  # one point's text must not stop the others
            skip(p.measurement, exc)
            continue
        out[topic] = (topic, int(item[1]["ts"]), payload)
    return list(out.values())


def _encode(topic: str, payload: dict[str, Any]) -> tuple[str, bytes]:
    """Topic and UTF-8 JSON payload as MQTT carries them: lone surrogates become U+FFFD; ValueError for a topic
    MQTT cannot publish."""
    text = json.dumps(payload, ensure_ascii=False)
    if _SURROGATE.search(topic):
        topic = _SURROGATE.sub("\ufffd", topic)
    if _SURROGATE.search(text):
        text = _SURROGATE.sub("\ufffd", text)
    if _NOT_IN_A_TOPIC.search(topic):
        raise ValueError(f"topic {topic!r} holds +, # or NUL")
    return topic, text.encode()
