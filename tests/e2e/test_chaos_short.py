"""The chaos suite's short form (`python -m bench.chaos` runs every fault at length): one plant with the agent on
a clock that jumps and its SQLite historian on a tmpfs, through the clock jumping an hour back and a day ahead, the
historian's disk full and the broker restarted, 3 s each, one after the other. Then the
historian holds exactly the simulators' ground truth, every fault was recovered from, and the agent's clock
really did jump."""

from __future__ import annotations

import os

import pytest

from bench import chaos

ROOT_ONLY = os.geteuid() == 0  # the full disk is a tmpfs mounted for the test


@pytest.mark.timeout(300)
def test_faults_one_after_another_lose_nothing(tmp_path):
    names = [n for n in chaos.SHORT if ROOT_ONLY or n != "disk_full"]
    outcomes = chaos.short_combined(tmp_path, 3.0, names)
    print("\n" + chaos.text_table(outcomes))
    by_name = {o.fault: o for o in outcomes}
    assert list(by_name) == names
    for outcome in outcomes:
        assert outcome.recovery_s is not None, f"{outcome.title}: not recovered"
        assert outcome.mismatches == {}, outcome.notes
        assert outcome.loss == 0 and outcome.dropped == 0, chaos.notes(outcomes)
    run = outcomes[0]
    assert run.events_produced and run.events_produced > 1000 and run.pieces_produced and run.pieces_produced > 100
    clock = " ".join(by_name["clock_jump"].notes)
    assert "-1.00 h (1 h back)" in clock and "+24.00 h (1 day ahead)" in clock, clock
    if ROOT_ONLY:
        assert "database or disk is full" in " ".join(by_name["disk_full"].notes)
