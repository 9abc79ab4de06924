"""The historian contract: what every backend promises the boards and the capacity job."""

from agent.core.schema import Point

S = 1_000_000_000
T0 = 1_795_219_200 * S  # a fixed UTC midnight; backends must not care about the wall clock
SITE = {"site": "cixi-1", "line": "line-1"}


def state(machine, t, value, raw="1"):
    return Point("machine_state", {**SITE, "machine": machine}, {"state": value, "raw": raw}, T0 + t * S)


def count(machine, t, delta, value, counter="total"):
    return Point("machine_count", {**SITE, "machine": machine, "counter": counter},
                 {"delta": delta, "value": value}, T0 + t * S)


def test_writes_are_idempotent(historian):
    points = [count("press-1", 1, 5, 5), count("press-1", 2, 3, 8)]
    assert historian.write(points).accepted == 2
    historian.write(points)  # a replay after a crash
    sums = historian.count_sums(T0, T0 + 60 * S, 60)
    assert [(b.machine, b.counter, b.delta) for b in sums] == [("press-1", "total", 8)]


def test_count_sums_by_bucket_and_filter(historian):
    historian.write([count("press-1", 1, 5, 5), count("press-1", 61, 4, 9), count("press-1", 62, 1, 1, "reject"),
                     count("press-2", 3, 7, 7)])
    sums = historian.count_sums(T0, T0 + 120 * S, 60, machine="press-1")
    assert [(b.counter, b.bucket_start_ns - T0, b.delta) for b in sums] == [
        ("reject", 60 * S, 1), ("total", 0, 5), ("total", 60 * S, 4)]


def test_state_intervals_carry_in_the_state_at_start(historian):
    historian.write([state("press-1", 0, "RUNNING"), state("press-1", 100, "FAULT", "3"),
                     state("press-1", 130, "RUNNING"), state("press-2", 50, "SETUP", "2")])
    got = [(i.machine, i.state, (i.start_ns - T0) // S, (i.end_ns - T0) // S, i.raw)
           for i in historian.state_intervals(T0 + 60 * S, T0 + 200 * S)]
    assert got == [("press-1", "RUNNING", 60, 100, "1"), ("press-1", "FAULT", 100, 130, "3"),
                   ("press-1", "RUNNING", 130, 200, "1"), ("press-2", "SETUP", 60, 200, "2")]


def test_last_values_per_series(historian):
    historian.write([
        Point("process_value", {**SITE, "machine": "press-1", "name": "mold_temp"},
              {"value": 60.0, "quality": "Good", "status": 0}, T0 + S),
        Point("process_value", {**SITE, "machine": "press-1", "name": "mold_temp"},
              {"value": 61.0, "quality": "Good", "status": 0}, T0 + 2 * S),
        Point("process_value", {**SITE, "machine": "press-1", "name": "pressure"},
              {"quality": "Bad", "status": 0x80050000}, T0 + 2 * S),
    ])
    last = {p.tags["name"]: p for p in historian.last_values("process_value", machine="press-1")}
    assert last["mold_temp"].fields["value"] == 61.0
    assert "value" not in last["pressure"].fields and last["pressure"].fields["quality"] == "Bad"


def test_series_and_events_in_time_order(historian):
    historian.write([
        Point("material_level", {**SITE, "material": "resin-pp"}, {"level": 100.0 - t}, T0 + t * S)
        for t in (3, 1, 2)
    ] + [
        Point("andon_event", {**SITE, "station": "mold-1", "event": e, "kind": "quality"},
              {"call_id": "A-1", "badge": "B1001"}, T0 + t * S) for t, e in ((5, "call"), (9, "ack"))
    ])
    assert historian.series("material_level", "level", T0, T0 + 10 * S, material="resin-pp") == [
        (T0 + S, 99.0), (T0 + 2 * S, 98.0), (T0 + 3 * S, 97.0)]
    events = historian.events("andon_event", T0, T0 + 10 * S, station="mold-1")
    assert [(p.tags["event"], p.fields["call_id"]) for p in events] == [("call", "A-1"), ("ack", "A-1")]


def test_ids_with_quotes_spaces_and_chinese_round_trip(historian):
    tags = {"site": "cixi-1", "line": "一号线 'A'", "station": 'st "x"\\y', "event": "in"}
    historian.write([Point("operator_event", tags, {"badge": "B'1", "operator": "王芳"}, T0)])
    (p,) = historian.events("operator_event", T0, T0 + S, line="一号线 'A'")
    assert p.tags == tags and p.fields == {"badge": "B'1", "operator": "王芳"}


def test_retention_removes_only_old_points(historian):
    historian.write([count("press-1", 0, 1, 1), count("press-1", 40 * 86400, 1, 2)])
    removed = historian.apply_retention(T0 + 45 * 86400 * S)
    assert removed == 1
    assert [b.delta for b in historian.count_sums(T0, T0 + 50 * 86400 * S, 86400)] == [1]


def test_bool_fields_come_back_as_bool(historian):
    historian.write([Point("alarm", {**SITE, "machine": "press-1"}, {"code": 101, "active": True, "text": "x"}, T0)])
    (p,) = historian.events("alarm", T0, T0 + S)
    assert p.fields["active"] is True


def test_large_batches_every_point_once(historian):
    points = [Point("process_value", {**SITE, "machine": f"m{i % 7}", "name": "t"},
                    {"value": float(i), "quality": "Good", "status": 0}, T0 + i) for i in range(1234)]
    assert historian.write(points).accepted == 1234
    historian.write(points[:600])  # a partial replay
    got = sum(len(historian.series("process_value", "value", T0, T0 + 2000, machine=f"m{k}")) for k in range(7))
    assert got == 1234


def test_last_value_is_not_overwritten_by_an_older_replay(historian):
    series = {**SITE, "machine": "press-1", "name": "mold_temp"}
    historian.write([Point("process_value", series, {"value": 61.0, "quality": "Good", "status": 0}, T0 + 2 * S)])
    historian.write([Point("process_value", series, {"value": 60.0, "quality": "Good", "status": 0}, T0 + S)])
    (last,) = historian.last_values("process_value", machine="press-1")
    assert (last.time_ns, last.fields["value"]) == (T0 + 2 * S, 61.0)


def test_series_leaves_out_points_without_the_field_and_keeps_field_types(historian):
    series = {**SITE, "machine": "press-1", "name": "mold_temp"}
    historian.write([
        Point("process_value", series, {"value": 61.0, "quality": "Good", "status": 0}, T0 + S),
        Point("process_value", series, {"quality": "Bad", "status": 0x80050000}, T0 + 2 * S),
        Point("alarm", {**SITE, "machine": "press-1"}, {"code": 101, "active": True}, T0 + 3 * S),
        Point("alarm", {**SITE, "machine": "press-1"}, {"code": 101, "active": False}, T0 + 4 * S),
    ])
    assert historian.series("process_value", "value", T0, T0 + 10 * S, machine="press-1") == [(T0 + S, 61.0)]
    assert historian.series("alarm", "active", T0, T0 + 10 * S) == [(T0 + 3 * S, True), (T0 + 4 * S, False)]


def test_two_processes_opening_a_new_sqlite_historian_at_once_both_start(tmp_path):
    """The agent and the dashboard open the same new file at the same moment: both migrate it safely."""
    import subprocess
    import sys

    path = tmp_path / "shared.sqlite3"
    code = ("import sys; from pathlib import Path; from agent.sinks.sqlite_historian import SqliteHistorian; "
            "[SqliteHistorian(Path(sys.argv[1]) / f'h{i}.sqlite3').close() for i in range(40)]")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path.parent)],
                              stderr=subprocess.PIPE) for _ in range(3)]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors


