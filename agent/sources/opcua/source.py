"""OPC UA source: subscribes to (or polls) PLC tags with asyncua and hands the values to the pipeline.

Per connection: resolve namespace URIs, read the server's OperationLimits, create monitored items in batches
the server accepts, start pollers for polled tags, then watch. The watchdog reads the server's CurrentTime
every `watchdog_s`; a failed read means a dead connection (reconnect), and a subscription that has sent
neither data nor keep-alive for three keep-alive periods is rebuilt. Reconnects back off up to 10 s and
re-create everything.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import Client, ua
from asyncua.common.subscription import Subscription
from asyncua.crypto import security_policies, uacrypto
from asyncua.ua.ua_binary import struct_from_binary
from asyncua.ua.uaerrors import UaStructParsingError
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from agent.config import OpcUaSource as OpcUaSourceConfig
from agent.config import parse_node_id, resolve_secret
from agent.core.schema import TIME_MAX_NS, TIME_MIN_NS
from agent.sources.base import Backoff, Quality, Reading, SourceContext, TagRef
from agent.sources.opcua import pki
from agent.sources.opcua.wire import FastPublishResult, Unsupported, parse_publish_response

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_NAIVE = datetime(1970, 1, 1)
BACKOFF_CAP_S = 10.0
CURRENT_TIME = ua.NodeId(ua.Int32(ua.ObjectIds.Server_ServerStatus_CurrentTime))
LIMIT_NODES = {
    "MaxMonitoredItemsPerCall": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
    "MaxNodesPerRead": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
}
DEFAULT_BATCH = 1000
CLIENT_HANDLE_BASE = 1000


TRUST_HELP = "config/README.md#trusting-certificates"
TRUST_STEP = f"trust that certificate on the server (see {TRUST_HELP})"
# What a server answers when it does not accept the client's certificate (when the secure channel opens, or
# at CreateSession).
CERTIFICATE_REFUSALS = frozenset(
    getattr(ua.StatusCodes, name) for name in dir(ua.StatusCodes)
    if name.startswith("BadCertificate")
    or name in ("BadSecurityChecksFailed", "BadNoValidCertificates", "BadApplicationSignatureInvalid"))


class SecurityRefused(Exception):
    """The server cannot be trusted or refused our credentials: retrying will not help until config changes."""


def _quiet_asyncua_refusals() -> None:
    """asyncua logs a server's error answer on every connection attempt; the source reports it once itself."""
    logger = logging.getLogger("asyncua.client.ua_client.UASocketProtocol")
    if not any(isinstance(f, _ServerErrorFilter) for f in logger.filters):
        logger.addFilter(_ServerErrorFilter())


class _ServerErrorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(("Got error status from server",
                                                                           "Received an error")))


