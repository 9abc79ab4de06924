"""S7 simulator (snap7's server) -> agent -> SQLite historian, end to end: every machine of the example factory
read over S7 in the layout `shopfloor simulate s7 --print-layout` suggests."""

from __future__ import annotations

import signal
import struct
import time
from typing import Any

import pytest
import snap7

from agent.config import load
from agent.core.states import BoardState
from simulators.broker import free_port
from simulators.harness import wait_until
from simulators.s7.layout import suggest_layout
from simulators.s7.server import CONTROL_DB, TRUTH_AT, TRUTH_BYTES
from tests.conftest import FACTORY_YAML
from tests.e2e.conftest import SIM_START, Proc, System

pytestmark = pytest.mark.slow

ROLLOVER = 300
MACHINES = ("press-1", "press-2", "packer-1", "cnc-1", "cnc-2", "packer-2")  # config order
BOARD_STATES = {s.value for s in BoardState}


def on_s7(port: int, rollover: int | None = None) -> Any:
    """Every machine read over S7 (DB1..DB6 in config order), no OPC UA or Modbus source."""
    plain = load(FACTORY_YAML)

    def change(data: dict[str, Any]) -> None:
        data["sources"]["opcua"] = []
        data["sources"]["modbus"] = []
        data["sources"]["s7"] = [{"id": "plc-s7", "host": "127.0.0.1", "port": port, "poll_ms": 100,
                                  "timeout_s": 1}]
        db = 0
        for line in data["lines"]:
            for machine in line["machines"]:
                db += 1
                mtype = plain.machine_types[machine["type"]]
                machine.pop("node_prefix", None)
                machine.update(source="plc-s7", node_ids=suggest_layout(
                    mtype, plain.state_maps[mtype.state_map].kind, db))
        if rollover:
            for tag in data["machine_types"]["press"]["tags"]:
                if tag.get("rollover"):
                    tag["rollover"] = rollover
    return change


class S7System:
    """The e2e System with the S7 simulator in place of the OPC UA one."""

    def __init__(self, make_system: Any, rollover: int | None = None) -> None:
        self.port = free_port()
        self.system: System = make_system(on_s7(self.port, rollover))
        self.anchor = time.time()

    def simulator(self, *extra: str, speed: float = 60, name: str = "s7") -> Proc:
        self.launched = time.time()
        argv = ["simulate", "s7", "--config", str(self.system.config), "--port", str(self.port), "--speed",
                str(speed), "--start", SIM_START, "--sim-anchor", str(self.anchor), *extra]
        proc = Proc(name, argv, self.system.tmp).start(ready="S7 simulator ready at")
        self.system.procs.append(proc)
        return proc

    def control(self, offset: int, data: bytes) -> None:
        client = snap7.Client()
        client.connect("127.0.0.1", 0, 1, self.port)
        try:
            client.db_write(CONTROL_DB, offset, bytearray(data))
        finally:
            client.disconnect()

    def truth(self) -> dict[tuple[str, str], int]:
        """The simulator's true counts per (machine, counter), once they stand still."""
        def read() -> dict[tuple[str, str], int]:
            client = snap7.Client()
            client.connect("127.0.0.1", 0, 1, self.port)
            try:
                raw = client.db_read(CONTROL_DB, TRUTH_AT, TRUTH_BYTES * len(MACHINES))
            finally:
                client.disconnect()
            out = {}
            for k, machine in enumerate(MACHINES):
                for counter, value in zip(("total", "good", "reject"), struct.unpack_from(">3I", raw, 12 * k),
                                          strict=True):
                    out[(machine, counter)] = value
            return out
        last = read()
        for _ in range(20):
            time.sleep(0.3)
            now = read()
            if now == last:
                return now
            last = now
        return last

    def latest_states(self) -> dict[str, str]:
        return dict(self.system.sql("SELECT machine, state FROM machine_state m WHERE time = "
                                    "(SELECT MAX(time) FROM machine_state i WHERE i.machine = m.machine)"))


def settle(system: System, truth: dict[tuple[str, str], int], timeout: float = 30) -> None:
    def equal() -> bool:
        return system.outbox_empty() and system.historian_counts() == truth
    try:
        wait_until(equal, timeout, "historian totals to equal the simulator's ground truth")
    except AssertionError:
        got = system.historian_counts()
        diff = {k: (got.get(k), v) for k, v in truth.items() if got.get(k) != v}
        raise AssertionError(f"historian != truth for {diff}") from None


