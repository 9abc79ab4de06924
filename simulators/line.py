"""MQTT line simulator: badge readers, andon buttons, line-side material and orders of the simulated plant.

What happens is decided by the plant (simulators/plant.py), the same world the PLC simulator shows: this
simulator publishes its floor's messages. It publishes exactly the topics and JSON fields that `sources.mqtt[].routes` of config/factory.yaml expect, on a
simulated clock that starts at the real now and runs `speed` times faster. Every payload carries `ts` (ISO 8601
UTC with microseconds), strictly increasing per topic, because the historian keys a point by series + timestamp.

With `malformed_every=N` it also publishes one bad message after every N valid ones (not JSON, wrong types,
unknown topics, 1 MB payloads, missing fields), so the agent's dead-letter path is exercised. The ground truth
(valid messages per signal, malformed per kind) counts only what the broker acknowledged (PUBACK for QoS 1), so
a test can compare it with what the agent stored.

    sim = LineSimulator(agent.config.load("config/factory.yaml"), "mqtt://127.0.0.1:1883", speed=60)
    sim.start(); ...; sim.stop(); print(sim.truth())
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import select
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from agent.clock import add_anchor_argument, caught_up
from agent.config import FactoryConfig
from simulators.plant import FloorMessage, Plant

log = logging.getLogger(__name__)

SIGNALS = ("operator_event", "andon_event", "material_level", "material_event", "order_event")
MALFORMED_KINDS = ("not_json", "wrong_type", "unknown_topic", "huge", "missing_field")
HUGE_BYTES = 1_000_000
PACE_EVERY = 20               # a paced flood (--flood-rate) checks the clock once per this many messages
# paho numbers messages 1..65535 and refuses a number still in flight; the window stays well below that.
MAX_WINDOW = 30_000
US = 1_000_000


# --- clock and timestamps ------------------------------------------------------------------------------------


class SimClock:
    """Simulated UTC time in integer microseconds: starts at the real now and runs `speed` times faster."""

    def __init__(self, speed: float = 1.0, start_us: int | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self.start_us = start_us if start_us is not None else time.time_ns() // 1000
        self._t0 = time.monotonic()

    def now_us(self) -> int:
        """Simulated now, microseconds since the Unix epoch."""
        return self.start_us + int((time.monotonic() - self._t0) * self.speed * US)


@lru_cache(maxsize=4096)
def _second_text(epoch_s: int) -> str:
    return (datetime(1970, 1, 1) + timedelta(seconds=epoch_s)).strftime("%Y-%m-%dT%H:%M:%S")


def iso_us(epoch_us: int) -> str:
    """`2026-11-22T03:59:01.123456Z` for microseconds since the epoch (the whole-second part is cached)."""
    seconds, micros = divmod(epoch_us, US)
    return f"{_second_text(seconds)}.{micros:06d}Z"


class TopicStamps:
    """Hands out timestamps that strictly increase per topic, bumping by 1 us when the clock has not moved."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def stamp(self, topic: str, epoch_us: int) -> str:
        last = self._last.get(topic)
        if last is not None and epoch_us <= last:
            epoch_us = last + 1
        self._last[topic] = epoch_us
        return iso_us(epoch_us)


# --- malformed messages --------------------------------------------------------------------------------------


