"""`shopfloor demo`: one command brings up simulators, broker and agent, and Ctrl-C stops all of it."""

import signal
import sqlite3

from simulators.broker import free_port
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


def test_demo_fills_the_historian_within_30s_and_stops_cleanly(tmp_path):
    agent_port = free_port()
    demo = Proc("demo", ["demo", "--data-dir", str(tmp_path / "demo"), "--agent-port", str(agent_port),
                         "--opcua-port", str(free_port()), "--speed", "60"], tmp_path)
    demo.start(ready="Press Ctrl-C to stop everything.", timeout=30)
    try:
        historian = tmp_path / "demo" / "agent" / "historian.sqlite3"
        wait_until(lambda: all(rows(historian, t) > 0 for t in
                               ("machine_state", "machine_count", "process_value", "material_level")),
                   30, "the demo's historian to fill")
        out = demo.log()
        assert f"http://127.0.0.1:{agent_port}/healthz" in out and "historian" in out
    finally:
        code = demo.stop(signal.SIGINT, timeout=30)
    assert code == 0, demo.log()[-3000:]
    assert "Shopfloor demo stopped." in demo.log()
