"""OPC UA values of any Variant type, status and timestamps, as the OPC UA source turns them into readings and
the mapper into points: nothing raises; a process value that is a finite number is stored as exactly that
number (times scale, plus offset); a non-finite or non-numeric one is a dead letter; a Bad one is a point with
its quality and no value. The fast PublishResponse decoder agrees with asyncua on any data change it accepts,
and declines any bytes it cannot read with Unsupported, never another exception."""

import contextlib
import math
from dataclasses import replace
from datetime import UTC, datetime

from asyncua import ua
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary
from hypothesis import assume, given
from hypothesis import strategies as st

from agent.config import load
from agent.core.mapping import Mapper, MappingResult
from agent.core.schema import TIME_MAX_NS, TIME_MIN_NS, validate
from agent.sources.base import Quality
from agent.sources.opcua.source import _reading, to_ns
from agent.sources.opcua.wire import Unsupported, parse_publish_response
from tests.conftest import FACTORY_YAML
from tests.fuzz import fuzz

PLAN = load(FACTORY_YAML).mapping_plan()
OPCUA = [b for b in PLAN.bindings if b.source == "plc-1"]
PROCESS_VALUE = next(b for b in OPCUA if b.spec.signal == "process_value")
NOW_NS = 1_795_319_941_000_000_000
VT = ua.VariantType


def ints(vtype, bits, signed):
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return st.builds(lambda v: ua.Variant(v, vtype), st.integers(low, high))


