"""The agent's live publisher against a real broker: one point it cannot publish as it is never costs the other
points of its batch, nor the batches after it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.core.schema import Point
from agent.sinks.live import MqttLivePublisher
from simulators.broker import Broker, free_port
from simulators.harness import wait_until

P = "shopfloor/v1/cixi-1/line-1/"
T0 = 1_795_219_200_000_000_000


def at(ms: int, measurement: str, tags: dict[str, str], fields: dict[str, Any]) -> Point:
    return Point(measurement, {"site": "cixi-1", "line": "line-1", **tags}, fields, T0 + ms * 1_000_000)


def press_state(ms: int, value: str) -> Point:
    return at(ms, "machine_state", {"machine": "press-1"}, {"state": value, "raw": "1"})


RESIN = at(2, "material_level", {"material": "resin-pp"}, {"level": 84.0})
PACKER = at(3, "machine_count", {"machine": "packer-1", "counter": "good"}, {"delta": 1, "value": 150})


@pytest.fixture
def broker(tmp_path) -> Iterator[Broker]:
    """A real Mosquitto on a free loopback port (the Debian package; amqtt where it is not installed)."""
    with Broker(port=free_port(), data_dir=tmp_path / "broker") as b:
        yield b

class Subscriber:
    """The newest payload per topic under shopfloor/v1/#, as a board would see it."""

    def __init__(self, broker: Broker) -> None:
        self.seen: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"live-test-{free_port()}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe("shopfloor/v1/#", qos=1)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.seen[msg.topic] = bytes(msg.payload)

    def json(self, topic: str) -> Any:
        with self._lock:
            payload = self.seen.get(topic)
        return None if payload is None else json.loads(payload.decode("utf-8"))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(factory_cfg, broker) -> Iterator[MqttLivePublisher]:
    source = factory_cfg.sources.mqtt[0].model_copy(update={"url": broker.url, "client_id": "live-pub-test"})
    live = MqttLivePublisher("cixi-1", "edge-1", source, min_interval_ms=50, machines=["line-1/press-1"])
    live.start()
    wait_until(live.client.is_connected, 10, "the live publisher to connect")
    yield live
    live.stop()


@pytest.fixture
def subscriber(broker) -> Iterator[Subscriber]:
    sub = Subscriber(broker)
    yield sub
    sub.close()


def test_a_lone_surrogate_is_replaced_and_the_batch_published(publisher, subscriber):
    andon = at(4, "andon_event", {"station": "mold-1", "event": "call", "kind": "quality"},
               {"call_id": "A-\ud800"})  # what json.loads makes of "A-\ud800" in an MQTT andon message
    badge = at(5, "operator_event", {"station": "mold-1", "event": "in"}, {"badge": "B\udc00", "operator": None})
    publisher.publish([press_state(1, "RUNNING"), andon, RESIN, badge, PACKER])
    wait_until(lambda: subscriber.json(P + "packer-1/count/good"), 10, "the batch's last point")
    assert subscriber.json(P + "press-1/state")["v"] == "RUNNING"
    assert subscriber.json(P + "_line/material/resin-pp")["v"] == 84.0
    assert subscriber.json(P + "mold-1/andon")["call_id"] == "A-\ufffd"
    assert subscriber.json(P + "mold-1/operator/B\ufffd")["v"] == "in"
    assert publisher.skipped == 0


@pytest.mark.parametrize("badge", ["B+1", "B#", "B\x00"])
def test_a_point_that_makes_no_topic_is_skipped_and_later_batches_still_go_out(publisher, subscriber, badge):
    bad = at(4, "operator_event", {"station": "mold-1", "event": "in"}, {"badge": badge})
    publisher.publish([press_state(1, "RUNNING"), bad, RESIN])
    wait_until(lambda: subscriber.json(P + "_line/material/resin-pp"), 10, "the points beside the bad one")
    assert subscriber.json(P + "press-1/state")["v"] == "RUNNING"
    assert publisher.skipped == 1
    publisher.publish([press_state(6, "FAULT"), PACKER])
    wait_until(lambda: subscriber.json(P + "packer-1/count/good"), 10, "the next batch")
    assert subscriber.json(P + "press-1/state")["v"] == "FAULT"
    assert publisher.client.is_connected()


def test_values_from_receiver_processes_keep_the_newest_per_topic_whatever_order_they_come_in(publisher,
                                                                                              subscriber):
    """Two receiver processes confirm writes in no order between them: the acknowledgement of an andon call
    stays the topic's value when the call itself comes after it, also once the acknowledgement is published."""
    from agent.sinks.live import live_values

    def values(*points: Point) -> list[tuple[str, int, bytes]]:
        return live_values("cixi-1", points, lambda what, exc: None)

    call = at(10, "andon_event", {"station": "mold-1", "event": "call", "kind": "quality"}, {"call_id": "C-1"})
    ack = at(52, "andon_event", {"station": "mold-1", "event": "ack", "kind": "quality"}, {"call_id": "C-1"})
    publisher.offer(values(ack))
    publisher.offer(values(call))  # before the flush: the pending acknowledgement stays
    wait_until(lambda: subscriber.json(P + "mold-1/andon"), 10, "the andon topic")
    assert subscriber.json(P + "mold-1/andon")["v"] == "ack"
    publisher.offer(values(call, RESIN))  # after it was published: still the older value, so not sent
    wait_until(lambda: subscriber.json(P + "_line/material/resin-pp"), 10, "the material level beside it")
    assert subscriber.json(P + "mold-1/andon")["v"] == "ack"
    later = at(90, "andon_event", {"station": "mold-1", "event": "call", "kind": "quality"}, {"call_id": "C-2"})
    publisher.offer(values(later))
    wait_until(lambda: (subscriber.json(P + "mold-1/andon") or {}).get("call_id") == "C-2", 10, "a newer call")
