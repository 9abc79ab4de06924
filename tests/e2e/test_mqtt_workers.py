"""An MQTT source with `workers: 2`: receiver processes on a shared subscription, end to end with the real
agent, the real Mosquitto and the line simulator."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import ConfigError, load
from agent.sinks.sqlite_historian import SqliteHistorian
from agent.sources.mqtt.sessions import Session, SessionBook
from dashboard import queries
from dashboard.kpi.andon import andon_calls
from tests.conftest import FACTORY_YAML
from tests.e2e.conftest import wait_until
from tests.e2e.test_mqtt_flow import historian_events, wait_for_truth

WORKERS = ("line-bus/w0", "line-bus/w1")


def two_workers(data):
    data["sources"]["mqtt"][0]["workers"] = 2


def worker_procs(agent) -> list[psutil.Process]:
    """The receiver processes (not one retiring an old session), by their name on the command line."""
    return [p for p in psutil.Process(agent.popen.pid).children()
            if "agent.mqtt_worker" in p.cmdline() and any(w in p.cmdline() for w in WORKERS)]


def workers_connected(system) -> bool:
    sources = system.health()["sources"]
    return all(sources.get(w, {}).get("connected") for w in WORKERS)


def worker_messages(system) -> dict[str, float]:
    out = {}
    for line in system.http("/metrics")[1].splitlines():
        if line.startswith("shopfloor_mqtt_worker_messages_total{"):
            name = line.split('worker="')[1].split('"')[0]
            if name in WORKERS:  # not the process that retires an old session
                out[name] = float(line.rsplit(" ", 1)[1])
    return out


def worker_dead_letters(system) -> int:
    total = 0
    for path in (system.data_dir / "mqtt-workers").glob("*/outbox.sqlite3"):
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            total += sum(n for (n,) in conn.execute("SELECT value FROM tally WHERE name='dead_letters'"))
        finally:
            conn.close()
    return total


def test_workers_store_every_message_once_when_one_is_killed_mid_flood(make_system):
    system = make_system(two_workers)
    agent = system.agent()
    wait_until(lambda: workers_connected(system), 30, "both workers connected")
    assert len(worker_procs(agent)) == 2
    line = system.line("--speed", "600", "--count", "6000", "--seed", "7", "--malformed-every", "40")
    wait_until(lambda: system.metric("shopfloor_messages_in_total") > 1000, 30, "the flood reaching the workers")
    victim = worker_procs(agent)[0]
    victim.send_signal(signal.SIGKILL)  # its unacknowledged messages stay in its session at the broker
    wait_until(lambda: system.metric("shopfloor_mqtt_worker_restarts_total") >= 1, 20, "the worker restarted")
    wait_until(lambda: workers_connected(system), 30, "both workers connected again")
    assert victim.pid not in {p.pid for p in worker_procs(agent)}
    truth = wait_for_truth(system, line, timeout=90)
    assert sum(truth["valid"].values()) == 6000
    # both took a share of the traffic, and bad input became dead letters in the workers' outboxes
    assert all(n > 0 for n in worker_messages(system).values()) and len(worker_messages(system)) == 2
    malformed = sum(truth["malformed"].values())
    assert malformed > 0
    # Kept in the workers' outboxes (the killed worker's counters of its last second died with it).
    wait_until(lambda: worker_dead_letters(system) >= malformed, 20, f"{malformed} dead letters kept")
    assert system.metric("shopfloor_dead_letters_total") > 0
    health = system.health()
    assert health["sources"]["line-bus/w0"]["connected"] and health["sources"]["line-bus/w1"]["connected"]
    # each worker's own outbox and restarts on /healthz: the killed one restarted once, its new process serves
    workers = health["workers"]
    assert set(workers) == {"line-bus/w0", "line-bus/w1"}
    assert sum(w["restarts"] for w in workers.values()) == 1
    assert {w["pid"] for w in workers.values()} == {p.pid for p in worker_procs(agent)}
    assert agent.running


def test_agent_stop_stops_its_workers_and_a_restart_drains_nothing_twice(make_system):
    system = make_system(two_workers)
    agent = system.agent()
    wait_until(lambda: workers_connected(system), 30, "both workers connected")
    procs = worker_procs(agent)
    line = system.line("--speed", "300", "--count", "1500", "--seed", "3")
    time.sleep(1.5)
    assert agent.stop(signal.SIGTERM) == 0
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs)
    system.agent(name="agent-2")
    wait_for_truth(system, line)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_andon_call_and_its_ack_on_different_workers_read_right_on_the_board(make_system, broker, protocol):
    def two_workers_on(data):
        two_workers(data)
        data["sources"]["mqtt"][0]["protocol"] = protocol
    system = make_system(two_workers_on)
    system.agent()
    wait_until(lambda: workers_connected(system), 30, "both workers connected")
    cfg = load(system.config, resolve_secrets=False)
    line = cfg.lines[0]
    station = line.stations[0].id
    called = (time.time_ns() // 10**9 - 60) * 10**9  # whole seconds: exact as a JSON number
    acked = called + 42 * 10**9

    def body(event: str, ts: int) -> bytes:
        return json.dumps({"event": event, "kind": "quality", "call_id": "C-77", "badge": "B1001",
                           "ts": ts / 1e9}).encode()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="andon-button", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    topic = f"line/{line.id}/{station}/andon"
    # The acknowledge is published first: on a shared subscription the two may be committed in either order.
    for message in (body("ack", acked), body("call", called)):
        client.publish(topic, message, qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()
    wait_until(lambda: sum(worker_messages(system).values()) >= 2 and system.outbox_empty()
               and len(system.sql("SELECT * FROM andon_event")) == 2, 20, "both events stored")
    assert sorted(worker_messages(system).values()) == [1.0, 1.0]  # one each: different workers
    historian = SqliteHistorian(system.data_dir / "historian.sqlite3")
    try:
        events = queries.line_events(historian, "andon_event", line.id, called - 10**9, acked + 10**9)
    finally:
        historian.close()
    (call,) = andon_calls(events)
    assert (call.call_id, call.called_ns, call.acked_ns) == ("C-77", called, acked)
    assert call.time_to_acknowledge_s == pytest.approx(42.0)
    assert call.open
    # The live topic a board subscribes to shows the acknowledgement, the newer of the two, whichever worker's
    # write the agent heard of last.
    live = f"shopfloor/v1/{cfg.site.id}/{line.id}/{station}/andon"
    assert retained(broker, live)["v"] == "ack"


def retained(broker, topic: str) -> dict:
    """The retained payload of `topic` (JSON), as a board connecting now would get it."""
    got: list[bytes] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"live-check-{time.monotonic_ns()}")
    sub.on_message = lambda client, userdata, msg: got.append(bytes(msg.payload))
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    try:
        wait_until(lambda: got, 10, f"the retained value of {topic}")
    finally:
        sub.loop_stop()
        sub.disconnect()
    return json.loads(got[-1])


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("workers", 0, "greater than or equal to 1"),
    ("workers", "many", "auto"),
    ("share_group", "line/1", "text matching"),
    ("share_group", "", "text matching"),
    ("subscribe", ["$share/g/line/#"], "set share_group instead"),
])
def test_bad_worker_settings_are_config_errors(tmp_path: Path, key, value, expected):
    data = yaml.safe_load(FACTORY_YAML.read_text(encoding="utf-8"))
    data["sources"]["mqtt"][0][key] = value
    path = tmp_path / "factory.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load(path, resolve_secrets=False)
    text = str(err.value)
    assert f"sources.mqtt[0].{key}" in text and expected in text


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_changing_workers_takes_in_what_the_old_sessions_hold(make_system, broker, protocol):
    """1 -> 2 -> 1 workers, with messages published while the agent is stopped each time: they wait in the
    session the old config used, which the agent retires (takes in, then ends) on its next start."""
    def use_protocol(data):
        data["sources"]["mqtt"][0]["protocol"] = protocol
    system = make_system(use_protocol)
    agent = system.agent()
    wait_until(lambda: system.health()["sources"]["line-bus"]["connected"], 30, "one connection")
    assert agent.stop(signal.SIGTERM) == 0
    first = system.line("--speed", "600", "--count", "800", "--seed", "5", name="while-stopped-1")
    wait_until(lambda: not first.running, 60, "messages queued for the stopped agent")
    config = yaml.safe_load(system.config.read_text(encoding="utf-8"))
    config["sources"]["mqtt"][0]["workers"] = 2
    system.config.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    agent = system.agent(name="agent-2")
    wait_until(lambda: workers_connected(system), 30, "both workers connected")
    truth = system.line_truth("while-stopped-1")
    wait_until(lambda: system.outbox_empty() and stored_valid(system) == sum(truth["valid"].values()), 60,
               "the old session's messages stored")
    record = json.loads((system.data_dir / "mqtt-workers" / "line-bus.sessions.json").read_text())
    wait_until(lambda: [s["client_id"] for s in json.loads(
        (system.data_dir / "mqtt-workers" / "line-bus.sessions.json").read_text())["sessions"]]
        == ["shopfloor-agent-1-w0", "shopfloor-agent-1-w1"], 30, "the old session retired")
    assert record  # read while the retirement ran
    assert agent.stop(signal.SIGTERM) == 0
    second = system.line("--speed", "600", "--count", "800", "--seed", "6", name="while-stopped-2")
    wait_until(lambda: not second.running, 60, "messages queued for the stopped workers")
    config["sources"]["mqtt"][0]["workers"] = 1
    system.config.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    system.agent(name="agent-3")
    both = sum(truth["valid"].values()) + sum(system.line_truth("while-stopped-2")["valid"].values())
    wait_until(lambda: system.outbox_empty() and stored_valid(system) == both, 60,
               "the workers' sessions' messages stored")
    wait_until(lambda: [s["client_id"] for s in json.loads(
        (system.data_dir / "mqtt-workers" / "line-bus.sessions.json").read_text())["sessions"]]
        == ["shopfloor-agent-1"], 30, "the workers' sessions retired")
    assert not [d for d in (system.data_dir / "mqtt-workers").iterdir() if d.is_dir()]  # their outboxes drained


def stored_valid(system) -> int:
    return sum(historian_events(system).values())


def test_session_record_plans_what_to_retire_and_survives_a_damaged_file(tmp_path: Path, caplog):
    book = SessionBook(tmp_path, "bus")
    plain = Session("agent", ("line/#",))
    shared = [Session("agent-w0", ("$share/g/line/#",)), Session("agent-w1", ("$share/g/line/#",))]
    # no record: the one connection of before is assumed and retired when the config has workers
    assert book.plan(shared, legacy=plain) == ([plain], {})
    assert [s.client_id for s in book.load() or []] == ["agent-w0", "agent-w1", "agent"]
    book.forget("agent")
    # same client id, other filters: nothing to retire, the old filters are dropped on connect
    assert book.plan([Session("agent-w0", ("$share/h/line/#",))], legacy=plain) == (
        [shared[1]], {"agent-w0": ["$share/g/line/#"]})
    # a damaged record is said in the log and replaced; the legacy session is assumed again
    book.path.write_text("{not json", encoding="utf-8")
    assert book.plan([plain], legacy=plain) == ([], {})
    assert "cannot be read" in caplog.text and str(book.path) in caplog.text
    assert book.load() == [plain]


class AclBroker:
    """A real amqtt broker (the demo's fallback on a PC without Mosquitto) whose ACL lets anonymous clients
    subscribe to `shopfloor/#` only: it answers any other SUBSCRIBE with a failure (0x80). Mosquitto 2.0 grants
    such a subscription and checks read rights per message instead, which gives the agent nothing to report."""

    def __init__(self) -> None:
        import asyncio
        import threading

        from simulators.broker import free_port

        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.broker = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(15)

    async def _start(self):
        from amqtt.broker import Broker as Amqtt

        broker = Amqtt({
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
                        "amqtt.plugins.topic_checking.TopicAccessControlListPlugin": {
                            "acl": {"anonymous": ["shopfloor/#"]}}}})
        await broker.start()
        return broker

    def close(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.broker.shutdown(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.mark.filterwarnings("ignore:The 'acl' option is deprecated")  # its replacement is not in this amqtt
def test_a_subscription_the_broker_refuses_is_an_error_not_a_quiet_source(tmp_path):
    """The broker refuses `line/#` while the agent's probe topic still comes back: without a look at the SUBACK
    the source would show connected and healthy and store nothing."""
    from tests.e2e.conftest import System

    def one_connection(data):
        data["sources"]["opcua"] = []
        for line in data["lines"]:
            line["machines"] = []
        data["sources"]["mqtt"][0].update(workers=1, protocol="3.1.1")

    broker = AclBroker()
    system = System(tmp_path, broker, one_connection)  # type: ignore[arg-type]
    try:
        system.agent()
        health = wait_until(lambda: (h := system.health())["sources"]["line-bus"]["last_error"] and h, 30,
                            "the refusal on /healthz")
        assert health["sources"]["line-bus"]["last_error"] == (
            "the broker refused the subscription to line/# (Unspecified error)")
        metrics = system.http("/metrics")[1]
        assert 'shopfloor_source_read_errors_total{reason="subscription refused",source="line-bus"} 1.0' in metrics
    finally:
        system.close()
        broker.close()


def test_a_reload_restarts_the_workers_and_stores_every_message_once(make_system):
    """SIGHUP with `workers: 2` under traffic: the old workers commit, acknowledge and stop, new ones take the same
    sessions, and the historian holds the line simulator's messages once each."""
    system = make_system(two_workers)
    agent = system.agent()
    wait_until(lambda: workers_connected(system), 30, "both workers connected")
    before = {p.pid for p in worker_procs(agent)}
    line = system.line("--speed", "300", "--count", "3000", "--seed", "5")
    wait_until(lambda: system.metric("shopfloor_messages_in_total") > 300, 30, "traffic reaching the workers")
    agent.popen.send_signal(signal.SIGHUP)
    wait_until(lambda: "config reloaded" in agent.log(), 60, "the reload")
    wait_until(lambda: workers_connected(system) and len(worker_procs(agent)) == 2, 30, "two new workers")
    assert not before & {p.pid for p in worker_procs(agent)}  # the old processes are gone
    truth = wait_for_truth(system, line, timeout=90)
    assert sum(truth["valid"].values()) == 3000
    assert agent.running
