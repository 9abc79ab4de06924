"""A bare MQTT 3.1.1 QoS 1 publisher for floods (benchmarks): the simulator must not be the thing measured."""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from simulators.line.publisher import MAX_WINDOW, Pending, Tally, shown

log = logging.getLogger(__name__)


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
            raise ValueError(f"MQTT URL like mqtt://host:1883 expected, got {shown(url)!r}")
        self.url, self.qos, self.client_id = shown(url), qos, client_id
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
            payload += _str16(unquote(parts.username))
            if parts.password is not None:
                flags |= 0x40
                payload += _str16(unquote(parts.password))
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
