"""The S7 simulator: the layout it suggests, how it writes values, and the real snap7 server it runs (values at
the config's addresses, errors and undecodable values on demand, restart)."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import snap7
import yaml
from snap7.error import S7Error

from agent.config import FactoryConfig, MachineType, load
from agent.sources.s7.model import parse_address
from simulators.s7.layout import area_sizes, encode, print_layout, suggest_layout, undecodable
from simulators.s7.server import CONTROL_DB, S7Simulator
from tests.conftest import FACTORY_YAML

S7_MACHINES = ("press-2", "cnc-2", "packer-2")


def s7_config(tmp_path: Path, change: Callable[[dict[str, Any]], None] | None = None) -> FactoryConfig:
    """config/factory.yaml with press-2, cnc-2 and packer-2 read over S7 in the suggested layout (DB1..DB3)."""
    data = yaml.safe_load(FACTORY_YAML.read_text(encoding="utf-8"))
    plain = load(FACTORY_YAML)
    data["sources"]["s7"] = [{"id": "plc-s7", "host": "127.0.0.1"}]
    db = 0
    for line in data["lines"]:
        for machine in line["machines"]:
            if machine["id"] in S7_MACHINES:
                db += 1
                mtype = plain.machine_types[machine["type"]]
                machine.update(source="plc-s7", node_ids=suggest_layout(
                    mtype, plain.state_maps[mtype.state_map].kind, db))
                machine.pop("node_prefix", None)
    if change:
        change(data)
    path = tmp_path / "factory.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return load(path)


def test_suggested_layouts_of_the_example_types(factory_cfg: FactoryConfig) -> None:
    types = factory_cfg.machine_types
    assert suggest_layout(types["press"], "code", 1) == {
        "StateCode": "DB1.DBW0", "TotalCount": "DB1.DBD2:UDINT", "GoodCount": "DB1.DBD6:UDINT",
        "RejectCount": "DB1.DBD10:UDINT", "Speed": "DB1.DBD14:REAL", "Temperature": "DB1.DBD18:REAL",
        "Pressure": "DB1.DBD22:REAL", "AlarmCode": "DB1.DBW26"}
    assert suggest_layout(types["cnc"], "code", 2)["ProductCode"] == "DB2.DBW28"
    packer = suggest_layout(types["packer"], "packml", 3)
    assert packer["PackMLState"] == "DB3.DBB0:STRING[24]" and packer["TotalCount"] == "DB3.DBD26:UDINT"


def test_state_bits_pack_into_bytes_and_words_stay_even() -> None:
    mtype = MachineType(state_map="bits", tags=[
        *[{"node": f"B{i}", "signal": "state_bit", "bit": f"b{i}"} for i in range(9)],
        {"node": "Count", "signal": "count", "counter": "total"},
        {"node": "Sku", "signal": "product"}])
    layout = suggest_layout(mtype, "bits", 4)
    assert [layout[f"B{i}"] for i in range(9)] == [*(f"DB4.DBX0.{b}" for b in range(8)), "DB4.DBX1.0"]
    assert layout["Count"] == "DB4.DBD2:UDINT" and layout["Sku"] == "DB4.DBB6:STRING[24]"


def test_printed_layout_is_config_yaml(factory_cfg: FactoryConfig) -> None:
    text = print_layout(factory_cfg, None)
    blocks = [yaml.safe_load(line)["node_ids"] for line in text.splitlines() if line.startswith("node_ids")]
    assert [b.get("StateCode") or b.get("PackMLState") for b in blocks] == [
        "DB1.DBW0", "DB2.DBW0", "DB3.DBB0:STRING[24]"]
    for block in blocks:
        sizes = area_sizes(parse_address(a) for a in block.values())
        assert len(sizes) == 1  # one DB per machine


@pytest.mark.parametrize(("address", "value", "raw"), [
    ("DB1.DBW0", 3, b"\x00\x03"),
    ("DB1.DBW0", 40000, struct.pack(">h", 40000 - 65536)),  # an INT wraps as a PLC's would
    ("DB1.DBW0:WORD", 70000, struct.pack(">H", 70000 % 65536)),
    ("DB1.DBD0:UDINT", 2**32 + 5, b"\x00\x00\x00\x05"),
    ("DB1.DBD0:REAL", 7.5, struct.pack(">f", 7.5)),
    ("DB1.DBD0", 7.6, b"\x00\x00\x00\x08"),
    ("DB1.DBX0.2", True, b"\x04\x00\x00\x00"),
    ("DB1.DBB0:STRING[4]", "EXECUTE", b"\x04\x04EXEC"),
    ("DB1.DBB0:STRING[6]", "KT", b"\x06\x02KT\x00\x00\x00\x00"),
])
def test_values_are_written_as_the_plc_holds_them(address: str, value: Any, raw: bytes) -> None:
    data = bytearray(8)
    encode(parse_address(address), value, data)
    assert bytes(data[:len(raw)]) == raw


@pytest.mark.parametrize(("address", "value", "says"), [
    ("DB1.DBW0", "EXECUTE", "cannot show the text 'EXECUTE': use a STRING address"),
    ("DB1.DBB0:STRING[4]", 3, "shows text, not 3"),
    ("DB1.DBX0.0", "x", r"\(BOOL\) cannot show the text"),
])
def test_values_an_address_cannot_show_are_refused(address: str, value: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        encode(parse_address(address), value, bytearray(8))


@pytest.mark.parametrize(("address", "signal", "has_one"), [
    ("DB1.DBD0:REAL", "process_value", True), ("DB1.DBB0:STRING[4]", "state", True),
    ("DB1.DBW0", "count", True), ("DB1.DBD0:UDINT", "count", False), ("DB1.DBX0.0", "state_bit", False),
])
def test_undecodable_values_where_the_type_has_one(address: str, signal: str, has_one: bool) -> None:
    assert undecodable(parse_address(address), signal, bytearray(8)) is has_one


def run(coro_fn: Callable[[S7Simulator], Any], sim: S7Simulator) -> Any:
    async def main() -> Any:
        async with sim:
            return await coro_fn(sim)
    return asyncio.run(main())


def client(sim: S7Simulator) -> snap7.Client:
    c = snap7.Client()
    c.connect("127.0.0.1", 0, 1, sim.port)
    return c


def test_serves_the_plant_at_the_configured_addresses(tmp_path: Path) -> None:
    cfg = s7_config(tmp_path)

    async def check(sim: S7Simulator) -> None:
        c = await asyncio.to_thread(client, sim)
        press = sim.model.machine("line-1", "press-2").values
        state, total, good, reject, speed = struct.unpack(">hIIIf", await asyncio.to_thread(c.db_read, 1, 0, 18))
        assert (state, total, good, reject) == (press["StateCode"], press["TotalCount"], press["GoodCount"],
                                                press["RejectCount"])
        assert speed == pytest.approx(press["Speed"], rel=1e-6)
        packml = await asyncio.to_thread(c.db_read, 3, 0, 26)
        assert packml[2:2 + packml[1]].decode() == sim.model.machine("line-2", "packer-2").values["PackMLState"]
        truth = struct.unpack(">3I", await asyncio.to_thread(c.db_read, CONTROL_DB, 16, 12))
        assert truth == tuple(press[f"Truth.{n}"] for n in ("Total", "Good", "Reject"))
        c.disconnect()

    run(check, S7Simulator(cfg, port=0, speed=60, start_time=None))


def test_errors_undecodable_values_and_the_clock_on_demand(tmp_path: Path) -> None:
    cfg = s7_config(tmp_path)

    async def check(sim: S7Simulator) -> None:
        c = await asyncio.to_thread(client, sim)
        await asyncio.to_thread(c.db_write, CONTROL_DB, 0, bytearray(struct.pack(">hh", 5, 2)))
        await asyncio.sleep(0.3)
        with pytest.raises(S7Error, match="0x05"):
            await asyncio.to_thread(c.db_read, 2, 0, 2)
        assert len(await asyncio.to_thread(c.db_read, 1, 0, 2)) == 2  # only DB2 fails
        await asyncio.to_thread(c.db_write, CONTROL_DB, 0, bytearray(struct.pack(">hhB", 10, 0, 0x03)))
        await asyncio.sleep(0.3)
        for db in (1, 2, 3):
            with pytest.raises(S7Error, match="0x0a"):
                await asyncio.to_thread(c.db_read, db, 0, 2)
        await asyncio.to_thread(c.db_write, CONTROL_DB, 0, bytearray(struct.pack(">hh", 0, 0)))
        await asyncio.sleep(0.3)
        (speed,) = struct.unpack(">f", await asyncio.to_thread(c.db_read, 1, 14, 4))
        assert math.isnan(speed)
        sku = await asyncio.to_thread(c.db_read, 3, 0, 4)
        assert bytes(sku) == b"\x18\x02\xff\xfe"
        await asyncio.to_thread(c.db_write, CONTROL_DB, 4, bytearray(b"\x00"))  # normal values, clock stopped
        await asyncio.sleep(0.3)
        assert not sim.clock.running
        frozen = sim.model.now_us
        await asyncio.sleep(0.3)
        assert sim.model.now_us == frozen
        (speed,) = struct.unpack(">f", await asyncio.to_thread(c.db_read, 1, 14, 4))
        assert not math.isnan(speed)
        c.disconnect()

    run(check, S7Simulator(cfg, port=0, speed=60, start_time=None))


def test_cli_failures_and_a_restart_on_the_same_port(tmp_path: Path) -> None:
    cfg = s7_config(tmp_path)

    async def check(sim: S7Simulator) -> None:
        c = await asyncio.to_thread(client, sim)
        with pytest.raises(S7Error, match="0x03"):
            await asyncio.to_thread(c.db_read, 3, 0, 2)
        before = sim.model.machine("line-1", "press-2").values["Truth.Total"]
        port = sim.port
        await sim.stop()
        await asyncio.sleep(0.5)
        await sim.start()
        assert sim.port == port
        c = await asyncio.to_thread(client, sim)
        await asyncio.sleep(0.3)
        (total,) = struct.unpack(">I", await asyncio.to_thread(c.db_read, CONTROL_DB, 16, 4))
        assert total >= before  # the plant carried on
        c.disconnect()

    run(check, S7Simulator(cfg, port=0, speed=60, failures=[(3, 3)]))


def test_config_the_simulator_cannot_serve_says_why(tmp_path: Path) -> None:
    def text_on_int(data: dict[str, Any]) -> None:
        data["lines"][1]["machines"][2]["node_ids"]["PackMLState"] = "DB3.DBW0"

    def overlap(data: dict[str, Any]) -> None:
        data["lines"][0]["machines"][1]["node_ids"]["GoodCount"] = "DB1.DBD4:UDINT"

    with pytest.raises(ValueError, match=r"packer-2 tag PackMLState: DB3.DBW0 is a INT, the tag shows text"):
        S7Simulator(s7_config(tmp_path, text_on_int))
    with pytest.raises(ValueError, match=r"press-2 tag GoodCount: DB1.DBD4:UDINT overlaps machine line-1.press-2 "
                                         r"tag TotalCount"):
        S7Simulator(s7_config(tmp_path, overlap))
    with pytest.raises(ValueError, match="DB1 is the simulator's control DB"):
        S7Simulator(s7_config(tmp_path), control_db=1)
    with pytest.raises(ValueError, match="no S7 source 'nope'"):
        S7Simulator(s7_config(tmp_path), source="nope")
