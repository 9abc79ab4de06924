"""The Modbus simulator: the plant's machines at their configured addresses, its controls, and the configs it
refuses. A real pymodbus client reads it."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
import yaml
from pymodbus.client import AsyncModbusTcpClient

from agent.config import FactoryConfig
from agent.sources.modbus.codec import decode
from agent.sources.modbus.model import parse_address
from simulators.broker import free_port
from simulators.modbus.layout import modbus_tags, read_over_modbus
from simulators.modbus.server import CONTROL_UNIT, ModbusSimulator, register_value
from tests.conftest import FACTORY_YAML

pytestmark = pytest.mark.anyio
START = datetime.fromisoformat("2026-11-23T09:00:00+08:00")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def modbus_config(port: int, change: Any = None, units: dict[str, int] | None = None) -> FactoryConfig:
    data = yaml.safe_load(FACTORY_YAML.read_text(encoding="utf-8"))
    read_over_modbus(data, {"id": "plc-mb", "host": "127.0.0.1", "port": port},
                     units or {"press-2": 1, "cnc-2": 2})
    if change:
        change(data)
    return FactoryConfig.model_validate(data)


@pytest.fixture
async def sim() -> AsyncIterator[ModbusSimulator]:
    port = free_port()
    simulator = ModbusSimulator(modbus_config(port), port=port, speed=60, start_time=START, origin=START,
                                paused=True)
    async with simulator:
        yield simulator


async def read(port: int, unit: int, address: str) -> Any:
    parsed = parse_address(address)
    client = AsyncModbusTcpClient("127.0.0.1", port=port, reconnect_delay=0, timeout=2, retries=0)
    try:
        assert await client.connect()
        if parsed.table == "hr":
            response = await client.read_holding_registers(parsed.offset, count=parsed.count, device_id=unit)
        else:
            response = await client.read_input_registers(parsed.offset, count=parsed.count, device_id=unit)
        if response.isError():
            return ("exception", response.exception_code)
        return decode(response.registers, parsed.type)
    finally:
        client.close()


async def write(port: int, register: int, value: int) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, reconnect_delay=0, timeout=2, retries=0)
    try:
        assert await client.connect()
        assert not (await client.write_register(register, value, device_id=CONTROL_UNIT)).isError()
    finally:
        client.close()


def test_the_layout_gives_every_signal_an_address() -> None:
    tags = modbus_tags([{"node": "StateCode", "signal": "state"},
                        {"node": "TotalCount", "signal": "count", "counter": "total", "rollover": 10000},
                        {"node": "Speed", "signal": "process_value", "name": "speed"},
                        {"node": "Temp", "signal": "process_value", "name": "temp"},
                        {"node": "Run", "signal": "state_bit", "bit": "run"},
                        {"node": "AlarmCode", "signal": "alarm"}])
    assert [t["node"] for t in tags] == ["hr:0", "hr:10:uint32", "ir:0:float32", "ir:2:float32", "co:0", "hr:1"]
    assert tags[1]["rollover"] == 10000
    for tag in tags:
        parse_address(tag["node"])


async def test_the_simulator_shows_the_plant_at_the_configured_addresses(sim: ModbusSimulator) -> None:
    model = sim.model
    press = model.machine("line-1", "press-2")
    cnc = model.machine("line-2", "cnc-2")
    # the machine types' nodes are their Modbus addresses (simulators/modbus/layout.py)
    assert await read(sim.port, 1, "hr:0") == press.values["hr:0"]
    assert await read(sim.port, 1, "hr:10:u32") == press.values["hr:10:uint32"]
    assert await read(sim.port, 2, "hr:0") == cnc.values["hr:0"]
    assert await read(sim.port, 2, "hr:12:u32") == cnc.values["hr:12:uint32"]
    assert await read(sim.port, 2, "hr:2") == cnc.values["hr:2"] in (300, 310)
    assert await read(sim.port, 2, "ir:2:f32") == pytest.approx(cnc.values["ir:2:float32"], abs=1e-3)
    assert press.values["hr:0"] in (0, 1, 2, 3, 4, 5, 6)
    assert cnc.values["hr:0"] in (10, 11, 20, 30, 40, 50, 51)


async def test_the_clock_runs_when_the_control_says_so(sim: ModbusSimulator) -> None:
    before = sim.model.now_us
    await write(sim.port, 2, 1)
    for _ in range(100):
        if sim.model.now_us > before + 30 * 1_000_000:
            break
        await asyncio.sleep(0.05)
    assert sim.model.now_us > before + 30 * 1_000_000
    total = sim.model.machine("line-1", "press-2").values["hr:10:uint32"]
    assert total == sim.model.plant_machine("line-1", "press-2").total % 10000


async def test_exceptions_and_undecodable_values_on_demand(sim: ModbusSimulator) -> None:
    await write(sim.port, 0, 4)
    await asyncio.sleep(0.3)
    assert await read(sim.port, 1, "hr:0") == ("exception", 4)
    assert await read(sim.port, CONTROL_UNIT, "hr:0") == 4  # the control unit always answers
    await write(sim.port, 0, 0)
    await write(sim.port, 1, 1)
    await asyncio.sleep(0.3)
    assert math.isnan(await read(sim.port, 2, "ir:2:f32"))
    await write(sim.port, 1, 0)
    await asyncio.sleep(0.3)
    assert not math.isnan(await read(sim.port, 2, "ir:2:f32"))


@pytest.mark.parametrize(("units", "says"), [
    ({"packer-1": 3}, "machine line-1.packer-1 tag hr:0: a Modbus register cannot carry text (PackML state names"),
    ({"press-2": 1, "cnc-2": 1}, "machine line-2.cnc-2 tag hr:0: 1/hr:0 overlaps machine line-1.press-2 tag hr:0"),
    ({"cnc-2": 247}, "machine line-2.cnc-2 tag hr:0: unit 247 is the simulator's control unit"),
])
def test_configs_the_simulator_cannot_show_say_why(units: dict[str, int], says: str) -> None:
    with pytest.raises(ValueError) as caught:
        ModbusSimulator(modbus_config(1502, units=units), port=1502, start_time=START, origin=START)
    assert says in str(caught.value)


@pytest.mark.parametrize(("value", "address", "shown"), [
    (70000, "hr:0:u16", 70000 % 65536), (-1, "hr:0:u32", 2**32 - 1), (40000, "hr:0:i16", 40000 - 65536),
    (3, "hr:0:f32", 3.0), (1, "co:0", True), (0, "hr:0.2", False), (2**32 + 5, "hr:0:u64", 2**32 + 5),
])
def test_values_wrap_at_their_register_width(value: int, address: str, shown: object) -> None:
    assert register_value(value, parse_address(address)) == shown


async def test_a_scaled_process_value_is_shown_raw() -> None:
    def scaled(data: dict[str, Any]) -> None:
        for tag in data["machine_types"]["cnc-modbus"]["tags"]:
            if tag["node"] == "ir:2:float32":
                tag.update(node="ir:2:int16", scale=0.1, offset=-5)
    port = free_port()
    simulator = ModbusSimulator(modbus_config(port, scaled), port=port, start_time=START, origin=START,
                                paused=True)
    async with simulator:
        temperature = simulator.model.machine("line-2", "cnc-2").values["ir:2:int16"]
        assert isinstance(temperature, float)
        assert await read(port, 2, "ir:2:int16") == round((temperature + 5) * 10)


def test_read_over_modbus_replaces_a_source_of_the_same_id() -> None:
    data = yaml.safe_load(FACTORY_YAML.read_text(encoding="utf-8"))
    read_over_modbus(data, {"id": "plc-mb", "host": "10.0.0.9", "port": 1502}, {"press-1": 5})
    assert [s["id"] for s in data["sources"]["modbus"]] == ["plc-mb"]
    assert data["sources"]["modbus"][0]["host"] == "10.0.0.9"
    press = next(m for line in data["lines"] for m in line["machines"] if m["id"] == "press-1")
    assert (press["type"], press["source"], press["node_prefix"]) == ("press-modbus", "plc-mb", "5/")
    FactoryConfig.model_validate(data)
