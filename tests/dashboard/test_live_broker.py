"""The dashboard's live view against a real broker: no payload on a live topic stops it, the agents' probes are
not counted as malformed, and a dead MQTT thread shows on health and on every tile instead of stale values."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from dashboard.live import LiveView
from simulators.broker import Broker, free_port
from simulators.harness import wait_until

P = "shopfloor/v1/cixi-1/"

POISON = {
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "deep nesting inside an object": b'{"v": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "nesting the parser takes": b'{"v": ' + b"[" * 500 + b"]" * 500 + b"}",
    "1 MB": json.dumps({"v": "RUNNING", "ts": 1, "pad": "x" * 1_000_000}).encode(),
    "invalid UTF-8": b'{"v": "RUNNING", "raw": "\xff\xfe"}',
    "binary": bytes(range(256)),
    "lone surrogate": b'{"v": "RUNNING", "ts": 1, "raw": "\\ud800"}',
    "lone surrogate in a key": b'{"v": "RUNNING", "\\udc00": 1}',
    "NaN": b'{"v": NaN, "ts": 1}',
    "infinity by size": b'{"v": 1e400, "ts": 1}',
}
# one retained topic per poison, so none replaces another on the broker
POISON_TOPICS = {name: f"{P}line-1/press-1/pv/poison-{i}" for i, name in enumerate(POISON)}


def publish(broker: Broker, messages: list[tuple[str, bytes]], retain: bool = True) -> None:
    """Publish with QoS 1 and return once the broker has every message."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"poison-{free_port()}")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def start_view(live: LiveView, broker: Broker) -> LiveView:
    assert live.broker is not None
    live.broker = live.broker.model_copy(update={"url": broker.url})
    live.start()
    wait_until(lambda: live.connected, 10, "the live view to connect")
    return live


@pytest.fixture
def broker(tmp_path) -> Iterator[Broker]:
    """A real Mosquitto on a free loopback port (the Debian package; amqtt where it is not installed)."""
    with Broker(port=free_port(), data_dir=tmp_path / "broker") as b:
        yield b

@pytest.fixture
def view(factory_cfg, broker) -> Iterator[LiveView]:
    live = LiveView(factory_cfg)
    yield live
    live.stop()


def state(value: str, ts: int) -> bytes:
    return json.dumps({"v": value, "ts": ts, "raw": "1"}).encode()


def press_state(live: LiveView) -> Any:
    return live.line_values("line-1").get(("press-1", "state"), {}).get("v")


@pytest.mark.parametrize("retained", [True, False], ids=["retained before start", "while running"])
def test_no_payload_stops_the_live_view(view, broker, retained):
    poison = [(POISON_TOPICS[name], payload) for name, payload in POISON.items()]
    if retained:
        publish(broker, poison)
        start_view(view, broker)
    else:
        start_view(view, broker)
        publish(broker, poison, retain=False)
    wait_until(lambda: view.malformed >= len(POISON), 20, "every poison payload counted")
    publish(broker, [(P + "line-1/press-1/state", state("FAULT", 2))])
    wait_until(lambda: press_state(view) == "FAULT", 10, "the valid state change after the poison")
    assert view.connected and view.error is None
    assert view.malformed == len(POISON)
    assert view.offline_reason("line-1", "press-1") is None
    assert [unit_signal for unit_signal in view.line_values("line-1")] == [("press-1", "state")]


def test_agent_probes_are_not_malformed(view, broker):
    start_view(view, broker)
    # what an agent's MQTT source sends itself when its subscription has been quiet (agent/sources/mqtt/source.py)
    publish(broker, [(P + "_agents/edge-1/probe/line-bus", b"probe")] * 3, retain=False)
    publish(broker, [(P + "line-1/press-1/state", state("RUNNING", 1))])
    wait_until(lambda: press_state(view) == "RUNNING", 10, "the state after the probes")
    assert view.messages >= 4
    assert view.malformed == 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread is made to die
def test_a_dead_mqtt_thread_shows_on_health_and_every_tile(app, client, broker):
    live: LiveView = app.extensions["shopfloor"]["live"]
    hub = app.extensions["shopfloor"]["hub"]
    start_view(live, broker)
    hub.start()  # as in `shopfloor dashboard`: the boards of watched scopes are rebuilt every second
    try:
        publish(broker, [(P + "line-1/press-1/state", state("RUNNING", 1))])
        wait_until(lambda: press_state(live) == "RUNNING", 10, "press-1 RUNNING")
        assert client.get("/api/v1/lines/line-1").get_json()["machines"]["press-1"]["state"] == "RUNNING"

        def broken_read(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a fault inside the MQTT library")
        assert live._client is not None
        live._client.loop_read = broken_read  # type: ignore[method-assign]  # paho's thread dies on its next read
        publish(broker, [(P + "line-1/press-1/state", state("FAULT", 2))])
        wait_until(lambda: not live.connected, 10, "the live view to notice its thread died")

        health = client.get("/api/v1/health").get_json()
        assert health["live_broker"] is False
        assert health["live_error"] == "live view stopped"

        def every_tile_offline(line: str) -> bool:
            board = client.get(f"/api/v1/lines/{line}").get_json()
            return board["live"]["broker"] is False and all(
                (m["state"], m["offline_reason"]) == ("OFFLINE", "live view stopped")
                for m in board["machines"].values())
        wait_until(lambda: every_tile_offline("line-1"), 5, "line-1's watched board to show the live view stopped")
        assert every_tile_offline("line-2")
    finally:
        hub.stop()
        live.stop()
