"""The `collect:` section: plain tags read by any tag-reading source and stored as process values, with no
machine model; and the minimal config it makes possible."""

import pytest

from agent.config import COLLECT_LINE, ConfigError, load
from agent.core.mapping import Mapper, MappingResult
from agent.core.schema import validate
from agent.runner import tag_refs
from tests.test_config_cli import variant

MINIMAL = """\
site: {id: plant-a, name: Plant A, timezone: Europe/Berlin}
sources:
  opcua: [{id: plc-1, endpoint: "opc.tcp://127.0.0.1:4840"}]
  modbus: [{id: mb-1, host: 127.0.0.1, poll_ms: 250}]
  s7: [{id: s7-1, host: 127.0.0.1}]
historian: {kind: sqlite}
collect:
  plc-1:
    - {name: Boiler1.Temperature, address: "ns=2;s=Boiler1.Temperature", unit: degC}
    - {name: Boiler1.Pressure, address: "nsu=urn:vendor:plc;i=1042", interval_ms: 500, read: poll}
    - {name: Boiler1.Flow, address: "i=2258", interval_ms: 200, deadband: {kind: percent, value: 1}}
  mb-1:
    - {name: Tank1.Level, address: "ir:2:f32", scale: 0.1, offset: -5}
    - {name: Tank1.Pump, address: "hr:4", interval_ms: 1000}
  s7-1:
    - {name: Oven.Temperature, address: "DB1.DBD42:REAL"}
"""
PV_TAGS = ("site", "line", "machine", "name")


def write(tmp_path, text):
    path = tmp_path / "collect.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(path):
    with pytest.raises(ConfigError) as caught:
        load(path)
    return [(p.path, p.found, p.expected) for p in caught.value.problems]


def test_a_config_with_only_site_sources_historian_and_collect_is_valid(tmp_path):
    cfg = load(write(tmp_path, MINIMAL))
    assert cfg.lines == [] and cfg.shifts == [] and cfg.machine_types == {} and cfg.state_maps == {}
    by_name = {b.spec.name: b for b in cfg.mapping_plan().bindings}
    assert list(by_name) == ["Boiler1.Temperature", "Boiler1.Pressure", "Boiler1.Flow", "Tank1.Level", "Tank1.Pump",
                             "Oven.Temperature"]
    for b in by_name.values():
        assert b.spec.signal == "process_value" and b.machine == "" and b.line == ""
        assert b.pv_tags == {"site": "plant-a", "line": COLLECT_LINE, "machine": b.source, "name": b.spec.name}


def test_the_ten_line_config_needs_no_site_name(tmp_path):
    text = ("site: {id: plant-a, timezone: Europe/Berlin}\n"
            "sources:\n  opcua: [{id: plc-1, endpoint: \"opc.tcp://127.0.0.1:4840\"}]\n"
            "collect:\n  plc-1:\n    - {name: Boiler1.Temperature, address: \"ns=2;s=Boiler1.Temperature\"}\n")
    cfg = load(write(tmp_path, text))
    assert (cfg.site.id, cfg.site.name, cfg.historian.kind) == ("plant-a", "", "sqlite")
    assert [b.pv_tags["name"] for b in cfg.mapping_plan().bindings] == ["Boiler1.Temperature"]


@pytest.mark.parametrize(
    ("name", "source", "address", "poll_ms", "sampling_ms", "deadband", "scale", "offset"),
    [("Boiler1.Temperature", "plc-1", "ns=2;s=Boiler1.Temperature", None, 1000.0, None, 1.0, 0.0),  # subscribed
     ("Boiler1.Pressure", "plc-1", "nsu=urn:vendor:plc;i=1042", 500, 500.0, None, 1.0, 0.0),  # polled
     ("Boiler1.Flow", "plc-1", "i=2258", None, 200.0, ("percent", 1.0), 1.0, 0.0),
     ("Tank1.Level", "mb-1", "ir:2:f32", None, 100.0, None, 0.1, -5.0),  # the source's poll_ms
     ("Tank1.Pump", "mb-1", "hr:4", 1000, 100.0, None, 1.0, 0.0),
     ("Oven.Temperature", "s7-1", "DB1.DBD42:REAL", None, 100.0, None, 1.0, 0.0)],
)
def test_each_tag_is_read_by_its_source_as_a_process_value_with_no_machine(
        tmp_path, name, source, address, poll_ms, sampling_ms, deadband, scale, offset):
    cfg = load(write(tmp_path, MINIMAL))

    class Pipe:
        bindings = cfg.mapping_plan().bindings

    refs = {ref.name: (src, ref) for src, refs in tag_refs(Pipe()).items() for ref in refs}  # type: ignore[arg-type]
    src, ref = refs[name]
    assert (src, ref.address, ref.machine, ref.signal) == (source, address, "", "process_value")
    assert (ref.poll_ms, ref.sampling_ms, ref.deadband) == (poll_ms, sampling_ms, deadband)
    spec = Pipe.bindings[ref.index].spec
    assert (spec.scale, spec.offset) == (scale, offset)