text = st.text(max_size=20).map(lambda s: s.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
scalar_variants = st.one_of(
    st.builds(lambda v: ua.Variant(v, VT.Boolean), st.booleans()),
    ints(VT.SByte, 8, True), ints(VT.Byte, 8, False), ints(VT.Int16, 16, True), ints(VT.UInt16, 16, False),
    ints(VT.Int32, 32, True), ints(VT.UInt32, 32, False), ints(VT.Int64, 64, True), ints(VT.UInt64, 64, False),
    st.builds(lambda v: ua.Variant(v, VT.Float), st.floats(width=32)),
    st.builds(lambda v: ua.Variant(v, VT.Double), st.floats()),
    st.builds(lambda v: ua.Variant(v, VT.String), text | st.none()),
    st.just(ua.Variant(None, VT.Null)),
)
other_variants = st.one_of(
    st.builds(lambda v: ua.Variant(v, VT.ByteString), st.binary(max_size=20)),
    st.builds(lambda v: ua.Variant(v, VT.DateTime), st.datetimes(datetime(1601, 1, 2), datetime(9999, 1, 1),
                                                                 timezones=st.just(UTC))),
    st.builds(lambda v: ua.Variant(ua.LocalizedText(v, "en"), VT.LocalizedText), text),
    st.builds(lambda v: ua.Variant(ua.NodeId(v, 2), VT.NodeId), st.integers(0, 2**32 - 1)),
    st.builds(lambda v: ua.Variant(ua.StatusCode(v), VT.StatusCode), st.integers(0, 2**32 - 1)),
    st.builds(lambda v: ua.Variant(ua.QualifiedName(v, 1), VT.QualifiedName), text),
    st.builds(lambda v: ua.Variant(v, VT.Double), st.lists(st.floats(), max_size=4)),
    st.builds(lambda v: ua.Variant(v, VT.Int32), st.lists(st.integers(-2**31, 2**31 - 1), min_size=1, max_size=4)),
    st.builds(lambda v: ua.Variant(v, VT.String), st.lists(text, min_size=1, max_size=3)),
)
statuses = st.sampled_from([0, 0x40000000, 0x408F0000, 0x80050000, 0x80310000, 0xC0000000]) | st.integers(0, 2**32 - 1)
# null, in 2000-2200, before it (down to OPC UA's 1601 epoch) and after it
times = st.none() | st.datetimes(datetime(1601, 1, 2), datetime(9999, 1, 1), timezones=st.just(UTC)) | st.datetimes(
    datetime(2000, 1, 1), datetime(2199, 12, 31), timezones=st.just(UTC))


def data_value(variant, status, source, server):
    return ua.DataValue(variant, ua.StatusCode(status), SourceTimestamp=source, ServerTimestamp=server)


def mapped(binding, dv):
    reading = _reading(0, dv, lambda: NOW_NS)
    # a source time outside 2000-2200 (null, 1601, 9999) is replaced by the server's or the agent's time
    assert TIME_MIN_NS <= reading.source_ns < TIME_MAX_NS
    out = MappingResult()
    Mapper(PLAN).reading(binding, *reading[1:], out)
    for point in out.points:
        assert validate(point) == point
    for dead in out.dead_letters:
        assert dead.reason and (dead.source, dead.topic) == (binding.source, binding.node_id)
    return reading, out


@fuzz(200)
@given(variant=scalar_variants | other_variants, status=statuses, source=times, server=times,
       scale=st.sampled_from([1.0, 0.1, -2.5, 1e300]), offset=st.sampled_from([0.0, -273.15, 1e308]))
def test_any_value_as_a_process_value(variant, status, source, server, scale, offset):
    binding = replace(PROCESS_VALUE, spec=replace(PROCESS_VALUE.spec, scale=scale, offset=offset))
    reading, out = mapped(binding, data_value(variant, status, source, server))
    value = variant.Value
    if reading.quality == Quality.BAD:
        (point,) = out.points
        assert "value" not in point.fields and point.fields["quality"] == "Bad" and point.fields["status"] == status
        return
    if isinstance(value, bool | int | float):
        number = float(value) * scale + offset if scale != 1.0 or offset else float(value)
        if math.isfinite(number):
            assert out.dead_letters == []
            (point,) = out.points
            assert point.fields["value"] == number  # exactly the number read, nothing rounded away
            assert point.fields["quality"] == ("Good", "Uncertain")[reading.quality]
            assert point.time_ns == reading.source_ns
            return
    assert out.points == []
    (dead,) = out.dead_letters
    assert "not a finite number" in dead.reason or "process value has type" in dead.reason


@fuzz(200)
@given(binding=st.sampled_from([b for b in OPCUA if b.spec.signal != "process_value"]),
       variant=scalar_variants | other_variants, status=statuses, source=times, server=times)
def test_any_value_on_any_tag(binding, variant, status, source, server):
    """A state, count, alarm or product tag with any value: a point, a dead letter or (an unchanged reading)
    nothing, and never an exception."""
    reading, out = mapped(binding, data_value(variant, status, source, server))
    if isinstance(variant.Value, float) and not math.isfinite(variant.Value) and reading.quality != Quality.BAD:
        assert out.points == []


# --- the fast decoder -------------------------------------------------------------------------------------------


def publish_response(items):
    r = ua.PublishResponse()
    r.Parameters.SubscriptionId = 7
    r.Parameters.NotificationMessage.SequenceNumber = 1
    r.Parameters.NotificationMessage.NotificationData = [ua.DataChangeNotification(MonitoredItems=[
        ua.MonitoredItemNotification(ClientHandle=handle, Value=dv) for handle, dv in items])]
    return struct_to_binary(r)


items = st.lists(st.tuples(st.integers(0, 2**32 - 1),
                           st.builds(data_value, scalar_variants | other_variants, statuses, times, times)),
                 min_size=1, max_size=4)


@fuzz(150)
@given(items=items)
def test_fast_decoder_agrees_with_asyncua(items):
    raw = publish_response(items)
    expected = struct_from_binary(ua.PublishResponse, ua.utils.Buffer(raw)).Parameters
    want = [(mi.ClientHandle, mi.Value.Value.Value if mi.Value.Value is not None else None, mi.Value.StatusCode.value,
             to_ns(mi.Value.SourceTimestamp), to_ns(mi.Value.ServerTimestamp))
            for notif in expected.NotificationMessage.NotificationData for mi in notif.MonitoredItems]
    try:
        got = parse_publish_response(raw).Parameters.samples
    except Unsupported:
        return  # asyncua decodes it, as the source does
    assert len(got) == len(want)
    for (handle, value, status, source_ns, server_ns), (w_handle, w_value, w_status, w_source, w_server) in zip(
            got, want, strict=True):
        assert (handle, status) == (w_handle, w_status)
        assert value == w_value or (value != value and w_value != w_value)  # NaN is NaN
        assert type(value) is type(w_value) or (isinstance(value, int) and isinstance(w_value, int))
        # the decoder keeps any timestamp, the source clips to 2000-2200 itself
        for ns, w_ns in ((source_ns, w_source), (server_ns, w_server)):
            assert w_ns is None or ns == w_ns


@fuzz(200)
@given(items=items, cut=st.integers(0, 400), flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)),
                                                             max_size=4))
def test_fast_decoder_declines_damaged_bytes_with_unsupported(items, cut, flips):
    raw = bytearray(publish_response(items))
    for at, byte in flips:
        if at < len(raw):
            raw[at] = byte
    raw = raw[:cut] if cut < len(raw) else raw
    assume(len(raw) > 0)
    with contextlib.suppress(Unsupported):  # anything else fails the test
        parse_publish_response(bytes(raw))
