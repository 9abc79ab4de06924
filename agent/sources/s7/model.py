"""Config model of a Siemens S7 source and the syntax of an S7 tag address (no snap7 here: the config check
imports this module).

Addresses are written the way STEP 7 and TIA Portal show absolute addresses (README.md in this folder):

    DB1.DBX0.0        BOOL, bit 0 of byte 0 of DB1
    DB1.DBB4          BYTE (0..255)             DB1.DBB4:SINT
    DB1.DBW6          INT (signed 16 bit)       DB1.DBW6:WORD, DB1.DBW6:UINT
    DB1.DBD8          DINT (signed 32 bit)      DB1.DBD8:REAL, DB1.DBD8:DWORD, DB1.DBD8:UDINT
    DB1.DBB10:STRING[20]                        an S7 STRING of at most 20 characters (22 bytes)
    M10.2  MB10  MW20  MD24                     bit memory (German: M as well)
    I0.1   IB0   IW2   ID4                      inputs (German: E0.1, EB0, EW2, ED4)
    Q0.0   QB0   QW2   QD4                      outputs (German: A0.0, AB0, AW2, AD4)

The comma notation of Node-RED and nodes7 is accepted as well: `DB1,X0.0`, `DB1,B4`, `DB1,INT6`, `DB1,WORD6`,
`DB1,DINT8`, `DB1,REAL8`, `DB1,DWORD8`, `DB1,S10.20` (STRING[20] at byte 10). Case and spaces do not matter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, model_validator

from agent.config.base import Model, Slug

# The byte width of each value type; STRING is 2 + its declared length.
TYPE_WIDTH = {"BOOL": 1, "BYTE": 1, "SINT": 1, "INT": 2, "UINT": 2, "WORD": 2, "DINT": 4, "UDINT": 4,
              "DWORD": 4, "REAL": 4}
WIDTH_TYPES = {1: ("BYTE", "SINT"), 2: ("INT", "UINT", "WORD"), 4: ("DINT", "UDINT", "DWORD", "REAL")}
DEFAULT_TYPE = {1: "BYTE", 2: "INT", 4: "DINT"}
WIDTH_LETTER = {"B": 1, "W": 2, "D": 4}
AREAS = {"DB": "DB", "M": "M", "I": "I", "E": "I", "Q": "Q", "A": "Q"}
STRING_MAX = 254
MAX_DB = 65535
MAX_BYTE = 65535

Area = Literal["DB", "M", "I", "Q"]
ValueType = Literal["BOOL", "BYTE", "SINT", "INT", "UINT", "WORD", "DINT", "UDINT", "DWORD", "REAL", "STRING"]

EXAMPLES = ("DB1.DBX0.0, DB1.DBW2, DB1.DBD4:REAL, DB1.DBB10:STRING[20], M10.2, MW20, I0.1, Q0.0 "
            "(or DB1,REAL4 style)")


@dataclass(frozen=True)
class S7Address:
    """Where a value is in the PLC and how its bytes read."""

    area: Area
    db: int  # the DB number; 0 outside the DB area
    start: int  # first byte
    type: ValueType
    bit: int = 0  # BOOL only
    length: int = 0  # STRING only: its declared maximum length

    @property
    def size(self) -> int:
        """Bytes to read."""
        return self.length + 2 if self.type == "STRING" else TYPE_WIDTH[self.type]

    def __str__(self) -> str:
        prefix = f"DB{self.db}.DB" if self.area == "DB" else self.area
        if self.type == "BOOL":
            return f"{prefix}X{self.start}.{self.bit}" if self.area == "DB" else f"{prefix}{self.start}.{self.bit}"
        if self.type == "STRING":
            return f"{prefix}B{self.start}:STRING[{self.length}]"
        letter = {1: "B", 2: "W", 4: "D"}[TYPE_WIDTH[self.type]]
        width = TYPE_WIDTH[self.type]
        suffix = "" if DEFAULT_TYPE[width] == self.type else f":{self.type}"
        return f"{prefix}{letter}{self.start}{suffix}"


class S7SourceConfig(Model):
    """One S7 PLC reached over ISO-on-TCP (RFC 1006), by rack and slot or by TSAPs."""

    id: Slug
    host: str = Field(min_length=1, description="the PLC's (or its CP's) IP address or host name")
    port: Annotated[int, Field(ge=1, le=65535)] = 102
    rack: Annotated[int | None, Field(ge=0, le=7)] = None
    slot: Annotated[int | None, Field(ge=0, le=31)] = None
    local_tsap: str | None = Field(None, description='our TSAP as 4 hex digits, e.g. "0100" or "01.00"')
    remote_tsap: str | None = Field(None, description='the PLC\'s TSAP as 4 hex digits, e.g. "0301" or "03.01"')
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    poll_ms: Annotated[int, Field(ge=50)] = 500
    max_pdu: Annotated[int, Field(ge=240, le=960, description="PDU size asked for; the PLC may grant less")] = 480
    max_items_per_read: Annotated[int, Field(ge=1, le=20, description="items in one multi-variable read")] = 20
    merge_gap_bytes: Annotated[int, Field(ge=0, le=256, description="unused bytes read to join two ranges")] = 16

    @model_validator(mode="after")
    def _rack_slot_or_tsap(self) -> S7SourceConfig:
        tsap = self.local_tsap is not None or self.remote_tsap is not None
        rack_slot = self.rack is not None or self.slot is not None
        if tsap and rack_slot:
            raise ValueError("give either rack and slot (S7-300/400/1200/1500) or local_tsap and remote_tsap "
                             "(LOGO!, S7-200, CPs), not both")
        if tsap:
            if self.local_tsap is None or self.remote_tsap is None:
                raise ValueError('give both local_tsap and remote_tsap, e.g. local_tsap: "0100", '
                                 'remote_tsap: "0301"')
            for name in ("local_tsap", "remote_tsap"):
                parse_tsap(getattr(self, name), name)
        return self

    @property
    def tsaps(self) -> tuple[int, int] | None:
        """(local, remote) TSAP when configured by TSAP."""
        if self.local_tsap is None or self.remote_tsap is None:
            return None
        return parse_tsap(self.local_tsap, "local_tsap"), parse_tsap(self.remote_tsap, "remote_tsap")

    @property
    def rack_slot(self) -> tuple[int, int]:
        """(rack, slot); rack 0 slot 1 (S7-1200/1500, and most S7-300) unless configured."""
        return (self.rack if self.rack is not None else 0, self.slot if self.slot is not None else 1)


def parse_tsap(text: str, name: str = "tsap") -> int:
    """A TSAP written as 4 hex digits ("0301", "03.01", "0x0301") as an int; ValueError otherwise."""
    cleaned = text.strip().lower().removeprefix("0x").replace(".", "").replace(" ", "")
    if not re.fullmatch(r"[0-9a-f]{4}", cleaned):
        raise ValueError(f'{name} {text!r}: expected 4 hex digits, e.g. "0100" or "03.01"')
    return int(cleaned, 16)


_ABSOLUTE = re.compile(
    r"^(?:DB(?P<db>\d+)\.DB|(?P<area>[MIEQA]))"
    r"(?:(?P<letter>[XBWD])?(?P<byte>\d+)(?:\.(?P<bit>\d+))?)"
    r"(?::(?P<type>[A-Z]+)(?:\[(?P<length>\d+)\])?)?$")
_COMMA = re.compile(r"^DB(?P<db>\d+),(?P<kind>[A-Z]+)(?P<byte>\d+)(?:\.(?P<extra>\d+))?$")
_COMMA_TYPES = {"X": "BOOL", "B": "BYTE", "BYTE": "BYTE", "C": "BYTE", "CHAR": "BYTE", "I": "INT", "INT": "INT",
                "W": "WORD", "WORD": "WORD", "DI": "DINT", "DINT": "DINT", "DW": "DWORD", "DWORD": "DWORD",
                "R": "REAL", "REAL": "REAL", "S": "STRING", "STRING": "STRING", "SINT": "SINT", "UINT": "UINT",
                "UDINT": "UDINT"}


def parse_address(text: str) -> S7Address:
    """The parsed address; raises ValueError saying what is expected, with examples."""
    if not isinstance(text, str):
        raise ValueError(f"an S7 address is text, e.g. {EXAMPLES}")
    cleaned = re.sub(r"\s+", "", text).upper()
    if "," in cleaned:
        return _parse_comma(text, cleaned)
    m = _ABSOLUTE.match(cleaned)
    if not m:
        whole_db = re.fullmatch(r"DB(\d+)\.?", cleaned)
        if whole_db:
            raise ValueError(f"S7 address {text!r} names a whole DB: add the place in it, e.g. "
                             f"DB{whole_db[1]}.DBW0 or DB{whole_db[1]}.DBX0.0")
        hint = ""
        if re.fullmatch(r"[A-Za-z_][A-Za-z_.]*", text.strip()):
            hint = ("; it looks like a tag name: a machine read over S7 gives each tag's address in node_ids, "
                    "e.g. StateCode: DB1.DBW0")
        raise ValueError(f"S7 address {text!r} is not understood: expected e.g. {EXAMPLES}{hint}")
    area: Area = "DB" if m["db"] is not None else AREAS[m["area"]]  # type: ignore[assignment]
    db = _number(m["db"], MAX_DB, "DB number", text) if m["db"] is not None else 0
    if area == "DB" and db == 0:
        raise ValueError(f"S7 address {text!r}: DB numbers start at 1")
    start = _number(m["byte"], MAX_BYTE, "byte offset", text)
    letter, bit, declared = m["letter"], m["bit"], m["type"]
    if area == "DB" and letter is None:
        raise ValueError(f"S7 address {text!r}: after DB{db}. write DBX (bit), DBB (byte), DBW (word) or DBD "
                         f"(double word), e.g. DB{db}.DBX{start}.0 or DB{db}.DBW{start}")
    if letter is None or letter == "X":
        # a bit: M10.2, I0.1, DB1.DBX0.0
        if bit is None:
            words = "" if area == "DB" else f" (or {area}B{start}, {area}W{start}, {area}D{start} for a byte, word, " \
                                              "double word)"
            raise ValueError(f"S7 address {text!r}: a bit address needs its bit number 0..7, e.g. "
                             f"{_bit_example(area, db, start)}{words}")
        if declared not in (None, "BOOL") or m["length"] is not None:
            raise ValueError(f"S7 address {text!r}: a bit address is a BOOL; for a {declared} use a byte, word "
                             f"or double word address (e.g. DB1.DBW2:{declared})")
        return S7Address(area, db, start, "BOOL", bit=_bit(bit, text))
    if bit is not None:
        raise ValueError(f"S7 address {text!r}: only bit addresses (DBX, M10.2, I0.1) have a '.bit' part")
    width = WIDTH_LETTER[letter]
    if declared is None:
        if m["length"] is not None:
            raise ValueError(f"S7 address {text!r}: write the type before its length, e.g. :STRING[20]")
        return S7Address(area, db, start, DEFAULT_TYPE[width])  # type: ignore[arg-type]
    if declared == "STRING":
        if width != 1:
            raise ValueError(f"S7 address {text!r}: a STRING starts at a byte address, e.g. DB1.DBB10:STRING[20]")
        return S7Address(area, db, start, "STRING", length=_string_length(m["length"], text))
    if m["length"] is not None:
        raise ValueError(f"S7 address {text!r}: only STRING has a [length]")
    if declared not in TYPE_WIDTH or declared == "BOOL":
        raise ValueError(f"S7 address {text!r}: unknown type {declared}; for a {_width_name(width)} use "
                         f"{', '.join(WIDTH_TYPES[width])}" + (" or STRING[n]" if width == 1 else ""))
    if TYPE_WIDTH[declared] != width:
        right = {1: "B", 2: "W", 4: "D"}[TYPE_WIDTH[declared]]
        raise ValueError(f"S7 address {text!r}: {declared} is {TYPE_WIDTH[declared]} byte(s), a "
                         f"{_width_name(width)} is {width}; write e.g. "
                         f"{f'DB{db}.DB' if area == 'DB' else area}{right}{start}:{declared}")
    return S7Address(area, db, start, declared)  # type: ignore[arg-type]


def _parse_comma(text: str, cleaned: str) -> S7Address:
    m = _COMMA.match(cleaned)
    kind = _COMMA_TYPES.get(m["kind"]) if m else None
    if not m or kind is None:
        raise ValueError(f"S7 address {text!r} is not understood: expected e.g. {EXAMPLES}; in the comma "
                         "style DB1,X0.1 DB1,B4 DB1,INT2 DB1,WORD2 DB1,DINT4 DB1,REAL4 DB1,S10.20")
    db = _number(m["db"], MAX_DB, "DB number", text)
    if db == 0:
        raise ValueError(f"S7 address {text!r}: DB numbers start at 1")
    start = _number(m["byte"], MAX_BYTE, "byte offset", text)
    extra = m["extra"]
    if kind == "BOOL":
        if extra is None:
            raise ValueError(f"S7 address {text!r}: a bit needs its bit number 0..7, e.g. DB{db},X{start}.0")
        return S7Address("DB", db, start, "BOOL", bit=_bit(extra, text))
    if kind == "STRING":
        if extra is None:
            raise ValueError(f"S7 address {text!r}: a STRING needs its length, e.g. DB{db},S{start}.20")
        return S7Address("DB", db, start, "STRING", length=_string_length(extra, text))
    if extra is not None:
        raise ValueError(f"S7 address {text!r}: only X (bit) and S (string) addresses have a '.n' part")
    return S7Address("DB", db, start, kind)  # type: ignore[arg-type]


def _number(digits: str, limit: int, what: str, text: str) -> int:
    value = int(digits)
    if value > limit:
        raise ValueError(f"S7 address {text!r}: {what} {value} is above {limit}")
    return value


def _bit(digits: str, text: str) -> int:
    bit = int(digits)
    if bit > 7:
        raise ValueError(f"S7 address {text!r}: bit {bit} does not exist; bits are 0..7")
    return bit


def _string_length(digits: str | None, text: str) -> int:
    if digits is None:
        raise ValueError(f"S7 address {text!r}: give the STRING's declared length, e.g. DB1.DBB10:STRING[20]")
    length = int(digits)
    if not 1 <= length <= STRING_MAX:
        raise ValueError(f"S7 address {text!r}: a STRING holds 1..{STRING_MAX} characters, not {length}")
    return length


def _width_name(width: int) -> str:
    return {1: "byte", 2: "word", 4: "double word"}[width]


def _bit_example(area: str, db: int, start: int) -> str:
    return f"DB{db}.DBX{start}.0" if area == "DB" else f"{area}{start}.0"