class MalformedMaker:
    """Bad messages for the agent's dead-letter path, cycling through the kinds and, within a kind, variants."""

    def __init__(self, cfg: FactoryConfig) -> None:
        line = cfg.lines[0]
        self.line = line.id
        self.station = line.stations[0].id if line.stations else "station-1"
        used = [m for p in cfg.products if line.id in p.ideal_cycle_s for m in p.bom]
        self.material = used[0] if used else (cfg.materials[0].id if cfg.materials else "material-1")
        known = {ln.id for ln in cfg.lines}
        self.unknown_line = next(f"line-{n}" for n in itertools.count(9) if f"line-{n}" not in known)
        self._kinds = itertools.cycle(MALFORMED_KINDS)
        self._variant = dict.fromkeys(MALFORMED_KINDS, 0)

    def next(self, stamps: TopicStamps, now_us: int) -> tuple[str, str, bytes]:
        """(kind, topic, payload) of the next malformed message."""
        kind = next(self._kinds)
        variant = self._variant[kind]
        self._variant[kind] += 1
        topic, payload = getattr(self, "_" + kind)(variant, stamps, now_us)
        return kind, topic, payload

    def _json(self, topic: str, body: dict[str, Any], stamps: TopicStamps, now_us: int) -> tuple[str, bytes]:
        # A bad message still takes a fresh timestamp, so that if it were wrongly accepted it could not overwrite
        # a valid point of the same series.
        body["ts"] = stamps.stamp(topic, now_us)
        return topic, json.dumps(body, separators=(",", ":")).encode()

    def _not_json(self, variant: int, stamps: TopicStamps, now_us: int) -> tuple[str, bytes]:
        topic = f"line/{self.line}/{self.station}/badge"
        payloads = (b'{"badge": "B1001", "action": "in", "ts": ', b"\xff\xfe\x00garbage", b"level=12.5;ok")
        return topic, payloads[variant % len(payloads)]

    def _wrong_type(self, variant: int, stamps: TopicStamps, now_us: int) -> tuple[str, bytes]:
        choice = variant % 3
        if choice == 0:
            return self._json(f"line/{self.line}/material/{self.material}/level", {"level": "abc"}, stamps, now_us)
        if choice == 1:
            body = {"order_id": "SO-BAD-1", "sku": "KT-100", "target_qty": "lots", "event": "start"}
            return self._json(f"line/{self.line}/order", body, stamps, now_us)
        body2: dict[str, Any] = {"material": self.material, "lot": "L-BAD-1", "qty": [1]}
        return self._json(f"line/{self.line}/{self.station}/lot", body2, stamps, now_us)

    def _unknown_topic(self, variant: int, stamps: TopicStamps, now_us: int) -> tuple[str, bytes]:
        if variant % 2 == 0:
            return self._json(f"line/{self.line}/{self.station}/teleport", {"to": "mars"}, stamps, now_us)
        body = {"order_id": "SO-BAD-2", "sku": "KT-100", "target_qty": 10, "event": "start"}
        return self._json(f"line/{self.unknown_line}/order", body, stamps, now_us)

    def _huge(self, variant: int, stamps: TopicStamps, now_us: int) -> tuple[str, bytes]:
        body = {"level": 1.0, "padding": "x" * HUGE_BYTES}
        return self._json(f"line/{self.line}/material/{self.material}/level", body, stamps, now_us)

    def _missing_field(self, variant: int, stamps: TopicStamps, now_us: int) -> tuple[str, bytes]:
        choice = variant % 3
        if choice == 0:
            body: dict[str, Any] = {"order_id": "SO-BAD-3", "target_qty": 10, "event": "start"}
            return self._json(f"line/{self.line}/order", body, stamps, now_us)
        if choice == 1:
            return self._json(f"line/{self.line}/material/{self.material}/level", {}, stamps, now_us)
        body = {"event": "call", "kind": "quality", "badge": "B1001"}
        return self._json(f"line/{self.line}/{self.station}/andon", body, stamps, now_us)


# --- publishing with acknowledged counts ----------------------------------------------------------------------

