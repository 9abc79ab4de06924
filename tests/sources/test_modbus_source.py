"""The Modbus source against a real pymodbus server (simulators/modbus/device.py), seen through a recording
Ingest: what it hands over, when, and what a failing device turns into."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.health import AgentState
from agent.sources.base import Quality, Reading, SourceContext, TagRef
from agent.sources.modbus.codec import STATUS_NO_RESPONSE, STATUS_UNDECODABLE
from agent.sources.modbus.model import ModbusSourceConfig, parse_address
from agent.sources.modbus.source import ModbusSource
from simulators.broker import free_port
from simulators.modbus.device import ModbusDevice, RegisterImage

NOW_NS = 1_795_000_000_000_000_000

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class RecordingIngest:
    """The agent's side, reduced to a log of what the source called."""

    events: list[tuple[str, Any]] = field(default_factory=list)

    def readings(self, source: str, readings: list[Reading]) -> None:
        self.events += [("reading", r) for r in readings]

    def message(self, source: str, topic: str, payload: bytes, received_ns: int, ack: Any = None) -> None:
        raise AssertionError("a Modbus source hands no broker messages")

    def register_acknowledger(self, source: str, acknowledge: Callable[[list[Any]], None]) -> None:
        raise AssertionError("a Modbus source acknowledges nothing")

    def down(self, source: str, reason: str) -> None:
        self.events.append(("down", reason))

    def up(self, source: str) -> None:
        self.events.append(("up", source))

    def of(self, tag: int) -> list[Reading]:
        return [r for kind, r in self.events if kind == "reading" and r.tag == tag]

    def last(self, tag: int) -> Reading | None:
        found = self.of(tag)
        return found[-1] if found else None

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


TAGS = [  # index, address, signal
    (0, "hr:0", "state"),
    (1, "hr:2:u32", "count"),
    (2, "ir:0:f32:cdab", "process_value"),
    (3, "co:5", "state_bit"),
    (4, "di:3", "state_bit"),
    (5, "hr:7.3", "state_bit"),
    (6, "2/hr:100:i16", "alarm"),
    (7, "hr:20:f64", "count"),
]


def tag_refs(tags: list[tuple[int, str, str]], **extra: Any) -> list[TagRef]:
    return [TagRef(i, address, "m1", signal, f"t{i}", **extra) for i, address, signal in tags]


def fill(image: RegisterImage) -> None:
    image.set(1, parse_address("hr:0"), 3)
    image.set(1, parse_address("hr:2:u32"), 4_294_967_290)
    image.set(1, parse_address("ir:0:f32:cdab"), 21.5)
    image.set(1, parse_address("co:5"), True)
    image.set(1, parse_address("di:3"), False)
    image.set(1, parse_address("hr:7.3"), True)
    image.set(2, parse_address("hr:100:i16"), -7)
    image.set(1, parse_address("hr:20:f64"), 12.0)


@dataclass
class Rig:
    device: ModbusDevice
    ingest: RecordingIngest
    state: AgentState
    source: ModbusSource
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def until(self, condition: Callable[[], Any], what: str, timeout: float = 10) -> None:
        for _ in range(int(timeout / 0.02)):
            if condition():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; events: {self.ingest.events[-10:]}")

    async def polls(self, n: int) -> None:
        """Wait until the device answered `n` more requests."""
        target = self.device.requests + n
        await self.until(lambda: self.device.requests >= target, f"{n} more requests")

    def read_errors(self) -> float:
        return self.state.metrics.registry.get_sample_value("shopfloor_source_read_errors_total",
                                                            {"source": "press-plc", "reason": "exception"}) or 0.0


async def start_rig(tmp_path: Path, tags: list[TagRef], image: RegisterImage, strict: bool = False,
                    device_up: bool = True, **cfg: Any) -> Rig:
    port = free_port()
    device = ModbusDevice(image, port=port, strict=strict)
    if device_up:
        await device.start()
    ingest = RecordingIngest()
    state = AgentState("agent-1")
    ctx = SourceContext(ingest, state, tags, tmp_path, "site", "agent-1", now_ns=lambda: NOW_NS)
    config = ModbusSourceConfig.model_validate({"id": "press-plc", "host": "127.0.0.1", "port": port,
                                                "poll_ms": 50, "timeout_s": 0.5, "retries": 0, **cfg})
    source = ModbusSource(config, ctx)
    stop = asyncio.Event()
    return Rig(device, ingest, state, source, stop, asyncio.create_task(source.run(stop)))


