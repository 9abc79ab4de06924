"""The read planner: the fewest requests the device allows, every value inside one."""

from __future__ import annotations

import pytest

from agent.sources.modbus.plan import ReadRequest, Wanted, plan_reads, split


def hr(key: int, offset: int, count: int = 1, unit: int = 1, table: str = "hr") -> Wanted:
    return Wanted(key, unit, table, offset, count)


def spans(requests: list[ReadRequest]) -> list[tuple[int, str, int, int]]:
    return [(r.unit, r.table, r.offset, r.count) for r in requests]


def test_contiguous_registers_are_one_read() -> None:
    plan = plan_reads([hr(0, 0, 2), hr(1, 2), hr(2, 3, 4)], 125, 2000, 8)
    assert spans(plan) == [(1, "hr", 0, 7)]
    assert [w.key for w in plan[0].items] == [0, 1, 2]


@pytest.mark.parametrize(("gap", "max_gap", "reads"), [(8, 8, 1), (9, 8, 2), (0, 0, 1), (1, 0, 2)])
def test_gaps_are_read_over_up_to_max_gap(gap: int, max_gap: int, reads: int) -> None:
    assert len(plan_reads([hr(0, 10), hr(1, 11 + gap)], 125, 2000, max_gap)) == reads


def test_a_read_never_passes_the_maximum() -> None:
    wanted = [hr(i, i * 2, 2) for i in range(100)]  # 200 registers back to back
    plan = plan_reads(wanted, 125, 2000, 8)
    assert spans(plan) == [(1, "hr", 0, 124), (1, "hr", 124, 76)]  # a u32 is never cut in two
    assert sorted(w.key for r in plan for w in r.items) == list(range(100))


def test_tables_and_units_are_never_mixed() -> None:
    wanted = [hr(0, 0), hr(1, 1, table="ir"), hr(2, 2, unit=2), hr(3, 0, table="co"), hr(4, 1, table="di")]
    assert spans(plan_reads(wanted, 125, 2000, 8)) == [
        (1, "co", 0, 1), (1, "di", 1, 1), (1, "hr", 0, 1), (1, "ir", 1, 1), (2, "hr", 2, 1)]


def test_bits_use_their_own_maximum_and_a_wider_gap() -> None:
    wanted = [hr(0, 0, table="co"), hr(1, 128, table="co"), hr(2, 129, table="co")]
    assert spans(plan_reads(wanted, 125, 2000, 8)) == [(1, "co", 0, 130)]
    assert spans(plan_reads(wanted, 125, 100, 8)) == [(1, "co", 0, 1), (1, "co", 128, 2)]


def test_values_sharing_a_register_share_a_read() -> None:
    plan = plan_reads([hr(0, 7), hr(1, 7), hr(2, 6, 2)], 125, 2000, 0)
    assert spans(plan) == [(1, "hr", 6, 2)]
    assert len(plan[0].items) == 3


def test_a_value_wider_than_the_maximum_is_read_alone() -> None:
    assert spans(plan_reads([hr(0, 0), hr(1, 1, 4)], 2, 2000, 8)) == [(1, "hr", 0, 1), (1, "hr", 1, 4)]


def test_nothing_wanted_is_no_read() -> None:
    assert plan_reads([], 125, 2000, 8) == []


def test_split_reads_each_value_alone() -> None:
    [merged] = plan_reads([hr(0, 0), hr(1, 2, 2), hr(2, 3), hr(3, 10)], 125, 2000, 8)
    assert spans(split(merged)) == [(1, "hr", 0, 1), (1, "hr", 2, 2), (1, "hr", 10, 1)]
