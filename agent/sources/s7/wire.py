"""The data part of an S7 read response, item by item (pure, no I/O).

Each item is [return code][transport size][length, 2 bytes][data] and, when its data has an odd length and
another item follows, one fill byte. The length is in bits for the byte, word and double word transport
sizes (0x04, 0x05, 0x07 is bytes: REAL, 0x09 octet string is bytes, 0x03 bit is bits). A failed item
(return code other than 0xFF) carries no data.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

SUCCESS = 0xFF
BYTE_LENGTH_SIZES = frozenset({0x07, 0x09})


class ItemResult(NamedTuple):
    code: int  # 0xFF: success; else an S7 item return code
    data: bytes


class MalformedResponse(ValueError):
    """The PLC's answer does not match what was asked: the connection is not trusted any more."""


def parse_items(data: bytes, sizes: list[int]) -> list[ItemResult]:
    """One result per requested item of `sizes` bytes; MalformedResponse when the answer does not fit."""
    out: list[ItemResult] = []
    offset = 0
    for index, size in enumerate(sizes):
        if offset + 4 > len(data):
            raise MalformedResponse(f"answer ends before item {index + 1} of {len(sizes)}")
        code, transport, length = struct.unpack_from(">BBH", data, offset)
        offset += 4
        if code != SUCCESS:
            out.append(ItemResult(code, b""))
            continue
        nbytes = length if transport in BYTE_LENGTH_SIZES else (length + 7) // 8
        if nbytes != size:
            raise MalformedResponse(f"item {index + 1} has {nbytes} bytes, {size} were asked for")
        if offset + nbytes > len(data):
            raise MalformedResponse(f"item {index + 1} is cut short")
        out.append(ItemResult(code, bytes(data[offset:offset + nbytes])))
        offset += nbytes
        if nbytes % 2 and index < len(sizes) - 1:
            offset += 1
    return out
