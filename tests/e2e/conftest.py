"""End-to-end fixtures: a real Mosquitto broker, the real PLC simulator and the agent, each in its own process,
on free loopback ports, with a config derived from config/factory.yaml."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import Client, ua

from simulators.broker import Broker, free_port
from simulators.harness import wait_until
from tests.conftest import FACTORY_YAML, ROOT

SIM_NS = "urn:shopfloor:plc-sim"
# A Monday 09:00 in the site's zone: inside the day shift, away from its breaks.
SIM_START = "2026-11-23T09:00:00+08:00"


class Proc:
    """A child process of the `shopfloor` command with its output in a log file."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = [sys.executable, "-m", "shopfloor", *argv]
        self.log_path = log_dir / f"{name}.log"
        self.env = {**os.environ, **(env or {})}
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self, ready: str | None = None, timeout: float = 30) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=self.env)
        log.close()
        if ready:
            try:
                wait_until(lambda: ready in self.log() or self._died(), timeout, f"{self.name}: {ready!r}")
            except AssertionError:
                self.kill()  # not ready in time: the caller never learns of it, so it must not outlive the test
                raise
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()[-3000:]}")
        return self

    def _died(self) -> bool:
        return self.popen is not None and self.popen.poll() is not None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.popen is None or self.popen.poll() is not None:
            return self.popen.returncode if self.popen else None
        self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


def one_opcua_plc(data: dict[str, Any]) -> None:
    """Every machine of the example factory read through its OPC UA source, as the PLC simulator shows them all:
    the example reads one machine over Modbus and one over S7, which tests of their own cover (test_modbus_flow,
    test_s7_flow, the demo test); the rest of the suite looks at the plant through one PLC."""
    opcua = data["sources"]["opcua"][0]["id"]
    others = {s["id"] for kind in ("modbus", "s7") for s in data["sources"].get(kind, [])}
    for line in data["lines"]:
        for machine in line["machines"]:
            if machine["source"] in others:
                machine.pop("node_ids", None)
                machine.update(source=opcua, node_prefix=f"nsu=urn:shopfloor:plc-sim;s={line['id']}.{machine['id']}.")
    data["sources"].pop("modbus", None)
    data["sources"].pop("s7", None)


