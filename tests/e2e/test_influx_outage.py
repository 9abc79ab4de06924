"""Store-and-forward into a real InfluxDB: a 10-minute outage with the simulators at --speed 60, an agent
restart in the middle of it, and another one (SIGKILL) while the backlog drains with writes in flight; then
the historian holds exactly the simulators' ground truth.

The agent writes through a fault proxy in front of InfluxDB, which holds its requests when the test wants writes
in flight. The outage lasts SHOPFLOOR_OUTAGE_S seconds: 120 in `make test` (two simulated hours at --speed 60,
the short form); `SHOPFLOOR_OUTAGE_S=600` runs the ten minutes users plan for. The test is marked `long` and runs first, on
its own pytest-xdist worker, while the rest of the suite runs beside it.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from asyncua import ua

from agent.config import load
from agent.sinks.influx import InfluxHistorian
from simulators.faults import FaultProxy
from simulators.influxdb import InfluxServer
from tests.e2e.conftest import plc_set, plc_truth, wait_until

OUTAGE_S = float(os.environ.get("SHOPFLOOR_OUTAGE_S", "120"))
MQTT_MEASUREMENTS = ("operator_event", "andon_event", "material_level", "material_event", "order_event")
T_MIN, T_MAX = 946_684_800 * 10**9, 7_258_118_400 * 10**9


def influx_counts(historian):
    return {(b.machine, b.counter): b.delta for b in historian.count_sums(T_MIN, T_MAX, 10**9)}


def influx_events(historian):
    return {m: len(historian.events(m, T_MIN, T_MAX)) for m in MQTT_MEASUREMENTS}


@pytest.mark.long
@pytest.mark.timeout(OUTAGE_S * 2 + 300)
def test_influxdb_outage_with_agent_restarts_loses_and_doubles_nothing(make_system, tmp_path):
    with InfluxServer(tmp_path / "influxdb") as server, FaultProxy(server.url) as proxy:
        server.create_database("plant")

        def use_influx(data):
            data["historian"] = {"kind": "influxdb", "url": proxy.url, "database": "plant", "in_flight": 4}
        system = make_system(use_influx)
        cfg = load(system.config)
        historian = InfluxHistorian(server.url, database="plant")
        system.plc(speed=60, paused=True)
        agent = system.agent()
        wait_until(lambda: len(influx_counts(historian)) == 18, 30, "the first reading of all 18 counters")
        plc_set(system.endpoint, "Sim.Running", True, ua.VariantType.Boolean)
        line = system.line("--speed", "60", "--seed", "11", "--duration", str(OUTAGE_S + 25))
        time.sleep(5)
        assert sum(influx_counts(historian).values()) > 0  # production reaches InfluxDB before the outage

        server.stop()
        proxy.stop()  # as InfluxDB's own port would: the connection is refused
        down = time.monotonic()
        time.sleep(OUTAGE_S / 2)
        agent.stop(signal.SIGKILL)  # the agent dies mid-outage with everything still in its outbox
        agent = system.agent(name="agent-2")
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))
        health = system.health()
        waiting = system.metric("shopfloor_outbox_depth_points")
        assert waiting > 0 and health["outbox"]["points"] > 0
        assert system.metric("shopfloor_outbox_oldest_age_seconds") >= OUTAGE_S * 0.9
        assert health["outbox"]["oldest_age_s"] >= OUTAGE_S * 0.9
        assert health["historian"]["last_error"] and "no answer" in health["historian"]["last_error"]

        server.start()
        proxy.start()
        caught_up = time.monotonic()
        # Mid-drain, once the first writes are settled, the requests are held: writes stay in flight, and the
        # agent is killed with them. What they carry reaches InfluxDB only if the next agent writes it again.
        wait_until(lambda: system.metric("shopfloor_outbox_depth_points") < waiting * 0.9, 120,
                   "the first writes after the outage to settle")
        proxy.stall_next(OUTAGE_S * 3, count=1000)
        stall = proxy._stalls[0]  # noqa: SLF001 - how many requests the proxy has taken to hold so far
        wait_until(lambda: stall.count < 1000, 30, "a write held in flight")
        agent.stop(signal.SIGKILL)
        at_kill = system.outbox_sql("SELECT COALESCE(SUM(n_points), 0) FROM batch")[0][0]
        assert 0 < at_kill < waiting  # killed mid-drain: some writes settled, others in flight or waiting
        proxy.reset()
        agent = system.agent(name="agent-3")
        wait_until(system.outbox_empty, 300, "the outbox to drain into InfluxDB")
        print(f"caught up {waiting:.0f} points in {time.monotonic() - caught_up:.1f} s")
        wait_until(lambda: not line.running, OUTAGE_S, "the line simulator to finish")
        assert line.popen is not None and line.popen.returncode == 0, line.log()[-2000:]
        plc_set(system.endpoint, "Sim.Running", False, ua.VariantType.Boolean)
        truth = plc_truth(system.endpoint, cfg)
        line_truth = system.line_truth()
        expected_events = {m: line_truth["valid"].get(m, 0) for m in MQTT_MEASUREMENTS}

        def matches():
            return (system.outbox_empty() and influx_counts(historian) == truth
                    and influx_events(historian) == expected_events)
        try:
            wait_until(matches, 60, "InfluxDB to hold exactly the simulators' ground truth")
        except AssertionError:
            got = influx_counts(historian)
            diff = {k: (got.get(k), v) for k, v in truth.items() if got.get(k) != v}
            raise AssertionError(f"counts (influx, truth) {diff}; events {influx_events(historian)} "
                                 f"vs {expected_events}") from None
        assert sum(truth.values()) > 1000 and sum(expected_events.values()) > 100
        assert agent.running and system.outbox_sql("SELECT COUNT(*) FROM dead_letter")[0][0] == 0
