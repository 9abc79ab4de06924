"""A fast decoder for the common OPC UA PublishResponse: data changes with scalar values.

asyncua decodes every notification into dataclasses and datetimes; at tens of thousands of value changes a
second that alone takes most of a core. This parser reads the binary encoding (OPC UA Part 6) straight into
(client handle, value, status code, source ns, server ns) tuples. It handles the shape servers send for
data-change subscriptions: no diagnostics, DataChangeNotification bodies, scalar Boolean, integer, Float,
Double and String values. Anything else (status changes, events, arrays, diagnostics) returns None, and the
caller decodes the response with asyncua as before. Pure code: no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

PUBLISH_RESPONSE = 829
DATA_CHANGE_NOTIFICATION = 811
# OPC UA DateTime counts 100 ns ticks from 1601-01-01; this many ticks lie between 1601 and 1970.
EPOCH_TICKS = 116444736000000000

_U8 = struct.Struct("<B").unpack_from
_I32 = struct.Struct("<i").unpack_from
_U32 = struct.Struct("<I").unpack_from
_I64 = struct.Struct("<q").unpack_from
_HEADER = struct.Struct("<qII").unpack_from  # Timestamp, RequestHandle, ServiceResult
_U32_I64 = struct.Struct("<Iq").unpack_from

# Variant type id -> (struct reader, size) for fixed-size scalars
_SCALARS: dict[int, tuple[Any, int]] = {
    1: (struct.Struct("<?").unpack_from, 1),
    2: (struct.Struct("<b").unpack_from, 1),
    3: (struct.Struct("<B").unpack_from, 1),
    4: (struct.Struct("<h").unpack_from, 2),
    5: (struct.Struct("<H").unpack_from, 2),
    6: (struct.Struct("<i").unpack_from, 4),
    7: (struct.Struct("<I").unpack_from, 4),
    8: (struct.Struct("<q").unpack_from, 8),
    9: (struct.Struct("<Q").unpack_from, 8),
    10: (struct.Struct("<f").unpack_from, 4),
    11: (struct.Struct("<d").unpack_from, 8),
}
STRING = 12

# (client handle, value, status code, source time ns or None, server time ns or None)
WireSample = tuple[int, Any, int, int | None, int | None]


class Unsupported(Exception):
    """The response has a shape this parser leaves to asyncua."""


@dataclass
class FastNotificationMessage:
    SequenceNumber: int
    PublishTime_ns: int | None
    NotificationData: bool  # truthy when the message carried notifications (asyncua acknowledges those)


@dataclass
class FastPublishResult:
    """Stands in for asyncua's PublishResult where the publish loop and our subscription read it."""

    SubscriptionId: int
    AvailableSequenceNumbers: list[int]
    MoreNotifications: bool
    NotificationMessage: FastNotificationMessage
    samples: list[WireSample] = field(default_factory=list)


@dataclass
class FastPublishResponse:
    Parameters: FastPublishResult


def ticks_to_ns(ticks: int) -> int | None:
    """UTC nanoseconds for an OPC UA DateTime; None for the null DateTime (0)."""
    if ticks <= 0:
        return None
    return (ticks - EPOCH_TICKS) * 100


def _node_id(data: bytes, pos: int) -> tuple[int, int]:
    """A numeric NodeId in namespace 0 (two-, four-byte or numeric encoding): (identifier, new position)."""
    kind = data[pos]
    if kind == 0:
        return data[pos + 1], pos + 2
    if kind == 1:
        if data[pos + 1] != 0:
            raise Unsupported("node id outside namespace 0")
        return data[pos + 2] | data[pos + 3] << 8, pos + 4
    if kind == 2:
        if data[pos + 1] | data[pos + 2] << 8:
            raise Unsupported("node id outside namespace 0")
        return _U32(data, pos + 3)[0], pos + 7
    raise Unsupported(f"node id encoding {kind}")


def _empty_diagnostics(data: bytes, pos: int) -> int:
    if data[pos] != 0:
        raise Unsupported("diagnostic info present")
    return pos + 1


