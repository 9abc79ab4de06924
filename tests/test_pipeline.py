"""The pipeline with a real outbox and a real SQLite historian (no network)."""

import time

from agent.core.schema import Point
from agent.health import AgentState
from agent.outbox import Outbox
from agent.pipeline import Pipeline
from agent.sinks.sqlite_historian import SqliteHistorian

T0 = 1_795_219_200 * 10**9
TAGS = {"site": "cixi-1", "line": "line-1", "machine": "press-1", "counter": "total"}


def test_a_point_the_historian_can_never_store_is_dead_lettered_and_the_rest_is_kept(tmp_path, factory_cfg):
    outbox = Outbox(tmp_path / "outbox.sqlite3", 10**9)
    historian = SqliteHistorian(tmp_path / "historian.sqlite3")
    good = [Point("machine_count", TAGS, {"delta": 1, "value": i}, T0 + i) for i in range(5)]
    bad = Point("machine_count", TAGS, {"delta": 2**70, "value": 9}, T0 + 99)  # beyond SQLite's integers
    outbox.enqueue(good[:2] + [bad] + good[2:])
    pipeline = Pipeline(factory_cfg, outbox, historian, AgentState("t"))
    pipeline.start()
    try:
        deadline = time.monotonic() + 10
        while outbox.depth()[1] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert outbox.depth()[1] == 0 and pipeline.running  # the batch left; the agent did not stop
        stored = historian.count_sums(T0, T0 + 10**9, 60)
        assert [b.delta for b in stored] == [5]
        (dead,) = outbox.dead_letters()
        assert dead["source"] == "historian" and "too large to convert" in dead["reason"]
    finally:
        pipeline.stop()
        outbox.close()
        historian.close()
