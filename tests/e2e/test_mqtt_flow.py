"""Line simulator -> Mosquitto -> agent -> SQLite historian, end to end."""

from __future__ import annotations

import signal
import time

import pytest

from tests.e2e.conftest import wait_until

MEASUREMENTS = ("operator_event", "andon_event", "material_level", "material_event", "order_event")


def historian_events(system):
    return {m: system.sql(f"SELECT COUNT(*) FROM {m}")[0][0] if system.sql(
        "SELECT name FROM sqlite_master WHERE name=?", m) else 0 for m in MEASUREMENTS}


def wait_for_truth(system, line_proc, timeout=60):
    wait_until(lambda: not line_proc.running, timeout, "the line simulator to finish")
    assert line_proc.popen.returncode == 0, line_proc.log()[-2000:]
    truth = system.line_truth()
    expected = {m: truth["valid"].get(m, 0) for m in MEASUREMENTS}
    try:
        wait_until(lambda: system.outbox_empty() and historian_events(system) == expected, 30,
                   "historian rows to equal the line simulator's truth")
    except AssertionError:
        raise AssertionError(f"historian {historian_events(system)} != truth {expected}") from None
    return truth


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_every_message_stored_once_with_agent_sigkill(make_system, protocol):
    def use_protocol(data):
        data["sources"]["mqtt"][0]["protocol"] = protocol
    system = make_system(use_protocol)
    agent = system.agent()
    line = system.line("--speed", "600", "--count", "6000", "--seed", "7", "--protocol", protocol)
    for i in range(2):
        time.sleep(2)
        agent.stop(signal.SIGKILL)
        time.sleep(0.5)  # messages keep arriving at the broker, queued in the agent's persistent session
        agent = system.agent(name=f"agent-{i + 1}")
    truth = wait_for_truth(system, line)
    assert sum(truth["valid"].values()) == 6000


def test_malformed_and_unknown_messages_are_dead_lettered_and_agent_keeps_running(make_system):
    system = make_system()
    agent = system.agent()
    line = system.line("--speed", "300", "--count", "1500", "--malformed-every", "25")
    truth = wait_for_truth(system, line)
    malformed = sum(truth["malformed"].values())
    assert malformed >= 50 and set(truth["malformed"]) >= {"not_json", "wrong_type", "unknown_topic", "huge"}
    wait_until(lambda: system.health()["outbox"]["dead_letters"] >= malformed, 10, "dead letters counted")
    reasons = dict(system.outbox_sql("SELECT reason, COUNT(*) FROM dead_letter GROUP BY reason"))
    assert any("not JSON" in r for r in reasons)
    assert any("no route matches" in r for r in reasons)
    assert any("unknown line" in r for r in reasons)
    assert any("should be a number" in r for r in reasons)
    (huge,) = system.outbox_sql("SELECT MAX(payload_bytes), LENGTH(payload) FROM dead_letter "
                                "WHERE payload_bytes >= 1000000")
    assert huge[0] >= 1_000_000 and huge[1] == 65536  # dead_letter_payload_max_bytes  # size recorded, payload kept up to the limit
    assert system.metric("shopfloor_dead_letters_total") >= malformed
    assert agent.running and system.health()["sources"]["line-bus"]["connected"]


def test_broker_restart_flows_again_within_10s(make_system):
    system = make_system()
    system.agent()
    line = system.line("--speed", "60")
    wait_until(lambda: historian_events(system)["material_level"] > 0, 30, "first material levels")
    system.broker.restart()
    restarted = time.monotonic()
    before = historian_events(system)["material_level"]
    wait_until(lambda: historian_events(system)["material_level"] > before, 10,
               "new material levels within 10 s of the broker's restart")
    assert time.monotonic() - restarted < 10
    wait_until(lambda: system.health()["sources"]["line-bus"]["connected"], 10, "line-bus connected")
    assert line.running


def test_live_topics_and_agent_birth(make_system):
    import json
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    system = make_system()
    system.plc(speed=60)
    agent = system.agent()
    seen: dict[str, dict] = {}
    got = threading.Event()

    def on_message(client, userdata, msg):
        seen[msg.topic] = json.loads(msg.payload)
        got.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="live-test")
    client.on_message = on_message
    client.connect("127.0.0.1", system.broker.port)
    client.subscribe("shopfloor/v1/#")
    client.loop_start()
    try:
        wait_until(lambda: "shopfloor/v1/cixi-1/line-1/press-1/state" in seen, 20, "live state of press-1")
        state = seen["shopfloor/v1/cixi-1/line-1/press-1/state"]
        assert state["v"] in {"RUNNING", "STOPPED", "SETUP", "FAULT", "STARVED", "BLOCKED", "PLANNED_STOP"}
        assert abs(state["ts"] / 1000 - time.time()) < 3600
        status = "shopfloor/v1/cixi-1/_agents/edge-1/status"
        wait_until(lambda: seen.get(status, {}).get("v") == "online", 10, "agent birth")
        agent.stop(signal.SIGKILL)  # the broker publishes the last will
        wait_until(lambda: seen.get(status, {}).get("v") == "offline", 60, "agent death (last will)")
    finally:
        client.loop_stop()
        client.disconnect()
