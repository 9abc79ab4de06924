"""Decoding every type in every byte and word order, and what each signal accepts."""

from __future__ import annotations

import math
import struct

import pytest

from agent.sources.modbus.codec import decode, encode, exception_text, for_signal, orders, register_bit
from agent.sources.modbus.model import ORDERS, TYPES

# 0x0102030405060708 as the registers of each order (the letters name bytes from most significant)
U64_REGISTERS = {
    "abcd": [0x0102, 0x0304, 0x0506, 0x0708],
    "cdab": [0x0708, 0x0506, 0x0304, 0x0102],
    "badc": [0x0201, 0x0403, 0x0605, 0x0807],
    "dcba": [0x0807, 0x0605, 0x0403, 0x0201],
}
U32_REGISTERS = {"abcd": [0x1234, 0x5678], "cdab": [0x5678, 0x1234], "badc": [0x3412, 0x7856],
                 "dcba": [0x7856, 0x3412]}
F32_PI = {"abcd": [0x4049, 0x0FDB], "cdab": [0x0FDB, 0x4049], "badc": [0x4940, 0xDB0F], "dcba": [0xDB0F, 0x4940]}


@pytest.mark.parametrize("order", ORDERS)
def test_known_registers_decode_in_each_order(order: str) -> None:
    byte_order, word_order = ORDERS[order]
    assert decode(U32_REGISTERS[order], "uint32", byte_order, word_order) == 0x12345678
    assert decode(U64_REGISTERS[order], "uint64", byte_order, word_order) == 0x0102030405060708
    assert decode(F32_PI[order], "float32", byte_order, word_order) == pytest.approx(math.pi, rel=1e-7)


@pytest.mark.parametrize(("registers", "byte_order", "value"), [
    ([0x1234], "big", 0x1234), ([0x1234], "little", 0x3412)])
def test_uint16_byte_order(registers: list[int], byte_order: str, value: int) -> None:
    assert decode(registers, "uint16", byte_order, "big") == value
    assert decode(registers, "uint16", byte_order, "little") == value  # one register: no word order


SAMPLES: dict[str, list[int | float]] = {
    "int16": [0, 1, -1, -32768, 32767], "uint16": [0, 1, 65535],
    "int32": [0, -1, -2**31, 2**31 - 1, 70000], "uint32": [0, 2**32 - 1, 65536, 4242424242],
    "int64": [0, -1, -2**63, 2**63 - 1], "uint64": [0, 2**64 - 1, 2**40 + 5],
    "float32": [0.0, -1.5, 1e10, float("inf")], "float64": [0.0, math.pi, -1e300, float("-inf")],
}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("type_name", TYPES)
def test_every_type_round_trips_in_every_order(type_name: str, order: str) -> None:
    byte_order, word_order = ORDERS[order]
    for value in SAMPLES[type_name]:
        registers = encode(value, type_name, byte_order, word_order)
        assert len(registers) == TYPES[type_name][1]
        assert all(0 <= r <= 0xFFFF for r in registers)
        assert decode(registers, type_name, byte_order, word_order) == value


def test_nan_decodes_as_nan() -> None:
    assert math.isnan(decode([0x7FC0, 0x0000], "float32"))


def test_wrong_register_count_is_refused() -> None:
    with pytest.raises(ValueError, match="uint32 needs 2 registers, got 1"):
        decode([1], "uint32")


def test_a_value_that_does_not_fit_is_refused() -> None:
    with pytest.raises(struct.error):
        encode(70000, "uint16")


@pytest.mark.parametrize(("bit", "expected"), [(0, True), (1, False), (3, True), (15, True), (14, False)])
def test_register_bits_count_from_the_least_significant(bit: int, expected: bool) -> None:
    assert register_bit(0b1000_0000_0000_1001, bit) is expected


def test_the_address_order_wins_over_the_source_default() -> None:
    assert orders("cdab", "little", "little") == ("big", "little")
    assert orders(None, "little", "big") == ("little", "big")


@pytest.mark.parametrize(("signal", "raw", "value"), [
    ("state", 3, 3), ("state", 3.0, 3), ("count", 0, 0), ("count", 4294967295, 4294967295), ("alarm", 12.0, 12),
    ("product", 2, 2), ("state_bit", 0, False), ("state_bit", 5, True), ("state_bit", True, True),
    ("process_value", 1.25, 1.25), ("process_value", -3, -3),
])
def test_values_each_signal_takes(signal: str, raw: float, value: object) -> None:
    assert for_signal(signal, raw) == (value, "")


@pytest.mark.parametrize(("signal", "raw", "says"), [
    ("count", float("nan"), "nan is not a number a count tag can carry"),
    ("count", float("inf"), "inf is not a number"),
    ("process_value", float("nan"), "nan is not a number a process_value tag can carry"),
    ("count", -5, "-5 is negative; a counter cannot be"),
    ("count", 2.5, "2.5 is not a whole number"),
    ("state", 1.5, "not a whole number, as a state tag needs"),
    ("alarm", float("-inf"), "is not a number"),
])
def test_values_a_signal_cannot_use_say_why(signal: str, raw: float, says: str) -> None:
    value, why = for_signal(signal, raw)
    assert value is None
    assert says in why


def test_exception_texts() -> None:
    assert exception_text(2) == "Modbus exception 2 (illegal data address)"
    assert exception_text(99) == "Modbus exception 99 (unknown)"
