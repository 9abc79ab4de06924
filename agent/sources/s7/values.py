"""S7 bytes to the values a signal wants, S7 answers to qualities, and which readings are news (pure, no I/O).

S7 values are big-endian. A STRING is [declared length][actual length][characters]; its characters are read as
UTF-8 (ASCII is a subset) and a string that is not valid UTF-8, holds control characters, or claims more
characters than it declares is not a value. A REAL that is NaN or infinite is not a value either.

What each signal wants (agent/core/mapping.py maps it): `state` an integer code or a PackML name (STRING),
`state_bit` a bool, `count` a whole number >= 0, `alarm` an integer code, `product` a SKU (STRING) or an integer
code, `process_value` a number. A value that is not what its signal wants becomes a BAD reading whose status
text says why; the tag's neighbours are unaffected.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

from agent.sources.base import Quality
from agent.sources.s7.model import S7Address

FORMATS = {"BYTE": ">B", "SINT": ">b", "INT": ">h", "UINT": ">H", "WORD": ">H", "DINT": ">i", "UDINT": ">I",
           "DWORD": ">I", "REAL": ">f"}

# Item return codes of an S7 read (0xFF is success).
ITEM_ERRORS = {
    0x01: "hardware fault",
    0x03: "access denied (on S7-1200/1500: allow PUT/GET and switch off optimized block access of the DB)",
    0x05: "address out of range (the area or DB is shorter)",
    0x06: "data type not supported",
    0x07: "data type inconsistent",
    0x0A: "item not available (no such DB or area)",
}
UNDECODABLE = 0x1_0000  # status of a value that arrived but is not what its signal wants
TIMEOUT = 0x2_0000  # status of a read the PLC did not answer in time
INTEGER_SIGNALS = frozenset({"count", "alarm"})


class Undecodable(ValueError):
    """The bytes arrived but do not make a value for this signal; the message says why."""


def item_error_text(code: int) -> str:
    return f"S7 error 0x{code:02X}: {ITEM_ERRORS.get(code, 'unknown item error')}"


def header_error_text(code: int, message: str = "") -> str:
    return f"S7 error 0x{code:04X}: {message or 'request refused'}"


def decode(address: S7Address, data: bytes, signal: str) -> Any:
    """The value of `address` in its bytes, as `signal` wants it; Undecodable says why not."""
    if len(data) < address.size:
        raise Undecodable(f"{len(data)} bytes received, {address.size} needed")
    value: Any
    if address.type == "BOOL":
        value = bool(data[0] >> address.bit & 1)
    elif address.type == "STRING":
        value = decode_string(data, address.length)
    else:
        value = struct.unpack_from(FORMATS[address.type], data)[0]
        if isinstance(value, float) and not math.isfinite(value):
            raise Undecodable(f"REAL is {value}")
    return for_signal(value, signal)


def decode_string(data: bytes, declared: int) -> str:
    """An S7 STRING[declared]: its header must fit the declaration, its characters must be UTF-8 text."""
    max_length, length = data[0], data[1]
    if length > declared or length > max_length:
        raise Undecodable(f"STRING says it holds {length} characters, its declared maximum is "
                          f"{min(declared, max_length)}")
    raw = bytes(data[2:2 + length])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Undecodable(f"STRING is not UTF-8 text: {raw.hex(' ')}") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise Undecodable(f"STRING holds control characters: {text!r}")
    return text


def for_signal(value: Any, signal: str) -> Any:
    """`value` in the form `signal` wants (mapping.py): a bool, a whole number, a number or text."""
    if signal == "state_bit":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise Undecodable(f"state_bit wants a BOOL (or 0/1), got {value!r}")
    if signal == "process_value":
        if isinstance(value, str):
            raise Undecodable(f"process value wants a number, got text {value!r}")
        return int(value) if isinstance(value, bool) else value
    if isinstance(value, str):
        if signal in INTEGER_SIGNALS:
            raise Undecodable(f"{signal} wants a whole number, got text {value!r}")
        return value  # state (PackML name) or product (SKU)
    if isinstance(value, float):
        if not value.is_integer():
            raise Undecodable(f"{signal} wants a whole number, got {value}")
        value = int(value)
    value = int(value)
    if signal == "count" and value < 0:
        raise Undecodable(f"count is negative ({value}): read a counter as WORD, DWORD, UINT or UDINT")
    return value


@dataclass
class Last:
    """What was last handed over for a tag."""

    value: Any
    quality: Quality
    status: int


def is_news(last: Last | None, value: Any, quality: Quality, status: int,
            deadband: tuple[str, float] | None) -> bool:
    """Whether a reading is worth handing over: first of the session, or value, quality or status changed
    (a number by more than its deadband: absolute, or percent of the last value handed over)."""
    if last is None or quality != last.quality or status != last.status:
        return True
    if value == last.value and type(value) is type(last.value):
        return False
    if deadband is None or quality != Quality.GOOD or not _number(value) or not _number(last.value):
        return True
    kind, amount = deadband
    limit = amount if kind == "absolute" else abs(last.value) * amount / 100
    return bool(abs(value - last.value) > limit)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
