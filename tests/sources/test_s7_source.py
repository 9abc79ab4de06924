"""The S7 source against snap7's real server: readings on change, Bad answers, undecodable values, timeouts,
a lost and regained connection (hand-made tags, a recording Ingest)."""

from __future__ import annotations

import asyncio
import math
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from snap7.server import Server
from snap7.type import SrvArea

from agent.health import AgentState
from agent.sources.base import Quality, Reading, SourceContext, TagRef
from agent.sources.s7.model import S7SourceConfig
from agent.sources.s7.source import S7Source

CLOCK_NS = 1_800_000_000_000_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Recorder:
    """The agent as the source sees it: everything handed over, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.lock = threading.Lock()

    def readings(self, source: str, readings: list[Reading]) -> None:
        self.events.append(("readings", list(readings)))

    def message(self, *args: Any) -> None:
        raise AssertionError("an S7 source hands no broker messages")

    def register_acknowledger(self, *args: Any) -> None:
        pass

    def down(self, source: str, reason: str) -> None:
        self.events.append(("down", reason))

    def up(self, source: str) -> None:
        self.events.append(("up", source))

    def all_readings(self) -> list[Reading]:
        return [r for kind, rs in self.events if kind == "readings" for r in rs]

    def latest(self) -> dict[int, Reading]:
        return {r.tag: r for r in self.all_readings()}

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


class Plc:
    """snap7's server with DB1 (a machine) and M (bit memory), restartable on its port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.db1 = bytearray(40)
        self.mk = bytearray(16)
        self.server: Server | None = None

    def start(self) -> None:
        self.server = Server(log=False)
        self.server.register_area(SrvArea.DB, 1, self.db1)
        self.server.register_area(SrvArea.MK, 0, self.mk)
        self.server.start_to("127.0.0.1", self.port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def put(self, fmt: str, offset: int, *values: Any) -> None:
        struct.pack_into(fmt, self.db1, offset, *values)


@pytest.fixture
def plc() -> Iterator[Plc]:
    server = Plc()
    server.start()
    yield server
    server.stop()


# DB1: StateCode INT @0, TotalCount DINT @2, Temperature REAL @6, Product STRING[10] @10 (12 bytes), Bit @22.0
TAGS = [
    TagRef(0, "DB1.DBW0", "press-1", "state", "StateCode"),
    TagRef(1, "DB1.DBD2:UDINT", "press-1", "count", "TotalCount"),
    TagRef(2, "DB1.DBD6:REAL", "press-1", "process_value", "Temperature", deadband=("absolute", 0.5)),
    TagRef(3, "DB1.DBB10:STRING[10]", "press-1", "product", "Product"),
    TagRef(4, "DB1.DBX22.1", "press-1", "state_bit", "Running"),
    TagRef(5, "M4.0", "press-1", "state_bit", "Ready"),
]


def fill(plc: Plc, product: bytes = b"KT-100") -> None:
    plc.put(">hIf", 0, 1, 41, 70.0)
    plc.db1[10:22] = bytes([10, len(product)]) + product.ljust(10, b"\0")
    plc.db1[22] = 0b10
    plc.mk[4] = 1


class Running:
    """A source running in its own event loop thread, stopped on exit."""

    def __init__(self, plc: Plc, tags: list[TagRef] | None = None, **cfg: Any) -> None:
        self.recorder = Recorder()
        self.state = AgentState("edge-1")
        config = S7SourceConfig(id="plc-s7", host="127.0.0.1", port=plc.port, poll_ms=50, **cfg)
        ctx = SourceContext(self.recorder, self.state, tags if tags is not None else TAGS, Path("."), "site",
                            "edge-1", lambda: CLOCK_NS)
        self.source = S7Source(config, ctx)
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self.stop_event = asyncio.Event()
        await self.source.run(self.stop_event)
        await self.source.close()

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(lambda: self.stop_event and self.stop_event.set())
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the source did not stop"

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
        deadline = threading.Event()
        for _ in range(int(timeout / 0.02)):
            if condition():
                return
            deadline.wait(0.02)
        raise AssertionError(f"timed out waiting for {what}; events: {self.recorder.events[-6:]}")

    def metric(self, name: str, **labels: str) -> float:
        value = self.state.metrics.registry.get_sample_value(name, labels)
        return value if value is not None else 0.0


def test_first_session_hands_every_tag_after_up_then_only_changes(plc: Plc) -> None:
    fill(plc)
    with Running(plc) as run:
        run.wait(lambda: len(run.recorder.all_readings()) >= 6, "the first readings")
        assert run.recorder.kinds()[0] == "up"
        first = run.recorder.events[1][1]
        assert {(r.tag, r.value, r.quality) for r in first} == {
            (0, 1, Quality.GOOD), (1, 41, Quality.GOOD), (2, 70.0, Quality.GOOD), (3, "KT-100", Quality.GOOD),
            (4, True, Quality.GOOD), (5, True, Quality.GOOD)}
        assert {r.source_ns for r in first} == {CLOCK_NS}  # the agent's clock, not the wall clock
        assert run.source.health.connected and run.metric("shopfloor_source_connected", source="plc-s7") == 1
        handed = len(run.recorder.all_readings())
        threading.Event().wait(0.3)  # several polls of unchanged values
        assert len(run.recorder.all_readings()) == handed
        plc.put(">I", 2, 42)
        plc.put(">f", 6, 70.3)  # within the 0.5 deadband
        run.wait(lambda: run.recorder.latest()[1].value == 42, "the new count")
        threading.Event().wait(0.2)
        assert [r.tag for r in run.recorder.all_readings()[handed:]] == [1]
        plc.put(">f", 6, 70.6)  # beyond the deadband of the last value handed over (70.0)
        run.wait(lambda: run.recorder.latest()[2].value == pytest.approx(70.6), "the temperature")


def test_refused_items_are_bad_with_the_reason_and_their_neighbours_stay_good(plc: Plc) -> None:
    fill(plc)
    tags = [*TAGS,
            TagRef(6, "DB1.DBD38", "press-1", "alarm", "AlarmCode"),  # runs 2 bytes past the end of DB1
            TagRef(7, "DB9.DBW0", "press-2", "state", "StateCode"),  # no DB9
            TagRef(8, "DB1.DBW36", "press-1", "alarm", "Other")]  # read in the same range as DBD38
    with Running(plc, tags) as run:
        run.wait(lambda: len(run.recorder.latest()) == 9, "a reading of every tag")
        latest = run.recorder.latest()
        assert latest[6].quality == Quality.BAD and latest[6].status == 0x05
        assert latest[6].status_text == "DB1.DBD38: S7 error 0x05: address out of range (the area or DB is shorter)"
        assert latest[7].quality == Quality.BAD and latest[7].status == 0x0A
        assert "DB9.DBW0: S7 error 0x0A: item not available" in latest[7].status_text
        # the range DBW36..DBD38 was refused as a whole; read apart, DBW36 is good, and it never was Bad
        assert all(r.quality == Quality.GOOD for r in run.recorder.all_readings() if r.tag in (0, 8))
        first = run.metric("shopfloor_source_read_errors_total", source="plc-s7", reason="item")
        assert first >= 2  # both refused tags, on every poll while they are refused
        run.wait(lambda: run.metric("shopfloor_source_read_errors_total", source="plc-s7", reason="item") >= first + 2,
                 "the refusals of a later poll counted too")
        assert len([r for r in run.recorder.all_readings() if r.tag == 6 and r.quality == Quality.BAD]) == 1
        assert run.source.health.connected
        assert "S7 error 0x" in run.source.health.last_error  # /healthz says why tags read Bad


def test_health_clears_when_the_plc_answers_again(plc: Plc) -> None:
    fill(plc)
    assert plc.server is not None
    tags = [*TAGS, TagRef(6, "DB2.DBW0", "press-2", "state", "StateCode")]
    with Running(plc, tags) as run:
        run.wait(lambda: run.recorder.latest().get(6) is not None, "the Bad reading of DB2")
        assert "DB2.DBW0: S7 error 0x0A" in run.source.health.last_error
        plc.server.register_area(SrvArea.DB, 2, bytearray(4))
        run.wait(lambda: run.recorder.latest()[6].quality == Quality.GOOD, "DB2 read")
        assert run.source.health.last_error == "" and run.source.health.connected


@pytest.mark.parametrize(("write", "tag", "says"), [
    (lambda p: p.put(">f", 6, math.nan), 2, "DB1.DBD6:REAL: undecodable: REAL is nan"),
    (lambda p: p.db1.__setitem__(slice(10, 14), b"\x0a\x0cAB"), 3, "STRING says it holds 12 characters"),
    (lambda p: p.db1.__setitem__(slice(10, 14), b"\x0a\x02\xff\xfe"), 3, "STRING is not UTF-8 text: ff fe"),
])
def test_an_undecodable_value_is_bad_and_counted_then_recovers(plc: Plc, write: Callable[[Plc], None], tag: int,
                                                               says: str) -> None:
    fill(plc)
    with Running(plc) as run:
        run.wait(lambda: len(run.recorder.latest()) == 6, "the first readings")
        write(plc)
        run.wait(lambda: run.recorder.latest()[tag].quality == Quality.BAD, "the Bad reading")
        bad = run.recorder.latest()[tag]
        assert bad.value is None and says in bad.status_text
        assert run.metric("shopfloor_source_read_errors_total", source="plc-s7", reason="undecodable") >= 1
        assert all(r.quality == Quality.GOOD for r in run.recorder.all_readings() if r.tag != tag)
        fill(plc, product=b"KT-200")
        run.wait(lambda: run.recorder.latest()[tag].quality == Quality.GOOD, "the value back")


def test_a_lost_plc_is_down_and_its_return_is_a_new_session(plc: Plc) -> None:
    fill(plc)
    with Running(plc) as run:
        run.wait(lambda: len(run.recorder.latest()) == 6, "the first readings")
        plc.stop()
        run.wait(lambda: "down" in run.recorder.kinds(), "the source to go down")
        assert not run.source.health.connected
        assert run.metric("shopfloor_source_connected", source="plc-s7") == 0
        assert run.metric("shopfloor_source_reconnects_total", source="plc-s7") == 1
        plc.put(">I", 2, 50)
        before = len(run.recorder.events)
        plc.start()
        run.wait(lambda: "up" in run.recorder.kinds()[before:], "the source to come back")
        run.wait(lambda: len([r for k, rs in run.recorder.events[before:] if k == "readings" for r in rs]) == 6,
                 "every tag again in the new session")
        after = run.recorder.events[before:]
        kinds = [k for k, _ in after]
        assert kinds.index("up") < kinds.index("readings")
        assert run.recorder.latest()[1].value == 50 and run.source.health.connected


def test_an_unanswered_read_is_bad_then_the_session_is_rebuilt(plc: Plc) -> None:
    fill(plc)
    assert plc.server is not None
    with Running(plc, timeout_s=0.3) as run:
        run.wait(lambda: len(run.recorder.latest()) == 6, "the first readings")
        plc.server.lock_area(SrvArea.DB, 1)  # the server's reader waits for the area: no answer
        try:
            run.wait(lambda: run.recorder.latest()[0].quality == Quality.BAD, "the timed out reading")
            assert "S7 read timed out: no answer within 0.3 s" in run.recorder.latest()[0].status_text
            run.wait(lambda: "down" in run.recorder.kinds(), "the session to end")
        finally:
            plc.server.unlock_area(SrvArea.DB, 1)
        assert run.metric("shopfloor_source_read_errors_total", source="plc-s7", reason="timeout") >= 1
        run.wait(lambda: run.recorder.latest()[0].quality == Quality.GOOD, "good readings again")


def test_one_request_per_item_reads_the_same(plc: Plc) -> None:
    """Without snap7's multi-item request builder the source reads item by item, with the same results."""
    fill(plc)
    tags = [*TAGS, TagRef(6, "DB1.DBD38", "press-1", "alarm", "AlarmCode"), TagRef(7, "DB9.DBW0", "m", "alarm", "A")]
    run = Running(plc, tags)
    run.source.multi_read = False
    with run:
        run.wait(lambda: len(run.recorder.latest()) == 8, "a reading of every tag")
        latest = run.recorder.latest()
        assert [latest[k].value for k in range(6)] == [1, 41, 70.0, "KT-100", True, True]
        assert (latest[6].status, latest[7].status) == (0x05, 0x0A)
        assert latest[6].status_text.startswith("DB1.DBD38: S7 error 0x05: address out of range")


def test_connects_by_tsap(plc: Plc) -> None:
    fill(plc)
    with Running(plc, local_tsap="0100", remote_tsap="0301") as run:
        run.wait(lambda: len(run.recorder.latest()) == 6, "the first readings")


def test_nobody_listening_is_down_with_the_reason_and_never_raises() -> None:
    port = free_port()
    recorder_plc = Plc()
    recorder_plc.port = port  # nothing started on it
    with Running(recorder_plc, timeout_s=0.5) as run:
        run.wait(lambda: run.recorder.kinds().count("down") >= 2, "two failed attempts")
        assert "Connect call failed" in run.recorder.events[0][1] or "refused" in run.recorder.events[0][1]
        assert run.source.health.last_error and not run.source.health.connected


def test_paused_source_hands_nothing_more(plc: Plc) -> None:
    fill(plc)
    with Running(plc) as run:
        run.wait(lambda: len(run.recorder.latest()) == 6, "the first readings")
        run.source.pause()
        handed = len(run.recorder.all_readings())
        plc.put(">I", 2, 99)
        threading.Event().wait(0.3)
        assert len(run.recorder.all_readings()) == handed


def test_paused_and_closed_source_reports_no_lost_connection(plc: Plc) -> None:
    fill(plc)
    with Running(plc) as run:
        run.wait(lambda: len(run.recorder.latest()) == 6, "the first readings")
        run.source.pause()
        asyncio.run_coroutine_threadsafe(run.source.close(), run.loop).result(timeout=5)
        threading.Event().wait(1.5)  # a reconnect would have come by now
        assert run.recorder.kinds().count("up") == 1 and "down" not in run.recorder.kinds()
        assert run.source.client is None


def test_many_tags_over_several_dbs_and_requests(plc: Plc) -> None:
    assert plc.server is not None
    dbs = {n: bytearray(400) for n in range(10, 40)}
    for n, data in dbs.items():
        for i in range(100):
            struct.pack_into(">i", data, 4 * i, n * 1000 + i)
        plc.server.register_area(SrvArea.DB, n, data)
    tags = [TagRef(k, f"DB{n}.DBD{4 * i}", f"m{n}", "count", f"c{i}")
            for k, (n, i) in enumerate((n, i) for n in dbs for i in range(100))]
    with Running(plc, tags, max_pdu=240) as run:
        run.wait(lambda: len(run.recorder.latest()) == len(tags), "every tag", timeout=20)
        latest = run.recorder.latest()
        assert all(latest[k].value == int(t.machine[1:]) * 1000 + int(t.name[1:]) for k, t in enumerate(tags))
