"""S7 bytes to signal values, the item answers of a read response, and which readings are news."""

from __future__ import annotations

import math
import struct

import pytest

from agent.sources.base import Quality
from agent.sources.s7.model import parse_address
from agent.sources.s7.values import Last, Undecodable, decode, is_news, item_error_text
from agent.sources.s7.wire import MalformedResponse, parse_items


def s7_string(text: bytes, declared: int, length: int | None = None) -> bytes:
    body = text.ljust(declared, b"\0")
    return bytes([declared, len(text) if length is None else length]) + body


@pytest.mark.parametrize(("address", "data", "signal", "value"), [
    ("DB1.DBX0.0", b"\x01", "state_bit", True),
    ("DB1.DBX0.3", b"\x08", "state_bit", True),
    ("DB1.DBX0.3", b"\xf7", "state_bit", False),
    ("DB1.DBB0", b"\xff", "alarm", 255),
    ("DB1.DBB0:SINT", b"\xff", "process_value", -1),
    ("DB1.DBW0", struct.pack(">h", -300), "process_value", -300),
    ("DB1.DBW0", struct.pack(">h", 3), "state", 3),
    ("DB1.DBW0:WORD", b"\xff\xfe", "count", 65534),
    ("DB1.DBW0:UINT", b"\x01\x00", "count", 256),
    ("DB1.DBD0", struct.pack(">i", -70000), "process_value", -70000),
    ("DB1.DBD0", struct.pack(">i", 123456), "count", 123456),
    ("DB1.DBD0:UDINT", b"\xff\xff\xff\xff", "count", 2**32 - 1),
    ("DB1.DBD0:DWORD", b"\x00\x01\x00\x00", "alarm", 65536),
    ("DB1.DBD0:REAL", struct.pack(">f", 71.25), "process_value", 71.25),
    ("DB1.DBD0:REAL", struct.pack(">f", 42.0), "count", 42),  # a whole REAL counts
    ("DB1.DBB0:STRING[10]", s7_string(b"EXECUTE", 10), "state", "EXECUTE"),
    ("DB1.DBB0:STRING[10]", s7_string(b"KT-100", 10), "product", "KT-100"),
    ("DB1.DBB0:STRING[10]", s7_string(b"", 10), "product", ""),
    ("DB1.DBB0:STRING[12]", s7_string("水壶-1".encode(), 12), "product", "水壶-1"),
    ("DB1.DBW0", struct.pack(">h", 310), "product", 310),
    ("DB1.DBW0", struct.pack(">h", 1), "state_bit", True),
    ("DB1.DBX0.0", b"\x01", "process_value", 1),
])
def test_every_type_decodes(address: str, data: bytes, signal: str, value: object) -> None:
    got = decode(parse_address(address), data, signal)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(("address", "data", "signal", "says"), [
    ("DB1.DBD0:REAL", struct.pack(">f", math.nan), "count", "REAL is nan"),
    ("DB1.DBD0:REAL", struct.pack(">f", math.nan), "process_value", "REAL is nan"),
    ("DB1.DBD0:REAL", struct.pack(">f", math.inf), "process_value", "REAL is inf"),
    ("DB1.DBD0:REAL", struct.pack(">f", 12.5), "count", "count wants a whole number, got 12.5"),
    ("DB1.DBW0", struct.pack(">h", -5), "count", "count is negative (-5): read a counter as WORD"),
    ("DB1.DBB0:STRING[4]", s7_string(b"ABCD", 4, length=9), "product", "holds 9 characters, its declared "
                                                                        "maximum is 4"),
    ("DB1.DBB0:STRING[4]", b"\x02\x03ABC\0", "product", "holds 3 characters, its declared maximum is 2"),
    ("DB1.DBB0:STRING[4]", s7_string(b"\xff\xfe", 4), "product", "STRING is not UTF-8 text: ff fe"),
    ("DB1.DBB0:STRING[4]", s7_string(b"A\x07", 4), "state", "STRING holds control characters"),
    ("DB1.DBB0:STRING[4]", s7_string(b"12", 4), "count", "count wants a whole number, got text '12'"),
    ("DB1.DBB0:STRING[4]", s7_string(b"12", 4), "alarm", "alarm wants a whole number"),
    ("DB1.DBB0:STRING[4]", s7_string(b"12", 4), "process_value", "process value wants a number"),
    ("DB1.DBW0", struct.pack(">h", 2), "state_bit", "state_bit wants a BOOL (or 0/1), got 2"),
    ("DB1.DBD0", b"\x00\x01", "count", "2 bytes received, 4 needed"),
])
def test_undecodable_values_say_why(address: str, data: bytes, signal: str, says: str) -> None:
    with pytest.raises(Undecodable) as caught:
        decode(parse_address(address), data, signal)
    assert says in str(caught.value)