@pytest.fixture
async def rigs() -> AsyncIterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.stop.set()
        await asyncio.wait_for(rig.task, 10)
        await rig.source.close()
        await rig.device.stop()


async def test_every_table_and_type_is_read_and_handed_once(tmp_path: Path, rigs: list[Rig]) -> None:
    image = RegisterImage()
    fill(image)
    rig = await start_rig(tmp_path, tag_refs(TAGS), image)
    rigs.append(rig)
    await rig.until(lambda: all(rig.ingest.of(i) for i, _, _ in TAGS), "a reading of every tag")
    assert rig.ingest.kinds()[0] == "up"
    values = {i: rig.ingest.last(i) for i, _, _ in TAGS}
    assert {i: r.value for i, r in values.items() if r} == {
        0: 3, 1: 4_294_967_290, 2: 21.5, 3: True, 4: False, 5: True, 6: -7, 7: 12}
    assert all(r and r.quality == Quality.GOOD and r.status_text == "Good" and r.source_ns == NOW_NS
               for r in values.values())
    assert isinstance(values[7] and values[7].value, int)  # a whole float for a count is handed as an int
    await rig.polls(20)
    assert all(len(rig.ingest.of(i)) == 1 for i, _, _ in TAGS)  # unchanged values are not handed again
    assert rig.state.sources["press-plc"].connected
    assert rig.state.metrics.connected.labels("press-plc")._value.get() == 1

    image.set(1, parse_address("hr:2:u32"), 5)  # the counter rolled over
    image.set(1, parse_address("co:5"), False)
    await rig.until(lambda: len(rig.ingest.of(1)) == 2 and len(rig.ingest.of(3)) == 2, "the changes")
    assert [r.value for r in rig.ingest.of(1)] == [4_294_967_290, 5]
    assert [r.value for r in rig.ingest.of(3)] == [True, False]


async def test_reads_are_grouped(tmp_path: Path, rigs: list[Rig]) -> None:
    image = RegisterImage()
    fill(image)
    rig = await start_rig(tmp_path, tag_refs(TAGS), image)
    rigs.append(rig)
    # hr 0-7 and 20-23 are 12 apart (more than max_gap 8): two reads; ir, co, di, unit 2: one each
    assert [(r.unit, r.table, r.offset, r.count) for r in rig.source.schedule[50]] == [
        (1, "co", 5, 1), (1, "di", 3, 1), (1, "hr", 0, 8), (1, "hr", 20, 4), (1, "ir", 0, 2), (2, "hr", 100, 1)]


