"""Modbus TCP source: polls registers, coils and discrete inputs of one device (or gateway) with pymodbus.

Tags are grouped by their poll period; each period's addresses are planned into the fewest read requests the
device allows (agent/sources/modbus/plan.py). A reading is handed to the agent when its value or its quality
changed (a process value with a deadband: when it moved more than that), and every tag once at the start of each
session. An exception response or an unanswered request makes the tags it held Bad readings, with the exception
in their status text; a value the tag's signal cannot carry (a NaN count, a negative counter) is a Bad reading
saying why. A lost connection marks every machine of the source OFFLINE and is retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from agent.sources.base import Backoff, Quality, Reading, SourceContext, TagRef
from agent.sources.modbus.codec import (
    STATUS_BAD_RESPONSE,
    STATUS_NO_RESPONSE,
    STATUS_UNDECODABLE,
    decode,
    exception_text,
    for_signal,
    orders,
    register_bit,
)
from agent.sources.modbus.model import ModbusAddress, ModbusSourceConfig, parse_address
from agent.sources.modbus.plan import ReadRequest, Wanted, plan_reads, split

log = logging.getLogger(__name__)

KIND = "modbus"
ILLEGAL_ADDRESS = 2

class _PymodbusNoise(logging.Filter):
    """pymodbus logs every unanswered request and refused connection; the source reports each once itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not text.startswith(("No response received", "ERROR: No response", "Connection to",
                                    "Not connected", "Failed to connect", "Repeating"))


def _quiet_pymodbus() -> None:
    logger = logging.getLogger("pymodbus.logging")
    if not any(isinstance(f, _PymodbusNoise) for f in logger.filters):
        logger.addFilter(_PymodbusNoise())


@dataclass(frozen=True)
class _Tag:
    ref: TagRef
    address: ModbusAddress
    byte_order: str
    word_order: str