Pending = tuple[str, str, str]  # group ("valid" or "malformed"), signal or malformed kind, ts


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
            raise ValueError(f"MQTT URL like mqtt://host:1883 expected, got {url!r}")
        self.url, self.qos = url, qos
        self._host = parts.hostname
        self._port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self._on_connected = on_connected
        self.connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311)
        if parts.scheme == "mqtts":
            self.client.tls_set()
        if parts.username:
            self.client.username_pw_set(parts.username, parts.password)
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

    def wait_acked(self, timeout_s: float) -> bool:
        """Block until every published message was acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def truth(self) -> dict[str, Any]:
        """Acknowledged counts per signal and malformed kind, as the truth file holds them."""
        with self._cond:
            return self.tally.as_dict(len(self._pending))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str16(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


class RawPublisher:
    """A bare MQTT 3.1.1 publisher for `--flood`: PUBLISH packets go out in 64 KB writes, PUBACKs are read in bulk.

    paho spends about 60 us of CPU per QoS 1 message on a small machine (a Properties and a ReasonCode object
    per PUBACK, one send per packet, a wake-up byte per publish), which caps a flood near 12,000 messages/s and
    would make the simulator, not the agent, the thing measured. Same interface as `Publisher`, used from one
    thread; no reconnect: a flood is a measurement, and a lost connection ends it.
    """

    def __init__(self, url: str, client_id: str, qos: int = 1, max_inflight: int = 1000,
                 on_connected: Callable[[], None] | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"MQTT URL like mqtt://host:1883 expected, got {url!r}")
        self.url, self.qos, self.client_id = url, qos, client_id
        self._parts = parts
        self._on_connected = on_connected
        self.connected = threading.Event()
        self.window = max(1, min(max_inflight, MAX_WINDOW))
        self.tally = Tally()
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._out = bytearray()
        self._in = bytearray()
        self._pending: dict[int, Pending] = {}
        self._mid = 0
        self._topics: dict[str, bytes] = {}

    def connect(self) -> None:
        """Nothing yet: the flood thread calls open(), so that start() never blocks."""

    def open(self) -> socket.socket:
        """Connect and wait for CONNACK; raise OSError (ConnectionError when refused)."""
        parts = self._parts
        sock = socket.create_connection((parts.hostname, parts.port or (8883 if parts.scheme == "mqtts" else 1883)),
                                        timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if parts.scheme == "mqtts":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        flags = 0x02  # clean session; keep alive 0, so a long flood needs no PINGREQ
        payload = _str16(self.client_id)
        if parts.username:
            flags |= 0x80
            payload += _str16(parts.username)
            if parts.password is not None:
                flags |= 0x40
                payload += _str16(parts.password)
        variable = b"\x00\x04MQTT\x04" + bytes([flags]) + b"\x00\x00"
        sock.sendall(b"\x10" + _varint(len(variable) + len(payload)) + variable + payload)
        connack = b""
        while len(connack) < 4:
            chunk = sock.recv(4 - len(connack))
            if not chunk:
                raise ConnectionError(f"{self.url} closed the connection before CONNACK")
            connack += chunk
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"{self.url} refused the connection (CONNACK {connack.hex()})")
        sock.settimeout(None)
        self._sock = sock
        self.connected.set()
        if self._on_connected is not None:
            self._on_connected()
        return sock

    def publish(self, topic: str, payload: bytes, group: str, kind: str, ts: str) -> bool:
        """Buffer one message; it goes out with the next 64 KB write. Blocks while the window is full."""
        if self._sock is None:
            self.open()
        encoded = self._topics.get(topic)
        if encoded is None:
            encoded = self._topics[topic] = _str16(topic)
        if self.qos == 0:
            self._out += b"\x30" + _varint(len(encoded) + len(payload)) + encoded + payload
            with self._lock:
                self.tally.published += 1
                self.tally.settle((group, kind, ts), True)  # QoS 0 has no acknowledgement to wait for
        else:
            while len(self._pending) >= self.window:
                self._flush()
                self._read(0.5)
            self._mid = self._mid % 65535 + 1
            while self._mid in self._pending:  # only if acks come back far out of order
                self._flush()
                self._read(0.5)
            self._out += (b"\x32" + _varint(len(encoded) + 2 + len(payload)) + encoded
                          + self._mid.to_bytes(2, "big") + payload)
            self._pending[self._mid] = (group, kind, ts)
            self.tally.published += 1
        if len(self._out) >= 65536:
            self._flush()
            self._read(0)
        return True

    def _flush(self) -> None:
        if self._out and self._sock is not None:
            self._sock.sendall(self._out)
            self._out.clear()

    def _read(self, timeout_s: float) -> None:
        sock = self._sock
        if sock is None or not select.select([sock], [], [], timeout_s)[0]:
            return
        data = sock.recv(262144)
        if not data:
            raise ConnectionError(f"{self.url} closed the connection")
        buf = self._in
        buf += data
        i, end = 0, len(buf)
        acked: list[Pending] = []
        while i + 2 <= end:
            length, j, shift = 0, i + 1, 0
            while j < end:
                byte = buf[j]
                length |= (byte & 0x7F) << shift
                j += 1
                if byte < 0x80:
                    break
                shift += 7
            else:
                break
            if j + length > end:
                break
            if buf[i] >> 4 == 4:  # PUBACK
                entry = self._pending.pop((buf[j] << 8) | buf[j + 1], None)
                if entry is not None:
                    acked.append(entry)
            i = j + length
        del buf[:i]
        with self._lock:
            for entry in acked:
                self.tally.settle(entry, True)

    def outstanding(self) -> int:
        """Messages published but not yet acknowledged."""
        return len(self._pending)

    def flush(self) -> None:
        """Send what is buffered now and take in the PUBACKs that have arrived (a paced flood calls this so a
        message's `ts` is not older than its trip to the broker by the time a 64 KB buffer takes to fill)."""
        self._flush()
        self._read(0)

    def wait_acked(self, timeout_s: float) -> bool:
        """Send what is buffered and read PUBACKs until none is missing; False on timeout."""
        deadline = time.monotonic() + timeout_s
        try:
            self._flush()
            while self._pending and time.monotonic() < deadline:
                self._read(min(0.5, max(0.0, deadline - time.monotonic())))
        except OSError as exc:
            log.error("line simulator: flood connection to %s failed: %s", self.url, exc)
        return not self._pending

    def close(self) -> None:
        """Send DISCONNECT and close the socket."""
        if self._sock is not None:
            try:
                self._flush()
                self._sock.sendall(b"\xe0\x00")
            except OSError:
                pass
            self._sock.close()
            self._sock = None

    def truth(self) -> dict[str, Any]:
        """Acknowledged counts per signal and malformed kind, as the truth file holds them."""
        with self._lock:
            return self.tally.as_dict(len(self._pending))


# --- the simulator -------------------------------------------------------------------------------------------


class LineSimulator:
    """Publishes the shop floor of `cfg` to an MQTT broker from a background thread.

    Stops by itself after `count` valid messages, `duration_s` real seconds, or, in flood mode, after `flood`
    material levels sent as fast as possible; otherwise runs until `stop()`. `truth()` is always available;
    with `truth_file` it is also written there every second and on stop (temp file + rename).
    """

    def __init__(self, cfg: FactoryConfig, url: str, speed: float = 1.0, seed: int = 1, *, qos: int = 1,
                 malformed_every: int = 0, count: int | None = None, duration_s: float | None = None,
                 flood: int | None = None, truth_file: str | Path | None = None, client_id: str | None = None,
                 protocol: str = "5", max_inflight: int = 1000, flood_client: str = "raw",
                 flood_rate: float | None = None, flood_lane: tuple[int, int] = (0, 1),
                 announce: bool = False, start: datetime | None = None, origin: datetime | None = None) -> None:
        self.cfg, self.url = cfg, url
        self.clock = SimClock(speed, int(start.timestamp() * US) if start is not None else None)
        # The plant starts at the demo's shared clock start (`origin`), like the PLC simulator's: both run the
        # same world, the PLC simulator showing its machines and this one publishing its floor's messages.
        origin_us = int(origin.timestamp() * US) if origin is not None else self.clock.start_us
        self.floor = Plant(cfg, seed, min(origin_us, self.clock.start_us))
        self.malformed = MalformedMaker(cfg)
        self.stamps = TopicStamps()
        self.malformed_every, self.count, self.duration_s, self.flood = malformed_every, count, duration_s, flood
        if flood_rate is not None and flood_rate <= 0:
            raise ValueError("flood rate must be positive")
        lane, lanes = flood_lane
        if lanes < 1 or not 0 <= lane < lanes:
            raise ValueError(f"flood lane {lane}/{lanes}: expected K/N with 0 <= K < N")
        self.flood_rate, self.flood_lane = flood_rate, (lane, lanes)
        self.truth_file = Path(truth_file) if truth_file else None
        client_id = client_id or f"shopfloor-line-sim-{os.getpid()}"
        on_connected = self._announce if announce else None
        self.publisher: Publisher | RawPublisher
        if flood and flood_client == "raw":
            self.publisher = RawPublisher(url, client_id, qos, max_inflight, on_connected)
        else:
            self.publisher = Publisher(url, client_id, qos, protocol, max_inflight, on_connected)
        self.done = threading.Event()
        self.flood_figures: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="line-simulator", daemon=True)
        self._valid_sent = 0
        self._since_malformed = 0
        self._truth_lock = threading.Lock()
        self._started_at = 0.0

    def _announce(self) -> None:
        print(f"line simulator publishing to {self.url}", flush=True)

    def start(self) -> LineSimulator:
        """Connect (in the background) and start simulating."""
        self.publisher.connect()
        self._started_at = time.monotonic()
        self._thread.start()
        return self

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the simulation finished by itself (count, duration, flood); False on timeout."""
        return self.done.wait(timeout_s)

    def stop(self, ack_timeout_s: float = 60.0) -> bool:
        """Stop simulating, wait for the broker to acknowledge everything, disconnect, write the final truth.

        Returns True when every message was acknowledged within the timeout.
        """
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        all_acked = self.publisher.wait_acked(ack_timeout_s)
        if not all_acked:
            log.warning("line simulator: %s messages still unacknowledged by %s after %s s",
                        self.publisher.outstanding(), self.url, ack_timeout_s)
        self.publisher.close()
        self.write_truth()
        return all_acked

    def truth(self) -> dict[str, Any]:
        """What the broker acknowledged so far: valid messages per signal, malformed per kind, totals, last ts."""
        return self.publisher.truth()

    def write_truth(self) -> None:
        """Write the truth file atomically (temp file + rename), if one was asked for."""
        if self.truth_file is None:
            return
        with self._truth_lock:
            tmp = self.truth_file.with_name(f"{self.truth_file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.truth(), indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, self.truth_file)

    # --- the thread ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if self.flood:
                self._run_flood(self.flood)
            else:
                self._run_floor()
        except Exception:
            log.exception("line simulator stopped on an error")
        finally:
            self.done.set()

    def _finished(self) -> bool:
        if self._stop.is_set():
            return True
        if self.count is not None and self._valid_sent >= self.count:
            return True
        return self.duration_s is not None and time.monotonic() - self._started_at >= self.duration_s

    def _run_floor(self) -> None:
        next_truth = time.monotonic() + 1
        while not self._finished():
            for event in self.floor.advance(self.clock.now_us())[1]:
                self._send(event)
                if self._finished():
                    return
            if self.truth_file is not None and time.monotonic() >= next_truth:
                self.write_truth()
                next_truth = time.monotonic() + 1
            due = self.floor.next_due()
            wait_s = 0.2 if due is None else (due - self.clock.now_us()) / US / self.clock.speed
            self._stop.wait(min(max(wait_s, 0.0), 0.2))

    def _send(self, event: FloorMessage) -> None:
        body = dict(event.body)
        body["ts"] = ts = self.stamps.stamp(event.topic, event.due_us)
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        if self.publisher.publish(event.topic, payload, "valid", event.signal, ts):
            self._valid_sent += 1
            self._after_valid()

    def _after_valid(self) -> None:
        if not self.malformed_every:
            return
        self._since_malformed += 1
        if self._since_malformed >= self.malformed_every:
            self._since_malformed = 0
            kind, topic, payload = self.malformed.next(self.stamps, self.clock.now_us())
            self.publisher.publish(topic, payload, "malformed", kind, "")

    def _run_flood(self, total: int) -> None:
        if isinstance(self.publisher, RawPublisher):
            try:
                self.publisher.open()
            except OSError as exc:
                log.error("line simulator: cannot connect to %s: %s; flood not started", self.url, exc)
                return
        elif not self.publisher.connected.wait(30):
            log.error("line simulator: no connection to %s within 30 s; flood not started", self.url)
            return
        topics = [f"line/{ls.line.id}/material/{m.id}/level" for ls in self.floor.lines.values() for m in ls.materials]
        # Several flood processes share the topics out by lane, so no two of them ever stamp the same series:
        # two messages of one series with the same `ts` are one point in the historian (idempotent writes),
        # which a loss count would then report as lost.
        lane, lanes = self.flood_lane
        topics = topics[lane::lanes]
        if not topics:
            log.error("line simulator: the config has no line materials to flood (lane %s/%s)", lane, lanes)
            return
        publish, stamp, now_us = self.publisher.publish, self.stamps.stamp, self.clock.now_us
        flush = self.publisher.flush
        rate = self.flood_rate
        next_truth = time.monotonic() + 1
        started = time.perf_counter()
        try:
            for i in range(total):
                if rate is not None and i % PACE_EVERY == 0:
                    # Paced flood: hold each small group of messages until it is due, and send what is buffered
                    # before sleeping, so `ts` (taken just below) is close to the time the message leaves.
                    due = started + i / rate
                    if due > time.perf_counter():
                        flush()
                        self._stop.wait(max(0.0, due - time.perf_counter()))
                topic = topics[i % len(topics)]
                ts = stamp(topic, now_us())
                # Formatted by hand: json.dumps would cost more than the rest of the message here.
                payload = f'{{"level":{100 + (i % 997) * 0.5:.2f},"ts":"{ts}"}}'.encode()
                if publish(topic, payload, "valid", "material_level", ts):
                    self._valid_sent += 1
                    self._after_valid()
                if i & 1023 == 0 and (self._finished() or (
                        self.truth_file is not None and time.monotonic() >= next_truth)):
                    if self._finished():
                        break
                    self.write_truth()
                    next_truth = time.monotonic() + 1
        except OSError as exc:
            log.error("line simulator: flood connection to %s failed: %s", self.url, exc)
            return
        published_s = time.perf_counter() - started
        self.publisher.wait_acked(120)
        acked_s = time.perf_counter() - started
        self.flood_figures = {"messages": float(self._valid_sent), "publish_s": published_s, "acked_s": acked_s,
                              "per_s": self._valid_sent / acked_s if acked_s > 0 else 0.0}


# --- command line --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `shopfloor simulate line`."""
    parser.add_argument("--config", required=True, metavar="FILE", help="factory config (YAML)")
    parser.add_argument("--mqtt", default="mqtt://127.0.0.1:1883", metavar="URL", help="broker URL")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    parser.add_argument("--seed", type=int, default=1, help="random seed (same seed, same shop floor)")
    add_anchor_argument(parser)
    parser.add_argument("--start", type=datetime.fromisoformat, default=None, metavar="ISO_TIME",
                        help="simulated clock start (default: now); the PLC simulator's --start")
    parser.add_argument("--count", type=int, default=None, metavar="N", help="stop after N valid messages")
    parser.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S real seconds")
    parser.add_argument("--malformed-every", type=int, default=0, metavar="N",
                        help="after every N valid messages publish one malformed one (0: never)")
    parser.add_argument("--truth-file", default=None, metavar="PATH",
                        help="write the acknowledged counts there every second and on exit")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1)
    parser.add_argument("--flood", type=int, default=None, metavar="N",
                        help="benchmark: publish N material levels as fast as possible, then stop")
    parser.add_argument("--client-id", default=None)
    parser.add_argument("--protocol", choices=("3.1.1", "5"), default="5",
                        help="MQTT version (the amqtt fallback broker speaks 3.1.1 only)")
    parser.add_argument("--flood-client", choices=("raw", "paho"), default="raw",
                        help="flood with the built-in pipelining MQTT 3.1.1 publisher (fast) or with paho")
    parser.add_argument("--max-inflight", type=int, default=1000, metavar="N",
                        help="unacknowledged QoS 1 messages on the wire (the broker may cap it lower)")
    parser.add_argument("--flood-rate", type=float, default=None, metavar="R",
                        help="benchmark: pace the flood at R messages/s (default: as fast as possible)")
    parser.add_argument("--flood-lane", type=_lane, default=(0, 1), metavar="K/N",
                        help="benchmark: flood only every N-th material topic starting at K, so N flood "
                             "processes never publish to the same topic (default 0/1: all topics)")


