"""S7 source: polls the tags of one Siemens S7 PLC over ISO-on-TCP with snap7's asyncio client.

A session connects (rack/slot or TSAPs), takes the PDU size the PLC grants, and runs one poller per poll period
(a tag's `poll_ms`, else the source's). Each poller reads its tags with the plan of plan.py (ranges merged,
several items per request) and hands over a tag's reading only when its value, quality or status changed (a
process value by more than its deadband). An item the PLC refuses (address out of range, no such DB, access
denied), a value that does not decode, or a request left unanswered becomes a BAD reading saying why, counted in
`shopfloor_source_read_errors_total` and logged once per tag and status. A refused tag is read on its own from then
on, so that its neighbours in the same range keep their values. A lost connection marks the source down (its
machines OFFLINE) and reconnects with `Backoff`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterable

from snap7.async_client import AsyncClient
from snap7.datatypes import S7Area
from snap7.error import S7ProtocolError, S7TimeoutError
from snap7.s7protocol import S7Protocol
from snap7.type import Area, Parameter

from agent.sources.base import Backoff, Quality, Reading, SourceContext, TagRef
from agent.sources.s7.model import S7Address, S7SourceConfig, parse_address
from agent.sources.s7.plan import ReadPlan, plan_reads
from agent.sources.s7.values import (
    TIMEOUT,
    UNDECODABLE,
    Last,
    Undecodable,
    decode,
    header_error_text,
    is_news,
    item_error_text,
)
from agent.sources.s7.wire import SUCCESS, MalformedResponse, parse_items

log = logging.getLogger(__name__)

AREA_CODES = {"DB": S7Area.DB, "M": S7Area.MK, "I": S7Area.PE, "Q": S7Area.PA}
DISCONNECT_TIMEOUT_S = 2.0
Outcome = tuple[int, bytes | str]  # (0xFF, the item's bytes) or (status, what it means)
ITEM_CODE = re.compile(r"\(0x([0-9a-fA-F]{2})\)$")  # how snap7's read_area names a refused item's return code
# snap7 logs every connect and disconnect at INFO; a PLC that is away would fill the log while we retry
if logging.getLogger("snap7").level == logging.NOTSET:
    logging.getLogger("snap7").setLevel(logging.WARNING)

class ConnectionLost(Exception):
    """The session cannot go on; the message says why."""


class S7Source:
    """One S7 PLC and every tag read through it."""

    kind = "s7"

    def __init__(self, cfg: S7SourceConfig, ctx: SourceContext) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.ingest = ctx.ingest
        self.now_ns = ctx.now_ns
        self.metrics = ctx.state.metrics
        self.health = ctx.health(cfg.id, self.kind)
        self.errors = self.metrics.read_errors
        for reason in ("item", "undecodable", "timeout", "request"):
            self.errors.labels(cfg.id, reason)  # present at 0 from the start
        self.tags: dict[int, tuple[TagRef, S7Address]] = {}
        self.unreadable: dict[int, str] = {}  # tags whose address does not parse (the config check stops these)
        for tag in ctx.tags:
            try:
                self.tags[tag.index] = (tag, parse_address(tag.address))
            except ValueError as exc:
                self.unreadable[tag.index] = str(exc)
                log.error("S7 source %s: %s %s is not read: %s", cfg.id, tag.machine, tag.name, exc)
        self.alone: set[int] = set()  # tags the PLC refused once: read on their own from then on
        self.last: dict[int, Last] = {}
        self.logged: dict[int, str] = {}  # tag -> the bad status text last logged for it
        self.refused: dict[int, str] = {}  # tags the PLC does not answer (refused, timed out), and why
        self.client: AsyncClient | None = None
        # several items per request through snap7's request builder (3.3); one request per item without it
        self.multi_read = hasattr(AsyncClient, "_send_receive") and hasattr(S7Protocol, "build_multi_read_request")
        self.paused = False
        self.closed = False
        self._session_worked = False

    # --- the Source protocol ---

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, poll, and reconnect until `stop` is set; never raises for what the PLC or network does."""
        backoff = Backoff()
        while not stop.is_set():
            self._session_worked = False
            try:
                await self._session(stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever the network or the PLC did: down, then try again
                if not self.closed:
                    self._down(_describe(exc))
            finally:
                await self._disconnect()
            if self.closed:  # the agent paused and closed this source: no new session until stop
                await stop.wait()
            if stop.is_set():
                break
            if self._session_worked:
                backoff.reset()
            await backoff.sleep(stop)

    def pause(self) -> None:
        """Hand over nothing more (the agent commits what it has, then closes the source)."""
        self.paused = True

    async def close(self) -> None:
        """Disconnect for good: the session's end is no lost connection, and no new session opens."""
        self.closed = True
        await self._disconnect()

    # --- a session ---

    async def _session(self, stop: asyncio.Event) -> None:
        client = AsyncClient()
        client.set_param(Parameter.PDURequest, self.cfg.max_pdu)
        self.client = client
        host, port = self.cfg.host, self.cfg.port
        tsaps = self.cfg.tsaps
        if tsaps is None:
            rack, slot = self.cfg.rack_slot
        else:
            # snap7 builds the remote TSAP from connection type, rack and slot: any TSAP splits into those
            local, remote = tsaps
            client.set_connection_params(host, local, remote)
            client.set_connection_type(remote >> 8)
            rack, slot = (remote & 0xFF) >> 5, remote & 0x1F
        try:
            await asyncio.wait_for(client.connect(host, rack, slot, port), timeout=self.cfg.timeout_s)
        except TimeoutError:
            raise ConnectionLost(f"no answer from {host}:{port} within {self.cfg.timeout_s:g} s") from None
        if client.connection is not None:
            client.connection.timeout = self.cfg.timeout_s  # each answer's deadline from now on
        pdu = client.get_pdu_length()
        self.last = {}
        self.refused = {}
        self.ingest.up(self.id)  # before the session's first reading
        self.health.up()
        self.metrics.connected.labels(self.id).set(1)
        self._session_worked = True
        log.info("S7 source %s connected to %s:%s (%s), PDU %s bytes, %s tags", self.id, host, port,
                 f"TSAP {tsaps[0]:04X}/{tsaps[1]:04X}" if tsaps else f"rack {rack} slot {slot}", pdu,
                 len(self.tags))
        if self.unreadable:
            self._hand([Reading(i, None, Quality.BAD, UNDECODABLE, text, self.now_ns())
                        for i, text in self.unreadable.items()])
        pollers = [asyncio.create_task(self._poll(client, period, keys, pdu))
                   for period, keys in sorted(self._periods().items())]
        stopped = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([stopped, *pollers], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopped:
                    task.result()  # a poller that ended has failed: its exception ends the session
        finally:
            for task in (stopped, *pollers):
                task.cancel()
            await asyncio.gather(stopped, *pollers, return_exceptions=True)

    def _periods(self) -> dict[int, list[int]]:
        periods: dict[int, list[int]] = {}
        for index, (tag, _) in self.tags.items():
            periods.setdefault(tag.poll_ms or self.cfg.poll_ms, []).append(index)
        return periods

    async def _poll(self, client: AsyncClient, period_ms: int, keys: list[int], pdu: int) -> None:
        loop = asyncio.get_running_loop()
        plan, planned_alone = self._plan(keys, pdu), set(self.alone)
        log.debug("S7 source %s: %s tags every %s ms in %s requests", self.id, len(keys), period_ms,
                  len(plan.requests))
        next_at = loop.time()
        while True:
            if planned_alone != self.alone:
                plan, planned_alone = self._plan(keys, pdu), set(self.alone)
            readings = await self.read(client, plan)
            if planned_alone != self.alone:  # the PLC refused a joined range: read again with its tags apart
                plan, planned_alone = self._plan(keys, pdu), set(self.alone)
                readings = await self.read(client, plan)
            self._hand(readings)
            next_at += period_ms / 1000
            now = loop.time()
            if next_at < now:  # reads take longer than the period: poll back to back, do not catch up
                next_at = now
            await asyncio.sleep(next_at - now)

    def _plan(self, keys: Iterable[int], pdu: int) -> ReadPlan:
        return plan_reads([(k, self.tags[k][1]) for k in keys], pdu, merge_gap=self.cfg.merge_gap_bytes,
                          max_items=self.cfg.max_items_per_read, alone=self.alone)

    async def read(self, client: AsyncClient, plan: ReadPlan) -> list[Reading]:
        """Every tag of `plan` read once, as readings (BAD ones included); ConnectionLost when the session
        cannot go on (after handing over the BAD readings of a read left unanswered)."""
        buffers = [bytearray(span.size) for span in plan.spans]
        failed: list[list[tuple[int, int, int, str]]] = [[] for _ in plan.spans]  # (offset, size, status, text)
        stamps = [0] * len(plan.spans)
        lost: str | None = None
        for request in plan.requests:
            items = []
            for piece in request:
                span = plan.spans[piece.span]
                items.append((int(AREA_CODES[span.area]), span.db, span.start + piece.offset, piece.size))
            outcomes: list[Outcome]
            if lost:
                outcomes = [(TIMEOUT, f"S7 read timed out: {lost}")] * len(items)
            else:
                try:
                    outcomes = await self._exchange(client, items)
                except S7ProtocolError as exc:
                    if not exc.error_code:
                        raise ConnectionLost(_describe(exc)) from exc
                    # the PLC refused the whole request
                    outcomes = [(exc.error_code, header_error_text(exc.error_code, str(exc)))] * len(items)
                except (S7TimeoutError, TimeoutError):
                    lost = f"no answer within {self.cfg.timeout_s:g} s"
                    outcomes = [(TIMEOUT, f"S7 read timed out: {lost}")] * len(items)
            now = self.now_ns()
            for piece, (status, content) in zip(request, outcomes, strict=True):
                stamps[piece.span] = now
                if isinstance(content, bytes):
                    buffers[piece.span][piece.offset:piece.offset + piece.size] = content
                else:
                    failed[piece.span].append((piece.offset, piece.size, status, content))
        readings = self._readings(plan, buffers, failed, stamps)
        if lost:
            self._hand(readings)
            raise ConnectionLost(lost)
        return readings

    async def _exchange(self, client: AsyncClient, items: list[tuple[int, int, int, int]]) -> list[Outcome]:
        """One multi-item read: per item (0xFF, its bytes) or (return code, what it means)."""
        if not self.multi_read:
            return [await self._read_one(client, *item) for item in items]
        request = client.protocol.build_multi_read_request(items)
        # snap7's own deadline (the connection's timeout) fires first; this one guards against it not doing so
        response = await asyncio.wait_for(client._send_receive(request), timeout=2 * self.cfg.timeout_s)
        try:
            parsed = parse_items(response.get("raw_data", b""), [size for *_, size in items])
        except MalformedResponse as exc:
            raise ConnectionLost(f"malformed answer: {exc}") from exc
        return [(SUCCESS, r.data) if r.code == SUCCESS else (r.code, item_error_text(r.code)) for r in parsed]

    async def _read_one(self, client: AsyncClient, area: int, db: int, start: int, size: int) -> Outcome:
        """One item through snap7's public read_area (a snap7 without the multi-item request builder)."""
        try:
            data = await asyncio.wait_for(client.read_area(Area(area), db, start, size), timeout=2 * self.cfg.timeout_s)
        except S7ProtocolError as exc:
            code = ITEM_CODE.search(str(exc))
            if exc.error_code or code is None:
                raise
            return int(code[1], 16), item_error_text(int(code[1], 16))
        return SUCCESS, bytes(data)

    def _readings(self, plan: ReadPlan, buffers: list[bytearray], failed: list[list[tuple[int, int, int, str]]],
                  stamps: list[int]) -> list[Reading]:
        readings: list[Reading] = []
        for index, span in enumerate(plan.spans):
            stamp = stamps[index]
            for key, offset in span.tags:
                tag, address = self.tags[key]
                error = next(((status, text) for start, size, status, text in failed[index]
                              if start < offset + address.size and offset < start + size), None)
                if error is not None:
                    status, text = error
                    if status != TIMEOUT and len(span.tags) > 1:
                        self.alone.add(key)  # the PLC refused the range: from now on, each of its tags alone
                    readings.append(Reading(key, None, Quality.BAD, status, f"{address}: {text}", stamp))
                    continue
                try:
                    value = decode(address, bytes(buffers[index][offset:offset + address.size]), tag.signal)
                except Undecodable as exc:
                    readings.append(Reading(key, None, Quality.BAD, UNDECODABLE,
                                            f"{address}: undecodable: {exc}", stamp))
                    continue
                readings.append(Reading(key, value, Quality.GOOD, 0, "Good", stamp))
        return readings

    def _hand(self, readings: list[Reading]) -> None:
        """Hand over the readings that are news; count every Bad one, log it once per tag and status."""
        news: list[Reading] = []
        newly_bad: list[Reading] = []
        for reading in readings:
            if reading.quality == Quality.BAD:  # every Bad read counts, news or not: its rate says reads fail now
                self.errors.labels(self.id, _reason(reading.status)).inc()
            tag = self.tags.get(reading.tag)
            deadband = tag[0].deadband if tag and tag[0].signal == "process_value" else None
            if not is_news(self.last.get(reading.tag), reading.value, reading.quality, reading.status, deadband):
                continue
            if reading.quality == Quality.BAD:
                if self.logged.get(reading.tag) != reading.status_text:
                    self.logged[reading.tag] = reading.status_text
                    newly_bad.append(reading)
                if reading.status != UNDECODABLE:
                    self.refused[reading.tag] = reading.status_text
                    # still connected, but /healthz says why tags read Bad (until the PLC answers them again)
                    self.health.last_error = reading.status_text
                elif self.refused.pop(reading.tag, None) is not None and not self.refused:
                    self.health.last_error = ""
            else:
                if reading.tag in self.logged:
                    del self.logged[reading.tag]
                    log.info("S7 source %s: %s reads again", self.id, self._name(reading.tag))
                if self.refused.pop(reading.tag, None) is not None and not self.refused:
                    self.health.last_error = ""
            self.last[reading.tag] = Last(reading.value, reading.quality, reading.status)
            news.append(reading)
        for reading in newly_bad:
            log.warning("S7 source %s: %s is Bad: %s", self.id, self._name(reading.tag), reading.status_text)
        if news and not self.paused:
            self.ingest.readings(self.id, news)

    def _name(self, key: int) -> str:
        tag = self.tags.get(key)
        return f"{tag[0].machine}.{tag[0].name}" if tag else f"tag {key}"

    # --- down and disconnect ---

    def _down(self, error: str) -> None:
        was_up = self.health.connected
        if was_up or self.health.last_error != error:
            log.warning("S7 source %s (%s:%s) is down: %s", self.id, self.cfg.host, self.cfg.port, error)
        if was_up:
            self.metrics.reconnects.labels(self.id).inc()
        self.metrics.connected.labels(self.id).set(0)
        self.health.down(error)
        self.ingest.down(self.id, f"source {self.id} down: {error}"[:200])

    async def _disconnect(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), timeout=DISCONNECT_TIMEOUT_S)


def _reason(status: int) -> str:
    if status == UNDECODABLE:
        return "undecodable"
    if status == TIMEOUT:
        return "timeout"
    return "item" if status < 0x100 else "request"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionLost):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
