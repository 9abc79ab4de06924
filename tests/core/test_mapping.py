import json

import pytest

from agent.core.mapping import Mapper, MappingResult, compile_json_path, json_path_get, parse_timestamp_ns
from agent.core.schema import Point
from agent.core.states import BoardState

TS = "2026-11-22T03:59:01.123456Z"
TS_NS = 1795319941123456000


def mqtt(mapper, topic, payload, received_ns=1):
    out = MappingResult()
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    mapper.mqtt_message("line-bus", topic, raw, received_ns, out)
    return out


@pytest.mark.parametrize(
    ("topic", "payload", "measurement", "tags", "fields"),
    [
        ("line/line-1/mold-1/badge", {"badge": "B1002", "action": "in", "ts": TS}, "operator_event",
         {"line": "line-1", "station": "mold-1", "event": "in"}, {"badge": "B1002", "operator": "op-002"}),
        ("line/line-2/deburr-1/andon", {"call_id": "A-1", "event": "call", "kind": "quality", "ts": TS},
         "andon_event", {"line": "line-2", "station": "deburr-1", "event": "call", "kind": "quality"},
         {"call_id": "A-1"}),
        ("line/line-1/material/resin-pp/level", {"level": 812, "ts": TS}, "material_level",
         {"line": "line-1", "material": "resin-pp"}, {"level": 812.0}),
        ("line/line-1/assy-1/lot", {"material": "heater-1k8", "lot": "L7", "qty": 500, "ts": TS},
         "material_event", {"line": "line-1", "station": "assy-1", "material": "heater-1k8", "event": "lot_loaded"},
         {"lot": "L7", "qty": 500.0}),
        ("line/line-2/order", {"order_id": "SO-1", "sku": "FN-300", "target_qty": 400, "event": "start",
                               "ts": TS}, "order_event", {"line": "line-2", "event": "start"},
         {"order_id": "SO-1", "sku": "FN-300", "target_qty": 400}),
    ],
)
def test_mqtt_routes(factory_cfg, topic, payload, measurement, tags, fields):
    out = mqtt(Mapper(factory_cfg.mapping_plan()), topic, payload)
    assert out.dead_letters == []
    (point,) = out.points
    assert point.measurement == measurement
    assert point.tags == {"site": "cixi-1", **tags}
    assert point.fields == fields
    assert point.time_ns == TS_NS


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("line/line-1/mold-1/teleport", {"x": 1}, "no route matches this topic"),
        ("elsewhere/x", {"x": 1}, "no route matches this topic"),
        ("line/line-9/order", {"order_id": "SO-1", "sku": "X", "target_qty": 1, "event": "start"},
         "unknown line 'line-9'"),
        ("line/line-1/nowhere/badge", {"badge": "B1001", "action": "in"}, "unknown station 'nowhere' on line line-1"),
        ("line/line-1/material/gold/level", {"level": 1}, "unknown material 'gold'"),
        ("line/line-1/order", b"{not json", "payload is not JSON"),
        ("line/line-1/order", b"\xff\xfe", "payload is not JSON"),
        ("line/line-1/material/resin-pp/level", {"level": "abc"}, "field level should be a number, got str 'abc'"),
        ("line/line-1/order", {"order_id": "SO-1", "sku": "K", "target_qty": "lots", "event": "start"},
         "field target_qty should be a number"),
        ("line/line-1/order", {"order_id": "SO-1", "sku": "K", "target_qty": 2.5, "event": "start"},
         "field target_qty should be a whole number"),
        ("line/line-1/order", {"sku": "KT-100", "event": "start"}, "required field order_id is missing"),
        ("line/line-1/order", {"order_id": "SO-1", "event": "start"}, "required field sku is missing"),
        ("line/line-1/material/resin-pp/level", {"level": 1, "pad": "x" * 300_000},
         "payload of 300023 bytes is larger than max_payload_bytes (262144)"),
        ("line/line-1/order", {"order_id": "SO-1", "sku": "K", "event": "explode"}, "tag event is 'explode'"),
        ("line/line-1/mold-1/badge", {"badge": "B1", "action": "in", "ts": "yesterday"}, "is not ISO 8601"),
        ("line/line-1/mold-1/badge", {"badge": "B1", "action": "in", "ts": "2026-11-22T03:00:00"},
         "has no time zone"),
        ("line/line-1/mold-1/badge", {"badge": "B1"}, "tag event: payload has no text at its path"),
        ("line/line-1/assy-1/lot", {"material": "heater-1k8", "lot": "L", "qty": [1]},
         "field qty should be a number, got list"),
    ],
)
def test_mqtt_bad_input_becomes_dead_letter(factory_cfg, topic, payload, reason):
    out = mqtt(Mapper(factory_cfg.mapping_plan()), topic, payload, received_ns=5)
    assert out.points == []
    (dead,) = out.dead_letters
    assert reason in dead.reason
    assert (dead.source, dead.topic, dead.time_ns) == ("line-bus", topic, 5)
    assert dead.payload == (payload if isinstance(payload, bytes) else json.dumps(payload).encode())


