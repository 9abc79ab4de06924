"""One simulated clock for every process of a demo, whenever each starts."""

import time
from datetime import UTC, datetime, timedelta

from agent.clock import caught_up, simulated_clock

START = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)


def test_a_process_started_later_reads_the_same_clock():
    anchor = time.time() - 10  # the demo chose the start 10 real seconds ago
    now = caught_up(START, 60, anchor)
    assert timedelta(seconds=599) <= now - START <= timedelta(seconds=605)  # 10 s x 60, plus this test's time
    assert caught_up(START, 60, None) == START  # no anchor: the clock starts now at START
    assert caught_up(None, 60, anchor) is None


def test_simulated_clock_runs_at_its_speed():
    clock = simulated_clock(START, 100)
    first = clock()
    time.sleep(0.05)
    assert first >= int(START.timestamp() * 1e9)
    assert 4 * 10**9 <= clock() - first <= 50 * 10**9  # 0.05 s real x 100, with room for a slow machine
