"""Modbus register values to and from typed values, and what each signal accepts (pure, no I/O).

A register is 16 bits, sent high byte first. A value over several registers is assembled by first putting the
registers in word order (big: the first register holds the most significant word) and the bytes of each
register in byte order (big: high byte first), then reading the bytes big-endian.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from agent.sources.modbus.model import ORDERS, TYPES

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
# Status codes of Bad readings that are no Modbus exception (exception codes are 1..255)
STATUS_NO_RESPONSE = 256
STATUS_UNDECODABLE = 257
STATUS_BAD_RESPONSE = 258

INTEGER_SIGNALS = frozenset({"state", "count", "alarm"})


def exception_text(code: int) -> str:
    """What a person reads for a Modbus exception response, e.g. "Modbus exception 2 (illegal data address)"."""
    return f"Modbus exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})"


def orders(order: str | None, byte_order: str, word_order: str) -> tuple[str, str]:
    """(byte order, word order) of an address's order name, or the source's defaults without one."""
    return ORDERS[order] if order else (byte_order, word_order)


def decode(registers: Sequence[int], type_name: str, byte_order: str = "big", word_order: str = "big") -> int | float:
    """The value of `registers` (exactly as many as the type occupies) as `type_name`."""
    fmt, count = TYPES[type_name]
    if len(registers) != count:
        raise ValueError(f"{type_name} needs {count} registers, got {len(registers)}")
    words = list(registers) if word_order == "big" else list(reversed(registers))
    raw = b"".join(w.to_bytes(2, "big" if byte_order == "big" else "little") for w in words)
    value: int | float = struct.unpack(">" + fmt, raw)[0]
    return value


def encode(value: int | float, type_name: str, byte_order: str = "big", word_order: str = "big") -> list[int]:
    """The registers that `decode` turns back into `value` (struct.error when it does not fit the type)."""
    fmt, _count = TYPES[type_name]
    raw = struct.pack(">" + fmt, value)
    words = [int.from_bytes(raw[i:i + 2], "big" if byte_order == "big" else "little")
             for i in range(0, len(raw), 2)]
    return words if word_order == "big" else list(reversed(words))


def register_bit(register: int, bit: int) -> bool:
    """Bit `bit` (0 = least significant) of a register."""
    return bool((register >> bit) & 1)


def for_signal(signal: str, value: int | float | bool) -> tuple[int | float | bool | None, str]:
    """The value as the signal wants it, and "" ; or None and why it cannot be used.

    state, count and alarm want an integer (a float with no fraction is taken as one; a count is never
    negative); product an integer code; state_bit a bool (a register is true when not 0); process values any
    finite number.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None, f"{value} is not a number a {signal} tag can carry"
    if signal == "state_bit":
        return bool(value), ""
    if signal in INTEGER_SIGNALS or signal == "product":
        if isinstance(value, float):
            if not value.is_integer():
                return None, f"{value} is not a whole number, as a {signal} tag needs"
            value = int(value)
        value = int(value)
        if signal == "count" and value < 0:
            return None, f"{value} is negative; a counter cannot be (use an unsigned type, e.g. :u32)"
        return value, ""
    return value, ""