async def test_an_exception_response_is_a_bad_reading_and_recovers(tmp_path: Path, rigs: list[Rig],
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    image = RegisterImage()
    fill(image)
    rig = await start_rig(tmp_path, tag_refs(TAGS), image)
    rigs.append(rig)
    await rig.until(lambda: rig.ingest.of(6), "the alarm tag")
    caplog.set_level(logging.INFO, "agent.sources.modbus.source")
    image.fail(2, "hr", 100, 4)
    await rig.until(lambda: (r := rig.ingest.last(6)) and r.quality == Quality.BAD, "a Bad alarm reading")
    bad = rig.ingest.last(6)
    assert bad is not None
    assert (bad.value, bad.status) == (None, 4)
    assert bad.status_text == "Modbus exception 4 (server device failure) (reading hr:100-100 of unit 2)"
    errors = rig.read_errors()
    assert errors >= 1
    await rig.until(lambda: rig.read_errors() > errors + 3, "more failed reads")
    assert len(rig.ingest.of(6)) == 2  # the same failure is handed (and logged) once
    assert sum("server device failure" in r.getMessage() for r in caplog.records) == 1
    health = rig.state.sources["press-plc"]
    assert health.connected  # a refusal is no lost connection, but health says why tags read Bad
    assert health.last_error == bad.status_text
    assert rig.ingest.last(0) == rig.ingest.of(0)[0]  # the other tags read on, unchanged
    image.fail(2, "hr", 100, 0)
    await rig.until(lambda: (r := rig.ingest.last(6)) and r.quality == Quality.GOOD, "the alarm tag back")
    assert rig.ingest.last(6).value == -7  # type: ignore[union-attr]
    assert any("answers hr:100-100 again" in r.getMessage() for r in caplog.records)
    assert health.last_error == ""


@pytest.mark.parametrize(("address", "signal", "raw", "says"), [
    ("hr:20:f32", "count", math.nan, "hr:20:float32 read nan: nan is not a number a count tag can carry"),
    ("hr:20:f32", "process_value", math.inf, "read inf: inf is not a number a process_value tag can carry"),
    ("hr:20:i32", "count", -3, "hr:20:int32 read -3: -3 is negative"),
    ("hr:20:f32", "state", 2.5, "read 2.5: 2.5 is not a whole number, as a state tag needs"),
])
async def test_an_undecodable_value_is_a_bad_reading_saying_why(tmp_path: Path, rigs: list[Rig], address: str,
                                                                signal: str, raw: float, says: str) -> None:
    image = RegisterImage()
    image.set(1, parse_address(address), raw)
    image.set(1, parse_address("hr:0"), 1)
    rig = await start_rig(tmp_path, tag_refs([(0, "hr:0", "state"), (1, address, signal)]), image)
    rigs.append(rig)
    await rig.until(lambda: rig.ingest.of(1) and rig.ingest.of(0), "both tags")
    bad = rig.ingest.last(1)
    assert bad is not None
    assert (bad.quality, bad.value, bad.status) == (Quality.BAD, None, STATUS_UNDECODABLE)
    assert says in bad.status_text
    assert rig.ingest.last(0).value == 1  # type: ignore[union-attr]
    image.set(1, parse_address(address), 4)
    await rig.until(lambda: rig.ingest.last(1).quality == Quality.GOOD, "a good value")  # type: ignore[union-attr]
    assert rig.ingest.last(1).value == 4  # type: ignore[union-attr]


async def test_a_device_refusing_gaps_is_read_tag_by_tag(tmp_path: Path, rigs: list[Rig]) -> None:
    image = RegisterImage()
    image.set(1, parse_address("hr:0"), 5)
    image.set(1, parse_address("hr:4:u32"), 123456)
    rig = await start_rig(tmp_path, tag_refs([(0, "hr:0", "state"), (1, "hr:4:u32", "count")]), image,
                          strict=True)
    rigs.append(rig)
    await rig.until(lambda: rig.ingest.of(0) and rig.ingest.of(1), "both tags")
    assert [(r.value, r.quality) for r in rig.ingest.of(0) + rig.ingest.of(1)] == [
        (5, Quality.GOOD), (123456, Quality.GOOD)]
    assert len(rig.source.split_requests) == 1


async def test_an_unanswered_read_is_bad_and_a_lost_connection_goes_down_and_comes_back(
        tmp_path: Path, rigs: list[Rig]) -> None:
    image = RegisterImage()
    fill(image)
    rig = await start_rig(tmp_path, tag_refs(TAGS), image)
    rigs.append(rig)
    await rig.until(lambda: rig.ingest.of(6), "unit 2")
    image.silent.add(2)
    await rig.until(lambda: (r := rig.ingest.last(6)) and r.quality == Quality.BAD, "no answer from unit 2")
    assert rig.ingest.last(6).status == STATUS_NO_RESPONSE  # type: ignore[union-attr]
    assert "no answer from unit 2 within 0.5 s" in rig.ingest.last(6).status_text  # type: ignore[union-attr]
    image.silent.discard(2)

    await rig.device.stop()
    await rig.until(lambda: "down" in rig.ingest.kinds(), "the source down")
    health = rig.state.sources["press-plc"]
    assert not health.connected
    assert rig.state.metrics.connected.labels("press-plc")._value.get() == 0
    assert rig.state.metrics.reconnects.labels("press-plc")._value.get() == 1
    down_at = rig.ingest.kinds().index("down")
    await rig.device.start()
    await rig.until(lambda: "up" in rig.ingest.kinds()[down_at:], "the source up again")
    again = rig.ingest.kinds().index("up", down_at)
    await rig.until(lambda: len(rig.ingest.events) > again + len(TAGS) - 1, "every tag again")
    # after `up`, every tag is handed once more before anything else
    assert {r.tag for _, r in rig.ingest.events[again + 1:again + 1 + len(TAGS)]} == {i for i, _, _ in TAGS}
    assert rig.state.sources["press-plc"].connected


async def test_no_device_is_down_with_the_reason_and_retried(tmp_path: Path, rigs: list[Rig]) -> None:
    image = RegisterImage()
    fill(image)
    rig = await start_rig(tmp_path, tag_refs(TAGS[:1]), image, device_up=False)
    rigs.append(rig)
    await rig.until(lambda: rig.ingest.kinds().count("down") >= 2, "two attempts")
    assert set(rig.ingest.kinds()) == {"down"}
    reasons = {reason for kind, reason in rig.ingest.events if kind == "down"}
    assert reasons == {f"source press-plc down: ConnectionError: cannot connect to 127.0.0.1:{rig.device.port}"}
    assert rig.state.sources["press-plc"].last_error.startswith("ConnectionError: cannot connect")
    await rig.device.start()
    await rig.until(lambda: rig.ingest.kinds()[-2:] == ["up", "reading"], "connected", timeout=15)
    assert rig.ingest.last(0).value == 3  # type: ignore[union-attr]


async def test_a_deadband_holds_back_small_moves(tmp_path: Path, rigs: list[Rig]) -> None:
    image = RegisterImage()
    image.set(1, parse_address("hr:0:f32"), 100.0)
    rig = await start_rig(tmp_path, tag_refs([(0, "hr:0:f32", "process_value")], deadband=("absolute", 0.5)),
                          image)
    rigs.append(rig)
    await rig.until(lambda: rig.ingest.of(0), "the first value")
    for value in (100.25, 99.75, 100.5):  # never more than 0.5 from 100
        image.set(1, parse_address("hr:0:f32"), value)
        await rig.polls(3)
    image.set(1, parse_address("hr:0:f32"), 101.0)
    await rig.until(lambda: len(rig.ingest.of(0)) == 2, "the big move")
    assert [r.value for r in rig.ingest.of(0)] == [100.0, 101.0]


async def test_paused_hands_nothing(tmp_path: Path, rigs: list[Rig]) -> None:
    image = RegisterImage()
    image.set(1, parse_address("hr:0"), 1)
    rig = await start_rig(tmp_path, tag_refs([(0, "hr:0", "state")]), image)
    rigs.append(rig)
    await rig.until(lambda: rig.ingest.of(0), "the first value")
    rig.source.pause()
    image.set(1, parse_address("hr:0"), 2)
    await rig.polls(4)
    assert [r.value for r in rig.ingest.of(0)] == [1]
    await rig.source.close()  # what the agent does after pausing: no OFFLINE follows, no new session
    requests = rig.device.requests
    await asyncio.sleep(1.0)
    assert rig.ingest.kinds() == ["up", "reading"]
    assert rig.device.requests == requests
    assert not rig.task.done()  # run returns only when told to stop


async def test_an_address_that_does_not_parse_is_a_bad_reading(tmp_path: Path, rigs: list[Rig]) -> None:
    image = RegisterImage()
    image.set(1, parse_address("hr:0"), 1)
    rig = await start_rig(tmp_path, tag_refs([(0, "hr:0", "state"), (1, "ns=2;s=M1.State", "state")]), image)
    rigs.append(rig)
    await rig.until(lambda: rig.ingest.of(0) and rig.ingest.of(1), "both tags")
    bad = rig.ingest.last(1)
    assert bad is not None and bad.quality == Quality.BAD
    assert "address 'ns=2;s=M1.State': expected a Modbus address" in bad.status_text
    assert rig.ingest.last(0).value == 1  # type: ignore[union-attr]
