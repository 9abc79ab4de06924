"""The MQTT client every part of Shopfloor uses (the source, the live publisher, the dashboard's live view):
make_client configures it from a source's settings. It is paho's Client, tuned for a QoS 1 subscriber that takes
tens of thousands of messages a second.

Three changes, all inside paho's own hooks, so the protocol handling stays paho's:
- Reads: paho asks the socket for a packet a few bytes at a time (one system call for the command byte, one
  per remaining-length byte, one for the body). Here the socket is read 64 KiB at a time and paho's small
  reads are served from that buffer; packets already buffered are handled before the loop waits again.
- Acknowledgements: `ack_many` queues the PUBACKs of a whole outbox commit as one write, instead of one
  queued packet and one loop wake-up per message.
- Dispatch: with no per-topic callbacks registered (the agent registers none), a message goes straight to
  on_message without matching its topic against the empty filter tree.
"""

from __future__ import annotations

import ssl
import struct
from collections.abc import Sequence
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.client import PUBACK, MQTTErrorCode
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import MqttTls

READ_CHUNK = 65536
_PUBACK = struct.Struct("!BBH")


class BufferedClient(mqtt.Client):
    """A paho Client with buffered socket reads and batched PUBACKs (see the module docstring)."""

    _rbuf: bytes = b""
    _rpos: int = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(READ_CHUNK)
            if not data:
                return data  # closed by the broker: paho handles b""
            self._rbuf, self._rpos = data, 0
        start = self._rpos
        self._rpos = min(start + bufsize, len(self._rbuf))
        return self._rbuf[start:self._rpos]

    def _sock_close(self) -> None:
        self._rbuf, self._rpos = b"", 0
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        # Whole packets may still sit in the buffer; the socket will not wake select() for them.
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None and self._rpos < len(self._rbuf):
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return rc

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        if self._on_message_filtered._root._children:  # per-topic callbacks exist: paho's own dispatch
            super()._handle_on_message(message)
            return
        on_message = self.on_message
        if on_message is None:
            return
        with self._in_callback_mutex:
            try:
                on_message(self, self._userdata, message)
            except Exception as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise

    def ack_many(self, mids: Sequence[int]) -> None:
        """Send the PUBACKs of many QoS 1 messages as one write."""
        if not mids or self._sock is None:
            return
        packet = b"".join(_PUBACK.pack(PUBACK, 2, mid) for mid in mids)
        self._packet_queue(PUBACK, packet, 0, 1)


def make_client(client_id: str, url: str, protocol: str, username: str | None, password: str | None,
                tls: MqttTls | None, manual_ack: bool = False, clean: bool = True,
                will: tuple[str, bytes] | None = None) -> tuple[BufferedClient, str, int]:
    """A configured paho client plus the host and port to connect to (shared by the source and the publisher)."""
    parsed = urlparse(url)
    secure = parsed.scheme == "mqtts"
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or (8883 if secure else 1883)
    v5 = protocol == "5"
    client = BufferedClient(CallbackAPIVersion.VERSION2, client_id=client_id,
                            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                            clean_session=None if v5 else clean, manual_ack=manual_ack)
    if username:
        client.username_pw_set(username, password)
    if secure or tls is not None:
        tls = tls or MqttTls()
        client.tls_set(ca_certs=str(tls.ca_file) if tls.ca_file else None,
                       certfile=str(tls.cert_file) if tls.cert_file else None,
                       keyfile=str(tls.key_file) if tls.key_file else None,
                       cert_reqs=ssl.CERT_REQUIRED)
        client.tls_insecure_set(tls.insecure)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    return client, host, port
