"""MQTT payload mapping under any input: the mapper never raises, every message ends as exactly one point or
one dead letter (nothing vanishes, nothing is counted twice), and every valid message of every route of the
example config becomes the point it describes."""

import json
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from agent.config import load
from agent.core.mapping import Mapper, MappingResult
from agent.core.schema import TIME_MAX_NS, TIME_MIN_NS, Point, validate
from tests.conftest import FACTORY_YAML
from tests.fuzz import fuzz

PLAN = load(FACTORY_YAML).mapping_plan()
MAPPER = Mapper(PLAN)  # MQTT mapping keeps no state but a cache of topic routes
SOURCE = "line-bus"
SITE = PLAN.site
LINES = sorted(PLAN.stations)
STATIONS = sorted((line, station) for line, stations in PLAN.stations.items() for station in stations)
MATERIALS = sorted(PLAN.materials)
BADGES = sorted(PLAN.badges)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

text = st.text(max_size=30)  # any text, lone surrogates included
tag_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20).filter(
    lambda s: "\n" not in s and "\r" not in s and not s.endswith("\\"))  # what a point's tag may hold
field_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
finite = st.integers(-10**9, 10**9) | st.floats(allow_nan=False, allow_infinity=False, width=64)
json_value = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | text,
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                          max_leaves=10)
KEYS = ["badge", "action", "ts", "call_id", "event", "kind", "level", "material", "lot", "qty", "order_id", "sku",
        "target_qty"]
payload_doc = st.dictionaries(st.sampled_from(KEYS) | text, json_value, max_size=8)


def topics():
    """Topics of every route with known and unknown ids, and any text at all."""
    line = st.sampled_from(LINES) | text
    station = st.sampled_from([s for _, s in STATIONS]) | text
    material = st.sampled_from(MATERIALS) | text
    return st.one_of(
        st.builds(lambda ln, s, leaf: f"line/{ln}/{s}/{leaf}", line, station,
                  st.sampled_from(["badge", "andon", "lot", "material-call", "x"])),
        st.builds(lambda ln, m: f"line/{ln}/material/{m}/level", line, material),
        st.builds(lambda ln: f"line/{ln}/order", line),
        text)


def mapped(topic, payload, received_ns):
    out = MappingResult()
    MAPPER.mqtt_message(SOURCE, topic, payload, received_ns, out)
    assert len(out.points) + len(out.dead_letters) == 1, out  # nothing vanishes, nothing is doubled
    for point in out.points:
        assert validate(point) == point
    for dead in out.dead_letters:
        assert (dead.source, dead.topic, dead.payload, dead.time_ns) == (SOURCE, topic, payload, received_ns)
        assert dead.reason
    return out


received = st.integers(TIME_MIN_NS, TIME_MAX_NS - 1)


@fuzz(150)
@given(topic=topics(), payload=st.binary(max_size=300), received_ns=received)
def test_any_bytes_on_any_topic_end_as_a_point_or_a_dead_letter(topic, payload, received_ns):
    mapped(topic, payload, received_ns)


@fuzz(150)
@given(topic=topics(), doc=payload_doc | json_value, received_ns=received)
def test_any_json_ends_as_a_point_or_a_dead_letter(topic, doc, received_ns):
    mapped(topic, json.dumps(doc).encode(), received_ns)


# --- valid messages ---------------------------------------------------------------------------------------------


@st.composite
def timestamps(draw):
    """(what the payload's ts holds or None when it has none, the time the point must have); ts forms: ISO 8601
    in UTC or with an offset, epoch s/ms/us/ns."""
    ns = draw(st.integers(TIME_MIN_NS, TIME_MAX_NS - 10**9))
    at = EPOCH + timedelta(microseconds=ns // 1000)
    form = draw(st.sampled_from(["none", "utc", "offset", "s", "ms", "us", "ns"]))
    if form == "none":
        return None, None
    if form == "utc":
        return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), ns // 1000 * 1000
    if form == "offset":
        zone = timezone(timedelta(minutes=draw(st.integers(-12 * 60, 14 * 60))))
        return at.astimezone(zone).isoformat(), ns // 1000 * 1000
    scale = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[form]
    return ns // scale, ns // scale * scale


