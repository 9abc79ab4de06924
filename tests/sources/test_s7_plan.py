"""The S7 read planner: ranges merged per area, requests within the PDU both ways, refused tags alone."""

from __future__ import annotations

import pytest

from agent.sources.s7.model import parse_address
from agent.sources.s7.plan import (
    HEADER,
    ITEM_HEADER,
    ITEM_SPEC,
    PARAM,
    Piece,
    Span,
    max_item_bytes,
    plan_reads,
)


def tags(*addresses: str) -> list[tuple[int, object]]:
    return [(i, parse_address(a)) for i, a in enumerate(addresses)]


def request_bytes(pieces: tuple[Piece, ...]) -> int:
    return HEADER + PARAM + ITEM_SPEC * len(pieces)


def response_bytes(pieces: tuple[Piece, ...]) -> int:
    fills = sum(p.size % 2 for p in pieces[:-1])
    return HEADER + PARAM + sum(ITEM_HEADER + p.size for p in pieces) + fills


def test_one_machine_db_is_one_span_in_one_request() -> None:
    plan = plan_reads(tags("DB1.DBW0", "DB1.DBD2", "DB1.DBD6:REAL", "DB1.DBX10.3", "DB1.DBB12:STRING[8]"), 480)
    assert plan.spans == (Span("DB", 1, 0, 22, ((0, 0), (1, 2), (2, 6), (3, 10), (4, 12))),)
    assert plan.requests == ((Piece(0, 0, 22),),)


def test_areas_and_dbs_are_separate_items_of_one_request() -> None:
    plan = plan_reads(tags("DB2.DBW0", "MW10", "DB1.DBW0", "I0.1", "Q0.0", "M0.0"), 480)
    assert [(s.area, s.db, s.start, s.size) for s in plan.spans] == [
        ("DB", 1, 0, 2), ("DB", 2, 0, 2), ("I", 0, 0, 1), ("M", 0, 0, 12), ("Q", 0, 0, 1)]  # M0.0..MW10 joined
    assert len(plan.requests) == 1 and len(plan.requests[0]) == 5


@pytest.mark.parametrize(("gap", "spans"), [(0, 2), (3, 2), (4, 1), (16, 1)])
def test_a_gap_up_to_merge_gap_is_read_through(gap: int, spans: int) -> None:
    # DBW0 ends at byte 2; DBW6 starts 4 bytes later
    assert len(plan_reads(tags("DB1.DBW0", "DB1.DBW6"), 480, merge_gap=gap).spans) == spans


def test_overlapping_and_repeated_addresses_share_bytes() -> None:
    plan = plan_reads(tags("DB1.DBD0:REAL", "DB1.DBW2", "DB1.DBX0.1", "DB1.DBD0:REAL"), 480, merge_gap=0)
    assert [(s.start, s.size) for s in plan.spans] == [(0, 4)]
    assert sorted(plan.spans[0].tags) == [(0, 0), (1, 2), (2, 0), (3, 0)]


def test_bits_of_one_byte_are_one_byte() -> None:
    plan = plan_reads(tags(*[f"M5.{b}" for b in range(8)]), 480)
    assert [(s.start, s.size, len(s.tags)) for s in plan.spans] == [(5, 1, 8)]


@pytest.mark.parametrize("pdu", [240, 480, 960])
def test_a_long_span_is_cut_into_pieces_that_fit(pdu: int) -> None:
    plan = plan_reads(tags(*[f"DB1.DBD{4 * i}:REAL" for i in range(500)]), pdu)
    assert len(plan.spans) == 1 and plan.spans[0].size == 2000
    pieces = [p for r in plan.requests for p in r]
    assert [p.offset for p in pieces] == list(range(0, 2000, max_item_bytes(pdu)))
    assert sum(p.size for p in pieces) == 2000
    for request in plan.requests:
        assert request_bytes(request) <= pdu and response_bytes(request) <= pdu


@pytest.mark.parametrize("pdu", [240, 480])
def test_many_areas_are_packed_within_pdu_and_item_limit(pdu: int) -> None:
    plan = plan_reads(tags(*[f"DB{n}.DBB0:STRING[{n % 7 + 1}]" for n in range(1, 60)]), pdu, max_items=20)
    assert len(plan.spans) == 59
    assert sorted(p.span for r in plan.requests for p in r) == list(range(59))
    for request in plan.requests:
        assert len(request) <= 20
        assert request_bytes(request) <= pdu and response_bytes(request) <= pdu


def test_item_limit_is_obeyed() -> None:
    plan = plan_reads(tags(*[f"DB{n}.DBW0" for n in range(1, 8)]), 480, max_items=3)
    assert [len(r) for r in plan.requests] == [3, 3, 1]


def test_odd_items_leave_room_for_their_fill_byte() -> None:
    # 1 item alone may carry max_item_bytes; two odd items need a fill byte between them
    limit = max_item_bytes(240)
    first = limit // 2 - 4 - 1  # odd
    plan = plan_reads(tags(f"DB1.DBB0:STRING[{first - 2}]", f"DB2.DBB0:STRING[{240 - 14 - 8 - first - 2}]"), 240)
    for request in plan.requests:
        assert response_bytes(request) <= 240


def test_tags_alone_get_spans_of_their_own() -> None:
    plan = plan_reads(tags("DB1.DBW0", "DB1.DBW2", "DB1.DBW4", "DB1.DBW40"), 480, alone={1})
    assert [(s.start, s.size, [k for k, _ in s.tags]) for s in plan.spans] == [
        (0, 6, [0, 2]), (2, 2, [1]), (40, 2, [3])]


def test_nothing_to_read_is_no_request() -> None:
    assert plan_reads([], 480).requests == ()


def test_a_pdu_too_small_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot carry a read"):
        plan_reads(tags("DB1.DBW0"), 20)
