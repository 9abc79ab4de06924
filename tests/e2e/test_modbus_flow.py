"""Modbus simulator -> agent -> SQLite historian, end to end, against a real pymodbus server in its own process.

The four machines with code state maps (presses and CNCs) are read over Modbus TCP, each on its own unit of one
simulated gateway (simulators/modbus/layout.py); the packers stay on the OPC UA source, which no test starts.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from simulators.broker import free_port
from simulators.modbus.layout import read_over_modbus
from simulators.modbus.server import CONTROL_FAIL, CONTROL_RUNNING, CONTROL_UNDECODABLE, CONTROL_UNIT
from tests.e2e.conftest import SIM_START, Proc, System, wait_until

pytestmark = pytest.mark.slow

ROLLOVER = 200
UNITS = {"press-1": 1, "press-2": 2, "cnc-1": 3, "cnc-2": 4}
MODBUS_MACHINES = tuple(UNITS)
STATE_CODES = {  # the press-codes and cnc-codes state maps of config/factory.yaml
    "press": {0: "STOPPED", 1: "RUNNING", 2: "SETUP", 3: "FAULT", 4: "STARVED", 5: "BLOCKED", 6: "PLANNED_STOP"},
    "cnc": {10: "PLANNED_STOP", 11: "SETUP", 20: "RUNNING", 30: "STOPPED", 40: "FAULT", 50: "STARVED",
            51: "BLOCKED"},
}


def modbus_change(port: int, rollover: int | None = ROLLOVER) -> Any:
    """The config change: presses and CNCs over Modbus on `port`; the press total wraps at `rollover`; the CNCs'
    reject counter is signed (so the simulator can show an undecodable -1 in it)."""
    def change(data: dict[str, Any]) -> None:
        read_over_modbus(data, {"id": "plc-mb", "host": "127.0.0.1", "port": port, "poll_ms": 100,
                                "timeout_s": 1, "retries": 0}, UNITS)
        for tag in data["machine_types"]["press-modbus"]["tags"]:
            if tag.get("rollover") and rollover:
                tag["rollover"] = rollover
        for tag in data["machine_types"]["cnc-modbus"]["tags"]:
            if tag.get("counter") == "reject":
                tag["node"] = "hr:14:int32"
    return change


class ModbusRig:
    """The Modbus simulator of a System: start it (again), work its controls, read its truth."""

    def __init__(self, system: System, port: int) -> None:
        self.system = system
        self.port = port
        self.truth_file = system.tmp / "modbus-truth.json"
        self.anchor: float | None = None  # set: every start shares one clock, so a restart carries on

    def anchored(self) -> ModbusRig:
        self.anchor = time.time()
        return self

    def start(self, *extra: str, speed: float = 60, paused: bool = False, name: str = "modbus") -> Proc:
        argv = ["simulate", "modbus", "--config", str(self.system.config), "--port", str(self.port),
                "--speed", str(speed), "--start", SIM_START, "--truth", str(self.truth_file), *extra]
        if self.anchor is not None:
            argv += ["--sim-anchor", str(self.anchor)]
        if paused:
            argv.append("--paused")
        proc = Proc(name, argv, self.system.tmp).start(ready="Modbus simulator ready at")
        self.system.procs.append(proc)
        return proc

    def control(self, register: int, value: int) -> None:
        async def write() -> None:
            client = AsyncModbusTcpClient("127.0.0.1", port=self.port, reconnect_delay=0, timeout=2, retries=1)
            try:
                assert await client.connect(), "the Modbus simulator does not answer"
                assert not (await client.write_register(register, value, device_id=CONTROL_UNIT)).isError()
            finally:
                client.close()
        asyncio.run(write())

    def truth(self) -> dict[tuple[str, str], int]:
        """The plant's unwrapped counts per (machine, counter) once its clock stands still: the same in two
        successive writes of the truth file (it is rewritten every 2 s)."""
        def read() -> dict[tuple[str, str], int]:
            machines = json.loads(self.truth_file.read_text())["machines"]
            return {(key.split("/")[1], counter): int(m[counter]) for key, m in machines.items()
                    for counter in ("total", "good", "reject") if key.split("/")[1] in UNITS}
        last: dict[tuple[str, str], int] | None = None
        written = self.truth_file.stat().st_mtime_ns
        for _ in range(60):
            time.sleep(0.5)
            if self.truth_file.stat().st_mtime_ns == written:
                continue
            written = self.truth_file.stat().st_mtime_ns
            now = read()
            if now == last:
                return now
            last = now
        raise AssertionError("the simulator's truth did not settle: is its clock still running?")


@pytest.fixture
def modbus_system(make_system: Any) -> Any:
    def make(rollover: int | None = ROLLOVER) -> tuple[System, ModbusRig]:
        port = free_port()
        system = make_system(modbus_change(port, rollover))
        return system, ModbusRig(system, port)
    return make


def modbus_counts(system: System) -> dict[tuple[str, str], int]:
    return {k: v for k, v in system.historian_counts().items() if k[0] in UNITS}


def first_values(system: System) -> dict[tuple[str, str], int]:
    """Each counter's first reading: the agent's baseline (what was made before it is counted nowhere)."""
    return {(m, c): int(v) for m, c, v in system.sql(
        "SELECT machine, counter, value FROM machine_count f WHERE time = (SELECT MIN(time) FROM machine_count i "
        "WHERE i.machine = f.machine AND i.counter = f.counter)") if m in UNITS}


def settle(system: System, plant: dict[tuple[str, str], int], timeout: float = 30) -> None:
    """Wait until the historian's deltas add up to what the plant made since each counter's baseline."""
    baseline = first_values(system)
    truth = {k: v - baseline.get(k, 0) for k, v in plant.items()}

    def equal() -> bool:
        return system.outbox_empty() and modbus_counts(system) == truth
    try:
        wait_until(equal, timeout, "historian totals to equal the simulator's ground truth")
    except AssertionError:
        got = modbus_counts(system)
        raise AssertionError(f"historian != truth for "
                             f"{ {k: (got.get(k), v) for k, v in truth.items() if got.get(k) != v} }") from None


def latest_states(system: System) -> dict[str, str]:
    return dict(system.sql("SELECT machine, state FROM machine_state m WHERE time = "
                           "(SELECT MAX(time) FROM machine_state i WHERE i.machine = m.machine)"))


def test_counts_with_rollover_and_states_arrive(modbus_system: Any) -> None:
    system, modbus = modbus_system()
    modbus.start(speed=300, paused=True)
    system.agent()
    wait_until(lambda: len(system.sql("SELECT DISTINCT machine, counter FROM machine_count WHERE machine IN "
                                      "('press-1', 'press-2', 'cnc-1', 'cnc-2')")) == 12, 30,
               "the first reading of all 12 Modbus counters")
    modbus.control(CONTROL_RUNNING, 1)
    time.sleep(14)
    modbus.control(CONTROL_RUNNING, 0)
    truth = modbus.truth()
    assert truth[("press-1", "total")] > 2 * ROLLOVER, truth  # the counter really rolled over, more than once
    assert set(first_values(system).values()) == {0}  # the agent saw the plant from its first unit on
    settle(system, truth)
    values = [v for (v,) in system.sql(
        "SELECT value FROM machine_count WHERE machine='press-1' AND counter='total' ORDER BY time")]
    assert max(values) < ROLLOVER and any(b < a for a, b in zip(values, values[1:], strict=False))
    states = latest_states(system)
    assert all(states.get(m) not in (None, "OFFLINE") for m in MODBUS_MACHINES), states
    # every state is the machine type's state map applied to the raw code read (MICROSTOP and SLOW are the
    # agent's own refinements of a stop and a run)
    rows = system.sql("SELECT machine, raw, state FROM machine_state WHERE machine IN "
                      "('press-1', 'press-2', 'cnc-1', 'cnc-2') AND state NOT IN ('OFFLINE', 'MICROSTOP', 'SLOW')")
    assert rows
    assert {state for _, _, state in rows} >= {"RUNNING"}
    for machine, raw, state in rows:
        assert STATE_CODES[machine[:-2]][int(raw)] == state, (machine, raw, state)
    assert system.sql("SELECT COUNT(DISTINCT machine || name) FROM process_value WHERE quality = 'Good' AND "
                      "machine IN ('press-1', 'press-2', 'cnc-1', 'cnc-2')")[0][0] == 12
    assert system.health()["sources"]["plc-mb"]["connected"] is True


def test_simulator_restart_goes_offline_then_counts_on_without_double_counting(modbus_system: Any) -> None:
    system, modbus = modbus_system(rollover=None)
    modbus.anchored()
    sim = modbus.start(speed=60)
    system.agent()
    wait_until(lambda: system.sql("SELECT COUNT(*) FROM machine_count WHERE delta > 0 AND machine = 'press-1'")
               [0][0] > 0, 30, "counts")
    sim.stop(signal.SIGKILL)
    wait_until(lambda: all(latest_states(system).get(m) == "OFFLINE" for m in MODBUS_MACHINES), 15,
               "the Modbus machines OFFLINE while the simulator is down")
    health = system.health()["sources"]["plc-mb"]
    assert health["connected"] is False and health["last_error"]
    before = system.sql("SELECT COUNT(*) FROM machine_count")[0][0]
    time.sleep(3)  # let the agent's backoff grow a little
    modbus.start(speed=60, name="modbus-2")
    wait_until(lambda: system.sql("SELECT COUNT(*) FROM machine_count")[0][0] > before, 20,
               "new counts after the simulator's restart")
    wait_until(lambda: all(latest_states(system).get(m) != "OFFLINE" for m in MODBUS_MACHINES), 20,
               "the Modbus machines back from OFFLINE")
    assert system.metric("shopfloor_source_reconnects_total") >= 1
    modbus.control(CONTROL_RUNNING, 0)
    # the restarted simulator carries on with the same plant: what was made while it was down is counted once
    settle(system, modbus.truth())


def test_exceptions_and_undecodable_values_are_bad_and_the_agent_serves_on(modbus_system: Any) -> None:
    system, modbus = modbus_system(rollover=None)
    modbus.start(speed=60)
    agent = system.agent()
    wait_until(lambda: all(latest_states(system).get(m) not in (None, "OFFLINE") for m in MODBUS_MACHINES), 30,
               "a state for every Modbus machine")

    modbus.control(CONTROL_FAIL, 4)  # every unit answers "server device failure"
    failed_at = time.time_ns()
    wait_until(lambda: all(latest_states(system).get(m) == "OFFLINE" for m in MODBUS_MACHINES), 15,
               "the Modbus machines OFFLINE while every read is refused")
    wait_until(lambda: system.sql("SELECT COUNT(*) FROM process_value WHERE quality = 'Bad' AND time > ?",
                                  failed_at)[0][0] >= 12, 15, "Bad process values")
    health = system.health()["sources"]["plc-mb"]
    assert health["connected"] is True and "Modbus exception 4 (server device failure)" in health["last_error"]
    assert system.metric("shopfloor_source_read_errors_total") > 0
    assert "tags read as Bad: Modbus exception 4 (server device failure)" in agent.log()
    modbus.control(CONTROL_FAIL, 0)
    wait_until(lambda: all(latest_states(system).get(m) != "OFFLINE" for m in MODBUS_MACHINES), 15,
               "the machines back once the device answers")
    wait_until(lambda: not system.health()["sources"]["plc-mb"]["last_error"], 10, "health clear again")

    dead_before = system.metric("shopfloor_dead_letters_total")
    modbus.control(CONTROL_UNDECODABLE, 1)  # NaN process values, -1 in the CNCs' signed reject counters
    undecodable_at = time.time_ns()
    wait_until(lambda: system.metric("shopfloor_dead_letters_total") >= dead_before + 2, 15,
               "the undecodable counters counted as dead letters")
    wait_until(lambda: system.sql("SELECT COUNT(*) FROM process_value WHERE quality = 'Bad' AND time > ?",
                                  undecodable_at)[0][0] >= 12, 15, "NaN process values as Bad points")
    assert "-1 is negative; a counter cannot be" in agent.log()
    modbus.control(CONTROL_UNDECODABLE, 0)
    modbus.control(CONTROL_RUNNING, 0)
    # nothing valid was lost: every counter still adds up to the plant's truth
    settle(system, modbus.truth())
    assert agent.running
    assert system.http("/healthz")[0] in (200, 503)  # serving (503: the OPC UA source of the packers is down)


def test_the_config_check_names_a_bad_modbus_address(modbus_system: Any, tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    system, _ = modbus_system()
    data = yaml.safe_load(system.config.read_text(encoding="utf-8"))
    data["machine_types"]["cnc-modbus"]["tags"][1]["node"] = "hr:70000:u32"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "shopfloor", "check-config", str(bad)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    assert "from 0 to 65535 (0-based: register 40001 of a manual is hr:0), not 70000" in done.stderr + done.stdout