@pytest.mark.parametrize(
    ("topic", "payload", "kind", "reason"),
    [
        ("line/line-1/mold-1/badge", {"badge": "B9999", "action": "in", "ts": TS}, "badge",
         "unknown badge 'B9999' (not in operators)"),
        ("line/line-9/mold-1/badge", {"badge": "B1001", "action": "in", "ts": TS}, "line", "unknown line 'line-9'"),
        ("line/line-1/mold-9/badge", {"badge": "B1001", "action": "in", "ts": TS}, "station",
         "unknown station 'mold-9' on line line-1"),
        ("line/line-1/material/gold/level", {"level": 1}, "material", "unknown material 'gold'"),
    ],
)
def test_unknown_ids_are_dead_letters_of_their_kind(factory_cfg, topic, payload, kind, reason):
    """Made-up ids (anyone on the broker can publish them) never become points: a made-up badge would count as a
    person on the line."""
    out = mqtt(Mapper(factory_cfg.mapping_plan()), topic, payload)
    assert out.points == []
    (dead,) = out.dead_letters
    assert (dead.unknown, dead.reason) == (kind, reason)


def test_other_bad_input_names_no_unknown_id(factory_cfg):
    out = mqtt(Mapper(factory_cfg.mapping_plan()), "line/line-1/order", b"{not json")
    assert out.dead_letters[0].unknown == ""


def test_mqtt_without_timestamp_uses_receive_time(factory_cfg):
    out = mqtt(Mapper(factory_cfg.mapping_plan()), "line/line-1/material/resin-pp/level", {"level": 3}, received_ns=TS_NS + 77)
    assert out.points[0].time_ns == TS_NS + 77


@pytest.mark.parametrize(
    ("raw", "ns"),
    [(TS, TS_NS), ("2026-11-22T11:59:01.123456+08:00", TS_NS), (1795319941.123456, TS_NS - 0),
     (1795319941123, 1795319941123000000), (1795319941123456, TS_NS), (TS_NS, TS_NS)],
)
def test_timestamps(raw, ns):
    assert abs(parse_timestamp_ns(raw) - ns) < 1000


@pytest.mark.parametrize(
    ("path", "doc", "value"),
    [("$.a.b", {"a": {"b": 3}}, 3), ("$.a[1]", {"a": [1, 2]}, 2), ("$['x y']", {"x y": 1}, 1)],
)
def test_json_paths(path, doc, value):
    assert json_path_get(doc, compile_json_path(path)) == value


# --- OPC UA values ---

GOOD = 0
BAD_COMM = 0x80050000


def binding(mapper, machine, node):
    for b in mapper.bindings:
        if b.machine == machine and b.spec.node == node:
            return b
    raise LookupError(node)


def feed(mapper, machine, node, value, t, status=GOOD):
    """A reading `t` nanoseconds after TS_NS."""
    out = MappingResult()
    t = TS_NS + t
    quality = min(status >> 30, 2)  # an OPC UA status code's severity, as the OPC UA source judges it
    mapper.reading(binding(mapper, machine, node), value, quality, status, "Bad" if status else "Good", t, t, out)
    return out


def test_counter_rollover_and_restart_count_exactly_once(factory_cfg):
    mapper = Mapper(factory_cfg.mapping_plan())
    deltas = []
    for t, value in enumerate([9990, 9995, 3, 40]):
        deltas += [p.fields["delta"] for p in feed(mapper, "press-1", "TotalCount", value, t + 1).points]
    assert deltas == [0, 5, 8, 37]
    # the state that would be committed with those points lets a restarted agent continue exactly
    restarted = Mapper(factory_cfg.mapping_plan(), mapper.take_dirty())
    again = feed(restarted, "press-1", "TotalCount", 40, 10).points  # initial value after reconnect
    later = feed(restarted, "press-1", "TotalCount", 52, 11).points
    assert again == [] and [p.fields["delta"] for p in later] == [12]