def _lane(text: str) -> tuple[int, int]:
    """Parse `K/N` for --flood-lane."""
    try:
        lane, lanes = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"K/N expected, e.g. 0/2, not {text!r}") from None
    if lanes < 1 or not 0 <= lane < lanes:
        raise argparse.ArgumentTypeError(f"K/N with 0 <= K < N expected, not {text!r}")
    return lane, lanes


def run(args: argparse.Namespace) -> int:
    """Run the simulator until it is done or SIGINT/SIGTERM; 0 when every message was acknowledged."""
    from agent.config import ConfigError, load

    try:
        cfg = load(args.config, resolve_secrets=False)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    sim = LineSimulator(cfg, args.mqtt, args.speed, args.seed, qos=args.qos, malformed_every=args.malformed_every,
                        count=args.count, duration_s=args.duration, flood=args.flood, truth_file=args.truth_file,
                        client_id=args.client_id, protocol=args.protocol, max_inflight=args.max_inflight,
                        flood_client=args.flood_client, flood_rate=args.flood_rate,
                        flood_lane=args.flood_lane, announce=True,
                        start=caught_up(args.start, args.speed, args.sim_anchor), origin=args.start)
    interrupted = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: interrupted.set())
    try:
        sim.start()
        while not sim.done.wait(0.2) and not interrupted.is_set():
            pass
        all_acked = sim.stop()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    truth = sim.truth()
    if sim.flood_figures:
        f = sim.flood_figures
        print(f"flood: {int(f['messages'])} messages, published in {f['publish_s']:.2f} s, all acknowledged after "
              f"{f['acked_s']:.2f} s: {f['per_s']:.0f} messages/s", flush=True)
    print(f"line simulator: {truth['acked']} of {truth['published']} messages acknowledged", flush=True)
    return 0 if all_acked else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _parser = argparse.ArgumentParser(prog="python -m simulators.line", description=__doc__.splitlines()[0])
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
