"""The fast PublishResponse decoder agrees with asyncua's own decoder, and declines what it does not handle."""

from datetime import UTC, datetime

import pytest
from asyncua import ua
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary

from agent.sources.opcua.source import to_ns
from agent.sources.opcua.wire import Unsupported, parse_publish_response

T1 = datetime(2026, 11, 22, 3, 59, 1, 123456, tzinfo=UTC)
T2 = datetime(2026, 11, 22, 3, 59, 2, 654321, tzinfo=UTC)


def item(handle, variant, status=0, source=T1, server=T2, pico=False):
    dv = ua.DataValue(variant, ua.StatusCode(status), SourceTimestamp=source, ServerTimestamp=server)
    if pico:
        dv.SourcePicoseconds = 7
        dv.ServerPicoseconds = 9
    return ua.MonitoredItemNotification(ClientHandle=handle, Value=dv)


def response(*notifications, available=(3, 4), sequence=4):
    r = ua.PublishResponse()
    r.Parameters.SubscriptionId = 77
    r.Parameters.AvailableSequenceNumbers = list(available)
    r.Parameters.MoreNotifications = False
    r.Parameters.NotificationMessage.SequenceNumber = sequence
    r.Parameters.NotificationMessage.NotificationData = list(notifications)
    r.Parameters.Results = [ua.StatusCode(0)]
    return struct_to_binary(r)


def data_change(*items):
    return ua.DataChangeNotification(MonitoredItems=list(items))


VALUES = [
    ua.Variant(21.5, ua.VariantType.Double), ua.Variant(1.25, ua.VariantType.Float),
    ua.Variant(True, ua.VariantType.Boolean), ua.Variant(-7, ua.VariantType.Int32),
    ua.Variant(4_000_000_000, ua.VariantType.UInt32), ua.Variant(2**40, ua.VariantType.Int64),
    ua.Variant(2**63, ua.VariantType.UInt64), ua.Variant(-3, ua.VariantType.SByte),
    ua.Variant(200, ua.VariantType.Byte), ua.Variant(-300, ua.VariantType.Int16),
    ua.Variant(60000, ua.VariantType.UInt16), ua.Variant("Execute", ua.VariantType.String),
    ua.Variant("状态 Held", ua.VariantType.String), ua.Variant(None, ua.VariantType.Null),
]


@pytest.mark.parametrize("variant", VALUES, ids=[f"{v.VariantType.name}-{v.Value!r}" for v in VALUES])
def test_values_match_asyncua(variant):
    raw = response(data_change(item(201, variant), item(202, variant, status=0x80050000,
                                                                     source=None, server=T2)))
    expected = struct_from_binary(ua.PublishResponse, ua.utils.Buffer(raw)).Parameters
    got = parse_publish_response(raw).Parameters
    assert (got.SubscriptionId, got.AvailableSequenceNumbers, got.MoreNotifications) == (77, [3, 4], False)
    assert got.NotificationMessage.SequenceNumber == expected.NotificationMessage.SequenceNumber == 4
    assert got.NotificationMessage.NotificationData
    want = []
    for notif in expected.NotificationMessage.NotificationData:
        for mi in notif.MonitoredItems:
            dv = mi.Value
            want.append((mi.ClientHandle, dv.Value.Value, dv.StatusCode.value, to_ns(dv.SourceTimestamp),
                         to_ns(dv.ServerTimestamp)))
    assert got.samples == want


def test_several_notifications_and_keepalive():
    raw = response(data_change(item(1, VALUES[0])), data_change(item(2, VALUES[3]), item(3, VALUES[11])))
    assert [s[0] for s in parse_publish_response(raw).Parameters.samples] == [1, 2, 3]
    keepalive = parse_publish_response(response(available=()))
    assert keepalive.Parameters.samples == [] and not keepalive.Parameters.NotificationMessage.NotificationData


@pytest.mark.parametrize(
    "notification",
    [ua.StatusChangeNotification(Status=ua.StatusCode(ua.StatusCodes.BadTimeout)),
     data_change(item(1, ua.Variant([1.0, 2.0], ua.VariantType.Double))),
     data_change(item(1, ua.Variant(T1, ua.VariantType.DateTime))),
     data_change(item(1, ua.Variant(1.0, ua.VariantType.Double), pico=True))],
    ids=["status-change", "array", "datetime", "picoseconds"],
)
def test_unusual_shapes_are_left_to_asyncua(notification):
    with pytest.raises(Unsupported):
        parse_publish_response(response(notification))


def test_bad_service_result_is_left_to_asyncua():
    r = ua.PublishResponse()
    r.ResponseHeader.ServiceResult = ua.StatusCode(ua.StatusCodes.BadNoSubscription)
    with pytest.raises(Unsupported):
        parse_publish_response(struct_to_binary(r))


def test_truncated_input_is_unsupported_not_a_crash():
    raw = response(data_change(item(1, VALUES[0])))
    for cut in range(1, len(raw), 7):
        with pytest.raises(Unsupported):
            parse_publish_response(raw[:cut])
