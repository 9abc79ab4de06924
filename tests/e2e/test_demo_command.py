"""`shopfloor demo`: one command brings up simulators, broker, agent and dashboard, and Ctrl-C stops all of it."""

import json
import signal
import sqlite3
import urllib.request

from simulators.broker import free_port
from tests.conftest import ROOT
from tests.e2e.conftest import Proc, wait_until


def rows(path, table):
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def machine_rows(path, table, machine):
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return conn.execute(f"SELECT COUNT(*) FROM {table} WHERE machine = ?", (machine,)).fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def test_demo_fills_the_historian_within_30s_and_stops_cleanly(tmp_path):
    agent_port, dashboard_port = free_port(), free_port()
    platform_port = free_port()
    demo = Proc("demo", ["demo", "--data-dir", str(tmp_path / "demo"), "--agent-port", str(agent_port),
                         "--opcua-port", str(free_port()), "--port", str(dashboard_port), "--speed", "60",
                         "--platform-port", str(platform_port)], tmp_path)
    demo.start(ready="Press Ctrl-C to stop everything.", timeout=30)
    try:
        historian = tmp_path / "demo" / "agent" / "historian.sqlite3"
        wait_until(lambda: all(rows(historian, t) > 0 for t in
                               ("machine_state", "machine_count", "process_value", "material_level")),
                   30, "the demo's historian to fill")
        # machines read over all three PLC protocols side by side: OPC UA (plc-1), Modbus TCP (cnc-2 on plc-mb)
        # and S7 (packer-2 on plc-s7), each with its states and counts in the historian
        agent_health = wait_until(lambda: (h := json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{agent_port}/healthz", timeout=5).read()))["status"] == "ok" and h, 30,
            "every source of the agent connected")
        assert {s: v["kind"] for s, v in agent_health["sources"].items()} == {
            "plc-1": "opcua", "plc-mb": "modbus", "plc-s7": "s7", "line-bus": "mqtt"}
        for machine in ("press-1", "cnc-2", "packer-2"):
            wait_until(lambda m=machine: all(machine_rows(historian, t, m) > 0 for t in
                                             ("machine_state", "machine_count")), 30, f"{machine}'s data")
        out = demo.log()
        assert f"http://127.0.0.1:{agent_port}/healthz" in out and "historian" in out
        assert f"dashboard        http://127.0.0.1:{dashboard_port}" in out

        def overview():
            with urllib.request.urlopen(f"http://127.0.0.1:{dashboard_port}/api/v1/overview", timeout=5) as r:
                return json.loads(r.read())

        wait_until(lambda: all(line["states"] and "OFFLINE" not in line["states"]
                               for line in overview()["lines"].values()), 30, "both lines live on the dashboard")
        # the banner names the feed token's file; with it, the platform's first request gets the capacity
        token_file = tmp_path / "demo" / "feed-token"
        assert f"C2M feed token   in {token_file}" in out
        request = urllib.request.Request(f"http://127.0.0.1:{dashboard_port}/v1/capacity", headers={
            "Authorization": f"Bearer {token_file.read_text().strip()}"})
        with urllib.request.urlopen(request, timeout=10) as r:
            capacity = json.loads(r.read())
        assert [x["line"] for x in capacity["lines"]] == ["line-1", "line-2"]
        assert all(x["buckets"] and x["oee"]["basis"] == "configured" for x in capacity["lines"])
        # the simulated platform the banner names receives verified capacity events and pulls the feed
        assert f"C2M platform     http://127.0.0.1:{platform_port}" in out

        def platform():
            with urllib.request.urlopen(f"http://127.0.0.1:{platform_port}/state", timeout=5) as r:
                return json.loads(r.read())

        state = wait_until(lambda: (s := platform())["pulls"]["200"] >= 1 and len(s["lines"]) == 2 and s, 60,
                           "the platform to hold both lines and to have pulled the feed")
        assert not state["rejected"] and all(held["type"] == "com.shopfloor.capacity.v1"
                                             for held in state["lines"].values())
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{dashboard_port}/healthz", timeout=5).read())
        assert health["push"]["endpoints"][0]["delivered"] >= 2
        # the overview board says when the platform last got an event
        wait_until(lambda: overview()["platform"]["endpoints"][0]["last_delivery_ms"], 30,
                   "the overview to show the last delivery")
    finally:
        code = demo.stop(signal.SIGINT, timeout=30)
    assert code == 0, demo.log()[-3000:]
    assert "Shopfloor demo stopped." in demo.log()


def test_demo_on_influxdb(tmp_path, influx_server):
    from agent.sinks.influx import InfluxHistorian

    database = f"demo_{free_port()}"  # the demo creates it
    demo = Proc("demo-influx", ["demo", "--data-dir", str(tmp_path / "demo"), "--agent-port", str(free_port()),
                                "--opcua-port", str(free_port()), "--port", str(free_port()), "--speed", "60",
                                "--historian", f"influxdb://127.0.0.1:{influx_server.port}/{database}"], tmp_path)
    demo.start(ready="Press Ctrl-C to stop everything.", timeout=30)
    try:
        out = demo.log()
        assert f"created InfluxDB database {database}" in out
        assert f"historian        {influx_server.url}, database {database} (InfluxDB 1.x)" in out
        historian = InfluxHistorian(influx_server.url, database=database)
        t0, t1 = 946_684_800 * 10**9, 7_258_118_400 * 10**9
        wait_until(lambda: all(historian.events(m, t0, t1) for m in
                               ("machine_state", "machine_count", "process_value", "material_level")),
                   30, "the demo's InfluxDB database to fill")
        assert not (tmp_path / "demo" / "agent" / "historian.sqlite3").exists()
        # Killed outright (a closed terminal, a test's timeout), the demo takes its processes with it: none is
        # left holding a port, such as the fixed ones of its Modbus and S7 simulators.
        assert len(demo_processes(tmp_path / "demo")) >= 5  # simulators, agent, dashboard, platform, broker
        demo.kill()
        try:  # the line simulator waits up to 10 s for its broker, which went too, to acknowledge what it sent
            wait_until(lambda: not demo_processes(tmp_path / "demo"), 40, "the demo's processes to end with it")
        except AssertionError:
            raise AssertionError(f"left running: {demo_processes(tmp_path / 'demo')}") from None
    finally:
        demo.stop(signal.SIGINT, timeout=30)


def demo_processes(data_dir) -> list[str]:
    """Command lines of the running processes that work in the demo's data directory."""
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if str(data_dir) in cmdline and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(cmdline)
    return found


def test_demo_refuses_a_bad_historian_url(tmp_path):
    demo = Proc("demo-bad", ["demo", "--data-dir", str(tmp_path / "demo"), "--agent-port", str(free_port()),
                             "--opcua-port", str(free_port()),
                             "--historian", "influxdb://edge:pw@127.0.0.1:8086/plant"], tmp_path)
    demo.start()
    assert demo.popen.wait(30) == 2
    assert "put the password in INFLUX_PASSWORD, not in the URL" in demo.log()


def test_dashboard_on_a_taken_port_says_so_and_exits_3(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = Proc("dashboard", ["dashboard", "--config", str(ROOT / "config" / "factory.yaml"), "--port", str(port),
                                  "--data-dir", str(tmp_path / "data")], tmp_path).start()
        code = proc.popen.wait(30)
    assert code == 3
    assert f"cannot listen on 127.0.0.1:{port}" in proc.log() and "Traceback" not in proc.log()