class ModbusSource:
    """One Modbus TCP connection and every tag read through it."""

    kind = KIND

    def __init__(self, cfg: ModbusSourceConfig, ctx: SourceContext) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.ctx = ctx
        self.health = ctx.health(cfg.id, KIND)
        self.read_errors = ctx.state.metrics.read_errors
        for reason in ("exception", "timeout", "request", "undecodable"):
            self.read_errors.labels(cfg.id, reason)  # present at 0 from the start
        self.refs = {ref.index: ref for ref in ctx.tags}
        self.tags: dict[int, _Tag] = {}
        self.unreadable: dict[int, str] = {}  # tags whose address does not parse: why
        for ref in ctx.tags:
            try:
                address = parse_address(ref.address)
            except ValueError as exc:
                self.unreadable[ref.index] = f"address {ref.address!r}: expected {exc}"
                continue
            byte_order, word_order = orders(address.order, cfg.byte_order, cfg.word_order)
            self.tags[ref.index] = _Tag(ref, address, byte_order, word_order)
        self.schedule = self._plan()
        self.client: AsyncModbusTcpClient | None = None
        self.last: dict[int, tuple[Any, Quality, str]] = {}  # what was last handed over, per tag
        self.failing: dict[int, str] = {}  # tags whose value cannot be used, and why (logged once per cause)
        self.failing_reads: dict[tuple[int, str, int, int], str] = {}  # requests that fail, and why (same)
        self.split_requests: dict[ReadRequest, list[ReadRequest]] = {}
        self._paused = False
        self._session_was_up = False
        _quiet_pymodbus()

    def _plan(self) -> dict[int, list[ReadRequest]]:
        """The read requests of each poll period (ms)."""
        by_period: dict[int, list[Wanted]] = {}
        for index, tag in self.tags.items():
            unit = tag.address.unit if tag.address.unit is not None else self.cfg.unit_id
            period = tag.ref.poll_ms or self.cfg.poll_ms
            by_period.setdefault(period, []).append(
                Wanted(index, unit, tag.address.table, tag.address.offset, tag.address.count))
        return {period: plan_reads(wanted, self.cfg.max_registers_per_read, self.cfg.max_bits_per_read,
                                   self.cfg.max_gap)
                for period, wanted in sorted(by_period.items())}

    # --- the Source contract ---

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, poll, and reconnect until `stop` is set."""
        backoff = Backoff()
        for period, requests in self.schedule.items():
            log.info("Modbus source %s: %s tags every %s ms in %s read requests", self.id,
                     sum(len(r.items) for r in requests), period, len(requests))
        while not stop.is_set():
            self._session_was_up = False
            try:
                await self._session(stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever the network or the device did: OFFLINE, then retry
                if not self._paused:  # paused, the agent is closing it: no OFFLINE for its machines
                    self._down(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            finally:
                await self.close()
            if self._paused:
                await stop.wait()  # hands nothing more and does not reconnect; returns when told to stop
            if stop.is_set():
                break
            if self._session_was_up:
                backoff.reset()
            await backoff.sleep(stop)

    def pause(self) -> None:
        self._paused = True

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.close()

    # --- a session ---

    def _down(self, error: str) -> None:
        was_up = self.health.connected
        if was_up or self.health.last_error != error:
            log.warning("Modbus source %s (%s:%s) is down: %s", self.id, self.cfg.host, self.cfg.port, error)
        metrics = self.ctx.state.metrics
        if was_up:
            metrics.reconnects.labels(self.id).inc()
            metrics.connected.labels(self.id).set(0)
        self.health.down(error)
        self.ctx.ingest.down(self.id, f"source {self.id} down: {error}"[:200])

    async def _session(self, stop: asyncio.Event) -> None:
        client = AsyncModbusTcpClient(self.cfg.host, port=self.cfg.port, timeout=self.cfg.timeout_s,
                                      retries=self.cfg.retries, reconnect_delay=0, name=f"modbus-{self.id}")
        self.client = client
        if not await client.connect():
            raise ConnectionError(f"cannot connect to {self.cfg.host}:{self.cfg.port}")
        self.last.clear()
        self.ctx.ingest.up(self.id)  # before the session's first reading
        self.health.up()
        self._session_was_up = True
        self.ctx.state.metrics.connected.labels(self.id).set(1)
        log.info("Modbus source %s connected to %s:%s", self.id, self.cfg.host, self.cfg.port)
        if self.unreadable:
            now = self.ctx.now_ns()
            self._hand([Reading(index, None, Quality.BAD, STATUS_UNDECODABLE, why, now)
                        for index, why in self.unreadable.items()])
        periods = list(self.schedule)
        next_due = dict.fromkeys(periods, time.monotonic())
        while not stop.is_set():
            for period in periods:
                if next_due[period] <= time.monotonic():
                    await self._poll(client, self.schedule[period])
                    # a poll that overran its period starts the next one now, not a burst of missed ones
                    next_due[period] = max(next_due[period] + period / 1000, time.monotonic())
            if not client.connected:
                raise ConnectionError("connection lost")
            wait = min(next_due.values(), default=time.monotonic() + 1) - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait)

    async def _poll(self, client: AsyncModbusTcpClient, requests: list[ReadRequest]) -> None:
        readings: list[Reading] = []
        for request in requests:
            for piece in self.split_requests.get(request, [request]):
                readings += await self._read(client, piece)
        self._hand(readings)

    async def _read(self, client: AsyncModbusTcpClient, request: ReadRequest) -> list[Reading]:
        """The readings of one request's tags: decoded values, or Bad readings saying what went wrong."""
        call = self._function(client, request.table)
        try:
            response = await call(request.offset, count=request.count, device_id=request.unit)
        except ModbusIOException as exc:
            if not client.connected:
                raise ConnectionError("connection lost") from exc
            return self._bad(request, STATUS_NO_RESPONSE,
                             f"no answer from unit {request.unit} within {self.cfg.timeout_s:g} s")
        except ConnectionException as exc:
            raise ConnectionError(f"connection lost: {exc}") from exc
        now = self.ctx.now_ns()
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            if code == ILLEGAL_ADDRESS and len(request.items) > 1 and request not in self.split_requests:
                return await self._read_split(client, request)
            return self._bad(request, code, exception_text(code), now)
        values = response.bits if request.table in ("co", "di") else response.registers
        if len(values) < request.count:
            return self._bad(request, STATUS_BAD_RESPONSE,
                             f"answer holds {len(values)} values where {request.count} were asked", now)
        if self.failing_reads.pop(self._key(request), None) is not None:
            log.info("Modbus source %s: unit %s answers %s:%s-%s again", self.id, request.unit, request.table,
                     request.offset, request.end - 1)
            if not self.failing_reads:
                self.health.last_error = ""
        return [self._reading(self.tags[item.key], values[item.offset - request.offset:
                                                          item.offset - request.offset + item.count], now)
                for item in request.items]

    async def _read_split(self, client: AsyncModbusTcpClient, request: ReadRequest) -> list[Reading]:
        """The device refused a read spanning registers it does not have: read that request's tags alone."""
        pieces = split(request)
        self.split_requests[request] = pieces
        log.info("Modbus source %s: unit %s refuses reading %s %s-%s as one; reading its %s tags in %s requests",
                 self.id, request.unit, request.table, request.offset, request.end - 1, len(request.items),
                 len(pieces))
        readings: list[Reading] = []
        for piece in pieces:
            readings += await self._read(client, piece)
        return readings

    @staticmethod
    def _function(client: AsyncModbusTcpClient, table: str) -> Callable[..., Awaitable[Any]]:
        functions: dict[str, Callable[..., Awaitable[Any]]] = {
            "hr": client.read_holding_registers, "ir": client.read_input_registers,
            "co": client.read_coils, "di": client.read_discrete_inputs}
        return functions[table]

    @staticmethod
    def _key(request: ReadRequest) -> tuple[int, str, int, int]:
        return (request.unit, request.table, request.offset, request.count)

    def _bad(self, request: ReadRequest, status: int, why: str, now: int | None = None) -> list[Reading]:
        when = now if now is not None else self.ctx.now_ns()
        text = f"{why} (reading {request.table}:{request.offset}-{request.end - 1} of unit {request.unit})"
        if self.failing_reads.get(self._key(request)) != text:
            self.failing_reads[self._key(request)] = text
            log.warning("Modbus source %s: %s tags read as Bad: %s", self.id, len(request.items), text)
        # still connected, but /healthz says why some tags read Bad (until every request is answered again)
        self.health.last_error = text
        return [Reading(item.key, None, Quality.BAD, status, text, when) for item in request.items]

    def _reading(self, tag: _Tag, values: list[Any], now: int) -> Reading:
        address = tag.address
        raw: int | float | bool
        if address.is_bits:
            raw = bool(values[0])
        elif address.bit is not None:
            raw = register_bit(values[0], address.bit)
        else:
            raw = decode(values, address.type, tag.byte_order, tag.word_order)
        value, why = for_signal(tag.ref.signal, raw)
        if value is None:
            return Reading(tag.ref.index, None, Quality.BAD, STATUS_UNDECODABLE,
                           f"{address} read {raw}: {why}", now)
        return Reading(tag.ref.index, value, Quality.GOOD, 0, "Good", now)

    # --- handing readings over ---

    def _hand(self, readings: list[Reading]) -> None:
        """Hand over the readings that changed; log each tag's trouble once and its recovery once. Every Bad
        reading counts in shopfloor_source_read_errors, changed or not: its rate says reads are failing now."""
        for r in readings:
            if r.quality == Quality.BAD:
                self.read_errors.labels(self.id, _reason(r.status)).inc()
        changed = [r for r in readings if self._changed(r)]
        if not changed or self._paused:
            return
        for r in changed:
            self.last[r.tag] = (r.value, r.quality, r.status_text)
            self._note_failure(r)

        self.ctx.ingest.readings(self.id, changed)

    def _changed(self, r: Reading) -> bool:
        last = self.last.get(r.tag)
        if last is None:
            return True
        value, quality, status_text = last
        if quality != r.quality or status_text != r.status_text:
            return True
        if r.quality != Quality.GOOD or value == r.value:
            return False
        tag = self.tags.get(r.tag)
        deadband = tag.ref.deadband if tag else None
        if deadband is None or tag is None or tag.ref.signal != "process_value":
            return True
        kind, band = deadband
        step = abs(r.value - value)
        return step > (band if kind == "absolute" else abs(value) * band / 100)

    def _note_failure(self, r: Reading) -> None:
        """Log a tag whose value cannot be used, once per cause (failed reads are logged per request)."""
        ref = self.refs.get(r.tag)
        where = f"{ref.machine} {ref.name} ({ref.address})" if ref else f"tag {r.tag}"
        if r.quality == Quality.BAD and r.status != STATUS_UNDECODABLE:
            return
        if r.quality == Quality.GOOD:
            if self.failing.pop(r.tag, None) is not None:
                log.info("Modbus source %s: %s reads again", self.id, where)
            return
        if self.failing.get(r.tag) != r.status_text:
            self.failing[r.tag] = r.status_text
            log.warning("Modbus source %s: %s is Bad: %s", self.id, where, r.status_text)


def _reason(status: int) -> str:
    """The `reason` label of a Bad reading's count in shopfloor_source_read_errors."""
    if status == STATUS_NO_RESPONSE:
        return "timeout"
    if status == STATUS_UNDECODABLE:
        return "undecodable"
    if status == STATUS_BAD_RESPONSE:
        return "request"
    return "exception"
