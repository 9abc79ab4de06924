"""Which read requests fetch a set of Modbus addresses: the fewest the device allows (pure, no I/O).

Addresses are grouped by unit and table (a request reads one table of one unit), sorted by offset, and merged
greedily: the next address joins the current request while the request stays within the per-read maximum and
the unconfigured gap it would read over is at most `max_gap` registers (16 times as many bits). Reading over a
gap costs a few bytes; a request costs a round trip. A device that refuses to read over a gap (exception 2,
illegal data address) is handled by the source, which then reads that request's tags one by one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agent.sources.modbus.model import BIT_TABLES

BITS_PER_REGISTER = 16


@dataclass(frozen=True)
class Wanted:
    """One value to read: `key` comes back with it (the source uses the tag's index)."""

    key: int
    unit: int
    table: str
    offset: int
    count: int  # registers (or bits) the value occupies


@dataclass(frozen=True)
class ReadRequest:
    """One read: `count` registers (or bits) of `table` on `unit` from `offset`, holding `items`."""

    unit: int
    table: str
    offset: int
    count: int
    items: tuple[Wanted, ...]

    @property
    def end(self) -> int:
        return self.offset + self.count


def plan_reads(wanted: Iterable[Wanted], max_registers: int, max_bits: int, max_gap: int) -> list[ReadRequest]:
    """Requests covering every wanted value, ordered by unit, table and offset.

    Promises: each value lies wholly inside one request; a request spans at most `max_registers` registers
    (`max_bits` bits for coils and discrete inputs) unless a single value is wider than that; values that
    overlap or share a register share a request.
    """
    ordered = sorted(wanted, key=lambda w: (w.unit, w.table, w.offset, -w.count, w.key))
    requests: list[ReadRequest] = []
    current: list[Wanted] = []
    start = end = 0
    for item in ordered:
        bits = item.table in BIT_TABLES
        limit = max_bits if bits else max_registers
        gap = max_gap * BITS_PER_REGISTER if bits else max_gap
        item_end = item.offset + item.count
        if (current and current[0].unit == item.unit and current[0].table == item.table
                and item.offset - end <= gap and max(end, item_end) - start <= limit):
            current.append(item)
            end = max(end, item_end)
            continue
        if current:
            requests.append(ReadRequest(current[0].unit, current[0].table, start, end - start, tuple(current)))
        current, start, end = [item], item.offset, item_end
    if current:
        requests.append(ReadRequest(current[0].unit, current[0].table, start, end - start, tuple(current)))
    return requests


def split(request: ReadRequest) -> list[ReadRequest]:
    """The request as one read per value (values sharing registers still share a read)."""
    return plan_reads(request.items, request.count, request.count, max_gap=-1)
