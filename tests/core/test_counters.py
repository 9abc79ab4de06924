import pytest

from agent.core.counters import counter_step


@pytest.mark.parametrize(
    ("last", "value", "rollover", "delta", "kind"),
    [
        (None, 1234, None, 0, "first"),
        (10, 10, None, 0, "same"),
        (10, 15, None, 5, "step"),
        (9998, 3, 10000, 5, "rollover"),  # 9998 -> 9999 -> 0 -> 1 -> 2 -> 3
        (9999, 0, 10000, 1, "rollover"),
        (2**32 - 2, 1, None, 3, "rollover"),  # 32-bit wrap without a configured rollover
        (120, 7, None, 7, "reset"),  # PLC reset its counter: 7 made since
        (120, 7, 10000, 7, "reset"),  # far from the rollover value: a reset, not a wrap
        (0, 0, 10000, 0, "same"),
    ],
)
def test_counter_step(last, value, rollover, delta, kind):
    step = counter_step(last, value, rollover)
    assert (step.delta, step.kind) == (delta, kind)


def test_sum_of_deltas_equals_truth_across_rollovers():
    truth, last, total = 0, None, 0
    for produced in [0, 3, 500, 4000, 4000, 1, 1499, 9000, 998]:
        truth += produced
        step = counter_step(last, truth % 10000, 10000)
        total += step.delta
        last = truth % 10000
    assert total == truth
