import sqlite3
import threading
import time

from agent.core.mapping import DeadLetter
from agent.core.schema import Point
from agent.outbox import Outbox


def pts(n, start=0):
    return [Point("machine_count", {"site": "s", "line": "l", "machine": "m", "counter": "total"},
                  {"delta": 1, "value": start + i}, start + i) for i in range(n)]


def test_points_and_state_survive_reopen_until_settled(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", 10**9)
    box.enqueue(pts(3), state={"c/m/total": 2})
    box.enqueue(pts(2, 3), state={"c/m/total": 4})
    box.close()
    box = Outbox(tmp_path / "o.sqlite3", 10**9)
    assert box.load_state() == {"c/m/total": 4}
    assert box.depth()[:2] == (2, 5)
    first = box.claim(3)
    assert [len(b.points) for b in first] == [3]
    assert box.claim(100)[0].points[0].fields["value"] == 3  # claimed batches are not handed out twice
    box.settle(first)
    box.close()
    box = Outbox(tmp_path / "o.sqlite3", 10**9)
    assert box.depth()[1] == 2
    assert [p.fields["value"] for b in box.claim(100) for p in b.points] == [3, 4]


def test_release_hands_unsettled_batches_out_again(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", 10**9)
    box.enqueue(pts(2))
    assert box.claim(10) and box.claim(10) == []
    box.release()
    assert len(box.claim(10)) == 1


def test_quota_drops_oldest_and_counts_every_point(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", quota_bytes=20_000)
    for i in range(20):
        box.enqueue(pts(50, i * 50))
    batches, points, size = box.depth()
    assert size <= 20_000 + 10_000 and points + box.dropped_points == 1000
    assert box.dropped_points > 0
    kept = [p.fields["value"] for b in box.claim(10**6) for p in b.points]
    assert kept == list(range(1000 - points, 1000))  # the newest are kept
    box.close()
    assert Outbox(tmp_path / "o.sqlite3", 20_000).dropped_points == box.dropped_points  # persisted


def test_dead_letters_kept_with_source_and_truncated_payload(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", 10**9, dead_letter_payload_max=100)
    box.enqueue([], [DeadLetter("line-bus", "line/x", "payload is not JSON", b"x" * 1_000_000, 9)])
    (dead,) = box.dead_letters()
    assert (dead["source"], dead["topic"], dead["reason"], dead["payload_bytes"]) == (
        "line-bus", "line/x", "payload is not JSON", 1_000_000)
    assert len(dead["payload"]) == 100 and box.dead_letters_total == 1


def test_batch_committed_after_settling_the_newest_is_still_claimed(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", 10**9)
    box.enqueue(pts(1))
    box.settle(box.claim(10))  # the table is empty again
    box.enqueue(pts(1, 1))
    assert [p.fields["value"] for b in box.claim(10) for p in b.points] == [1]


def test_health_reads_while_the_drainer_settles_never_fail_the_settle(tmp_path):
    # /healthz and /metrics read the outbox's age from HTTP threads while the drainer settles and the ingest
    # side commits: a settle must never meet "database is locked" (it stopped the agent once, mid-drain)
    outbox = Outbox(tmp_path / "o.sqlite3", 10**9)
    stop = threading.Event()
    errors = []

    def ingest():
        while not stop.is_set():
            outbox.enqueue(pts(50))

    def inspect():
        while not stop.is_set():
            try:
                outbox.oldest_ns()
                outbox.dead_letters(5)
            except sqlite3.Error as exc:
                errors.append(exc)

    threads = [threading.Thread(target=ingest), *(threading.Thread(target=inspect) for _ in range(3))]
    for th in threads:
        th.start()
    settled = 0
    deadline = time.monotonic() + 2.5
    try:
        while time.monotonic() < deadline:
            batches = outbox.claim(500)
            outbox.settle(batches)
            settled += len(batches)
    finally:
        stop.set()
        for th in threads:
            th.join()
    assert settled > 100 and errors == []
    outbox.close()


def test_claims_settled_out_of_order_leave_exactly_the_unconfirmed_ones(tmp_path):
    # Writes in flight end in any order: the second claim is confirmed, the first fails.
    box = Outbox(tmp_path / "o.sqlite3", 10**9)
    for k in range(3):
        box.enqueue(pts(2, 2 * k))
    box.claim(2)  # the first claim: its write fails
    second = box.claim(2)
    box.settle(second)
    box.release()  # the first failed; nothing else is in flight
    again = box.claim(10)
    assert [p.fields["value"] for b in again for p in b.points] == [0, 1, 4, 5]  # never the settled second
    assert box.depth()[:2] == (2, 4)
    box.close()
    box = Outbox(tmp_path / "o.sqlite3", 10**9)  # a restart (or a crash) keeps exactly the unconfirmed
    assert [p.fields["value"] for b in box.claim(10) for p in b.points] == [0, 1, 4, 5]
    box.close()
