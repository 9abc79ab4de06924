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

A connection that fails below MQTT (refused, TLS handshake, a certificate the broker or the client does not
accept) leaves `connect_error`, a sentence that names the setting to check; paho itself tells no more than
"connection lost". TLS files that cannot be loaded (missing, not PEM, a key that is not the certificate's) do not
stop the process: make_client logs them and every connection attempt of that client fails with
`connect_error` saying so, while the agent's other sources go on.
"""

from __future__ import annotations

import logging
import ssl
import struct
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.client import PUBACK, MQTTErrorCode
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import MqttTls

log = logging.getLogger(__name__)

READ_CHUNK = 65536
_PUBACK = struct.Struct("!BBH")
# TLS alerts with which a broker refuses the client's certificate (or its absence) during the handshake
_CLIENT_CERT_ALERTS = ("ALERT_UNKNOWN_CA", "ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE_REQUIRED",
                       "ALERT_HANDSHAKE_FAILURE", "ALERT_DECRYPT_ERROR", "ALERT_CERTIFICATE_UNKNOWN",
                       "ALERT_ACCESS_DENIED", "ALERT_UNSUPPORTED_CERTIFICATE", "ALERT_CERTIFICATE_EXPIRED",
                       "ALERT_CERTIFICATE_REVOKED")


class ConnectFailed(ConnectionError):
    """A connection attempt that cannot succeed as configured (TLS files not loaded); paho retries it like any
    failed connect, and `connect_error` says why."""


class BufferedClient(mqtt.Client):
    """A paho Client with buffered socket reads and batched PUBACKs (see the module docstring)."""

    _rbuf: bytes = b""
    _rpos: int = 0
    # why the last connection attempt failed below MQTT, as a sentence; "" while none failed since the last try
    connect_error: str = ""
    # TLS files that could not be loaded: every connection attempt fails with this
    setup_error: str = ""
    tls_files: MqttTls | None = None

    def reconnect(self) -> MQTTErrorCode:
        if self.setup_error:
            self.connect_error = self.setup_error
            raise ConnectFailed(self.setup_error)
        self.connect_error = ""
        try:
            return super().reconnect()
        except OSError as exc:
            self.connect_error = describe_connect_error(exc, self._host, self._port, self.tls_files)
            raise
        except ssl.CertificateError as exc:  # the host name check; a ValueError on some Pythons
            self.connect_error = describe_connect_error(exc, self._host, self._port, self.tls_files)
            raise ConnectFailed(self.connect_error) from exc

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            try:
                data = super()._sock_recv(READ_CHUNK)
            except ssl.SSLError as exc:
                # after a TLS 1.3 handshake the broker's verdict on the client's certificate arrives as the
                # first read fails
                if not self.is_connected():
                    self.connect_error = describe_connect_error(exc, self._host, self._port, self.tls_files)
                raise
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
        client.tls_files = tls
        client.setup_error = _tls_setup(client, tls)
        if client.setup_error:
            log.error("MQTT client %s: %s; it will not connect until this is fixed", client_id, client.setup_error)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    return client, host, port


def _tls_setup(client: BufferedClient, tls: MqttTls) -> str:
    """Load the TLS files into the client; "" when done, else what is wrong with which file."""
    files = (("ca_file", tls.ca_file), ("cert_file", tls.cert_file), ("key_file", tls.key_file))
    for name, path in files:
        if path is not None and not Path(path).is_file():
            return f"TLS: tls.{name} {path} does not exist or is not a file"
    if tls.key_file is not None and tls.cert_file is None:
        return "TLS: tls.key_file is set without tls.cert_file (the client certificate it belongs to)"
    try:
        client.tls_set(ca_certs=str(tls.ca_file) if tls.ca_file else None,
                       certfile=str(tls.cert_file) if tls.cert_file else None,
                       keyfile=str(tls.key_file) if tls.key_file else None,
                       cert_reqs=ssl.CERT_REQUIRED)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if reason == "NO_CERTIFICATE_OR_CRL_FOUND":
            return f"TLS: tls.ca_file {tls.ca_file} holds no PEM certificate"
        if reason == "KEY_VALUES_MISMATCH":
            return f"TLS: tls.key_file {tls.key_file} is not the private key of tls.cert_file {tls.cert_file}"
        return (f"TLS: cannot load tls.cert_file {tls.cert_file} / tls.key_file {tls.key_file} ({reason}): both "
                "must be PEM, the key unencrypted")
    except OSError as exc:
        return f"TLS: cannot read the TLS files: {exc.strerror or exc}"
    client.tls_insecure_set(tls.insecure)
    return ""


def describe_connect_error(exc: BaseException, host: str, port: int, tls: MqttTls | None) -> str:
    """What a failed connection attempt means, in the words of the settings that fix it."""
    where = f"{host}:{port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS: the broker's certificate at {where} is not trusted ({exc.verify_message}): tls.ca_file "
                f"({tls.ca_file if tls and tls.ca_file else 'not set: the system CAs'}) must hold the CA that signed "
                "it, and the URL's host must be named in it")
    if isinstance(exc, ssl.CertificateError):
        return f"TLS: the broker's certificate at {where} does not name the URL's host ({exc})"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        if any(alert in reason for alert in _CLIENT_CERT_ALERTS):
            if tls is None or tls.cert_file is None:
                return (f"TLS: the broker at {where} refused the connection ({reason}): it asks for a client "
                        "certificate; set tls.cert_file and tls.key_file")
            return (f"TLS: the broker at {where} refused the client certificate {tls.cert_file} ({reason}): it "
                    "must be signed by a CA the broker trusts (its cafile) and be valid now")
        if reason == "WRONG_VERSION_NUMBER":
            return f"TLS: {where} does not answer TLS (an mqtts:// URL on a plain MQTT port?)"
        return f"TLS: the handshake with {where} failed ({reason})"
    if isinstance(exc, ConnectionResetError) and tls is not None:
        return f"TLS: {where} closed the connection during the handshake (an mqtts:// URL on a plain MQTT port?)"
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to {where}: connection refused (is the broker running, is the port right?)"
    if isinstance(exc, TimeoutError):
        return f"cannot connect to {where}: no answer (timed out)"
    if isinstance(exc, OSError):
        return f"cannot connect to {where}: {exc.strerror or exc}"
    return f"cannot connect to {where}: {exc}"
