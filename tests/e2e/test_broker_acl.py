"""Broker trust against a real Mosquitto with the documented ACL (deploy/mosquitto/acl): who may write the line
topics and the live topics, and made-up ids from a client that may write them."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import load
from agent.sinks import open_historian
from dashboard.board import line_history
from simulators.broker import Broker, free_port
from tests.conftest import ROOT
from tests.e2e.conftest import System, wait_until

ACL = ROOT / "deploy" / "mosquitto" / "acl"
USERS = {"shopfloor-agent": "agent-pw", "shopfloor-dashboard": "dash-pw", "line-gateway": "gw-pw",
         "line-1": "l1-pw", "contractor": "laptop-pw"}
FAKE_BADGES = 5000
REAL_BADGES = {"mold-1": ["B1001"], "mold-2": ["B1002"], "assy-1": ["B1003", "B1004"], "pack-1": ["B1009"]}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Client:
    """A paho client logged in as one of USERS; QoS 1 publishes wait for the broker's acknowledgement."""

    def __init__(self, broker: Broker, user: str, subscribe: str | None = None) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{user}-{time.monotonic_ns()}",
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set(user, USERS[user])
        self.client.max_inflight_messages_set(1000)
        self.client.on_message = lambda c, u, m: self.received.append((m.topic, bytes(m.payload)))
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        if subscribe:
            self.client.subscribe(subscribe, qos=1)
            assert subscribed.wait(5)

    def publish(self, topic: str, body: dict[str, Any]) -> None:
        self.client.publish(topic, json.dumps(body), qos=1).wait_for_publish(10)

    def publish_many(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        infos = [self.client.publish(topic, json.dumps(body), qos=1) for topic, body in messages]
        for info in infos:
            info.wait_for_publish(30)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def acl_config(password_file: Path):
    def change(data: dict[str, Any]) -> None:
        data["sources"]["opcua"] = []
        for line in data["lines"]:
            line["machines"] = []
        source = data["sources"]["mqtt"][0]
        # two receiver processes on a shared subscription, each with its own outbox (and dead letters)
        source.update(username="shopfloor-agent", password_file=str(password_file), workers=2)
    return change


@pytest.fixture(scope="module")
def system(tmp_path_factory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("acl")
    (tmp / "agent-pw").write_text(USERS["shopfloor-agent"])
    broker = Broker(port=free_port(), data_dir=tmp / "broker", users=USERS, acl_file=ACL).start()
    sys_ = System(tmp, broker, acl_config(tmp / "agent-pw"))
    try:
        sys_.agent()
        wait_until(lambda: (workers := [v for k, v in sys_.health()["sources"].items() if k.startswith("line-bus/")])
                   and all(w["connected"] for w in workers), 30, "the agent's workers on the ACL broker")
        yield sys_
    finally:
        sys_.close()
        broker.close()


def test_only_the_agent_writes_live_topics_and_devices_only_their_line(system):
    broker = system.broker
    live = Client(broker, "shopfloor-dashboard", subscribe="shopfloor/v1/#")
    contractor, line1 = Client(broker, "contractor"), Client(broker, "line-1")
    received_before = system.metric("shopfloor_messages_in_total")
    try:
        # refused by the ACL: live topics from anyone but the agent, line topics from a user of no line, and a
        # line's device writing another line's topics
        forged_state = {"v": "RUNNING", "ts": now_iso(), "forged": True}
        for client in (contractor, line1, live):
            client.publish("shopfloor/v1/cixi-1/line-1/press-1/state", forged_state)
        contractor.publish("line/line-1/mold-1/badge", {"badge": "B1005", "action": "in", "ts": now_iso()})
        line1.publish("line/line-2/deburr-1/badge", {"badge": "B1008", "action": "in", "ts": now_iso()})
        # allowed: line-1's device on line-1's topics; the agent stores it and publishes it on the live topics
        line1.publish("line/line-1/material/resin-pp/level", {"level": 321.5, "ts": now_iso()})
        wait_until(lambda: system.sql("SELECT level FROM material_level"), 20, "line-1's own message stored")
        wait_until(lambda: any("material" in t for t, _ in live.received), 20, "the agent's live topic")
        time.sleep(0.5)  # anything the broker let through would have arrived with or before the allowed one
        assert system.sql("SELECT level FROM material_level") == [(321.5,)]
        assert system.sql("SELECT badge FROM operator_event") == []
        assert not [t for t, p in live.received if b"forged" in p], live.received
        # the workers' counters reach the agent's /metrics with their next status line (every second)
        wait_until(lambda: system.metric("shopfloor_messages_in_total") - received_before >= 1, 10,
                   "the workers' count of the message on /metrics")
        time.sleep(1.5)  # a message the broker let through would be counted by now as well
        assert system.metric("shopfloor_messages_in_total") - received_before == 1
    finally:
        for client in (live, contractor, line1):
            client.close()


def test_made_up_badges_are_dead_letters_and_count_as_nobody(system):
    gateway = Client(system.broker, "line-gateway")
    try:
        real = [(f"line/line-1/{station}/badge", {"badge": badge, "action": "in", "ts": now_iso()})
                for station, badges in REAL_BADGES.items() for badge in badges]
        stations = list(REAL_BADGES)
        fake = [(f"line/line-1/{stations[i % len(stations)]}/badge",
                 {"badge": f"X{i:05d}", "action": "in", "ts": now_iso()}) for i in range(FAKE_BADGES)]
        gateway.publish_many(real + fake)
        # a valid message after the flood: nothing valid is lost behind it
        gateway.publish("line/line-1/order", {"order_id": "SO-77", "sku": "KT-100", "target_qty": 10,
                                              "event": "start", "ts": now_iso()})
        wait_until(lambda: system.sql("SELECT order_id FROM order_event"), 30, "the order after the flood")
        wait_until(lambda: system.metric("shopfloor_unknown_ids_total") >= FAKE_BADGES, 30, "the made-up badges")
    finally:
        gateway.close()
    assert system.metric("shopfloor_unknown_ids_total") == FAKE_BADGES
    metrics = system.http("/metrics")[1]
    assert f'shopfloor_unknown_ids_total{{kind="badge"}} {float(FAKE_BADGES)}' in metrics
    # kept as dead letters: in the outbox of the worker process that received each
    payloads: list[bytes] = []
    for outbox in system.data_dir.rglob("outbox.sqlite3"):
        conn = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
        try:
            payloads += [p for (p,) in conn.execute("SELECT payload FROM dead_letter WHERE reason LIKE 'unknown badge %'")]
            example = conn.execute("SELECT reason FROM dead_letter WHERE CAST(payload AS TEXT) LIKE '%X00042%'").fetchall()
            if example:
                assert example == [("unknown badge 'X00042' (not in operators)",)]
        finally:
            conn.close()
    assert len(payloads) == len(set(payloads)) == FAKE_BADGES
    stored = system.sql("SELECT station, badge, operator FROM operator_event ORDER BY badge")
    assert stored == [("mold-1", "B1001", "op-001"), ("mold-2", "B1002", "op-002"), ("assy-1", "B1003", "op-003"),
                      ("assy-1", "B1004", "op-004"), ("pack-1", "B1009", "op-009")]
    assert system.sql("SELECT order_id FROM order_event") == [("SO-77",)]
    # the log names a few of them and counts the rest: a flood of made-up ids does not fill the disk with lines
    log = (system.tmp / "agent.log").read_text(errors="replace")
    # (each of the two workers: a burst of 20 lines, then one a second; 5,000 lines without the limit)
    assert 0 < log.count("dead letter from line-bus") <= 2 * (20 + 30)
    assert "more dead letters were not logged one by one" in log
    # the board's headcount, as the dashboard computes it from the historian
    cfg = load(system.config, resolve_secrets=False)
    historian = open_historian(cfg, system.data_dir)
    try:
        people = line_history(cfg, historian, "line-1", time.time_ns())["people"]
    finally:
        historian.close()
    assert people["headcount"] == {"planned": 5, "present": 5}


def test_a_historian_write_that_waits_on_a_lock_shows_on_healthz_and_loses_nothing(system):
    """Another process holding the SQLite historian's write lock: the agent's write waits (SQLite's busy timeout
    is 30 s, so no write fails for that long); /healthz and /metrics say so after STALL_AFTER_S."""
    gateway = Client(system.broker, "line-gateway")
    other = sqlite3.connect(system.data_dir / "historian.sqlite3", isolation_level=None, timeout=10)
    try:
        other.execute("BEGIN IMMEDIATE")
        try:
            assert not system.health()["historian"]["last_error"]
            gateway.publish("line/line-2/material/alu-bar/level", {"level": 12.5, "ts": now_iso()})
            error = wait_until(lambda: system.health()["historian"]["last_error"], 30, "the stall on /healthz")
            assert "no historian write confirmed for 1" in error and "1 points wait in the outbox" in error
            assert system.metric("shopfloor_historian_stalled_seconds") >= 10
        finally:
            other.execute("COMMIT")
        wait_until(lambda: system.sql("SELECT level FROM material_level WHERE material = 'alu-bar'") == [(12.5,)],
                   30, "the waiting point written once the lock is gone")
        wait_until(lambda: not system.health()["historian"]["last_error"], 10, "the stall to clear")
        assert system.metric("shopfloor_historian_stalled_seconds") == 0
    finally:
        other.close()
        gateway.close()
