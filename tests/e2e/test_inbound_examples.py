"""docs/data-model.md "How MQTT messages become points": every example message is published to Mosquitto, an agent
running config/factory.yaml's routes takes it, and the historian holds the point the doc says, at the doc's `ts`."""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.core.mapping import compile_route
from agent.core.schema import MEASUREMENTS
from tests.conftest import ROOT
from tests.e2e.conftest import wait_until

DOC = ROOT / "docs" / "data-model.md"
SECTION = "### How MQTT messages become points"
EXAMPLE = re.compile(
    r"\*\*(?P<name>[^*\n]+)\*\* on `(?P<topic>[^`]+)`:\n\n```json\n(?P<payload>[^\n]+)\n```\n\n"
    r"→ `(?P<measurement>\w+)` with tags `(?P<tags>[^`]+)`\s+and\s+fields\s+`(?P<fields>[^`]+)`")
# every kind of inbound message config/factory.yaml routes: (measurement, event tag)
KINDS = {("operator_event", "in"), ("operator_event", "out"), ("andon_event", "call"), ("andon_event", "ack"),
         ("andon_event", "resolve"), ("material_level", None), ("material_event", "lot_loaded"),
         ("material_event", "call"), ("material_event", "delivered"), ("order_event", "start"),
         ("order_event", "stop")}


@dataclass(frozen=True)
class Example:
    name: str
    topic: str
    payload: bytes
    measurement: str
    tags: dict[str, str]
    fields: dict[str, Any]

    @property
    def time_ns(self) -> int:
        ts = json.loads(self.payload)["ts"]
        if isinstance(ts, str):
            moment = datetime.fromisoformat(ts)
            assert moment.tzinfo is not None, f"{self.name}: ts without a zone"
            return int(moment.timestamp()) * 10**9 + moment.microsecond * 1000
        return int(ts) * 1_000_000  # the doc's numbers are epoch milliseconds


def pairs(text: str) -> list[tuple[str, str]]:
    return [tuple(item.split("=", 1)) for item in text.split(", ")]  # type: ignore[misc]


def examples() -> list[Example]:
    """The examples of the section, in the doc's order."""
    doc = DOC.read_text(encoding="utf-8")
    start = doc.index(SECTION)
    end = doc.index("\n### ", start + len(SECTION))
    return [Example(m["name"], m["topic"], m["payload"].encode(), m["measurement"], dict(pairs(m["tags"])),
                    {k: json.loads(v) for k, v in pairs(m["fields"])})
            for m in EXAMPLE.finditer(doc[start:end])]


def test_the_doc_shows_every_kind_of_inbound_message(factory_cfg):
    found = examples()
    assert {(e.measurement, e.tags.get("event")) for e in found} == KINDS
    assert len(found) == len(KINDS)
    for e in found:
        assert "ts" in json.loads(e.payload), e.name
        assert set(e.tags) == set(MEASUREMENTS[e.measurement].tags), e.name
    for source in factory_cfg.sources.mqtt:
        for route in source.routes:
            regex = compile_route(route.plan()).regex
            assert any(regex.match(e.topic) and e.measurement == route.signal for e in found), \
                f"no example for the route {route.pattern}"


def stored(path, e: Example) -> dict[str, Any] | None:
    if not path.exists():
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        where = " AND ".join(f"{tag} = ?" for tag in e.tags)
        row = conn.execute(f"SELECT * FROM {e.measurement} WHERE time = ? AND {where}",
                           (e.time_ns, *e.tags.values())).fetchone()
        return dict(row) if row else None
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    finally:
        conn.close()


@pytest.fixture
def system(make_system):
    def keep_the_doc_dates(data):
        data["historian"]["retention_days"] = 36500  # the examples' dates stay in the historian for good
    system = make_system(keep_the_doc_dates)
    system.agent()
    wait_until(lambda: system.health()["sources"]["line-bus"]["connected"], 20, "the agent's MQTT source")
    return system


def test_every_example_becomes_the_point_the_doc_says(system):
    found = examples()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="doc-examples")
    client.connect("127.0.0.1", system.broker.port)
    client.loop_start()
    try:
        for e in found:
            client.publish(e.topic, e.payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
    historian = system.data_dir / "historian.sqlite3"
    wait_until(lambda: all(stored(historian, e) for e in found), 30, "every example in the historian")
    for e in found:
        row = stored(historian, e)
        assert row is not None
        fields = {name: row[name] for name in MEASUREMENTS[e.measurement].fields if row[name] is not None}
        assert fields == e.fields, e.name
        assert all(type(fields[k]) is type(v) for k, v in e.fields.items()), e.name  # 25 is stored as 25.0
    assert system.health()["outbox"]["dead_letters"] == 0