def test_same_source_timestamp_never_collapses_two_counts(factory_cfg):
    mapper = Mapper(factory_cfg.mapping_plan())
    feed(mapper, "cnc-1", "TotalCount", 1, 100)
    a = feed(mapper, "cnc-1", "TotalCount", 2, 100).points[0]
    b = feed(mapper, "cnc-1", "TotalCount", 3, 100).points[0]
    assert a.time_ns < b.time_ns


def test_state_codes_packml_and_bad_status(factory_cfg):
    mapper = Mapper(factory_cfg.mapping_plan())
    assert feed(mapper, "press-1", "StateCode", 3, 1).points[0].fields == {"state": "FAULT", "raw": "3"}
    assert feed(mapper, "press-1", "StateCode", 3, 2).points == []  # unchanged state is not repeated
    assert feed(mapper, "packer-1", "PackMLState", "Execute", 3).points[0].fields["state"] == "RUNNING"
    bad = feed(mapper, "press-1", "StateCode", None, 4, status=BAD_COMM).points[0]
    assert bad.fields["state"] == "OFFLINE"
    unknown = feed(mapper, "press-1", "StateCode", 99, 5)
    assert unknown.points == [] and "not in the state map" in unknown.dead_letters[0].reason


def test_process_value_bad_status_is_quality_not_value(factory_cfg):
    mapper = Mapper(factory_cfg.mapping_plan())
    good = feed(mapper, "press-1", "Temperature", 61.5, 1).points[0]
    bad = feed(mapper, "press-1", "Temperature", 0.0, 2, status=BAD_COMM).points[0]
    assert good.fields["value"] == 61.5 and good.fields["quality"] == "Good"
    assert "value" not in bad.fields and bad.fields["quality"] == "Bad" and bad.fields["status"] == BAD_COMM


def test_alarm_raise_change_clear(factory_cfg):
    mapper = Mapper(factory_cfg.mapping_plan())
    seen = []
    for t, code in enumerate([0, 101, 102, 0], start=1):
        seen += [(p.fields["code"], p.fields["active"]) for p in feed(mapper, "press-1", "AlarmCode", code, t).points]
    assert seen == [(101, True), (101, False), (102, True), (102, False)]
    assert feed(Mapper(factory_cfg.mapping_plan()), "press-2", "AlarmCode", 102, 1).points[0].fields["text"] == "液压压力低 Hydraulic pressure low"


def test_source_down_sets_its_machines_offline_once(factory_cfg):
    mapper = Mapper(factory_cfg.mapping_plan())
    feed(mapper, "press-1", "StateCode", 1, 1)
    down = mapper.source_down("plc-1", 5, "connection lost")
    # the example reads cnc-2 over Modbus (plc-mb) and packer-2 over S7 (plc-s7): only plc-1's machines go
    assert {p.tags["machine"] for p in down.points} == {"press-1", "press-2", "packer-1", "cnc-1"}
    assert all(p.fields["state"] == "OFFLINE" for p in down.points)
    assert mapper.source_down("plc-1", 6, "still down").points == []
    assert {p.tags["machine"] for p in mapper.source_down("plc-mb", 6, "connection lost").points} == {"cnc-2"}
    assert feed(mapper, "press-1", "StateCode", 1, 7).points[0].fields["state"] == "RUNNING"


