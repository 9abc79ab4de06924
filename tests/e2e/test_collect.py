"""A ten-line config with a `collect:` section, read by the agent from the real PLC simulator: the values land in
the embedded SQLite historian, or in InfluxDB when `shopfloor agent --historian` names one."""

from __future__ import annotations

import pytest

from agent.sinks.influx import InfluxHistorian
from simulators.influxdb import InfluxServer, find_influxd
from tests.e2e.conftest import SIM_NS, wait_until

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


@pytest.mark.skipif(not find_influxd(), reason="needs Debian's influxdb package")
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
