"""Two agents, each with its own data directory (two edge PCs), split one line's MQTT traffic on one shared
subscription and write one historian. One is killed with SIGKILL in the middle of a flood.

What Mosquitto 2.0 does then (and this test holds it to): the killed agent's persistent session stays a member
of the group. Its unacknowledged in-flight messages stay in that session, and the broker keeps handing the
session its round-robin share of new messages while it is offline; none of them goes to the surviving agent.
They reach the historian when the killed agent starts again with the same client id. docs/scaling.md says
what this means for running such a pair."""

from __future__ import annotations

import json
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from simulators.broker import Broker, free_port
from tests.e2e.conftest import Proc, wait_until, write_config
from tests.e2e.test_mqtt_flow import MEASUREMENTS

GROUP = "line-1-bus"


class EdgeAgent:
    """One agent with its own config, data directory and port, on the shared historian."""

    def __init__(self, tmp: Path, broker: Broker, name: str, historian: Path) -> None:
        self.name = name
        self.tmp = tmp
        self.port = free_port()
        self.data_dir = tmp / name

        def change(data: dict[str, Any]) -> None:
            data["agent"]["id"] = name
            data["historian"]["path"] = str(historian)
            source = data["sources"]["mqtt"][0]
            source["client_id"] = f"shopfloor-{name}"
            source["share_group"] = GROUP

        self.config = write_config(tmp / f"{name}.yaml", broker.url, free_port(), self.port, self.data_dir, change)
        self.proc: Proc | None = None
        self.starts = 0

    def start(self) -> Proc:
        self.starts += 1
        self.proc = Proc(f"{self.name}-{self.starts}", ["agent", "--config", str(self.config)], self.tmp).start()
        wait_until(lambda: self.connected(), 40, f"{self.name}: MQTT source connected")
        return self.proc

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def connected(self) -> bool:
        assert self.proc is not None and self.proc.running, self.proc.log()[-3000:] if self.proc else ""
        try:
            return bool(json.loads(self.get("/healthz")[1])["sources"]["line-bus"]["connected"])
        except OSError:
            return False

    def messages_in(self) -> float:
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith('shopfloor_messages_in_total{source="line-bus"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def outbox_points(self) -> int:
        return int(json.loads(self.get("/healthz")[1])["outbox"]["points"])


def stored(historian: Path) -> dict[str, int]:
    if not historian.exists():
        return {m: 0 for m in MEASUREMENTS}
    conn = sqlite3.connect(f"file:{historian}?mode=ro", uri=True, timeout=10)
    try:
        names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return {m: conn.execute(f"SELECT COUNT(*) FROM {m}").fetchone()[0] if m in names else 0
                for m in MEASUREMENTS}
    finally:
        conn.close()


def test_two_agents_split_a_line_and_a_killed_one_delivers_its_share_when_it_returns(tmp_path, broker):
    historian = tmp_path / "historian.sqlite3"
    a = EdgeAgent(tmp_path, broker, "edge-a", historian)
    b = EdgeAgent(tmp_path, broker, "edge-b", historian)
    procs: list[Proc] = []
    try:
        procs += [a.start(), b.start()]
        line = Proc("line", ["simulate", "line", "--config", str(a.config), "--mqtt", broker.url, "--speed", "400",
                             "--count", "6000", "--seed", "11", "--truth-file", str(tmp_path / "truth.json")],
                    tmp_path).start(ready="line simulator publishing to")
        procs.append(line)
        wait_until(lambda: a.messages_in() > 300 and b.messages_in() > 300, 40, "both agents taking messages")
        assert b.proc is not None
        b.proc.kill()  # SIGKILL: what it took and had not acknowledged stays in its session at the broker
        wait_until(lambda: not line.running, 120, "the line simulator to finish")
        assert line.popen is not None and line.popen.returncode == 0, line.log()[-2000:]
        truth = json.loads((tmp_path / "truth.json").read_text())
        expected = {m: truth["valid"].get(m, 0) for m in MEASUREMENTS}
        assert sum(expected.values()) == 6000
        # The survivor settles everything it was given; the killed agent's share is not among it.
        before = -1.0

        def survivor_settled() -> bool:
            nonlocal before
            now = a.messages_in()
            settled = now == before and a.outbox_points() == 0
            before = now
            return settled
        wait_until(survivor_settled, 60, "the surviving agent to settle", every=1.5)
        short = stored(historian)
        assert sum(short.values()) < 6000, "Mosquitto handed the killed agent's messages to the survivor"
        # The killed agent comes back under the same client id: its session delivers the rest.
        procs.append(b.start())
        try:
            wait_until(lambda: stored(historian) == expected and a.outbox_points() == 0 and b.outbox_points() == 0,
                       60, "the historian to equal what the broker acknowledged to the publisher")
        except AssertionError:
            raise AssertionError(f"historian {stored(historian)} != acknowledged {expected}") from None
    finally:
        for proc in reversed(procs):
            proc.stop()
