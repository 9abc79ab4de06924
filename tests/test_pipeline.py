"""The pipeline with a real outbox: a real SQLite historian (no network), and a historian whose writes end
when the test says, for the drain's writes in flight (the real InfluxDB ones are in tests/historian)."""

import queue
import threading
import time

from agent.core.schema import Point
from agent.health import AgentState
from agent.historian import HistorianError, WriteResult
from agent.outbox import Outbox, decode_points
from agent.pipeline import Pipeline
from agent.sinks.sqlite_historian import SqliteHistorian
from simulators.harness import wait_until

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


class GatedHistorian:
    """A historian whose writes wait until the test says how each ends: the drain's bookkeeping of writes in
    flight, step by step. Points are kept by identity, as InfluxDB keeps them (a point written twice is one)."""

    def __init__(self, in_flight):
        self.in_flight = in_flight
        self.calls = queue.SimpleQueue()
        self.confirmed = []  # every point of every successful write, duplicates included
        self._lock = threading.Lock()

    def write(self, points):
        call = {"points": list(points), "gate": threading.Event(), "outcome": None}
        self.calls.put(call)
        if not call["gate"].wait(20):
            raise AssertionError("the test never ended this write")
        if call["outcome"] is not None:
            raise call["outcome"]
        with self._lock:
            self.confirmed.extend(points)
        return WriteResult(accepted=len(points))

    def next_call(self):
        return self.calls.get(timeout=10)

    def apply_retention(self, now_ns):
        return 0

    def close(self):
        pass


def end(call, outcome=None):
    call["outcome"] = outcome
    call["gate"].set()


def counts(n, start=0):
    return [Point("machine_count", TAGS, {"delta": 1, "value": start + i}, T0 + start + i) for i in range(n)]


def waiting_values(outbox):
    """The values of the counts still in the outbox, read from disk as a restarted agent would."""
    rows = outbox._read.execute("SELECT body FROM batch ORDER BY id").fetchall()  # noqa: SLF001
    return [p.fields["value"] for (body,) in rows for p in decode_points(body)]


def test_writes_in_flight_settle_each_on_its_own_confirmation(tmp_path, factory_cfg):
    outbox = Outbox(tmp_path / "outbox.sqlite3", 10**9)
    historian = GatedHistorian(in_flight=3)
    for k in range(4):  # four outbox batches of 40 counts; with batch_points 10 a claim is one batch
        outbox.enqueue(counts(40, start=40 * k))
    pipeline = Pipeline(factory_cfg, outbox, historian, AgentState("t"))
    pipeline.batch_points = 10
    pipeline.start()
    try:
        first, second, third = (historian.next_call() for _ in range(3))  # three writes in flight at once
        assert [c["points"][0].fields["value"] for c in (first, second, third)] == [0, 40, 80]
        assert historian.calls.empty()  # no fourth while three are in flight
        end(second)  # confirmed before the first: it waits for the first to end, then settles on its own
        end(first, HistorianError("no answer", retry=True, retry_after=0.0))
        wait_until(lambda: waiting_values(outbox) == list(range(40)) + list(range(80, 160)), 10,
                   "the second batch to settle")
        assert pipeline.state.metrics.write_errors.labels("historian")._value.get() == 1
        end(third)  # only now, with nothing in flight, is the first handed out again
        retry = historian.next_call()
        assert [p.fields["value"] for p in retry["points"]] == list(range(40))
        # the second and third left the outbox; the first and the fourth (not claimed after the failure) wait
        assert waiting_values(outbox) == list(range(40)) + list(range(120, 160))
        end(retry)
        later = []
        while outbox.depth()[1]:
            try:
                call = historian.calls.get(timeout=0.1)
            except queue.Empty:
                continue
            later.append(call["points"][0].fields["value"])
            end(call)
        assert later == [120]  # the fourth, once
        # every point was confirmed exactly once: nothing lost, nothing written twice
        assert sorted(p.fields["value"] for p in historian.confirmed) == list(range(160))
        assert waiting_values(outbox) == [] and pipeline.running and outbox.dead_letters() == []
    finally:
        pipeline.stop(timeout=2)
        outbox.close()


def test_writes_in_flight_at_stop_end_and_only_the_confirmed_ones_settle(tmp_path, factory_cfg):
    outbox = Outbox(tmp_path / "outbox.sqlite3", 10**9)
    historian = GatedHistorian(in_flight=2)
    for k in range(3):
        outbox.enqueue(counts(40, start=40 * k))
    pipeline = Pipeline(factory_cfg, outbox, historian, AgentState("t"))
    pipeline.batch_points = 10
    pipeline.start()
    first, second = historian.next_call(), historian.next_call()
    stopping = threading.Thread(target=pipeline.stop, kwargs={"timeout": 1.0})
    stopping.start()
    wait_until(lambda: not pipeline.running, 5, "the pipeline to be told to stop")
    end(first)
    end(second, HistorianError("no answer", retry=True))
    stopping.join(10)
    wait_until(lambda: pipeline.stopped, 10, "the drain to end its writes and stop")
    assert historian.calls.empty()  # the third batch was never claimed
    assert waiting_values(outbox) == list(range(40, 120))
    outbox.close()