def test_a_reading_stamped_at_the_reconnect_keeps_its_source_time(historian):
    moved = {"state": "RUNNING", "raw": "1", "source_time_ns": T0 + S}
    historian.write([state("press-1", 10, "OFFLINE", "source plc-1 down: TimeoutError"),
                     Point("machine_state", {**SITE, "machine": "press-1"}, moved, T0 + 30 * S),
                     Point("machine_count", {**SITE, "machine": "press-1", "counter": "good"},
                           {"delta": 4, "value": 9, "source_time_ns": T0 + 20 * S}, T0 + 30 * S)])
    events = historian.events("machine_state", T0, T0 + 60 * S, machine="press-1")
    assert [(p.time_ns, p.fields.get("source_time_ns")) for p in events] == [(T0 + 10 * S, None), (T0 + 30 * S, T0 + S)]
    (last,) = historian.last_values("machine_count", machine="press-1")
    assert last.fields["source_time_ns"] == T0 + 20 * S


def test_the_product_a_machine_makes(historian):
    product = [Point("machine_product", {**SITE, "machine": "press-1"}, {"sku": sku, "raw": raw}, T0 + t * S)
               for t, sku, raw in ((0, "KT-100", "1"), (600, "KT-200", "2"))]
    assert historian.write(product).accepted == 2
    events = historian.events("machine_product", T0, T0 + 3600 * S, machine="press-1")
    assert [(p.time_ns, p.fields) for p in events] == [(T0, {"sku": "KT-100", "raw": "1"}),
                                                       (T0 + 600 * S, {"sku": "KT-200", "raw": "2"})]
    (last,) = historian.last_values("machine_product", line="line-1")
    assert last.fields["sku"] == "KT-200" and last.tags == {**SITE, "machine": "press-1"}


def test_a_sqlite_file_of_the_first_schema_is_upgraded_in_place(tmp_path):
    import sqlite3

    from agent.sinks.sqlite_historian import MIGRATIONS, SqliteHistorian

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_ns INTEGER)")
    for name, statements in MIGRATIONS[:2]:  # a file written before the later migrations existed
        for stmt in statements:
            conn.execute(stmt)
        conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (name,))
    conn.execute("INSERT INTO machine_state (time, site, line, machine, state, raw) "
                 "VALUES (?, 'cixi-1', 'line-1', 'press-1', 'RUNNING', '1')", (T0,))
    conn.close()
    historian = SqliteHistorian(path)
    try:
        historian.write([Point("machine_state", {**SITE, "machine": "press-1"},
                               {"state": "FAULT", "raw": "3", "source_time_ns": T0 + S}, T0 + 2 * S),
                         Point("machine_product", {**SITE, "machine": "press-1"}, {"sku": "KT-100", "raw": "1"}, T0)])
        events = historian.events("machine_state", T0, T0 + 10 * S)
        assert [(p.fields["state"], p.fields.get("source_time_ns")) for p in events] == [
            ("RUNNING", None), ("FAULT", T0 + S)]
        assert [p.fields["sku"] for p in historian.last_values("machine_product")] == ["KT-100"]
    finally:
        historian.close()
