"""MQTT source (paho-mqtt 2.x): QoS 1 in a persistent session, acknowledged only after the outbox commit.

paho runs its network loop in its own thread and reconnects by itself (backoff 1 s to 10 s); every connect
re-subscribes. Any message arriving proves the subscription path is alive; when nothing has arrived for a
while, a probe message sent to ourselves through the broker checks it, and when probes stop arriving on a
connection that looks healthy, the connection is rebuilt.

Acknowledgements belong to the connection that delivered the message: packet ids are per connection, so an
ack sent on a later connection could acknowledge a different message. A message whose connection is gone
is left unacknowledged; the broker delivers it again in the new session and the outbox absorbs the repeat.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import MqttSource as MqttSourceConfig
from agent.config import resolve_secret
from agent.mqtt_client import make_client
from agent.sources.base import SourceContext
from agent.sources.mqtt.sessions import Session, SessionBook
from agent.sources.mqtt.workers import WorkerPool, share_group, topic_filters, worker_count

log = logging.getLogger(__name__)


class MqttSource:
    """The MQTT source the agent builds: one connection in the agent's own process (`workers: 1`, the default),
    or receiver processes on a shared subscription (agent/sources/mqtt/workers.py)."""

    kind = "mqtt"

    def __init__(self, cfg: MqttSourceConfig, ctx: SourceContext, probe_s: float = 5.0) -> None:
        self.cfg = cfg
        self.id = cfg.id
        count = worker_count(cfg)
        if count == 1:
            current = [Session(cfg.client_id, tuple(topic_filters(cfg.subscribe, cfg.share_group)))]
        else:
            group = share_group(cfg, ctx.agent_id)
            current = [Session(f"{cfg.client_id}-w{k}", tuple(topic_filters(cfg.subscribe, group)))
                       for k in range(count)]
        # Without a record (a first start, or an agent from before the record), the one connection of old is
        # assumed: `client_id` with the plain filters. Retiring a session that does not exist costs a connect.
        book = SessionBook(ctx.data_dir, cfg.id)
        retire, stale = book.plan(current, Session(cfg.client_id, tuple(cfg.subscribe)))
        self.connection: MqttConnection | None = None
        self.pool: WorkerPool | None = None
        if count == 1:
            self.connection = MqttConnection(cfg, ctx, probe_s, share_group=cfg.share_group,
                                             stale_filters=stale.get(cfg.client_id))
        if count > 1 or retire:
            self.pool = WorkerPool(cfg, ctx, count if count > 1 else 0, book, retire, stale)

    async def run(self, stop: asyncio.Event) -> None:
        if self.pool is not None and self.connection is not None:
            await asyncio.gather(self.connection.run(stop), self.pool.run(stop))
        elif self.pool is not None:
            await self.pool.run(stop)
        elif self.connection is not None:
            await self.connection.run(stop)

    def pause(self) -> None:
        for part in (self.connection, self.pool):
            if part is not None:
                part.pause()

    async def close(self) -> None:
        for part in (self.connection, self.pool):
            if part is not None:
                await part.close()


class MqttConnection:
    """One broker connection: subscribes to the configured filters (as `$share/<group>/<filter>` when a share
    group is given) and feeds every message to its Ingest."""

    kind = "mqtt"

    def __init__(self, cfg: MqttSourceConfig, ctx: SourceContext, probe_s: float = 5.0,
                 share_group: str | None = None, health_id: str | None = None,
                 stale_filters: list[str] | None = None, subscribe: bool = True) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.ingest = ctx.ingest
        self.now_ns = ctx.now_ns
        self.state = ctx.state
        self.health = ctx.health(health_id or cfg.id, "mqtt")
        self.filters = topic_filters(cfg.subscribe, share_group) if subscribe else []
        self.stale_filters = list(stale_filters or [])  # subscriptions the session still has and must drop
        self.connected_at = 0.0  # monotonic time of the last connect
        # Each connection has a probe topic of its own: a probe must come back to the connection that sent it,
        # which a shared subscription would not promise.
        probe = cfg.id if health_id is None else f"{cfg.id}/{cfg.client_id}"
        self.probe_topic = f"shopfloor/v1/{ctx.site_id}/_agents/{ctx.agent_id}/probe/{probe}"
        self.probe_s = probe_s
        self._last_probe = time.monotonic()
        self._stop = threading.Event()
        self._paused = False
        self._connection = 0  # which connection delivered a message; see _acknowledge
        self._ack_lock = threading.Lock()  # a connection change and a PUBACK write never interleave
        self._disconnected = threading.Event()  # set by on_disconnect once stopping
        self._watchdog: threading.Thread | None = None
        password = resolve_secret(cfg.password, cfg.password_file)
        self.client, self.host, self.port = make_client(
            cfg.client_id, cfg.url, cfg.protocol, cfg.username, password, cfg.tls,
            manual_ack=True, clean=False)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self._subscribing: dict[int, list[str]] = {}  # SUBSCRIBE message id -> its filters, until the SUBACK
        self.client.max_inflight_messages_set(cfg.receive_maximum)
        ctx.ingest.register_acknowledger(cfg.id, self._acknowledge)

    async def run(self, stop: asyncio.Event) -> None:
        """paho's own thread reads and reconnects; this waits for the agent's stop. The connection stays up
        after it, so that the last commit's acknowledgements still reach the broker (see `close`)."""
        self.start()
        await stop.wait()

    def start(self) -> None:
        self._connect()
        self._watchdog = threading.Thread(target=self._watch, name=f"mqtt-watch-{self.cfg.id}", daemon=True)
        self._watchdog.start()

    def _connect(self) -> None:
        props = None
        if self.cfg.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.cfg.session_expiry_s
            props.ReceiveMaximum = self.cfg.receive_maximum
        self.client.connect_async(self.host, self.port, keepalive=30,
                                  clean_start=False if self.cfg.protocol == "5" else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                                  properties=props)
        self.client.loop_start()

    def pause(self) -> None:
        """Stop taking new messages (they stay with the broker); acknowledgements can still be sent."""
        self._paused = True

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        """Disconnect cleanly: paho's thread writes its queued packets in order, so once the DISCONNECT is out
        (on_disconnect) the PUBACKs of the last commit are too. Stopping the thread at once could drop them,
        and the broker would deliver those messages again after the next start."""
        if self._stop.is_set():
            return
        self._disconnected.clear()
        self._stop.set()
        if self.client.is_connected() and self.client.disconnect() == mqtt.MQTT_ERR_SUCCESS:
            self._disconnected.wait(5)
        self.client.loop_stop()

    # --- paho callbacks (paho's thread) ---

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._down(f"broker refused the connection: {reason}")
            return
        if self.stale_filters:
            client.unsubscribe(self.stale_filters)
        subs: list[tuple[str, int]] = [(f, int(self.cfg.qos)) for f in self.filters]
        subs.append((self.probe_topic, 0))
        if props is not None and getattr(props, "SharedSubscriptionAvailable", 1) == 0 and any(
                f.startswith("$share/") for f, _ in subs):
            self._refused("the broker does not offer shared subscriptions (MQTT 5 CONNACK); use workers: 1 "
                          "or a broker that does (Mosquitto 2, EMQX, HiveMQ)")
        _, mid = client.subscribe(subs)
        if mid is not None:
            self._subscribing[mid] = [f for f, _ in subs]
        self.connected_at = time.monotonic()
        with self._ack_lock:
            self._connection += 1
        self._last_probe = time.monotonic()
        self.health.up()
        self.state.metrics.connected.labels(self.cfg.id).set(1)
        log.info("MQTT source %s connected to %s (session present: %s), subscribed to %s", self.cfg.id,
                 self.cfg.url, flags.session_present, ", ".join(self.filters) or "nothing (retiring the session)")

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[Any], props: Any) -> None:
        """A filter the broker refuses (its ACL, or no shared subscriptions) would leave the source connected and
        silent: it is an error in /healthz and the log, counted as a read error."""
        filters = self._subscribing.pop(mid, [])
        refused = [f"{f} ({r})" for f, r in zip(filters, reasons, strict=False) if r.is_failure]
        if refused:
            self._refused(f"the broker refused the subscription to {', '.join(refused)}")

    def _refused(self, error: str) -> None:
        log.error("MQTT source %s (%s): %s; nothing arrives on it", self.cfg.id, self.cfg.url, error)
        self.health.last_error = error
        self.state.metrics.read_errors.labels(self.cfg.id, "subscription refused").inc()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        with self._ack_lock:
            self._connection += 1  # before paho reconnects: no ack of this connection may reach the next one
        if self._stop.is_set():
            self._disconnected.set()
            return
        if not self.health.connected and self.health.last_error.startswith("broker refused"):
            return  # the refusal says more than the disconnect that follows it
        # a TLS refusal of the client's certificate shows as a lost connection: connect_error says what it was
        self._down(self.client.connect_error or f"disconnected: {reason}")

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        """No connection (refused, TLS, TLS files): the client's connect_error says why and what to check."""
        if not self._stop.is_set():
            self._down(self.client.connect_error or "cannot connect to the broker")

    def _down(self, error: str) -> None:
        if self.health.connected:
            log.warning("MQTT source %s (%s) is down: %s", self.cfg.id, self.cfg.url, error)
            self.state.metrics.reconnects.labels(self.cfg.id).inc()
            self.state.metrics.connected.labels(self.cfg.id).set(0)
        elif self.health.last_error != error:
            log.warning("MQTT source %s (%s): %s", self.cfg.id, self.cfg.url, error)
        self.health.down(error)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        received = self.now_ns()
        self._last_probe = time.monotonic()
        if msg.topic == self.probe_topic:
            return
        if self._paused:
            return  # not acknowledged: the broker delivers it again in the next session
        token = (self._connection, msg.mid) if msg.qos > 0 else None
        self.ingest.message(self.cfg.id, msg.topic, bytes(msg.payload), received, token)

    def _acknowledge(self, tokens: list[tuple[int, int]]) -> None:
        """PUBACKs after the outbox commit, on the connection that delivered each message, or not at all."""
        with self._ack_lock:
            current = self._connection
            mids = [mid for connection, mid in tokens if connection == current]
            if mids and self.client.is_connected():
                self.client.ack_many(mids)

    # --- silent-subscription watchdog ---

    def _watch(self) -> None:
        while not self._stop.wait(self.probe_s):
            if not self.client.is_connected():
                continue
            silent = time.monotonic() - self._last_probe
            if silent < self.probe_s:
                continue  # messages are flowing: the subscription is alive
            self.client.publish(self.probe_topic, b"probe", qos=0)
            if silent > 3 * self.probe_s:
                log.warning("MQTT source %s: no message and no probe back for %.0f s; rebuilding the connection",
                            self.cfg.id, silent)
                self._last_probe = time.monotonic()
                self._down("subscription silent")
                with self._ack_lock:
                    self._connection += 1  # acks still queued for this connection must not reach the next one
                    self.client.disconnect()
                self.client.loop_stop()
                self._connect()