@pytest.mark.parametrize(("code", "says"), [
    (0x05, "S7 error 0x05: address out of range"),
    (0x0A, "S7 error 0x0A: item not available"),
    (0x03, "access denied (on S7-1200/1500: allow PUT/GET and switch off optimized block access"),
    (0x42, "S7 error 0x42: unknown item error"),
])
def test_item_errors_are_named(code: int, says: str) -> None:
    assert says in item_error_text(code)


def item(code: int, data: bytes = b"", transport: int = 0x04, fill: bool = False) -> bytes:
    length = len(data) if transport in (0x07, 0x09) else len(data) * 8
    return struct.pack(">BBH", code, transport if code == 0xFF else 0, length if code == 0xFF else 0) + data + (
        b"\0" if fill else b"")


def test_items_are_split_with_their_fill_bytes_and_errors() -> None:
    data = item(0xFF, b"\x01\x02\x03", fill=True) + item(0x0A) + item(0xFF, b"\x04\x05") + item(0xFF, b"\x06")
    assert parse_items(data, [3, 2, 2, 1]) == [(0xFF, b"\x01\x02\x03"), (0x0A, b""), (0xFF, b"\x04\x05"),
                                               (0xFF, b"\x06")]


def test_byte_length_transport_sizes() -> None:
    assert parse_items(item(0xFF, b"\x00\x00\x80\x3f", transport=0x07), [4]) == [(0xFF, b"\x00\x00\x80\x3f")]


@pytest.mark.parametrize(("data", "sizes", "says"), [
    (item(0xFF, b"\x01\x02"), [2, 2], "answer ends before item 2 of 2"),
    (item(0xFF, b"\x01\x02"), [4], "item 1 has 2 bytes, 4 were asked for"),
    (item(0xFF, b"\x01\x02")[:-1], [2], "item 1 is cut short"),
])
def test_a_response_that_does_not_match_the_request_is_malformed(data: bytes, sizes: list[int], says: str) -> None:
    with pytest.raises(MalformedResponse, match=says):
        parse_items(data, sizes)


GOOD, BAD = Quality.GOOD, Quality.BAD


@pytest.mark.parametrize(("last", "value", "quality", "status", "deadband", "news"), [
    (None, 1, GOOD, 0, None, True),
    (Last(1, GOOD, 0), 1, GOOD, 0, None, False),
    (Last(1, GOOD, 0), 2, GOOD, 0, None, True),
    (Last(None, BAD, 5), None, BAD, 5, None, False),
    (Last(None, BAD, 5), None, BAD, 10, None, True),
    (Last(1, GOOD, 0), None, BAD, 5, None, True),
    (Last(None, BAD, 5), 1, GOOD, 0, None, True),
    (Last(True, GOOD, 0), 1, GOOD, 0, None, True),  # a bool is not its int
    (Last(10.0, GOOD, 0), 10.15, GOOD, 0, ("absolute", 0.2), False),
    (Last(10.0, GOOD, 0), 10.25, GOOD, 0, ("absolute", 0.2), True),
    (Last(10.0, GOOD, 0), 9.75, GOOD, 0, ("absolute", 0.2), True),
    (Last(100.0, GOOD, 0), 100.9, GOOD, 0, ("percent", 1), False),
    (Last(100.0, GOOD, 0), 101.1, GOOD, 0, ("percent", 1), True),
    (Last(0.0, GOOD, 0), 0.001, GOOD, 0, ("percent", 1), True),  # percent of 0: any change
    (Last(10.0, GOOD, 0), 10.01, GOOD, 0, ("absolute", 0.0), True),
])
def test_news(last: Last | None, value: object, quality: Quality, status: int,
              deadband: tuple[str, float] | None, news: bool) -> None:
    assert is_news(last, value, quality, status, deadband) is news