def write_config(path: Path, broker_url: str, opcua_port: int, agent_port: int, data_dir: Path,
                 change: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """config/factory.yaml pointed at this test's broker, simulator, port and data dir, plus `change`."""
    data = yaml.safe_load(FACTORY_YAML.read_text(encoding="utf-8"))
    one_opcua_plc(data)
    data["sources"]["opcua"][0]["endpoint"] = f"opc.tcp://127.0.0.1:{opcua_port}/shopfloor/plc"
    for source in data["sources"]["mqtt"]:
        source["url"] = broker_url
    data["agent"].update({"data_dir": str(data_dir), "http_port": agent_port})
    if change:
        change(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def historian_rows(path: Path, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of a SQLite historian read-only, while the agent writes it; none before the file or its table exists."""
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(query, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


class System:
    """Broker, PLC simulator and agent for one test, with helpers to look at what they did."""

    def __init__(self, tmp: Path, broker: Broker, change: Callable[[dict[str, Any]], None] | None) -> None:
        self.tmp = tmp
        self.broker = broker
        self.opcua_port = free_port()
        self.agent_port = free_port()
        self.data_dir = tmp / "agent"
        self.endpoint = f"opc.tcp://127.0.0.1:{self.opcua_port}/shopfloor/plc"
        self.config = write_config(tmp / "factory.yaml", broker.url, self.opcua_port, self.agent_port,
                                   self.data_dir, change)
        self.procs: list[Proc] = []

    def plc(self, *extra: str, speed: float = 60, paused: bool = False, env: dict[str, str] | None = None,
            name: str = "plc") -> Proc:
        argv = ["simulate", "plc", "--config", str(self.config), "--endpoint", self.endpoint, "--speed", str(speed),
                "--start", SIM_START, "--cert-dir", str(self.tmp / "plc-pki"), *extra]
        if paused:
            argv.append("--paused")
        proc = Proc(name, argv, self.tmp, env).start(ready="PLC simulator ready at")
        self.procs.append(proc)
        return proc

    def agent(self, *extra: str, env: dict[str, str] | None = None, name: str = "agent") -> Proc:
        proc = Proc(name, ["agent", "--config", str(self.config), *extra], self.tmp, env).start()
        self.procs.append(proc)
        wait_until(lambda: not proc.running or self.http("/metrics")[0] == 200, 30, "agent /metrics")
        assert proc.running, proc.log()[-3000:]
        return proc

    def line(self, *extra: str, name: str = "line") -> Proc:
        proc = Proc(name, ["simulate", "line", "--config", str(self.config), "--mqtt", self.broker.url,
                           "--truth-file", str(self.tmp / f"{name}-truth.json"), *extra], self.tmp)
        proc.start(ready="line simulator publishing to")
        self.procs.append(proc)
        return proc

    def dashboard(self, *extra: str, name: str = "dashboard") -> Proc:
        """The e-board dashboard on a free port: `self.dashboard_url`."""
        port = free_port()
        self.dashboard_url = f"http://127.0.0.1:{port}"
        proc = Proc(name, ["dashboard", "--config", str(self.config), "--port", str(port), *extra], self.tmp)
        proc.start(ready="shopfloor dashboard: http://")
        self.procs.append(proc)
        return proc

    def line_truth(self, name: str = "line") -> dict[str, Any]:
        return json.loads((self.tmp / f"{name}-truth.json").read_text())

    def http(self, path: str) -> tuple[int, str]:
        """GET `path` from the agent; an agent that has exited is an AssertionError quoting its log, so a
        test waiting on the agent says why it stopped answering."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.agent_port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except urllib.error.URLError:
            agents = [p for p in self.procs if p.argv[3:4] == ["agent"]]
            if agents and not agents[-1].running:
                dead = agents[-1]
                raise AssertionError(f"{dead.name} exited with {dead.popen.returncode if dead.popen else None}; "
                                     f"the end of its log:\n{dead.log()[-3000:]}") from None
            raise

    def health(self) -> dict[str, Any]:
        return json.loads(self.http("/healthz")[1])

    def metric(self, name: str) -> float:
        """Sum of a metric's samples on /metrics (all label sets)."""
        total = 0.0
        for line in self.http("/metrics")[1].splitlines():
            if line.startswith(name) and not line.startswith("#"):
                key = line.split(" ")[0].split("{")[0]
                if key == name:
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        return historian_rows(self.data_dir / "historian.sqlite3", query, *params)

    def outbox_sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.data_dir / 'outbox.sqlite3'}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(query, params).fetchall()
        finally:
            conn.close()

    def historian_counts(self) -> dict[tuple[str, str], int]:
        return {(m, c): int(s) for m, c, s in
                self.sql("SELECT machine, counter, SUM(delta) FROM machine_count GROUP BY machine, counter")}

    def outbox_empty(self) -> bool:
        return self.health()["outbox"]["points"] == 0

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


async def _plc_call(endpoint: str, action: Callable[[Client, int], Any]) -> Any:
    async with Client(endpoint, timeout=5) as client:
        ns = await client.get_namespace_index(SIM_NS)
        return await action(client, ns)


def plc_truth(endpoint: str, cfg: Any) -> dict[tuple[str, str], int]:
    """The PLC simulator's true unwrapped counts per (machine, counter), once they stand still (after
    Sim.Running went false, the tick in progress still writes the changes it took in)."""
    async def read(client: Client, ns: int) -> dict[tuple[str, str], int]:
        out = {}
        for line, machine in cfg.machines():
            for counter in ("total", "good", "reject"):
                node = client.get_node(ua.NodeId(f"{line.id}.{machine.id}.Truth.{counter.title()}", ns))
                out[(machine.id, counter)] = int(await node.read_value())
        return out

    async def settled(client: Client, ns: int) -> dict[tuple[str, str], int]:
        last = await read(client, ns)
        for _ in range(50):
            await asyncio.sleep(0.3)
            now = await read(client, ns)
            if now == last:
                return now
            last = now
        return last
    return asyncio.run(_plc_call(endpoint, settled))


def plc_set(endpoint: str, name: str, value: Any, variant: ua.VariantType) -> None:
    async def write(client: Client, ns: int) -> None:
        await client.get_node(ua.NodeId(name, ns)).write_value(ua.DataValue(ua.Variant(value, variant)))
    asyncio.run(_plc_call(endpoint, write))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed end-to-end test's report ends with the last lines of its processes' logs: CI keeps only
    the output, and the logs say why an agent or a simulator stopped answering."""
    report = yield
    tmp = getattr(item, "funcargs", {}).get("tmp_path")
    if report.when == "call" and report.failed and isinstance(tmp, Path):
        for log in sorted(tmp.glob("*.log")):
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
            report.sections.append((f"the end of {log.name}", tail))
    return report


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with Broker(port=free_port(), data_dir=tmp_path / "broker") as b:
        yield b


@pytest.fixture
def make_system(tmp_path: Path, broker: Broker) -> Iterator[Callable[..., System]]:
    systems: list[System] = []

    def make(change: Callable[[dict[str, Any]], None] | None = None) -> System:
        system = System(tmp_path, broker, change)
        systems.append(system)
        return system

    yield make
    for system in systems:
        system.close()
    artefacts = ROOT / "test-artifacts" / tmp_path.name
    if any(not p.running and p.popen and p.popen.returncode not in (0, None, -9) for s in systems for p in s.procs):
        artefacts.mkdir(parents=True, exist_ok=True)
        for log in tmp_path.glob("*.log"):
            (artefacts / log.name).write_bytes(log.read_bytes())
