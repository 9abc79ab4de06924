"""S7 source config and address syntax: what parses, and what the user reads when it does not."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.sources.s7.model import S7Address, S7SourceConfig, parse_address


@pytest.mark.parametrize(("text", "expected"), [
    ("DB1.DBX0.0", S7Address("DB", 1, 0, "BOOL", bit=0)),
    ("DB1.DBX3.7", S7Address("DB", 1, 3, "BOOL", bit=7)),
    ("DB1.DBB4", S7Address("DB", 1, 4, "BYTE")),
    ("DB1.DBB4:SINT", S7Address("DB", 1, 4, "SINT")),
    ("DB1.DBW2", S7Address("DB", 1, 2, "INT")),
    ("DB1.DBW2:WORD", S7Address("DB", 1, 2, "WORD")),
    ("DB1.DBW2:UINT", S7Address("DB", 1, 2, "UINT")),
    ("DB1.DBD4", S7Address("DB", 1, 4, "DINT")),
    ("DB1.DBD4:REAL", S7Address("DB", 1, 4, "REAL")),
    ("DB1.DBD4:DWORD", S7Address("DB", 1, 4, "DWORD")),
    ("DB1.DBD4:UDINT", S7Address("DB", 1, 4, "UDINT")),
    ("DB1.DBB10:STRING[20]", S7Address("DB", 1, 10, "STRING", length=20)),
    ("DB65535.DBW65534", S7Address("DB", 65535, 65534, "INT")),
    ("db12.dbd8:real", S7Address("DB", 12, 8, "REAL")),
    (" DB 3 . DBD 8 : dword ", S7Address("DB", 3, 8, "DWORD")),
    ("M10.2", S7Address("M", 0, 10, "BOOL", bit=2)),
    ("MB10", S7Address("M", 0, 10, "BYTE")),
    ("MW20", S7Address("M", 0, 20, "INT")),
    ("MD24:REAL", S7Address("M", 0, 24, "REAL")),
    ("I0.1", S7Address("I", 0, 0, "BOOL", bit=1)),
    ("IW2:WORD", S7Address("I", 0, 2, "WORD")),
    ("E0.1", S7Address("I", 0, 0, "BOOL", bit=1)),  # German mnemonics
    ("EW2", S7Address("I", 0, 2, "INT")),
    ("Q0.0", S7Address("Q", 0, 0, "BOOL", bit=0)),
    ("A4.1", S7Address("Q", 0, 4, "BOOL", bit=1)),
    ("AD4", S7Address("Q", 0, 4, "DINT")),
    ("DB1,X0.1", S7Address("DB", 1, 0, "BOOL", bit=1)),  # the comma style of Node-RED / nodes7
    ("DB1,B4", S7Address("DB", 1, 4, "BYTE")),
    ("DB1,INT2", S7Address("DB", 1, 2, "INT")),
    ("DB1,WORD2", S7Address("DB", 1, 2, "WORD")),
    ("DB1,DINT4", S7Address("DB", 1, 4, "DINT")),
    ("DB1,DWORD4", S7Address("DB", 1, 4, "DWORD")),
    ("DB1,REAL4", S7Address("DB", 1, 4, "REAL")),
    ("db1,r4", S7Address("DB", 1, 4, "REAL")),
    ("DB1,S10.20", S7Address("DB", 1, 10, "STRING", length=20)),
])
def test_addresses_parse(text: str, expected: S7Address) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(("text", "size", "shown"), [
    ("DB1.DBX3.7", 1, "DB1.DBX3.7"),
    ("db1.dbw2", 2, "DB1.DBW2"),
    ("DB1,REAL4", 4, "DB1.DBD4:REAL"),
    ("DB1,S10.20", 22, "DB1.DBB10:STRING[20]"),
    ("E0.1", 1, "I0.1"),
    ("AW4:WORD", 2, "QW4:WORD"),
])
def test_size_and_canonical_text(text: str, size: int, shown: str) -> None:
    address = parse_address(text)
    assert (address.size, str(address)) == (size, shown)
    assert parse_address(shown) == address


@pytest.mark.parametrize(("text", "says"), [
    ("StateCode", "is not understood: expected e.g. DB1.DBX0.0, DB1.DBW2"),
    ("StateCode", "it looks like a tag name: a machine read over S7 gives each tag's address in node_ids, e.g. "
                  "StateCode: DB1.DBW0"),
    ("", "is not understood"),
    ("DB1", "names a whole DB: add the place in it, e.g. DB1.DBW0"),
    ("DBW2", "is not understood"),
    ("DB1.W2", "is not understood"),
    ("DB0.DBW2", "DB numbers start at 1"),
    ("DB70000.DBW0", "DB number 70000 is above 65535"),
    ("DB1.DBW70000", "byte offset 70000 is above 65535"),
    ("DB1.DBX0", "a bit address needs its bit number 0..7, e.g. DB1.DBX0.0"),
    ("M10", "e.g. M10.0 (or MB10, MW10, MD10"),
    ("DB1.DBX0.8", "bit 8 does not exist; bits are 0..7"),
    ("DB1.DBX0.0:INT", "a bit address is a BOOL"),
    ("DB1.DBW1.2", "only bit addresses"),
    ("DB1.DBW2:REAL", "REAL is 4 byte(s), a word is 2; write e.g. DB1.DBD2:REAL"),
    ("MB2:INT", "INT is 2 byte(s), a byte is 1; write e.g. MW2:INT"),
    ("DB1.DBD2:FLOAT", "unknown type FLOAT; for a double word use DINT, UDINT, DWORD, REAL"),
    ("DB1.DBB1:STRING", "give the STRING's declared length, e.g. DB1.DBB10:STRING[20]"),
    ("DB1.DBB1:STRING[0]", "a STRING holds 1..254 characters, not 0"),
    ("DB1.DBB1:STRING[300]", "a STRING holds 1..254 characters, not 300"),
    ("DB1.DBW2:STRING[3]", "a STRING starts at a byte address"),
    ("DB1.DBW2:INT[3]", "only STRING has a [length]"),
    ("DB1,Q3", "in the comma style DB1,X0.1"),
    ("DB1,X3", "a bit needs its bit number 0..7, e.g. DB1,X3.0"),
    ("DB1,S3", "a STRING needs its length, e.g. DB1,S3.20"),
    ("DB1,INT2.1", "only X (bit) and S (string)"),
    ("DB0,INT2", "DB numbers start at 1"),
])
def test_bad_addresses_say_what_is_expected(text: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_address(text)
    assert says in str(caught.value)
    assert repr(text) in str(caught.value)


def test_config_defaults_to_rack_0_slot_1() -> None:
    cfg = S7SourceConfig(id="plc-s7", host="192.168.0.10")
    assert (cfg.port, cfg.rack_slot, cfg.tsaps, cfg.timeout_s, cfg.poll_ms, cfg.max_pdu) == \
        (102, (0, 1), None, 2.0, 500, 480)


def test_config_by_rack_and_slot() -> None:
    assert S7SourceConfig(id="p", host="h", rack=0, slot=2).rack_slot == (0, 2)


@pytest.mark.parametrize(("local", "remote", "expected"), [
    ("0100", "0301", (0x0100, 0x0301)),
    ("01.00", "03.01", (0x0100, 0x0301)),
    ("0x1000", "0x2000", (0x1000, 0x2000)),
])
def test_config_by_tsap(local: str, remote: str, expected: tuple[int, int]) -> None:
    assert S7SourceConfig(id="logo", host="h", local_tsap=local, remote_tsap=remote).tsaps == expected


@pytest.mark.parametrize(("fields", "says"), [
    ({"rack": 0, "slot": 1, "local_tsap": "0100", "remote_tsap": "0301"}, "either rack and slot"),
    ({"local_tsap": "0100"}, "give both local_tsap and remote_tsap"),
    ({"local_tsap": "0100", "remote_tsap": "301"}, "remote_tsap '301': expected 4 hex digits"),
    ({"local_tsap": "01G0", "remote_tsap": "0301"}, "local_tsap '01G0': expected 4 hex digits"),
    ({"rack": 8}, "less than or equal to 7"),
    ({"slot": 32}, "less than or equal to 31"),
    ({"max_pdu": 100}, "greater than or equal to 240"),
    ({"max_items_per_read": 21}, "less than or equal to 20"),
    ({"poll_ms": 10}, "greater than or equal to 50"),
    ({"pdu": 480}, "Extra inputs are not permitted"),
])
def test_bad_config_says_why(fields: dict[str, object], says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        S7SourceConfig(id="p", host="h", **fields)  # type: ignore[arg-type]
    assert says in str(caught.value)
