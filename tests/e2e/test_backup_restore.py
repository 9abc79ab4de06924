"""Backup and restore as docs/operations.md tells factory IT to do them: the backup script of that page, run while
a real agent writes its SQLite historian, then a restore into a fresh data dir that an agent starts from."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from simulators.broker import free_port
from tests.conftest import ROOT
from tests.e2e.conftest import Proc, wait_until

pytestmark = pytest.mark.slow


def backup_script(tmp_path: Path) -> Path:
    """The documented script, exactly as the page shows it."""
    found = re.search(r"```python\n(# shopfloor-backup\.py .*?)```", (ROOT / "docs" / "operations.md").read_text(),
                      re.S)
    assert found, "docs/operations.md has no shopfloor-backup.py block"
    path = tmp_path / "shopfloor-backup.py"
    path.write_text(found.group(1))
    return path


def history(path: Path) -> dict[str, set[tuple[object, ...]]]:
    """The keys (time and tags) of every row of every measurement table (not the newest-value `_last` tables
    nor the migrations). Keys, not whole rows: a point written again with the same time and tags replaces its
    row, so a later write may change a row's fields after a backup took it."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                  if not t.endswith("_last") and t != "schema_migrations"]
        out = {}
        for table in tables:
            key = [name for _, name, _, _, _, pk in sorted(conn.execute(f"PRAGMA table_info({table})"),
                                                         key=lambda c: c[5]) if pk]
            assert key and key[0] == "time", f"{table}: keyed by {key}"
            out[table] = set(conn.execute(f"SELECT {', '.join(key)} FROM {table}"))
        return out
    finally:
        conn.close()


def integrity(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def test_online_backup_of_a_running_agent_restores_consistent(make_system, tmp_path: Path) -> None:
    system = make_system()
    system.plc(speed=60)
    agent = system.agent()
    system.line("--speed", "60")
    wait_until(lambda: system.metric("shopfloor_points_out_total") > 300, 60, "points in the historian")
    historian = system.data_dir / "historian.sqlite3"
    before = history(historian)  # what the historian held when the backup began
    backup = tmp_path / "backup"
    done = subprocess.run([sys.executable, str(backup_script(tmp_path)), str(system.data_dir), str(backup)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.index("outbox.sqlite3 ->") < done.stdout.index("historian.sqlite3 ->")
    assert "backup complete" in done.stdout
    written = system.metric("shopfloor_points_out_total")
    wait_until(lambda: system.metric("shopfloor_points_out_total") > written + 100, 60,
               "the agent writing on after the backup")
    assert agent.running

    # the documented script refuses to mix two backups in one folder
    again = subprocess.run([sys.executable, str(backup_script(tmp_path)), str(system.data_dir), str(backup)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "is not empty" in again.stderr

    system.close()
    final = history(historian)
    assert not list(backup.glob("*-wal")) and not list(backup.glob("*-shm"))
    # the files beside the databases (MQTT sessions here; certificates with OPC UA security) travel with them
    assert (backup / "mqtt-workers" / "line-bus.sessions.json").is_file()
    restored_dir = tmp_path / "restored"
    shutil.copytree(backup, restored_dir)
    for name in ("outbox.sqlite3", "historian.sqlite3"):
        assert integrity(restored_dir / name) == "ok", name

    # an agent on the restored dir writes what the restored outbox held, with its sources gone
    port = free_port()
    restart_ns = time.time_ns()
    restored_agent = Proc("restored-agent", ["agent", "--config", str(system.config), "--data-dir",
                                             str(restored_dir), "--agent-port", str(port)], tmp_path).start()
    try:
        def outbox_points() -> int:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
                    return int(json.loads(resp.read())["outbox"]["points"])
            except urllib.error.HTTPError as exc:  # 503: its sources are down, which is expected here
                return int(json.loads(exc.read())["outbox"]["points"])
            except OSError:
                return -1
        wait_until(lambda: outbox_points() == 0, 60, "the restored outbox written to the restored historian")
    finally:
        assert restored_agent.stop() == 0, restored_agent.log()[-3000:]
    restored = history(restored_dir / "historian.sqlite3")
    assert integrity(restored_dir / "historian.sqlite3") == "ok"

    assert sum(len(keys) for keys in before.values()) > 100
    for table, keys in before.items():
        assert keys <= restored[table], f"{table}: {len(keys - restored[table])} rows of the backup time missing"
        # nothing in the restored historian that the running agent did not write (the restored agent adds
        # its own rows from its start on: its sources are gone, so its machines go OFFLINE)
        restored_keys = {key for key in restored[table] if int(key[0]) < restart_ns}  # type: ignore[call-overload]
        assert restored_keys <= final[table], f"{table}: rows the agent never wrote"
    # the backup was taken while the agent ran on: the live historian went on past it
    assert sum(len(r) for r in final.values()) > sum(len(r) for r in restored.values())