def test_after_an_outage_old_readings_are_stamped_at_the_reconnect(factory_cfg):
    mapper = Mapper(factory_cfg.mapping_plan())
    feed(mapper, "press-1", "StateCode", 1, 10)
    feed(mapper, "press-1", "GoodCount", 5, 10)
    feed(mapper, "press-1", "AlarmCode", 0, 10)
    (offline, *_) = mapper.source_down("plc-1", TS_NS + 100, "source plc-1 down: TimeoutError").points
    assert mapper.source_down("plc-1", TS_NS + 200, "still down").points == []
    mapper.source_up("plc-1", TS_NS + 500)
    # the unchanged state comes back with its old source timestamp, older than the OFFLINE point
    (running,) = feed(mapper, "press-1", "StateCode", 1, 10).points
    assert offline.time_ns == TS_NS + 100 and offline.fields["state"] == "OFFLINE"
    assert running.time_ns == TS_NS + 500
    assert running.fields == {"state": "RUNNING", "raw": "1", "source_time_ns": TS_NS + 10}
    # changes made during the outage land at the reconnect too, never inside the OFFLINE interval
    (count,) = feed(mapper, "press-1", "GoodCount", 9, 300).points
    assert (count.time_ns, count.fields["delta"], count.fields["source_time_ns"]) == (TS_NS + 500, 4, TS_NS + 300)
    raised = feed(mapper, "press-1", "AlarmCode", 101, 300).points[0]
    assert (raised.time_ns, raised.fields["source_time_ns"]) == (TS_NS + 500, TS_NS + 300)
    # readings after the reconnect keep their own time; process values (samples) always do
    later = feed(mapper, "press-1", "GoodCount", 10, 600).points[0]
    assert later.time_ns == TS_NS + 600 and "source_time_ns" not in later.fields
    assert feed(mapper, "press-1", "Temperature", 61.0, 10).points[0].time_ns == TS_NS + 10
    # other sources' machines are not affected
    assert feed(mapper, "packer-1", "PackMLState", "Execute", 20).points[0].time_ns == TS_NS + 500


def test_the_reconnect_rule_survives_a_restart_and_needs_an_outage(factory_cfg):
    mapper = Mapper(factory_cfg.mapping_plan())
    mapper.source_up("plc-1", TS_NS + 500)  # a first connect is no reconnect: readings keep their time
    assert feed(mapper, "press-1", "StateCode", 1, 10).points[0].time_ns == TS_NS + 10
    mapper.source_down("plc-1", TS_NS + 100, "down")
    mapper.source_up("plc-1", TS_NS + 500)
    restarted = Mapper(factory_cfg.mapping_plan(), mapper.take_dirty())  # the state committed with the OFFLINE points
    assert feed(restarted, "press-1", "StateCode", 1, 10).points[0].time_ns == TS_NS + 500


def test_bit_rule_machine_over_opcua(factory_cfg):
    data = factory_cfg.model_dump()
    data["state_maps"]["press-bits"] = {"kind": "bits", "default": "STOPPED", "rules": [
        {"bit": "Fault", "state": "FAULT"}, {"bit": "Running", "state": "RUNNING"}]}
    data["machine_types"]["press"]["state_map"] = "press-bits"
    data["machine_types"]["press"]["tags"][0] = {"node": "Run", "signal": "state_bit", "bit": "Running"}
    data["machine_types"]["press"]["tags"].append({"node": "Flt", "signal": "state_bit", "bit": "Fault"})
    from agent.config import FactoryConfig
    mapper = Mapper(FactoryConfig.model_validate(data).mapping_plan())
    assert feed(mapper, "press-1", "Run", True, 1).points[0].fields == {"state": "RUNNING", "raw": "Running=1"}
    assert feed(mapper, "press-1", "Flt", True, 2).points[0].fields["state"] == "FAULT"
    assert feed(mapper, "press-1", "Flt", False, 3).points[0].fields["state"] == "RUNNING"
    assert feed(mapper, "press-1", "Run", False, 4).points[0].fields["state"] == "STOPPED"


def test_mqtt_hash_matches_parent_level(factory_cfg):
    from agent.core.mapping import compile_route
    from agent.core.plan import RoutePlan
    route = compile_route(RoutePlan(pattern="a/#", signal="order_event"))
    assert route.regex.match("a") and route.regex.match("a/b/c") and not route.regex.match("ab")


def test_integer_epoch_keeps_every_digit():
    assert parse_timestamp_ns(1714550400123) == 1714550400123000000
    assert parse_timestamp_ns(1714550400123456789) == 1714550400123456789


def test_bool_process_value_and_whole_float_count(factory_cfg):
    mapper = Mapper(factory_cfg.mapping_plan())
    assert feed(mapper, "press-1", "Temperature", True, 1).points[0].fields["value"] == 1.0
    feed(mapper, "press-1", "GoodCount", 5.0, 2)
    assert feed(mapper, "press-1", "GoodCount", 7.0, 3).points[0].fields["delta"] == 2