def to_ns(dt: datetime | None) -> int | None:
    """UTC ns of an OPC UA timestamp; None for the null and "max" DateTimes or anything outside 2000-2200."""
    if dt is None:
        return None
    delta = dt - (EPOCH if dt.tzinfo is not None else EPOCH_NAIVE)
    ns = (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    return ns if TIME_MIN_NS <= ns < TIME_MAX_NS else None


def thumbprint(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest()  # noqa: S324 - OPC UA identifies certificates by SHA-1 thumbprint


def _load_der(path: Path) -> bytes:
    data = path.read_bytes()
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data).public_bytes(encoding=Encoding.DER)
    return data


class _FastSubscription(Subscription):
    """A subscription that hands each publish response to the pipeline as one list, without per-item tasks."""

    def __init__(self, session: Any, params: ua.CreateSubscriptionParameters, source: OpcUaSource) -> None:
        super().__init__(session, params, handler=_NoHandler())  # type: ignore[arg-type]
        self._source = source

    async def publish_callback(self, publish_result: ua.PublishResult | FastPublishResult) -> None:
        self.last_publish_at = time.monotonic()
        self._source.last_publish = self.last_publish_at
        if isinstance(publish_result, FastPublishResult):
            self._fast(publish_result)
            return
        data = publish_result.NotificationMessage.NotificationData
        if not data:
            return
        self.last_sequence_number = int(publish_result.NotificationMessage.SequenceNumber)
        handles = self._source.handle_to_binding
        samples: list[Reading] = []
        now_ns = self._source.now_ns
        for notif in data:
            if isinstance(notif, ua.DataChangeNotification):
                for item in notif.MonitoredItems:
                    index = handles.get(item.ClientHandle)
                    if index is not None:
                        samples.append(_reading(index, item.Value, now_ns))
            elif isinstance(notif, ua.StatusChangeNotification):
                log.warning("OPC UA source %s: subscription status %s", self._source.cfg.id, notif.Status)
                self._source.subscription_lost.set()
        if samples:
            self._source.ingest.readings(self._source.cfg.id, samples)

    def _fast(self, result: FastPublishResult) -> None:
        if not result.NotificationMessage.NotificationData:
            return
        self.last_sequence_number = result.NotificationMessage.SequenceNumber
        handles = self._source.handle_to_binding
        samples: list[Reading] = []
        now = 0
        for handle, value, status, source_ns, server_ns in result.samples:
            index = handles.get(handle)
            if index is None:
                continue
            if server_ns is not None and not TIME_MIN_NS <= server_ns < TIME_MAX_NS:
                server_ns = None
            if source_ns is None or not TIME_MIN_NS <= source_ns < TIME_MAX_NS:
                source_ns = server_ns or now or (now := self._source.now_ns())
            if status == 0:
                samples.append(Reading(index, value, Quality.GOOD, 0, "Good", source_ns, server_ns))
            else:
                samples.append(Reading(index, value, quality_of(status), status,
                                       ua.StatusCode(ua.UInt32(status)).name, source_ns, server_ns))
        if samples:
            self._source.ingest.readings(self._source.cfg.id, samples)


def install_fast_publish(session: Any, fast: Callable[[], None], fallback: Callable[[], None]) -> None:
    """Decode this session's PublishResponses with the fast parser, falling back to asyncua's decoder.

    The session's publish loop calls `self.publish(acks)` and reads only SubscriptionId and the
    NotificationMessage of the result, which FastPublishResult provides; the rest of asyncua is untouched.
    """
    async def publish(acks: list[ua.SubscriptionAcknowledgement]) -> Any:
        request = ua.PublishRequest()
        request.Parameters.SubscriptionAcknowledgements = acks if acks else []
        data = await session._send_request(request, timeout=0)
        try:
            response = parse_publish_response(bytes(data))
            fast()
            return response
        except Unsupported:
            pass
        fallback()
        try:
            return struct_from_binary(ua.PublishResponse, data)
        except Exception as exc:
            raise UaStructParsingError from exc

    session.publish = publish


class _NoHandler:
    """Placeholder handler: _FastSubscription consumes notifications itself."""


def quality_of(status: int) -> Quality:
    """An OPC UA status code's severity (its top two bits) as a quality: Good, Uncertain, Bad."""
    return _QUALITIES[status >> 30]


_QUALITIES = (Quality.GOOD, Quality.UNCERTAIN, Quality.BAD, Quality.BAD)


def _reading(index: int, dv: ua.DataValue | None, now_ns: Callable[[], int]) -> Reading:
    if dv is None:
        return Reading(index, None, Quality.BAD, ua.StatusCodes.BadNoData, "BadNoData", now_ns(), None)
    status = dv.StatusCode.value if dv.StatusCode is not None else 0
    name = "Good" if status == 0 else ua.StatusCode(ua.UInt32(status)).name
    value = dv.Value.Value if dv.Value is not None else None
    server_ns = to_ns(dv.ServerTimestamp)
    source_ns = to_ns(dv.SourceTimestamp) or server_ns or now_ns()
    return Reading(index, value, quality_of(status), status, name, source_ns, server_ns)


class OpcUaSource:
    """One OPC UA server connection and every tag read through it."""

    kind = "opcua"

    def __init__(self, cfg: OpcUaSourceConfig, ctx: SourceContext) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.ingest = ctx.ingest
        self.now_ns = ctx.now_ns
        self.state = ctx.state
        self.health = ctx.health(cfg.id, "opcua")
        self.pki_dir = ctx.data_dir / "pki"
        self.application_uri = f"urn:shopfloor:agent:{ctx.site_id}:{ctx.agent_id}"
        # readings carry the tag's index, a small int
        self.tags: dict[int, TagRef] = {t.index: t for t in ctx.tags}
        self.handle_to_binding: dict[int, int] = {}
        self.last_publish = 0.0
        self.subscription_lost = asyncio.Event()
        for decoder in ("fast", "asyncua"):
            self.state.metrics.publish_decoded.labels(cfg.id, decoder)  # present at 0 from the start
        self.client: Client | None = None
        self._session_was_up = False
        self._client_certificate: Path | None = None
        _quiet_asyncua_refusals()

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, read, and reconnect until `stop` is set."""
        backoff = Backoff()
        while not stop.is_set():
            self._session_was_up = False
            try:
                await self._session(stop)
            except asyncio.CancelledError:
                raise
            except SecurityRefused as exc:
                self._down(str(exc), level=logging.ERROR)
                backoff.current = backoff.cap
            except Exception as exc:  # any failure: tear down, mark OFFLINE, retry
                self._down(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            finally:
                await self._disconnect()
            if stop.is_set():
                break
            if self._session_was_up:
                backoff.reset()  # a session that worked starts the next one's backoff afresh
            await backoff.sleep(stop)

    def pause(self) -> None:
        """Nothing to hold back: OPC UA values are not acknowledged to the server."""

    async def close(self) -> None:
        await self._disconnect()

    def _down(self, error: str, level: int = logging.WARNING) -> None:
        was_up = self.health.connected
        if was_up or self.health.last_error != error:
            log.log(level, "OPC UA source %s (%s) is down: %s", self.cfg.id, self.cfg.endpoint, error)
        if was_up:
            self.state.metrics.reconnects.labels(self.cfg.id).inc()
            self.state.metrics.connected.labels(self.cfg.id).set(0)
        self.health.down(error)
        self.ingest.down(self.cfg.id, f"source {self.cfg.id} down: {error}"[:200])

    async def _disconnect(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            await asyncio.wait_for(client.disconnect(), timeout=2)
        except Exception:
            log.debug("OPC UA source %s: disconnect after failure", self.cfg.id, exc_info=True)

    async def _session(self, stop: asyncio.Event) -> None:
        client = Client(self.cfg.endpoint, timeout=self.cfg.timeout_s, watchdog_intervall=self.cfg.watchdog_s)
        client.application_uri = self.application_uri
        client.name = f"Shopfloor agent {self.state.agent_id}"
        lost = asyncio.Event()

        async def on_lost(exc: Exception) -> None:
            lost.set()

        client.connection_lost_callback = on_lost
        await self._configure_security(client)
        self.client = client
        await self._connect(client)
        # before any value of this session is handed over: values older than this are stamped at it
        self.ingest.up(self.cfg.id)
        node_ids = await self._resolve_nodes(client)
        limits = await self._operation_limits(client)
        subscription = await self._subscribe(client, node_ids, limits)
        pollers = self._start_pollers(client, node_ids, limits)
        self.health.up()
        self._session_was_up = True
        self.state.metrics.connected.labels(self.cfg.id).set(1)
        log.info("OPC UA source %s connected to %s: %s tags subscribed, %s polled", self.cfg.id,
                 self.cfg.endpoint, len(self.handle_to_binding), sum(len(p[1]) for p in pollers))
        tasks = [asyncio.create_task(self._poll(client, period, items, limits["MaxNodesPerRead"]))
                 for period, items in pollers]
        try:
            await self._watch(client, subscription, stop, lost, tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _watch(self, client: Client, subscription: _FastSubscription | None, stop: asyncio.Event,
                     lost: asyncio.Event, pollers: list[asyncio.Task[None]]) -> None:
        params = subscription.parameters if subscription else None
        keepalive_s = (params.RequestedPublishingInterval * params.RequestedMaxKeepAliveCount / 1000
                       if params else self.cfg.watchdog_s)
        silent_after = max(3 * keepalive_s, 2 * self.cfg.watchdog_s)
        while not stop.is_set():
            waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(lost.wait()),
                       asyncio.create_task(self.subscription_lost.wait())]
            done, pending = await asyncio.wait(waiters, timeout=self.cfg.watchdog_s,
                                               return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if stop.is_set():
                return
            if lost.is_set():
                raise ConnectionError("connection lost")
            for poller in pollers:
                if poller.done():
                    poller.result()  # a failed poll raises here and the session is rebuilt
            # A server that answers CurrentTime is alive; if it is alive but the subscription is silent,
            # the subscription died on the server side and is rebuilt.
            await asyncio.wait_for(client.get_node(CURRENT_TIME).read_value(), timeout=self.cfg.timeout_s)
            if subscription is not None and (self.subscription_lost.is_set()
                                             or time.monotonic() - self.last_publish > silent_after):
                log.warning("OPC UA source %s: subscription silent for %.1f s; rebuilding it", self.cfg.id,
                            time.monotonic() - self.last_publish)
                self.subscription_lost.clear()
                self.last_publish = time.monotonic()
                await subscription.recreate()

    async def _connect(self, client: Client) -> None:
        """Connect and open a session; a server refusing the agent's certificate raises SecurityRefused."""
        channel_open = False
        open_secure_channel = client.open_secure_channel

        async def watched_open_secure_channel(renew: bool = False) -> None:
            nonlocal channel_open
            await open_secure_channel(renew)
            channel_open = True

        client.open_secure_channel = watched_open_secure_channel  # type: ignore[method-assign]
        try:
            await client.connect()
        except ua.UaStatusCodeError as exc:
            if self._client_certificate is None or exc.code not in CERTIFICATE_REFUSALS:
                raise
            raise SecurityRefused(f"the server refused the agent's client certificate {self._our_certificate()}: "
                                  f"{ua.StatusCode(exc.code).name}; {TRUST_STEP}") from None
        except AssertionError:
            # asyncua 2.1 fails an assertion when the server answers OpenSecureChannel with an error status
            # (what servers do that check the client certificate as the channel opens) and loses the status
            if self._client_certificate is None or channel_open:
                raise
            raise SecurityRefused(f"the server would not open a secure channel with the agent's client "
                                  f"certificate {self._our_certificate()}; {TRUST_STEP}") from None

    def _our_certificate(self) -> str:
        """The agent's client certificate as a person looks for it on the server: its path and thumbprint."""
        cert = self._client_certificate
        try:
            return f"{cert} (thumbprint {thumbprint(_load_der(cert))})" if cert else "(none)"
        except (OSError, ValueError):
            return str(cert)

    # --- security ---

    async def _configure_security(self, client: Client) -> None:
        sec = self.cfg.security
        password = resolve_secret(self.cfg.password, self.cfg.password_file)
        if self.cfg.username:
            client.set_user(self.cfg.username)
            if password is not None:
                client.set_password(password)
        if sec.policy == "None":
            return
        cert_dir = sec.certificate_dir or self.pki_dir
        cert_file, key_file = await client.setup_self_signed_certificate(
            cert_dir / "agent-key.pem", cert_dir / "agent-cert.der",
            subject_attrs={"organizationName": "Shopfloor"})
        self._client_certificate = Path(cert_file)
        server_der = await self._trusted_server_certificate(client)
        mode = getattr(ua.MessageSecurityMode, sec.mode)
        await client.set_security(security_policies.SecurityPolicyBasic256Sha256, cert_file, key_file,
                                  server_certificate=server_der, mode=mode)

    async def _trusted_server_certificate(self, client: Client) -> bytes:
        """The server's certificate from its endpoints, if the config trusts it; SecurityRefused otherwise."""
        endpoints = await client.connect_and_get_server_endpoints()
        wanted_mode = getattr(ua.MessageSecurityMode, self.cfg.security.mode)
        policy_uri = security_policies.SecurityPolicyBasic256Sha256.URI
        offered = [e for e in endpoints if e.SecurityPolicyUri == policy_uri and e.SecurityMode == wanted_mode]
        if not offered:
            raise SecurityRefused(f"the server offers no endpoint with Basic256Sha256 {self.cfg.security.mode}")
        server_der = offered[0].ServerCertificate
        cert = uacrypto.x509_from_der(server_der)
        server_der = cert.public_bytes(Encoding.DER)
        trusted = set()
        for path in self.cfg.security.trusted_server_certificates:
            try:
                trusted.add(thumbprint(_load_der(path)))
            except (OSError, ValueError) as exc:
                raise SecurityRefused(f"cannot read trusted certificate {path}: {exc}") from None
        # the agent's trust store (agent/sources/opcua/pki.py), read at every attempt: `shopfloor certs trust`
        # takes effect without a restart
        trusted |= pki.trusted_thumbprints(self.pki_dir)
        if thumbprint(server_der) not in trusted:
            seen = pki.save_rejected(self.pki_dir, server_der)
            raise SecurityRefused(
                f"server certificate {cert.subject.rfc4514_string()} (thumbprint {thumbprint(server_der)}) "
                f"is not trusted; saved it to {seen}: after checking it, run `shopfloor certs trust "
                f"{thumbprint(server_der)[:12]}` or add that path to "
                f"sources.opcua[{self.cfg.id}].security.trusted_server_certificates (see {TRUST_HELP})")
        return server_der

    # --- address space ---

    async def _resolve_nodes(self, client: Client) -> dict[int, ua.NodeId]:
        """NodeIds for every binding of this source; `nsu=` namespace URIs resolved against this server."""
        namespaces = await client.get_namespace_array()
        out: dict[int, ua.NodeId] = {}
        for index, tag in self.tags.items():
            namespace, kind, identifier = parse_node_id(tag.address)
            if isinstance(namespace, str):
                if namespace not in namespaces:
                    raise LookupError(f"namespace {namespace} is not on server {self.cfg.endpoint}")
                namespace = namespaces.index(namespace)
            out[index] = ua.NodeId.from_string(f"ns={namespace};{kind}={identifier}")
        return out

    async def _operation_limits(self, client: Client) -> dict[str, int]:
        limits = {}
        for name, object_id in LIMIT_NODES.items():
            try:
                value = await client.get_node(ua.NodeId(ua.Int32(object_id))).read_value()
            except Exception:
                value = 0
            limits[name] = int(value) if value else DEFAULT_BATCH
        return limits

    async def _subscribe(self, client: Client, node_ids: dict[int, ua.NodeId],
                         limits: dict[str, int]) -> _FastSubscription | None:
        tags = self.tags
        subscribed = [i for i, tag in tags.items() if tag.poll_ms is None]
        self.handle_to_binding = {}
        if not subscribed:
            return None
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = self.cfg.publishing_interval_ms
        params.RequestedLifetimeCount = 300
        params.RequestedMaxKeepAliveCount = max(3, int(1000 / self.cfg.publishing_interval_ms))
        params.MaxNotificationsPerPublish = 0
        params.PublishingEnabled = True
        params.Priority = 0
        decoded = self.state.metrics.publish_decoded
        install_fast_publish(client.uaclient.session, decoded.labels(self.cfg.id, "fast").inc,
                             decoded.labels(self.cfg.id, "asyncua").inc)
        subscription = _FastSubscription(client.uaclient.session, params, self)
        await subscription.init()
        self.last_publish = time.monotonic()
        self.subscription_lost.clear()
        requests = []
        for index in subscribed:
            tag = tags[index]
            handle = CLIENT_HANDLE_BASE + index
            self.handle_to_binding[handle] = index
            requests.append(_monitored_item(node_ids[index], handle, tag.sampling_ms, tag.queue_size,
                                            tag.deadband[0] if tag.deadband else None,
                                            tag.deadband[1] if tag.deadband else 0.0))
        step = limits["MaxMonitoredItemsPerCall"]
        calls = -(-len(requests) // step)
        log.info("OPC UA source %s: creating %s monitored items in %s calls (server's MaxMonitoredItemsPerCall %s)",
                 self.cfg.id, len(requests), calls, step)
        for start in range(0, len(requests), step):
            chunk = requests[start:start + step]
            results = await subscription.create_monitored_items(chunk)
            retry = []
            for request, result in zip(chunk, results, strict=True):
                if isinstance(result, ua.StatusCode):
                    if request.RequestedParameters.Filter is not None and result.value in _FILTER_REJECTED:
                        # The server cannot filter; take every change rather than lose the tag.
                        request.RequestedParameters.Filter = None
                        retry.append(request)
                        continue
                    index = self.handle_to_binding.pop(request.RequestedParameters.ClientHandle)
                    log.error("OPC UA source %s: cannot monitor %s: %s", self.cfg.id, tags[index].address,
                              result.name)
            if retry:
                log.warning("OPC UA source %s: server refused %s deadband filters; subscribing without",
                            self.cfg.id, len(retry))
                for request, result in zip(retry, await subscription.create_monitored_items(retry), strict=True):
                    if isinstance(result, ua.StatusCode):
                        index = self.handle_to_binding.pop(request.RequestedParameters.ClientHandle)
                        log.error("OPC UA source %s: cannot monitor %s: %s", self.cfg.id,
                                  tags[index].address, result.name)
        return subscription

    def _start_pollers(self, client: Client, node_ids: dict[int, ua.NodeId],
                       limits: dict[str, int]) -> list[tuple[int, list[tuple[int, ua.NodeId]]]]:
        groups: dict[int, list[tuple[int, ua.NodeId]]] = {}
        for index, tag in self.tags.items():
            poll_ms = tag.poll_ms
            if poll_ms is not None:
                groups.setdefault(poll_ms, []).append((index, node_ids[index]))
        return sorted(groups.items())

    async def _poll(self, client: Client, period_ms: int, items: list[tuple[int, ua.NodeId]],
                    max_per_read: int) -> None:
        period = period_ms / 1000
        log.info("OPC UA source %s: polling %s tags every %s ms in reads of at most %s nodes", self.cfg.id,
                 len(items), period_ms, max_per_read)
        next_at = time.monotonic()
        while True:
            for start in range(0, len(items), max_per_read):
                chunk = items[start:start + max_per_read]
                params = ua.ReadParameters()
                params.TimestampsToReturn = ua.TimestampsToReturn.Both
                for _, node_id in chunk:
                    rv = ua.ReadValueId()
                    rv.NodeId = node_id
                    rv.AttributeId = ua.AttributeIds.Value
                    params.NodesToRead.append(rv)
                results = await client.uaclient.read(params)
                self.ingest.readings(self.cfg.id, [_reading(index, dv, self.now_ns) for (index, _), dv
                                                   in zip(chunk, results, strict=True)])
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


_FILTER_REJECTED = {
    ua.StatusCodes.BadFilterNotAllowed,
    ua.StatusCodes.BadMonitoredItemFilterUnsupported,
    ua.StatusCodes.BadMonitoredItemFilterInvalid,
    ua.StatusCodes.BadDeadbandFilterInvalid,
}


def _monitored_item(node_id: ua.NodeId, handle: int, sampling_ms: float, queue_size: int,
                    deadband_kind: str | None, deadband_value: float) -> ua.MonitoredItemCreateRequest:
    rv = ua.ReadValueId()
    rv.NodeId = node_id
    rv.AttributeId = ua.AttributeIds.Value
    mparams = ua.MonitoringParameters()
    mparams.ClientHandle = handle
    mparams.SamplingInterval = sampling_ms
    mparams.QueueSize = queue_size
    mparams.DiscardOldest = True
    if deadband_kind is not None:
        dfilter = ua.DataChangeFilter()
        dfilter.Trigger = ua.DataChangeTrigger.StatusValue
        dfilter.DeadbandType = (ua.DeadbandType.Absolute if deadband_kind == "absolute"
                                else ua.DeadbandType.Percent)
        dfilter.DeadbandValue = deadband_value
        mparams.Filter = dfilter
    request = ua.MonitoredItemCreateRequest()
    request.ItemToMonitor = rv
    request.MonitoringMode = ua.MonitoringMode.Reporting
    request.RequestedParameters = mparams
    return request
