"""The agent's two worker threads.

Ingest: source readings -> mapper -> one outbox commit per batch -> acknowledgements to the sources (MQTT
PUBACK is sent only after the commit). Drain: outbox -> historian -> settle -> live topics. The pipeline is
the sources' `Ingest` (agent/sources/base.py): they only call its thread-safe methods `readings`, `message`,
`register_acknowledger`, `down` and `up`.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from agent.config import FactoryConfig
from agent.core.mapping import DeadLetter, Mapper, MappingResult
from agent.core.schema import Point
from agent.health import AgentState
from agent.historian import Historian, HistorianError, WriteResult
from agent.outbox import Batch, Outbox
from agent.sources.base import Reading

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 3600.0
DRAIN_BATCH_FACTOR = 4
# How often the agent writes each PLC source's heartbeat: a machine whose values do not change sends no
# points, and its board must still know that its data reaches now (dashboard watermark, docs/kpi.md).
HEARTBEAT_EVERY_S = 5.0
# Dead letters logged one by one: a burst, then a steady rate; beyond that a count every DEAD_LETTER_SUMMARY_S
DEAD_LETTER_LOG_BURST = 20
DEAD_LETTER_LOG_PER_S = 1.0
DEAD_LETTER_SUMMARY_S = 10.0
# How often the ingest thread looks for a stalled historian (agent/health.py STALL_AFTER_S)
STALL_CHECK_S = 2.0


class LivePublisher(Protocol):
    def publish(self, points: Sequence[Point]) -> None: ...

    def offer(self, values: Iterable[tuple[str, int, bytes]]) -> None: ...


class Pipeline:
    """Owns the mapper, the outbox and the sinks; runs the ingest and drain threads."""

    def __init__(self, cfg: FactoryConfig, outbox: Outbox, historian: Historian, state: AgentState,
                 live: LivePublisher | None = None, now_ns: Callable[[], int] = time.time_ns,
                 heartbeat_sources: Sequence[str] = ()) -> None:
        self.cfg = cfg
        self.outbox = outbox
        self.historian = historian
        self.live = live
        self.state = state
        self.now_ns = now_ns
        self.mapper = Mapper(cfg.mapping_plan(), outbox.load_state())
        self.bindings = self.mapper.bindings
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._drain_wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self.commit_interval = cfg.outbox.commit_interval_ms / 1000
        self.batch_points = cfg.outbox.batch_points
        self.fatal: BaseException | None = None
        self._acknowledgers: dict[str, Callable[[list[Any]], None]] = {}
        self._next_heartbeat = 0.0
        self._next_stall_check = 0.0
        self._dead_log_budget = float(DEAD_LETTER_LOG_BURST)
        self._dead_log_at = time.monotonic()
        self._dead_unlogged = 0  # dead letters not logged one by one since the last summary line
        self._dead_summary_at = 0.0
        self._stall_logged = False
        self.heartbeat_sources = list(heartbeat_sources)

    # --- source-facing API, the sources' Ingest (any thread) ---

    def readings(self, source: str, readings: list[Reading]) -> None:
        self._queue.put(("tags", source, readings))

    def message(self, source: str, topic: str, payload: bytes, received_ns: int, ack: Any = None) -> None:
        """`ack` is the source's token for this message (None: nothing to acknowledge); after the commit the
        pipeline hands all tokens of a source to the acknowledger registered for it, in one call."""
        self._queue.put(("mqtt", source, topic, payload, received_ns, ack))

    def register_acknowledger(self, source: str, acknowledge: Callable[[list[Any]], None]) -> None:
        self._acknowledgers[source] = acknowledge

    def down(self, source: str, reason: str) -> None:
        self._queue.put(("down", source, reason, self.now_ns()))

    def live_values(self, values: list[tuple[str, int, bytes]]) -> None:
        if self.live is not None:
            self.live.offer(values)

    def up(self, source: str) -> None:
        """The source has a working session again. Call it before the session's first reading is handed over:
        readings are mapped in the order they were queued, and older source timestamps are stamped at this
        time after an outage (see agent/core/mapping.py)."""
        self._queue.put(("up", source, self.now_ns()))

    # --- lifecycle ---

    def start(self) -> None:
        for name, target in (("ingest", self._ingest_loop), ("drain", self._drain_loop)):
            t = threading.Thread(target=self._guard(target), name=f"shopfloor-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # a dead worker must stop the agent, not leave it half alive
                log.exception("worker thread %s failed", threading.current_thread().name)
                self.fatal = exc
                self._stop.set()
        return run

    def flush(self, timeout: float = 10.0) -> bool:
        """Commit (and acknowledge) everything received so far; True when done within `timeout`."""
        done = threading.Event()
        self._queue.put(("flush", done))
        return done.wait(timeout) if self.running else False

    def stop(self, timeout: float = 10.0) -> None:
        """Commit what was received, drain what the historian accepts within `timeout`, then stop."""
        deadline = time.monotonic() + timeout
        self.flush(timeout)
        while time.monotonic() < deadline and self.outbox.depth()[1] and not self._stop.is_set():
            self._drain_wake.set()
            time.sleep(0.02)
        self._stop.set()
        self._drain_wake.set()
        for t in self._threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))

    @property
    def stopped(self) -> bool:
        """True when both worker threads have ended (after stop)."""
        return not any(t.is_alive() for t in self._threads)

    @property
    def running(self) -> bool:
        return not self._stop.is_set()

    # --- ingest ---

    def _ingest_loop(self) -> None:
        metrics = self.state.metrics
        while not self._stop.is_set():
            self._watch_historian()
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                self._heartbeat()
                self._log_dead_letters([])  # the count of those not logged, when it is due
                continue
            deadline = time.monotonic() + self.commit_interval
            result = MappingResult()
            acks: dict[str, list[Any]] = {}
            received: dict[str, int] = {}
            newest: dict[str, int] = {}  # per source, the newest source timestamp in this commit
            flushes: list[threading.Event] = []
            self._map(first, result, acks, received, newest, flushes)
            while len(result.points) < self.batch_points and not flushes:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                try:
                    item = self._queue.get(timeout=timeout)
                except queue.Empty:
                    break
                self._map(item, result, acks, received, newest, flushes)
            self.outbox.enqueue(result.points, result.dead_letters, self.mapper.take_dirty(), self.now_ns())
            for source, tokens in acks.items():
                self._acknowledgers[source](tokens)
            for flushed in flushes:
                flushed.set()
            for source, n in received.items():
                metrics.messages_in.labels(source).inc(n)
            for source, source_ns in newest.items():
                self._note_lag(source, source_ns)
            if result.points:
                metrics.points_in.inc(len(result.points))
                self._drain_wake.set()
            for dead in result.dead_letters:
                metrics.dead_letters.labels(dead.source).inc()
                if dead.unknown:
                    metrics.unknown_ids.labels(dead.unknown).inc()
            self._log_dead_letters(result.dead_letters)
            if self._queue.empty():
                self._heartbeat()

    def _log_dead_letters(self, dead_letters: list[DeadLetter]) -> None:
        """One log line per dead letter, at most DEAD_LETTER_LOG_BURST at once and DEAD_LETTER_LOG_PER_S after
        that: a flood of bad or made-up messages (anyone on the broker can send them) must not fill the disk
        with log lines. The rest are counted in one line every DEAD_LETTER_SUMMARY_S; all are in the outbox's
        dead_letter table and in shopfloor_dead_letters_total."""
        now = time.monotonic()
        self._dead_log_budget = min(DEAD_LETTER_LOG_BURST, self._dead_log_budget
                                    + (now - self._dead_log_at) * DEAD_LETTER_LOG_PER_S)
        self._dead_log_at = now
        for dead in dead_letters:
            if self._dead_log_budget >= 1:
                self._dead_log_budget -= 1
                log.warning("dead letter from %s %s: %s", dead.source, dead.topic, dead.reason)
            else:
                self._dead_unlogged += 1
        if self._dead_unlogged and now >= self._dead_summary_at:
            log.warning("%s more dead letters were not logged one by one (too many at once); the outbox's "
                        "dead_letter table holds them, /metrics counts them (shopfloor_dead_letters_total, "
                        "shopfloor_unknown_ids_total)", self._dead_unlogged)
            self._dead_unlogged = 0
            self._dead_summary_at = now + DEAD_LETTER_SUMMARY_S

    def _watch_historian(self) -> None:
        """Every STALL_CHECK_S, on the ingest thread (the drain may be the one waiting): log once when the
        historian stalls without a failed write to say so, and once when writes are confirmed again."""
        if time.monotonic() < self._next_stall_check:
            return
        self._next_stall_check = time.monotonic() + STALL_CHECK_S
        _, points, _ = self.outbox.depth()
        error = self.state.historian_error(points, self.outbox.oldest_ns() if points else None, time.time())
        stalled = bool(error) and not self.state.last_write_error
        if stalled and not self._stall_logged:
            log.error("%s", error)
            self._stall_logged = True
        elif not error and self._stall_logged:
            log.info("historian: writes are confirmed again")
            self._stall_logged = False

    def _heartbeat(self) -> None:
        """Every HEARTBEAT_EVERY_S, while nothing waits to be mapped: each PLC source's heartbeat, stamped now.
        It goes through the outbox after everything received before it, so a historian holding it holds all
        the source's readings up to its time (less a publishing interval in flight)."""
        if time.monotonic() < self._next_heartbeat or not self.heartbeat_sources:
            return
        self._next_heartbeat = time.monotonic() + HEARTBEAT_EVERY_S
        now = self.now_ns()
        site = self.cfg.site.id
        points = []
        for source in self.heartbeat_sources:
            health = self.state.sources.get(source)
            points.append(Point("source_heartbeat", {"site": site, "source": source},
                                {"connected": bool(health and health.connected)}, now))
        self.outbox.enqueue(points, [], {}, now)
        self._drain_wake.set()

    def _map(self, item: tuple[Any, ...], result: MappingResult, acks: dict[str, list[Any]],
             received: dict[str, int], newest: dict[str, int], flushes: list[threading.Event]) -> None:
        kind = item[0]
        if kind == "tags":
            _, source, readings = item
            bindings = self.bindings
            reading = self.mapper.reading
            newest_here = 0
            for index, value, quality, status, status_name, source_ns, server_ns in readings:
                reading(bindings[index], value, quality, status, status_name, source_ns, server_ns, result)
                if source_ns > newest_here:
                    newest_here = source_ns
            received[source] = received.get(source, 0) + len(readings)
            newest[source] = max(newest.get(source, 0), newest_here)
        elif kind == "mqtt":
            _, source, topic, payload, received_ns, ack = item
            before = len(result.points)
            self.mapper.mqtt_message(source, topic, payload, received_ns, result)
            if ack is not None:
                acks.setdefault(source, []).append(ack)
            received[source] = received.get(source, 0) + 1
            if len(result.points) > before:
                newest[source] = max(newest.get(source, 0), result.points[-1].time_ns)
        elif kind == "flush":
            flushes.append(item[1])
        elif kind == "down":
            _, source, reason, at_ns = item
            down = self.mapper.source_down(source, at_ns, reason)
            result.points.extend(down.points)
        elif kind == "up":
            _, source, at_ns = item
            self.mapper.source_up(source, at_ns)

    def _note_lag(self, source: str, source_ns: int) -> None:
        health = self.state.sources.get(source)
        if health is None or not source_ns:
            return
        now = time.time()
        health.last_data_ns = max(health.last_data_ns, source_ns)
        health.last_received = now
        self.state.metrics.lag.labels(source).set(max(0.0, now - source_ns / 1e9))

    # --- drain ---

    def _drain_loop(self) -> None:
        """Outbox -> historian, with up to `in_flight` writes at once (the historian's `in_flight`; 1 when it
        has none, as the SQLite historian: one claim after the other, on this thread).

        In flight: claims, each a run of outbox batches handed out oldest first by `Outbox.claim`, whose
        cursor never hands a batch out twice; each is written by its own `historian.write` on a writer thread,
        so that one claim is encoded while the others wait for the server.

        Settled when: a claim leaves the outbox only when its own write was confirmed (the historian's
        WriteResult; points it refused for good become dead letters in the same transaction), whatever became
        of the claims before and after it. Ended writes are taken in claim order, so live topics get points in
        the order they came in. A claim whose write failed stays in the outbox; no new claim is taken until
        the writes still in flight have ended (the confirmed ones settle); then, with nothing in flight, the
        outbox is released, which hands every unsettled batch out again oldest first, and the retry backs off.

        So at every instant the outbox holds every batch not yet confirmed: a crash (SIGKILL) loses nothing;
        what was confirmed but not yet settled is written again, and idempotent writes absorb that.
        """
        in_flight = max(1, int(getattr(self.historian, "in_flight", 1)))
        writers = _InlineWriter() if in_flight == 1 else ThreadPoolExecutor(in_flight, "shopfloor-drain-write")
        pending: dict[Future[WriteResult], _Claim] = {}
        backoff = 0.5
        failing = False  # the last write failed (for logging the failure once and the recovery once)
        retry: HistorianError | None = None  # a write failed in this round: claim nothing until all have ended
        next_retention = 0.0
        try:
            while not self._stop.is_set():
                if time.monotonic() > next_retention:
                    next_retention = time.monotonic() + RETENTION_EVERY_S
                    self._retention()
                # Ended writes are taken in claim order, so live topics see points in the order they came
                # in; a failed write does not hold back the settling of those after it.
                while pending and (future := next(iter(pending))).done():
                    claim = pending.pop(future)
                    try:
                        result = future.result()
                    except HistorianError as exc:
                        retry = exc
                        self._write_failed(exc, failing)
                        failing = True
                        continue
                    self._settle(claim.batches, claim.points, result)
                    if retry is None:
                        if failing:
                            log.info("historian writes succeed again; draining the outbox")
                        failing = False
                        backoff = 0.5
                        self.state.last_write_error = ""
                if retry is not None:
                    if pending:
                        self._drain_wake.wait(0.25)
                        self._drain_wake.clear()
                        continue
                    self.outbox.release()  # nothing in flight: every unsettled batch goes out again
                    # Full jitter keeps many agents from hammering a recovering historian in step; a server
                    # that says when to come back (Retry-After, or a person has to fix rights) is not asked
                    # sooner.
                    self._stop.wait((retry.retry_after or 0.0) + random.uniform(0, backoff))
                    backoff = min(backoff * 2, 10.0)
                    retry = None
                    continue
                claimed = False
                while len(pending) < in_flight and not self._stop.is_set():
                    # Historian commits larger than ingest commits: fewer, bigger transactions under backlog.
                    batches = self.outbox.claim(DRAIN_BATCH_FACTOR * self.batch_points)
                    if not batches:
                        break
                    claim = _Claim(batches, [p for b in batches for p in b.points])
                    future = writers.submit(self._write_claim, claim.points)
                    pending[future] = claim
                    # a write ending wakes this thread as new points do
                    future.add_done_callback(self._wake_drain)
                    claimed = True
                if not claimed:
                    self._drain_wake.wait(0.25)
                    self._drain_wake.clear()
        finally:
            self._end_writes(pending, writers)

    def _wake_drain(self, _future: Future[WriteResult]) -> None:
        self._drain_wake.set()

    def _end_writes(self, pending: dict[Future[WriteResult], _Claim], writers: _Writers) -> None:
        """On stop: let the writes in flight end (within the historian's timeout) and settle the confirmed
        ones; the others stay in the outbox for the next start."""
        for future, claim in pending.items():
            try:
                result = future.result()
            except HistorianError:
                continue
            except BaseException:  # the drain is ending anyway (stop, or another failure being raised)
                log.exception("historian write failed while the drain stopped")
                continue
            self._settle(claim.batches, claim.points, result)
        writers.shutdown(wait=True)

    def _write_claim(self, points: list[Point]) -> WriteResult:
        """Write one claim's points (on a writer thread when several are in flight): the historian's result,
        with what it refuses for good found point by point; HistorianError when the claim must wait."""
        try:
            return self.historian.write(points)
        except HistorianError as exc:
            if exc.retry:
                raise
            return self._write_one_by_one(points, exc)

    def _write_failed(self, exc: HistorianError, failing: bool) -> None:
        self.state.metrics.write_errors.labels("historian").inc()
        if not failing or str(exc) != self.state.last_write_error:
            log.error("historian write failed, points stay in the outbox: %s", exc)
        self.state.last_write_error = str(exc)

    def _write_one_by_one(self, points: list[Point], first: HistorianError) -> WriteResult:
        """Find the points the historian refuses for good; the rest are written."""
        log.error("historian refused a batch for good (%s); writing its %s points one by one", first, len(points))
        result = WriteResult(accepted=0)
        for point in points:
            try:
                result.accepted += self.historian.write([point]).accepted
            except HistorianError as exc:
                if exc.retry:
                    raise
                result.rejected.append((point, str(exc)))
        return result

    def _settle(self, batches: list[Batch], points: list[Point], result: WriteResult) -> None:
        """The batches of one confirmed write leave the outbox; refused points become dead letters; live
        topics get the points."""
        metrics = self.state.metrics
        now_ns = self.now_ns()
        rejected = [DeadLetter("historian", p.measurement, reason, repr(p).encode(), now_ns)
                    for p, reason in result.rejected]
        self.outbox.settle(batches, rejected)
        if rejected:
            metrics.dead_letters.labels("historian").inc(len(rejected))
            log.warning("historian rejected %s points; kept as dead letters (first: %s)", len(rejected),
                        rejected[0].reason)
        metrics.points_out.labels("historian").inc(result.accepted)
        self.state.last_write = time.time()
        metrics.last_write.set(self.state.last_write)
        if self.live is not None:
            try:
                self.live.publish(points)
            except Exception:
                log.exception("live publisher failed; the historian has the points")

    def _retention(self) -> None:
        try:
            removed = self.historian.apply_retention(self.now_ns())
        except HistorianError as exc:
            log.warning("historian retention failed: %s", exc)
            return
        if removed:
            log.info("historian retention removed %s points", removed)


@dataclass(frozen=True)
class _Claim:
    """Outbox batches written together, and their points in order."""

    batches: list[Batch]
    points: list[Point]


class _Writers(Protocol):
    def submit(self, fn: Callable[[list[Point]], WriteResult], points: list[Point], /) -> Future[WriteResult]: ...

    def shutdown(self, wait: bool = True) -> None: ...


class _InlineWriter:
    """One write at a time, on the drain thread itself: a historian without `in_flight` (SQLite) is driven as
    it always was, without a thread hop."""

    def submit(self, fn: Callable[[list[Point]], WriteResult], points: list[Point], /) -> Future[WriteResult]:
        future: Future[WriteResult] = Future()
        try:
            future.set_result(fn(points))
        except HistorianError as exc:
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True) -> None:
        pass
