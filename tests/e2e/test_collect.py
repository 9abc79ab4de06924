"""A ten-line config with a `collect:` section, read by the agent from the real PLC simulator: the values land in
the embedded SQLite historian, or in InfluxDB when `shopfloor agent --historian` names one. The Modbus and S7
simulators' tags are collected the same way, with no code of their own."""

from __future__ import annotations

import pytest
import yaml

from agent.sinks.influx import InfluxHistorian
from simulators.broker import free_port
from simulators.influxdb import InfluxServer
from tests.conftest import FACTORY_YAML
from tests.e2e.conftest import SIM_NS, wait_until
from tests.e2e.test_modbus_flow import ModbusRig, modbus_change
from tests.e2e.test_s7_flow import S7System

FACTORY = yaml.safe_load(FACTORY_YAML.read_text(encoding="utf-8"))

NAMES = {"Press1.Temperature", "Press1.Speed", "Press1.TotalCount"}


def collect_only(system):
    """The PLC simulator serving config/factory.yaml's machines, then `system.config` replaced by a config
    that collects three of press-1's tags and knows nothing of lines, machines or shifts."""
    system.plc()
    system.config = system.tmp / "collect.yaml"
    system.config.write_text(f"""\
site: {{id: plant-a, name: Plant A, timezone: Europe/Berlin}}
sources:
  opcua: [{{id: plc-1, endpoint: "{system.endpoint}"}}]
historian: {{kind: sqlite}}
agent: {{data_dir: "{system.data_dir}", http_port: {system.agent_port}}}
collect:
  plc-1:
    - {{name: Press1.Temperature, address: "nsu={SIM_NS};s=line-1.press-1.Temperature", unit: degC}}
    - {{name: Press1.Speed, address: "nsu={SIM_NS};s=line-1.press-1.Speed", interval_ms: 200, read: poll}}
    - {{name: Press1.TotalCount, address: "nsu={SIM_NS};s=line-1.press-1.TotalCount", interval_ms: 100}}
""", encoding="utf-8")
    assert len(system.config.read_text().splitlines()) == 10
    return system


def test_collected_tags_are_stored_in_the_sqlite_historian(make_system):
    system = collect_only(make_system())
    system.agent()
    wait_until(lambda: {n for (n,) in system.sql("SELECT name FROM process_value_last WHERE quality = 'Good'")}
               == NAMES, 30, "a Good value of each collected tag")
    rows = system.sql("SELECT site, line, machine, name, value FROM process_value_last ORDER BY name")
    assert [r[:4] for r in rows] == [("plant-a", "_collect", "plc-1", name) for name in sorted(NAMES)]
    assert all(isinstance(r[4], float) for r in rows)
    # the press produces: its counter, subscribed, keeps arriving
    first = system.sql("SELECT value FROM process_value_last WHERE name = 'Press1.TotalCount'")[0][0]
    wait_until(lambda: system.sql("SELECT value FROM process_value_last WHERE name = 'Press1.TotalCount'")[0][0]
               > first, 30, "a later TotalCount")
    assert system.health()["sources"]["plc-1"]["connected"] is True
    # nothing of a machine model is written
    assert system.sql("SELECT COUNT(*) FROM machine_state") == [(0,)]
    assert system.sql("SELECT COUNT(*) FROM machine_count") == [(0,)]


def test_agent_historian_option_writes_collected_tags_to_influxdb(make_system, tmp_path):
    with InfluxServer(tmp_path / "influxdb") as server:
        server.create_database("plant")
        system = collect_only(make_system())
        host_port = server.url.removeprefix("http://")
        system.agent("--historian", f"influxdb://{host_port}/plant")
        historian = InfluxHistorian(server.url, database="plant")
        try:
            points = wait_until(
                lambda: (lambda ps: ps if {p.tags["name"] for p in ps} == NAMES else None)(
                    historian.last_values("process_value", line="_collect")),
                30, "each collected tag in InfluxDB")
        finally:
            historian.close()
        assert {(p.tags["site"], p.tags["machine"]) for p in points} == {("plant-a", "plc-1")}
        assert all(isinstance(p.fields.get("value"), float) for p in points if p.fields["quality"] == "Good")
        # the config's own historian (SQLite in the data dir) was not used
        assert not (system.data_dir / "historian.sqlite3").exists()


def address_of(data, machine_id, node):
    """Where a machine of a (changed) config reads the tag whose node in its machine type was `node`."""
    machine = next(m for line in data["lines"] for m in line["machines"] if m["id"] == machine_id)
    plain = {"press-modbus": "press", "cnc-modbus": "cnc"}.get(machine["type"], machine["type"])
    index = [t["node"] for t in FACTORY["machine_types"][plain]["tags"]].index(node)
    tag_node = data["machine_types"][machine["type"]]["tags"][index]["node"]
    return machine.get("node_ids", {}).get(tag_node) or machine.get("node_prefix", "") + tag_node


def collect_from_plc(system, kind):
    """`system.config` replaced by a config collecting press-1's temperature, speed and total count from the
    `kind` source of the config the simulator was started with."""
    data = yaml.safe_load(system.config.read_text(encoding="utf-8"))
    (source,) = data["sources"][kind]
    tags = [{"name": name, "address": address_of(data, "press-1", node)}
            for name, node in (("Press1.Temperature", "Temperature"), ("Press1.Speed", "Speed"),
                               ("Press1.TotalCount", "TotalCount"))]
    tags[1]["interval_ms"] = 200
    system.config = system.tmp / "collect.yaml"
    system.config.write_text(yaml.safe_dump({
        "site": {"id": "plant-a", "name": "Plant A", "timezone": "Europe/Berlin"},
        "sources": {kind: [source]},
        "agent": {"data_dir": str(system.data_dir), "http_port": system.agent_port},
        "collect": {source["id"]: tags}}), encoding="utf-8")
    return source["id"], [t["address"] for t in tags]


@pytest.mark.parametrize("kind", ["modbus", "s7"])
def test_modbus_and_s7_sources_collect_tags_with_no_machine(make_system, kind):
    if kind == "modbus":
        port = free_port()
        system = make_system(modbus_change(port))
        ModbusRig(system, port).start()
    else:
        s7 = S7System(make_system)
        s7.simulator()
        system = s7.system
    source_id, addresses = collect_from_plc(system, kind)
    system.agent()
    wait_until(lambda: {n for (n,) in system.sql("SELECT name FROM process_value_last WHERE quality = 'Good'")}
               == NAMES, 30, f"a Good value of each tag collected over {kind} ({addresses})")
    assert {r[:3] for r in system.sql("SELECT site, line, machine FROM process_value")} == {
        ("plant-a", "_collect", source_id)}
    first = system.sql("SELECT value FROM process_value_last WHERE name = 'Press1.TotalCount'")[0][0]
    wait_until(lambda: system.sql("SELECT value FROM process_value_last WHERE name = 'Press1.TotalCount'")[0][0]
               > first, 30, "a later TotalCount")
    assert system.sql("SELECT COUNT(*) FROM machine_state") == [(0,)]