def _skip_string_array(data: bytes, pos: int) -> int:
    (count,) = _I32(data, pos)
    pos += 4
    for _ in range(max(count, 0)):
        (length,) = _I32(data, pos)
        pos += 4 + max(length, 0)
    return pos


def parse_publish_response(data: bytes) -> FastPublishResponse:
    """Decode a PublishResponse (TypeId included); raise Unsupported for shapes left to asyncua."""
    try:
        return _parse(data)
    except (IndexError, struct.error) as exc:
        raise Unsupported(f"truncated or unexpected encoding: {exc}") from None


def _parse(data: bytes) -> FastPublishResponse:
    type_id, pos = _node_id(data, 0)
    if type_id != PUBLISH_RESPONSE:
        raise Unsupported(f"type {type_id}")
    _timestamp, _handle, service_result = _HEADER(data, pos)
    pos += 16
    if service_result != 0:
        raise Unsupported("service result is not Good")  # asyncua raises the right exception for it
    pos = _empty_diagnostics(data, pos)
    pos = _skip_string_array(data, pos)
    additional, pos = _node_id(data, pos)
    if additional != 0 or data[pos] != 0:
        raise Unsupported("additional header present")
    pos += 1
    subscription_id, count = _U32(data, pos)[0], _I32(data, pos + 4)[0]
    pos += 8
    available = list(struct.unpack_from(f"<{count}I", data, pos)) if count > 0 else []
    pos += 4 * max(count, 0)
    more = bool(data[pos])
    sequence, publish_ticks = _U32_I64(data, pos + 1)
    pos += 13
    (n_notifications,) = _I32(data, pos)
    pos += 4
    samples: list[WireSample] = []
    for _ in range(max(n_notifications, 0)):
        type_id, pos = _node_id(data, pos)
        if type_id != DATA_CHANGE_NOTIFICATION or data[pos] != 1:
            raise Unsupported(f"notification type {type_id}")
        (length,) = _I32(data, pos + 1)
        body_end = pos + 5 + length
        pos = _data_changes(data, pos + 5, samples)
        if pos != body_end:
            raise Unsupported("data change notification length mismatch")
    (n_results,) = _I32(data, pos)
    pos += 4 + 4 * max(n_results, 0)
    (n_diagnostics,) = _I32(data, pos)
    if n_diagnostics > 0:
        raise Unsupported("diagnostic infos present")
    message = FastNotificationMessage(sequence, ticks_to_ns(publish_ticks), n_notifications > 0)
    return FastPublishResponse(FastPublishResult(subscription_id, available, more, message, samples))


def _data_changes(data: bytes, pos: int, samples: list[WireSample]) -> int:
    (n_items,) = _I32(data, pos)
    pos += 4
    append = samples.append
    scalars = _SCALARS
    for _ in range(max(n_items, 0)):
        handle, mask = _U32(data, pos)[0], data[pos + 4]
        if mask & 0x30:
            # Picoseconds: Part 6 puts each after its timestamp, asyncua after both; leave them to asyncua so
            # both paths always agree.
            raise Unsupported("picoseconds present")
        pos += 5
        value: Any = None
        if mask & 0x01:
            vtype = data[pos]
            pos += 1
            if vtype & 0xC0:
                raise Unsupported("array value")
            if vtype in scalars:
                read, size = scalars[vtype]
                value = read(data, pos)[0]
                pos += size
            elif vtype == STRING:
                (length,) = _I32(data, pos)
                pos += 4
                if length >= 0:
                    value = bytes(data[pos:pos + length]).decode("utf-8", errors="replace")
                    pos += length
            elif vtype != 0:
                raise Unsupported(f"value type {vtype}")
        status = 0
        if mask & 0x02:
            status = _U32(data, pos)[0]
            pos += 4
        source_ns = server_ns = None
        if mask & 0x04:
            source_ns = ticks_to_ns(_I64(data, pos)[0])
            pos += 8
        if mask & 0x08:
            server_ns = ticks_to_ns(_I64(data, pos)[0])
            pos += 8
        append((handle, value, status, source_ns, server_ns))
    (n_diagnostics,) = _I32(data, pos)
    if n_diagnostics > 0:
        raise Unsupported("diagnostic infos present")
    return pos + 4
