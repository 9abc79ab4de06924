"""A PLC that stops answering (paused with SIGSTOP, then SIGCONT): the historian's OFFLINE covers the outage."""

from __future__ import annotations

import signal
import time

from asyncua import ua

from agent.config import load
from tests.e2e.conftest import plc_set, wait_until

PAUSE_S = 15
WATCHDOG_S = 1.0
TIMEOUT_S = 2.0
S = 1_000_000_000


def quick_watchdog(data):
    data["sources"]["opcua"][0].update(watchdog_s=WATCHDOG_S, timeout_s=TIMEOUT_S)


def latest_states(system):
    return dict(system.sql("SELECT machine, state FROM machine_state_last"))


def test_paused_plc_stays_offline_until_it_answers_again(make_system):
    system = make_system(quick_watchdog)
    machines = [(line.id, machine.id) for line, machine in load(system.config).machines()]
    plc = system.plc(speed=1)
    for line, machine in machines:  # unchanged states: the PLC keeps their old source timestamps
        plc_set(system.endpoint, f"{line}.{machine}.Force", "RUNNING", ua.VariantType.String)
    system.agent()
    wait_until(lambda: set(latest_states(system).values()) == {"RUNNING"} and len(latest_states(system)) == 6,
               30, "all 6 machines RUNNING")
    assert plc.popen is not None
    paused_ns = time.time_ns()
    plc.popen.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: set(latest_states(system).values()) == {"OFFLINE"}, 15, "all machines OFFLINE")
        time.sleep(max(0.0, PAUSE_S - (time.time_ns() - paused_ns) / S))
    finally:
        resumed_ns = time.time_ns()
        plc.popen.send_signal(signal.SIGCONT)
    wait_until(lambda: set(latest_states(system).values()) == {"RUNNING"}, 30, "all machines RUNNING again")
    detection_s = WATCHDOG_S + TIMEOUT_S + 1.0
    for _, machine in machines:
        rows = system.sql("SELECT time, state, source_time_ns FROM machine_state WHERE machine = ? AND time > ? "
                          "ORDER BY time", machine, paused_ns)
        assert [state for _, state, _ in rows] == ["OFFLINE", "RUNNING"], (machine, rows)
        (offline_ns, _, _), (running_ns, _, source_ns) = rows
        assert offline_ns - paused_ns < detection_s * S, machine  # the watchdog noticed within its period
        # no RUNNING inside the outage: OFFLINE lasts at least the pause minus the detection delay
        assert running_ns >= resumed_ns, (machine, (running_ns - resumed_ns) / S)
        assert running_ns - offline_ns >= PAUSE_S * S - (offline_ns - paused_ns)
        assert source_ns is not None and source_ns < paused_ns  # the PLC's own, older timestamp, for audit