def test_counts_through_rollover_and_a_plc_restart_states_mapped(make_system):
    s7 = S7System(make_system, rollover=ROLLOVER)
    sim = s7.simulator("--paused", speed=60)
    agent = s7.system.agent()
    # every counter has its baseline reading before production starts: the truth counts from there
    wait_until(lambda: len(s7.system.sql("SELECT DISTINCT machine, counter FROM machine_count")) == 18, 30,
               "the first reading of all 18 counters")
    baseline = s7.truth()  # what the plant made before the agent first read each counter is no one's
    s7.control(4, b"\x02")  # run the simulated clock
    # the plant stood still meanwhile: a simulator started later catches up to the same plant time
    s7.anchor += time.time() - s7.launched
    wait_until(lambda: s7.truth()[("press-1", "total")] - baseline[("press-1", "total")] > ROLLOVER + 50, 60,
               "press-1 past its rollover")
    sim.stop(signal.SIGKILL)
    wait_until(lambda: set(s7.latest_states().values()) == {"OFFLINE"}, 15,
               "all 6 machines OFFLINE while the PLC is away")
    assert s7.system.health()["sources"]["plc-s7"]["connected"] is False
    s7.simulator(speed=60, name="s7-2")  # the same plant, caught up to now: counts carry on
    wait_until(lambda: s7.system.health()["sources"]["plc-s7"]["connected"], 15, "plc-s7 connected again")
    wait_until(lambda: "OFFLINE" not in s7.latest_states().values(), 15, "machines back from OFFLINE")
    time.sleep(3)
    s7.control(4, b"\x00")  # stop the simulated clock
    truth = {key: value - baseline[key] for key, value in s7.truth().items()}
    assert truth[("press-1", "total")] > ROLLOVER, truth  # the counter really rolled over
    settle(s7.system, truth)  # nothing lost, nothing counted twice across the restart
    values = [v for (v,) in s7.system.sql(
        "SELECT value FROM machine_count WHERE machine='press-1' AND counter='total' ORDER BY time")]
    assert max(values) < ROLLOVER and any(b < a for a, b in zip(values, values[1:], strict=False))
    assert s7.system.metric("shopfloor_source_reconnects_total") >= 1
    # every state the historian holds is the one the machine type's state map gives for the raw value read
    cfg = load(s7.system.config)
    types = {m.id: m.type for _, m in cfg.machines()}
    rows = s7.system.sql("SELECT machine, state, raw FROM machine_state WHERE state NOT IN ('OFFLINE', 'MICROSTOP')")
    assert {machine for machine, _, _ in rows} == set(MACHINES)
    for machine, state, raw in rows:
        mapped = cfg.state_mapper(types[machine]).map(int(raw) if raw.lstrip("-").isdigit() else raw)
        assert mapped is not None and state == mapped.value, (machine, state, raw)
    assert {s for (s,) in s7.system.sql("SELECT DISTINCT state FROM machine_state")} <= BOARD_STATES
    assert agent.running


def test_an_error_answer_is_bad_quality_then_recovers(make_system):
    s7 = S7System(make_system)
    s7.simulator(speed=60)
    s7.system.agent()
    wait_until(lambda: s7.system.sql("SELECT 1 FROM process_value WHERE machine='press-1' AND quality='Good'"),
               30, "press-1 process values")
    wait_until(lambda: s7.latest_states().get("press-1") not in (None, "OFFLINE"), 30, "press-1 state")
    dead_before = s7.system.metric("shopfloor_dead_letters_total")
    marked = time.time_ns()
    s7.control(0, struct.pack(">hh", 0x0A, 1))  # every read of DB1 (press-1) answers "item not available"
    wait_until(lambda: s7.latest_states().get("press-1") == "OFFLINE", 15, "press-1 OFFLINE on Bad state reads")
    wait_until(lambda: s7.system.sql("SELECT 1 FROM process_value WHERE machine='press-1' AND quality='Bad' "
                                     "AND time > ?", marked), 15, "press-1 process values with quality Bad")
    wait_until(lambda: s7.system.metric("shopfloor_dead_letters_total") > dead_before, 15,
               "press-1's Bad counts kept as dead letters")
    wait_until(lambda: s7.system.metric("shopfloor_source_read_errors_total") >= 8, 15,
               "a Bad read of each of press-1's 8 tags counted")
    health = s7.system.health()["sources"]["plc-s7"]
    assert health["connected"] is True  # the PLC answers; only the DB is refused, and /healthz says so
    assert "S7 error 0x0A: item not available" in health["last_error"]
    others = {m: s for m, s in s7.latest_states().items() if m != "press-1"}
    assert "OFFLINE" not in others.values(), others
    s7.control(0, struct.pack(">hh", 0, 0))
    wait_until(lambda: s7.latest_states().get("press-1") != "OFFLINE", 15, "press-1 back")


def test_an_undecodable_value_is_counted_and_the_agent_keeps_serving(make_system):
    s7 = S7System(make_system)
    s7.simulator(speed=60)
    agent = s7.system.agent()
    wait_until(lambda: len(s7.system.sql("SELECT DISTINCT machine FROM process_value WHERE quality='Good'")) == 6,
               30, "process values of all 6 machines")
    marked = time.time_ns()
    s7.control(4, b"\x03")  # undecodable values on, clock running
    wait_until(lambda: s7.system.metric("shopfloor_source_read_errors_total") > 0, 15, "undecodable reads counted")
    wait_until(lambda: s7.system.sql("SELECT 1 FROM process_value WHERE quality='Bad' AND time > ?", marked), 15,
               "NaN process values stored with quality Bad")
    # the packers' PackML names are no text any more: their state is unknown (OFFLINE), the others run on
    wait_until(lambda: s7.latest_states().get("packer-1") == "OFFLINE", 15, "packer-1 OFFLINE")
    counted = s7.system.sql("SELECT COUNT(*) FROM machine_count WHERE time > ?", marked)[0][0]
    wait_until(lambda: s7.system.sql("SELECT COUNT(*) FROM machine_count WHERE time > ?", marked)[0][0] > counted,
               15, "counts still flowing")
    assert s7.system.http("/healthz")[0] == 200 and agent.running
    s7.control(4, b"\x02")
    wait_until(lambda: s7.latest_states().get("packer-1") != "OFFLINE", 15, "packer-1 back")