def test_a_reading_becomes_a_valid_process_value_point(tmp_path):
    mapper = Mapper(load(write(tmp_path, MINIMAL)).mapping_plan())
    level = next(b for b in mapper.bindings if b.spec.name == "Tank1.Level")
    out = MappingResult()
    mapper.reading(level, 420.0, 0, 0, "Good", 1_790_000_000 * 10**9, None, out)
    assert out.dead_letters == []
    (point,) = [validate(p) for p in out.points]
    assert point.measurement == "process_value"
    assert point.tags == {"site": "plant-a", "line": "_collect", "machine": "mb-1", "name": "Tank1.Level"}
    assert point.fields == {"value": 37.0, "status": 0, "quality": "Good"}


def test_collected_tags_come_after_the_machines_tags_and_change_none_of_them(tmp_path):
    plain = load(variant(tmp_path, "historian:", "historian:")).mapping_plan().bindings
    path = variant(tmp_path, "sources:\n", 'collect:\n  plc-1: [{name: Hall.Temperature, address: "ns=2;s=Hall.T"}]\n'
                                           "sources:\n")
    with_collect = load(path).mapping_plan().bindings
    assert with_collect[:-1] == plain
    assert with_collect[-1].pv_tags["name"] == "Hall.Temperature"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [("  plc-1:\n", "  plc-9:\n",
      [("collect.plc-9", "'plc-9'", "the id of an OPC UA, Modbus or S7 source: mb-1, plc-1, s7-1")]),
     ('"ns=2;s=Boiler1.Temperature"', '"ns=2;x=Boiler1"',
      [("collect.plc-1[0].address", "'ns=2;x=Boiler1'",
        "an OPC UA NodeId: ns=<index>; or nsu=<namespace URI>; then i=<number>, s=<text>, g=<GUID> or b=<base64> "
        "(e.g. ns=3;i=1042) (NodeId of opcua source plc-1)")]),
     ('"i=2258"', '"i=-1"',
      [("collect.plc-1[2].address", "'i=-1'",
        "a whole number from 0 to 4294967295 after i= (NodeId of opcua source plc-1)")]),
     ("name: Boiler1.Pressure", "name: Boiler1.Temperature",
      [("collect.plc-1[1].name", "'Boiler1.Temperature'", "a tag name on this source not used before (ids are unique)")]),
     ("address: \"hr:4\", interval_ms: 1000", "address: \"hr:4\", read: subscribe",
      [("collect.mb-1[1].read", "'subscribe'", "poll or nothing (modbus sources are polled)")]),
     ("interval_ms: 200", "interval_ms: 10",
      [("collect.plc-1[2].interval_ms", "10", "a number greater than or equal to 50")]),
     ("name: Oven.Temperature", "name: 'Oven.Temperature '",
      [("collect.s7-1[0].name", "'Oven.Temperature '",
        "a name without line breaks, surrounding spaces or a trailing backslash")]),
     ("name: Tank1.Pump", "name: Tank1/Pump",
      [("collect.mb-1[1].name", "'Tank1/Pump'", "a name without '/', '+' or '#' (it is one level of a live MQTT topic)")]),
     ("{name: Oven.Temperature, ", "{",
      [("collect.s7-1[0].name", "nothing (key missing)", "this key (it is required)")]),
     ("unit: degC}", "units: degC}",
      [("collect.plc-1[0].units", "'degC'", "no such key here (check the spelling; see config/README.md)")])],
)
def test_mistakes_in_collect_are_config_problems_with_their_key_path(tmp_path, old, new, expected):
    assert old in MINIMAL
    assert problems(write(tmp_path, MINIMAL.replace(old, new, 1))) == expected


def test_an_s7_address_is_checked_with_the_s7_syntax(tmp_path):
    found = problems(write(tmp_path, MINIMAL.replace('"DB1.DBD42:REAL"', '"ns=2;s=Oven.T"')))
    assert [(p, f) for p, f, _ in found] == [("collect.s7-1[0].address", "'ns=2;s=Oven.T'")]
    assert found[0][2].endswith("(S7 address of s7 source s7-1)")


def test_an_mqtt_source_cannot_collect_tags(tmp_path):
    path = variant(tmp_path, "sources:\n", 'collect:\n  line-bus: [{name: Hall.T, address: "ns=2;s=Hall.T"}]\nsources:\n')
    (found,) = problems(path)
    assert found[:2] == ("collect.line-bus", "'line-bus'")
    assert found[2].startswith("the id of an OPC UA, Modbus or S7 source: ") and "line-bus" not in found[2]


def test_site_and_its_time_zone_stay_required(tmp_path):
    text = MINIMAL.replace("site: {id: plant-a, name: Plant A, timezone: Europe/Berlin}\n", "")
    assert problems(write(tmp_path, text)) == [("site", "nothing (key missing)", "this key (it is required)")]
    text = MINIMAL.replace(", timezone: Europe/Berlin", "")
    assert problems(write(tmp_path, text)) == [("site.timezone", "nothing (key missing)", "this key (it is required)")]