@pytest.mark.parametrize(
    "text",
    ["2026-11-22T03:59:01.123456Z", "1999-12-31T23:59:59.999999Z", "2028-02-29T00:00:00.000001Z",
     "2026-11-22T03:59:01.12345Z", "2026-11-22T03:59:01Z", "2026-11-22 03:59:01.123456Z"],
)
def test_fast_timestamp_path_agrees_with_fromisoformat(text):
    from datetime import UTC, datetime
    expected = datetime.fromisoformat(text)
    delta = expected - datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_timestamp_ns(text) == (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


@pytest.mark.parametrize("text", ["2026-13-22T03:59:01.123456Z", "2026-11-22T25:59:01.123456Z",
                                  "2026-11-22T03:5x:01.123456Z"])
def test_bad_utc_text_is_refused(text):
    with pytest.raises(ValueError):
        parse_timestamp_ns(text)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [({"order_id": "SO-1", "sku": "K", "target_qty": 2**64, "event": "start", "ts": TS},
      "field target_qty is outside the 64-bit range"),
     ({"order_id": "SO-1", "sku": "K", "event": "start", "ts": 10**30}, "outside 2000-2200"),
     ({"order_id": "SO-1", "sku": "K", "event": "start", "ts": "1601-01-01T00:00:00Z"}, "outside 2000-2200")],
)
def test_out_of_range_numbers_are_dead_letters_not_crashes(factory_cfg, payload, reason):
    out = mqtt(Mapper(factory_cfg.mapping_plan()), "line/line-1/order", payload, received_ns=TS_NS)
    assert out.points == [] and reason in out.dead_letters[0].reason


def test_opcua_counter_beyond_64_bits_and_null_timestamp_are_dead_letters(factory_cfg):
    mapper = Mapper(factory_cfg.mapping_plan())
    assert "not a whole number >= 0" in feed(mapper, "press-1", "GoodCount", 2**64, 1).dead_letters[0].reason
    out = MappingResult()
    mapper.reading(binding(mapper, "press-1", "GoodCount"), 5, GOOD, GOOD, "Good", 0, None, out)
    assert out.points == [] and "outside 2000-2200" in out.dead_letters[0].reason


def test_json_nested_too_deep_is_a_dead_letter(factory_cfg):
    payload = b"[" * 100_000 + b"]" * 100_000
    out = mqtt(Mapper(factory_cfg.mapping_plan()), "line/line-1/order", payload, received_ns=TS_NS)
    assert out.points == [] and out.dead_letters[0].reason == "payload cannot be read: RecursionError"


S = 1_000_000_000


@pytest.mark.parametrize("stop_s, then, rewritten", [
    (30, 1, True),  # ended after 30 s by RUNNING: a micro-stop (threshold 120 s)
    (119, 3, True),  # ended by a FAULT just under the threshold
    (120, 1, False),  # as long as the threshold: a stop that needs a reason
    (600, 1, False),
])
def test_a_stop_shorter_than_the_threshold_is_written_again_as_a_microstop(factory_cfg, stop_s, then, rewritten):
    mapper = Mapper(factory_cfg.mapping_plan())
    feed(mapper, "press-1", "StateCode", 1, 0)
    stopped = feed(mapper, "press-1", "StateCode", 0, 10 * S).points
    assert [p.fields["state"] for p in stopped] == ["STOPPED"]
    after = feed(mapper, "press-1", "StateCode", then, (10 + stop_s) * S).points
    if rewritten:
        again, new = after
        assert again.time_ns == stopped[0].time_ns and again.tags == stopped[0].tags
        assert again.fields == {**stopped[0].fields, "state": "MICROSTOP"}
        assert new.fields["state"] != "MICROSTOP"
    else:
        assert [p.fields["state"] for p in after] == [BoardState(("STOPPED", "RUNNING", "SETUP", "FAULT")[then])]


def test_a_stop_ended_by_lost_data_is_not_called_a_microstop_and_the_rule_survives_a_restart(factory_cfg):
    mapper = Mapper(factory_cfg.mapping_plan())
    feed(mapper, "press-1", "StateCode", 0, 0)
    offline = mapper.source_down("plc-1", TS_NS + 5 * S, "connection lost").points
    assert [p.fields["state"] for p in offline if p.tags["machine"] == "press-1"] == ["OFFLINE"]
    restarted = Mapper(factory_cfg.mapping_plan(), mapper.take_dirty())
    feed(restarted, "packer-1", "PackMLState", "Stopped", 10 * S)
    after = feed(restarted, "packer-1", "PackMLState", "Execute", 40 * S).points
    assert [p.fields["state"] for p in after] == ["MICROSTOP", "RUNNING"]