@st.composite
def valid_messages(draw):
    """(topic, payload, the point it must become), for every route of the example config."""
    kind = draw(st.sampled_from(["badge", "andon", "level", "lot", "material-call", "order"]))
    line, station = draw(st.sampled_from(STATIONS))
    ts, time_ns = draw(timestamps())
    tags = {"site": SITE, "line": line}
    if kind == "badge":
        badge, event = draw(st.sampled_from(BADGES)), draw(st.sampled_from(["in", "out"]))
        topic, doc = f"line/{line}/{station}/badge", {"badge": badge, "action": event}
        point = ("operator_event", {**tags, "station": station, "event": event},
                 {"badge": badge, "operator": PLAN.badges[badge]})
    elif kind == "andon":
        call_id, event, andon = draw(field_text), draw(st.sampled_from(["call", "ack", "resolve"])), draw(tag_text)
        topic, doc = f"line/{line}/{station}/andon", {"call_id": call_id, "event": event, "kind": andon}
        fields = {"call_id": call_id}
        if draw(st.booleans()):
            doc["badge"] = fields["badge"] = draw(field_text)
        point = ("andon_event", {**tags, "station": station, "event": event, "kind": andon}, fields)
    elif kind == "level":
        material, level = draw(st.sampled_from(MATERIALS)), draw(finite)
        topic, doc = f"line/{line}/material/{material}/level", {"level": level}
        point = ("material_level", {**tags, "material": material}, {"level": float(level)})
    elif kind == "lot":
        material, lot, qty = draw(st.sampled_from(MATERIALS)), draw(field_text), draw(finite)
        topic, doc = f"line/{line}/{station}/lot", {"material": material, "lot": lot, "qty": qty}
        point = ("material_event", {**tags, "station": station, "material": material, "event": "lot_loaded"},
                 {"lot": lot, "qty": float(qty)})
    elif kind == "material-call":
        material, call_id, qty = draw(st.sampled_from(MATERIALS)), draw(field_text), draw(finite)
        event = draw(st.sampled_from(["call", "delivered", "lot_loaded"]))
        topic = f"line/{line}/{station}/material-call"
        doc = {"material": material, "event": event, "call_id": call_id, "qty": qty}
        point = ("material_event", {**tags, "station": station, "material": material, "event": event},
                 {"call_id": call_id, "qty": float(qty)})
    else:
        order_id, sku, event = draw(field_text), draw(field_text), draw(st.sampled_from(["start", "stop"]))
        target = draw(st.integers(-2**63, 2**63 - 1))
        topic = f"line/{line}/order"
        doc = {"order_id": order_id, "sku": sku, "target_qty": target, "event": event}
        if draw(st.booleans()) and abs(target) < 2**53:
            doc["target_qty"] = float(target)  # 400.0 is a whole number too
        point = ("order_event", {**tags, "event": event}, {"order_id": order_id, "sku": sku, "target_qty": target})
    if ts is not None:
        doc["ts"] = ts
    # senders differ in key order and in how they write text
    items = draw(st.permutations(list(doc.items())))
    raw = json.dumps(dict(items), ensure_ascii=draw(st.booleans())).encode()
    return topic, raw, point, time_ns


@fuzz(200)
@given(message=valid_messages(), received_ns=received)
def test_every_valid_message_becomes_its_point(message, received_ns):
    topic, raw, (measurement, tags, fields), time_ns = message
    out = mapped(topic, raw, received_ns)
    assert out.dead_letters == []
    assert out.points == [Point(measurement, tags, fields, received_ns if time_ns is None else time_ns)]


@fuzz(100)
@given(message=valid_messages(), key=st.sampled_from(KEYS), value=json_value, received_ns=received)
def test_a_valid_message_with_one_value_changed_is_a_point_or_a_dead_letter(message, key, value, received_ns):
    topic, raw, _, _ = message
    doc = json.loads(raw)
    doc[key] = value
    mapped(topic, json.dumps(doc).encode(), received_ns)
