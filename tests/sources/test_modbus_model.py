"""Modbus source config and address syntax: what parses, and what the user reads when it does not."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from agent.config import load
from agent.sources.modbus.model import ModbusAddress, ModbusSourceConfig, parse_address
from tests.conftest import FACTORY_YAML, ROOT


@pytest.mark.parametrize(("text", "expected"), [
    ("hr:100", ModbusAddress("hr", 100, "uint16")),
    ("hr:100:u32", ModbusAddress("hr", 100, "uint32")),
    ("HR:100:UINT32", ModbusAddress("hr", 100, "uint32")),
    (" ir:0:f32:cdab ", ModbusAddress("ir", 0, "float32", order="cdab")),
    ("ir:0:float64:dcba", ModbusAddress("ir", 0, "float64", order="dcba")),
    ("hr:1:i16", ModbusAddress("hr", 1, "int16")),
    ("hr:1:int64:badc", ModbusAddress("hr", 1, "int64", order="badc")),
    ("hr:65532:u64", ModbusAddress("hr", 65532, "uint64")),
    ("hr:7.3", ModbusAddress("hr", 7, "bool", bit=3)),
    ("ir:7.15:bool", ModbusAddress("ir", 7, "bool", bit=15)),
    ("co:5", ModbusAddress("co", 5, "bool")),
    ("di:3:bool", ModbusAddress("di", 3, "bool")),
    ("2/hr:100:u16", ModbusAddress("hr", 100, "uint16", unit=2)),
    ("0/co:0", ModbusAddress("co", 0, "bool", unit=0)),
    ("255/di:65535", ModbusAddress("di", 65535, "bool", unit=255)),
])
def test_addresses_parse(text: str, expected: ModbusAddress) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(("text", "count"), [
    ("hr:0", 1), ("hr:0:i32", 2), ("hr:0:f32", 2), ("hr:0:u64", 4), ("hr:0:f64", 4), ("co:0", 1), ("hr:0.1", 1),
])
def test_count_is_the_registers_a_value_occupies(text: str, count: int) -> None:
    assert parse_address(text).count == count


@pytest.mark.parametrize("text", ["hr:100:uint32", "ir:0:float32:cdab", "hr:7.3", "co:5", "2/hr:100:uint16"])
def test_an_address_prints_as_it_parses(text: str) -> None:
    assert str(parse_address(text)) == text
    assert parse_address(str(parse_address(text))) == parse_address(text)


@pytest.mark.parametrize(("text", "says"), [
    ("", "[unit/]table:offset[.bit][:type][:order]"),
    ("40001", "e.g. hr:100"),
    ("hr", "[unit/]table:offset"),
    ("hr:-1", "[unit/]table:offset"),
    ("ns=2;s=Line1.M1.State", "[unit/]table:offset"),
    ("holding:1", "hr (holding registers), ir (input registers), co (coils) or di (discrete inputs)"),
    ("hr:65536", "from 0 to 65535 (0-based: register 40001 of a manual is hr:0), not 65536"),
    ("hr:65535:u32", "needs 2 registers from 65535"),
    ("256/hr:1", "unit id from 0 to 255"),
    ("hr:1:u24", "int16, uint16, int32, uint32, int64, uint64, float32 or float64"),
    ("hr:1:bool", "not 'bool'"),
    ("hr:1:u32:xyzw", "abcd, cdab, badc or dcba"),
    ("hr:1.16", "bit from 0 to 15"),
    ("hr:1.2:u16", "a register bit is a bool"),
    ("co:1.2", "no bit number on a coil"),
    ("di:1:u16", "a discrete input is a bool"),
    ("co:1:bool:cdab", "a coil is a bool"),
])
def test_bad_addresses_say_what_is_expected(text: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_address(text)
    assert says in str(caught.value)


def test_config_defaults() -> None:
    cfg = ModbusSourceConfig(id="press-plc", host="10.0.0.5")
    assert (cfg.port, cfg.unit_id, cfg.max_registers_per_read, cfg.max_bits_per_read, cfg.max_gap) == (
        502, 1, 125, 2000, 8)
    assert (cfg.byte_order, cfg.word_order) == ("big", "big")


@pytest.mark.parametrize(("field", "value"), [
    ("port", 0), ("unit_id", 256), ("timeout_s", 0), ("poll_ms", 10), ("max_registers_per_read", 126),
    ("max_bits_per_read", 2001), ("max_gap", -1), ("byte_order", "middle"), ("word_order", "cdab"),
    ("retries", 11), ("hostname", "x"),
])
def test_bad_config_is_refused_naming_the_key(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        ModbusSourceConfig.model_validate({"id": "plc", "host": "10.0.0.5", field: value})
    assert caught.value.errors()[0]["loc"] == (field,)


def test_the_readme_sample_config_is_valid(tmp_path: Path) -> None:
    """The sample of agent/sources/modbus/README.md, put into the example factory, passes the config check."""
    readme = (ROOT / "agent" / "sources" / "modbus" / "README.md").read_text(encoding="utf-8")
    sample = yaml.safe_load(readme.split("```yaml\n", 1)[1].split("```", 1)[0])
    data = yaml.safe_load(FACTORY_YAML.read_text(encoding="utf-8"))
    data["sources"]["modbus"] += sample["sources"]["modbus"]
    data["machine_types"].update(sample["machine_types"])
    line = next(line for line in data["lines"] if line["id"] == sample["lines"][0]["id"])
    line["machines"] += sample["lines"][0]["machines"]
    path = tmp_path / "factory.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    cfg = load(path, resolve_secrets=False)
    press_5 = next(m for _, m in cfg.machines() if m.id == "press-5")
    assert {tag.node: parse_address(press_5.node_id(tag)).unit for tag in cfg.machine_types["press"].tags} == \
        dict.fromkeys(press_5.node_ids, 5)