# --- product tags ---


@pytest.fixture
def product_cfg(factory_cfg):
    """Presses report a product code mapped through codes; packers report the SKU as text."""
    from agent.config import FactoryConfig
    data = factory_cfg.model_dump()
    data["machine_types"]["press"]["tags"].append({"node": "ProductCode", "signal": "product",
                                                   "codes": {1: "KT-100", 2: "KT-200"}})
    data["machine_types"]["packer"]["tags"].append({"node": "Sku", "signal": "product"})
    return FactoryConfig.model_validate(data)


@pytest.mark.parametrize(
    ("machine", "node", "value", "sku", "raw"),
    [("press-1", "ProductCode", 1, "KT-100", "1"),
     ("press-1", "ProductCode", 2.0, "KT-200", "2"),
     ("packer-1", "Sku", "KT-200", "KT-200", "KT-200"),
     ("packer-2", "Sku", "FN-300  \x00\x00", "FN-300", "FN-300")],  # a PLC string buffer's padding
)
def test_product_tag_writes_the_sku(product_cfg, machine, node, value, sku, raw):
    (point,) = feed(Mapper(product_cfg.mapping_plan()), machine, node, value, 1).points
    line = "line-1" if machine in ("press-1", "packer-1") else "line-2"
    assert point == Point("machine_product", {"site": "cixi-1", "line": line, "machine": machine},
                          {"sku": sku, "raw": raw}, TS_NS + 1)


NEITHER = "is neither a SKU (text) nor a code (whole number)"


@pytest.mark.parametrize(
    ("machine", "node", "value", "status", "reason"),
    [("packer-1", "Sku", "XX-1", GOOD, "SKU 'XX-1' is not in products"),
     ("packer-1", "Sku", "", GOOD, "SKU '' is not in products"),
     ("packer-1", "Sku", 3, GOOD, "product code 3: the tag has no codes that map it to a SKU"),
     ("press-1", "ProductCode", 9, GOOD, "product code 9 is not in the tag's codes (1, 2)"),
     ("press-1", "ProductCode", True, GOOD, f"product value of type bool {NEITHER}"),
     ("press-1", "ProductCode", 1.5, GOOD, f"product value of type float {NEITHER}"),
     ("press-1", "ProductCode", None, BAD_COMM, "bad status Bad")],
)
def test_a_product_reading_that_names_no_known_sku_is_a_dead_letter(product_cfg, machine, node, value, status,
                                                                     reason):
    out = feed(Mapper(product_cfg.mapping_plan()), machine, node, value, 1, status=status)
    assert out.points == [] and [d.reason for d in out.dead_letters] == [reason]
    assert out.dead_letters[0].topic.endswith(node)


def test_product_is_written_when_the_sku_changes(product_cfg):
    mapper = Mapper(product_cfg.mapping_plan())
    skus = []
    for t, code in enumerate([1, 1, 2, 9, 9, 2, 1], start=1):  # 9: unknown, dead-lettered once
        out = feed(mapper, "press-1", "ProductCode", code, t)
        skus += [(p.fields["sku"], p.time_ns - TS_NS) for p in out.points] + [d.reason for d in out.dead_letters]
    assert skus == [("KT-100", 1), ("KT-200", 3), "product code 9 is not in the tag's codes (1, 2)", ("KT-100", 7)]
    # a restarted agent does not write the product it already wrote again
    restarted = Mapper(product_cfg.mapping_plan(), mapper.take_dirty())
    assert feed(restarted, "press-1", "ProductCode", 1, 8).points == []


def test_a_stop_restamped_at_a_reconnect_is_never_a_micro_stop(factory_cfg):
    mapper = Mapper(factory_cfg.mapping_plan())
    feed(mapper, "press-1", "StateCode", 0, 10 * S)  # stopped before the outage
    mapper.source_down("plc-1", TS_NS + 100 * S, "source plc-1 down: TimeoutError")
    mapper.source_up("plc-1", TS_NS + 700 * S)
    feed(mapper, "press-1", "StateCode", 0, 10 * S)  # still stopped: re-stamped at 700 s
    after = feed(mapper, "press-1", "StateCode", 1, 730 * S).points
    assert [p.fields["state"] for p in after] == ["RUNNING"]  # a 30 s tail of a long stop, not a micro-stop
