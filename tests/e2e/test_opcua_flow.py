"""PLC simulator -> agent -> SQLite historian, end to end, against the real asyncua server."""

from __future__ import annotations

import signal
import time

from asyncua import ua

from agent.config import load
from tests.e2e.conftest import plc_set, plc_truth, wait_until

ROLLOVER = 300


def small_rollover(data):
    """Press total counters wrap at 300 so a short test passes through several rollovers."""
    for tag in data["machine_types"]["press"]["tags"]:
        if tag.get("rollover"):
            tag["rollover"] = ROLLOVER


def settle(system, truth_now, timeout=30):
    """Wait until the historian holds the simulator's truth (or fail showing the difference)."""
    def equal():
        return system.outbox_empty() and system.historian_counts() == truth_now
    try:
        wait_until(equal, timeout, "historian totals to equal the simulator's ground truth")
    except AssertionError:
        got = system.historian_counts()
        diff = {k: (got.get(k), v) for k, v in truth_now.items() if got.get(k) != v}
        raise AssertionError(f"historian != truth for {diff}") from None


def test_counts_conserved_through_rollover_and_agent_sigkill(make_system):
    system = make_system(small_rollover)
    cfg = load(system.config)
    plc = system.plc(speed=300, paused=True)
    agent = system.agent()
    # every counter has its baseline reading (0) before production starts
    wait_until(lambda: len(system.sql("SELECT DISTINCT machine, counter FROM machine_count")) == 18, 30,
               "the first reading of all 18 counters")
    plc_set(system.endpoint, "Sim.Running", True, ua.VariantType.Boolean)
    for kills in range(1, 4):
        time.sleep(4)
        agent.stop(signal.SIGKILL)  # mid-stream, no chance to flush
        agent = system.agent(name=f"agent-{kills}")
    time.sleep(4)
    plc_set(system.endpoint, "Sim.Running", False, ua.VariantType.Boolean)
    truth = plc_truth(system.endpoint, cfg)
    assert truth[("press-1", "total")] > 2 * ROLLOVER, truth  # the counter really rolled over, more than once
    settle(system, truth)
    values = [v for (v,) in system.sql(
        "SELECT value FROM machine_count WHERE machine='press-1' AND counter='total' ORDER BY time")]
    assert max(values) < ROLLOVER and any(b < a for a, b in zip(values, values[1:], strict=False))
    assert plc.running and agent.running


def test_states_alarms_and_process_values_arrive(make_system):
    system = make_system()
    system.plc(speed=120)
    system.agent()
    wait_until(lambda: len(system.sql("SELECT DISTINCT machine FROM machine_state")) == 6, 30,
               "a state for each of the 6 machines")
    wait_until(lambda: system.sql("SELECT COUNT(DISTINCT machine || name) FROM process_value")[0][0] >= 18, 30,
               "3 process values per machine, the polled one included")
    rows = system.sql("SELECT quality, COUNT(*) FROM process_value GROUP BY quality")
    assert dict(rows).get("Good", 0) > 0
    states = {s for (s,) in system.sql("SELECT DISTINCT state FROM machine_state")}
    assert states <= {"RUNNING", "STOPPED", "SETUP", "FAULT", "STARVED", "BLOCKED", "PLANNED_STOP", "OFFLINE"}
    # latency: source timestamps are wall clock, so a point's age at commit is small
    assert system.health()["sources"]["plc-1"]["connected"] is True
    metrics = system.http("/metrics")[1]
    fast = [ln for ln in metrics.splitlines() if ln.startswith("shopfloor_opcua_publish_responses_total")
            and 'decoder="fast"' in ln]
    assert fast and float(fast[0].rsplit(" ", 1)[1]) > 0  # the fast decoder handles the simulator's responses


def test_forced_state_reaches_historian(make_system):
    system = make_system()
    system.plc(speed=1)
    system.agent()
    wait_until(lambda: system.sql("SELECT 1 FROM machine_state WHERE machine='cnc-2'"), 30, "cnc-2 state")
    plc_set(system.endpoint, "line-2.cnc-2.Force", "FAULT", ua.VariantType.String)
    wait_until(lambda: system.sql("SELECT state, raw FROM machine_state WHERE machine='cnc-2' "
                                  "ORDER BY time DESC LIMIT 1") == [("FAULT", "40")], 10, "cnc-2 FAULT, code 40")


def test_plc_restart_goes_offline_then_flows_again_within_10s(make_system):
    system = make_system()
    plc = system.plc(speed=60)
    system.agent()
    wait_until(lambda: system.sql("SELECT COUNT(*) FROM machine_count WHERE delta > 0")[0][0] > 0, 30, "counts")
    plc.stop(signal.SIGKILL)
    wait_until(lambda: len(system.sql("SELECT machine FROM machine_state m WHERE state='OFFLINE' AND time = "
                                      "(SELECT MAX(time) FROM machine_state i WHERE i.machine = m.machine)")) == 6,
               15, "all 6 machines OFFLINE while the PLC is down")
    assert system.http("/healthz")[0] == 503
    assert system.health()["sources"]["plc-1"]["connected"] is False
    before = system.sql("SELECT COUNT(*) FROM machine_count")[0][0]
    time.sleep(3)  # let the agent's backoff grow a little
    system.plc(speed=60, name="plc-2")
    restarted = time.monotonic()
    wait_until(lambda: system.sql("SELECT COUNT(*) FROM machine_count")[0][0] > before, 10,
               "new counts within 10 s of the PLC simulator's restart")
    assert time.monotonic() - restarted < 10
    wait_until(lambda: system.http("/healthz")[0] == 200 or system.health()["sources"]["plc-1"]["connected"], 10,
               "plc-1 connected again")
    assert system.metric("shopfloor_source_reconnects_total") >= 1


def test_silent_subscription_is_rebuilt(make_system):
    system = make_system()
    system.plc(speed=60)
    agent = system.agent()
    wait_until(lambda: system.sql("SELECT COUNT(*) FROM machine_count WHERE delta > 0")[0][0] > 0, 30, "counts")
    plc_set(system.endpoint, "Sim.DropSubscriptions", True, ua.VariantType.Boolean)
    wait_until(lambda: "dropped" in system.procs[0].log(), 5, "the simulator to drop the subscriptions")
    dropped_at = time.time_ns()
    # the connection stays up and answers CurrentTime; only the subscription is gone
    wait_until(lambda: system.sql("SELECT COUNT(*) FROM machine_count WHERE time > ?", dropped_at)[0][0] > 0, 30,
               "counts again after the watchdog rebuilt the subscription")
    assert "subscription silent" in agent.log() and "rebuilding it" in agent.log()


def test_calls_split_to_the_servers_operation_limits(make_system):
    system = make_system()
    system.plc("--operation-limit", "10", speed=60)
    agent = system.agent()
    wait_until(lambda: system.sql("SELECT COUNT(DISTINCT machine || name) FROM process_value")[0][0] == 18, 30,
               "every process value, the polled ones included")
    assert "creating 44 monitored items in 5 calls (server's MaxMonitoredItemsPerCall 10)" in agent.log()
    assert "polling 6 tags every 1000 ms in reads of at most 10 nodes" in agent.log()
    assert len(system.sql("SELECT DISTINCT machine FROM machine_state")) == 6
