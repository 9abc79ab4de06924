"""How a set of S7 addresses is read in as few round trips as the PLC allows (pure, no I/O).

An S7 read request carries up to 20 items; each item is one contiguous byte range of one area (a DB, the bit
memory, the inputs, the outputs). Its size is bounded by the PDU the PLC granted at connection:

    request  = 12 (header) + 2 (function, item count) + 12 per item                     <= PDU
    response = 12 (header) + 2 + per item: 4 (return code, transport size, length) + data
               (+ 1 fill byte after an odd-sized item)                                   <= PDU

The planner sorts the addresses of each area, joins two ranges when the bytes between them are at most
`merge_gap` (reading a few unused bytes costs less than another item's 16 bytes of overhead), cuts a span longer
than one item may be into pieces, and packs the pieces into requests in address order. Tags listed in `alone`
get a span of their own: the source isolates a tag that the PLC refuses, so that it does not take its
neighbours down with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agent.sources.s7.model import S7Address

HEADER = 12
PARAM = 2
ITEM_SPEC = 12
ITEM_HEADER = 4
MAX_ITEMS = 20  # what S7-300/400 accept; S7-1200/1500 accept as many, snap7's client never sends more


@dataclass(frozen=True)
class Span:
    """Contiguous bytes of one area, read in one or more pieces; the tags it holds and where."""

    area: str
    db: int
    start: int
    size: int
    tags: tuple[tuple[int, int], ...]  # (tag key, its offset in the span)


@dataclass(frozen=True)
class Piece:
    """One item of a read request: `size` bytes at `offset` into span number `span`."""

    span: int
    offset: int
    size: int


@dataclass(frozen=True)
class ReadPlan:
    spans: tuple[Span, ...]
    requests: tuple[tuple[Piece, ...], ...]


def max_item_bytes(pdu: int) -> int:
    """The most data one item may carry alone in a response of `pdu` bytes (even, so that no fill is needed)."""
    return max(2, (pdu - HEADER - PARAM - ITEM_HEADER) & ~1)


def plan_reads(tags: Iterable[tuple[int, S7Address]], pdu: int, *, merge_gap: int = 16,
               max_items: int = MAX_ITEMS, alone: Iterable[int] = ()) -> ReadPlan:
    """The spans and requests that read every tag once; each request fits `pdu` both ways."""
    if pdu < HEADER + PARAM + ITEM_SPEC + ITEM_HEADER + 2:
        raise ValueError(f"a PDU of {pdu} bytes cannot carry a read")
    alone = set(alone)
    by_area: dict[tuple[str, int], list[tuple[int, S7Address]]] = {}
    for key, address in tags:
        by_area.setdefault((address.area, address.db), []).append((key, address))
    spans: list[Span] = []
    for (area, db), members in sorted(by_area.items()):
        members.sort(key=lambda m: (m[1].start, m[1].size))
        joined = [m for m in members if m[0] not in alone]
        spans.extend(_join(area, db, joined, merge_gap))
        spans.extend(Span(area, db, a.start, a.size, ((k, 0),)) for k, a in members if k in alone)
    spans.sort(key=lambda s: (s.area, s.db, s.start))
    return ReadPlan(tuple(spans), _pack(spans, pdu, max_items))


def _join(area: str, db: int, members: Sequence[tuple[int, S7Address]], merge_gap: int) -> list[Span]:
    out: list[Span] = []
    start = end = -1
    held: list[tuple[int, int]] = []  # (key, absolute start)
    for key, address in members:
        if held and address.start <= end + merge_gap:
            end = max(end, address.start + address.size)
        else:
            if held:
                out.append(Span(area, db, start, end - start, tuple((k, s - start) for k, s in held)))
            start, end, held = address.start, address.start + address.size, []
        held.append((key, address.start))
    if held:
        out.append(Span(area, db, start, end - start, tuple((k, s - start) for k, s in held)))
    return out


def _pack(spans: Sequence[Span], pdu: int, max_items: int) -> tuple[tuple[Piece, ...], ...]:
    limit = max_item_bytes(pdu)
    requests: list[tuple[Piece, ...]] = []
    current: list[Piece] = []
    response = HEADER + PARAM
    for index, span in enumerate(spans):
        for offset in range(0, span.size, limit):
            piece = Piece(index, offset, min(limit, span.size - offset))
            # a fill byte may follow the previous item when it was odd-sized
            cost = ITEM_HEADER + piece.size + (current[-1].size % 2 if current else 0)
            fits = (current and len(current) < max_items and response + cost <= pdu
                    and HEADER + PARAM + ITEM_SPEC * (len(current) + 1) <= pdu)
            if current and not fits:
                requests.append(tuple(current))
                current, response = [], HEADER + PARAM
                cost = ITEM_HEADER + piece.size
            current.append(piece)
            response += cost
    if current:
        requests.append(tuple(current))
    return tuple(requests)
