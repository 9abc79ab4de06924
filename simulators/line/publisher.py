"""Publishing with acknowledged counts: a paho client that counts a message as delivered only when the broker
acknowledged it, and the ground truth it keeps (`Tally`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from simulators.line.payloads import MALFORMED_KINDS, SIGNALS

log = logging.getLogger(__name__)

# paho numbers messages 1..65535 and refuses a number still in flight; the window stays well below that.
MAX_WINDOW = 30_000

Pending = tuple[str, str, str]  # group ("valid" or "malformed"), signal or malformed kind, ts


def shown(url: str) -> str:
    """The URL as it may be printed or logged: a password in it is replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


class Tally:
    """The ground truth: what the broker acknowledged, per signal and per malformed kind. Owners lock it."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {"valid": dict.fromkeys(SIGNALS, 0),
                                                  "malformed": dict.fromkeys(MALFORMED_KINDS, 0)}
        self.published = self.acked = self.rejected = 0
        self.last_ts: str | None = None

    def settle(self, entry: Pending, ok: bool) -> None:
        group, kind, ts = entry
        if not ok:
            self.rejected += 1
            return
        self.acked += 1
        self.counts[group][kind] += 1
        if ts and (self.last_ts is None or ts > self.last_ts):
            self.last_ts = ts

    def as_dict(self, pending: int) -> dict[str, Any]:
        return {"valid": dict(self.counts["valid"]), "malformed": dict(self.counts["malformed"]),
                "published": self.published, "acked": self.acked, "rejected": self.rejected,
                "pending": pending, "last_ts": self.last_ts}


class Publisher:
    """A paho client that counts a message as delivered only when the broker acknowledged it."""

    def __init__(self, url: str, client_id: str, qos: int = 1, protocol: str = "5", max_inflight: int = 1000,
                 on_connected: Callable[[], None] | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"MQTT URL like mqtt://host:1883 expected, got {shown(url)!r}")
        self.url, self.qos = shown(url), qos
        self._host = parts.hostname
        self._port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self._on_connected = on_connected
        self.connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311)
        if parts.scheme == "mqtts":
            self.client.tls_set()
        if parts.username:
            self.client.username_pw_set(unquote(parts.username),
                                        unquote(parts.password) if parts.password is not None else None)
        # The in-flight window is kept here, not by paho: paho's own (max_inflight_messages_set) rescans every
        # message in flight on each PUBACK, which held a 1000-message window to about 3,700 messages/s.
        self.client.max_inflight_messages_set(0)
        self.client.max_queued_messages_set(0)
        self.window = max(1, min(max_inflight, MAX_WINDOW))
        self._wanted_window = self.window
        self.client.reconnect_delay_set(1, 10)
        self.client.on_connect = self._handle_connect
        self.client.on_disconnect = self._handle_disconnect
        self.client.on_publish = self._handle_publish
        self._cond = threading.Condition()
        self._pending: dict[int, Pending] = {}
        self._early: dict[int, bool] = {}
        self.tally = Tally()

    def connect(self) -> None:
        """Connect in the background; paho reconnects by itself and resends what was not acknowledged."""
        self.client.connect_async(self._host, self._port, keepalive=30)
        self.client.loop_start()

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def _handle_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                        properties: Any) -> None:
        if reason.is_failure:
            log.warning("line simulator: broker %s refused the connection: %s", self.url, reason)
            return
        receive_maximum = getattr(properties, "ReceiveMaximum", None)
        with self._cond:
            # MQTT 5: never have more unacknowledged messages than the broker said it takes.
            self.window = min(self._wanted_window, receive_maximum) if receive_maximum else self._wanted_window
        first = not self.connected.is_set()
        self.connected.set()
        if first and self._on_connected is not None:
            self._on_connected()
        elif not first:
            log.info("line simulator: reconnected to %s", self.url)

    def _handle_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                           properties: Any) -> None:
        if reason.is_failure:
            log.warning("line simulator: lost %s (%s); reconnecting", self.url, reason)

    def _handle_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode,
                        properties: Any) -> None:
        ok = not reason.is_failure
        with self._cond:
            entry = self._pending.pop(mid, None)
            if entry is None:
                # paho can deliver the PUBACK before publish() has returned the message id to us.
                self._early[mid] = ok
                return
            self.tally.settle(entry, ok)
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes, group: str, kind: str, ts: str) -> bool:
        """Queue one message; False when paho refused it (never the case for QoS 1 while under the bound)."""
        with self._cond:
            while len(self._pending) >= self.window:
                self._cond.wait(1.0)
        info = self.client.publish(topic, payload, self.qos)
        if info.rc != mqtt.MQTT_ERR_SUCCESS and not (self.qos > 0 and info.rc == mqtt.MQTT_ERR_NO_CONN):
            # QoS 1 messages wait in paho while disconnected; anything else is lost and so not counted.
            log.warning("line simulator: %s not published: %s", topic, mqtt.error_string(info.rc))
            return False
        with self._cond:
            self.tally.published += 1
            early = self._early.pop(info.mid, None)
            if early is None:
                self._pending[info.mid] = (group, kind, ts)
            else:
                self.tally.settle((group, kind, ts), early)
        return True

    def outstanding(self) -> int:
        """Messages published but not yet acknowledged."""
        with self._cond:
            return len(self._pending)

    def flush(self) -> None:
        """Nothing to do: paho sends each message from its own thread as soon as it is published."""

    def wait_acked(self, timeout_s: float, offline_s: float = 10.0) -> bool:
        """Block until every published message was acknowledged; False after `timeout_s`, or once the broker has
        been out of reach for `offline_s` (it is gone: what it did not acknowledge stays out of the truth)."""
        deadline = time.monotonic() + timeout_s
        offline_since: float | None = None
        with self._cond:
            while self._pending:
                now = time.monotonic()
                if self.client.is_connected():
                    offline_since = None
                elif offline_since is None:
                    offline_since = now
                if now >= deadline or (offline_since is not None and now - offline_since >= offline_s):
                    return False
                self._cond.wait(min(deadline - now, 0.5))
        return True

    def truth(self) -> dict[str, Any]:
        """Acknowledged counts per signal and malformed kind, as the truth file holds them."""
        with self._cond:
            return self.tally.as_dict(len(self._pending))
