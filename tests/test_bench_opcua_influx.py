"""The OPC UA into InfluxDB benchmark's own measuring parts, against a real InfluxDB: the latency tracker's reads,
the per-simulator count-back of a window, and how `--record` renders the scenario in docs/benchmarks.md."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from bench import influx, report
from bench.influx import InfluxLatencyTracker, stored_points, window_check

SITE = "plant-1"
NS = 1_000_000_000


def _line(machine: str, name: str, t_ns: int, value: float = 1.5) -> str:
    return (f"process_value,line=bench,machine={machine},name={name},site={SITE} "
            f"quality=\"good\",status=0i,value={value} {t_ns}")


@pytest.fixture
def db(influx_server, request) -> str:
    name = f"bench_{request.node.name.replace('-', '_')[:40]}"
    influx_server.create_database(name)
    return name


def test_tracker_reads_each_sampled_series_once_and_only_those(influx_server, db):
    t0 = time.time_ns() - 5 * NS
    influx_server.write_lines(db, [
        _line("m000", "t00", t0 + 1 * NS), _line("m000", "t00", t0 + 2 * NS),
        _line("m005", "t00", t0 + 3 * NS),
        _line("m000", "t01", t0 + 1 * NS),  # another tag of a sampled machine
        _line("m007", "t00", t0 + 1 * NS),  # a machine not sampled
        _line("m000", "t00", t0 - 1 * NS),  # before the tracker's start
    ])
    tracker = InfluxLatencyTracker(influx_server, db, SITE, "bench", ["m000", "m005"], "t00", after_ns=t0)

    assert tracker.poll() == 3
    assert tracker.cursor == {("m000",): t0 + 2 * NS, ("m005",): t0 + 3 * NS}
    assert len(tracker.latencies_ms) == 3
    # seen now, stamped 2-4 s ago
    assert all(1_000 < ms < 60_000 for ms in tracker.latencies_ms)
    assert tracker.poll() == 0  # nothing new: nothing read twice

    # After the window: later points move the cursors but are not measured.
    tracker.until_ns = t0 + 4 * NS
    influx_server.write_lines(db, [_line("m005", "t00", t0 + 4 * NS), _line("m005", "t00", t0 + 5 * NS)])
    assert tracker.poll() == 2
    assert tracker.cursor[("m005",)] == t0 + 5 * NS
    assert len(tracker.latencies_ms) == 4
    assert tracker.summary()["samples"] == 4

    # A point confirmed after a newer one of its series (writes in flight) is still seen, once.
    influx_server.write_lines(db, [_line("m000", "t00", t0 + 3 * NS // 2)])
    assert tracker.poll() == 1
    assert tracker.out_of_order == 1 and tracker.cursor[("m000",)] == t0 + 2 * NS
    assert tracker.poll() == 0
    cost = tracker.cost(psutil.Process(influx._pid(influx_server)), t0, polls=3)
    assert cost["ms_per_query"] > 0


def test_window_check_counts_back_each_simulator_within_its_own_window(influx_server, db):
    t0 = time.time_ns() - 60 * NS
    # plc-1 serves m000-m001, plc-2 m002-m003; each wrote 2 rounds of its machines' t00 inside its window
    lines = [_line(m, "t00", t0 + k * NS) for m in ("m000", "m001", "m002", "m003") for k in (1, 2)]
    lines += [_line("m000", "t00", t0), _line("m002", "t00", t0 + 3 * NS)]  # on the edges, outside the windows
    influx_server.write_lines(db, [line for line in lines if "m003" not in line or f" {t0 + 2 * NS}" not in line])
    # the stats files' times are float seconds, a little after the last round they count (as the simulator writes)
    ms = 1_000_000
    stats0 = {"plc-1": {"time": (t0 + ms) / NS, "changes": 100}, "plc-2": {"time": (t0 + ms) / NS, "changes": 0}}
    stats1 = {"plc-1": {"time": (t0 + 2 * NS + ms) / NS, "changes": 104},
              "plc-2": {"time": (t0 + 2.5 * NS) / NS, "changes": 4}}

    check = window_check(influx_server, db, [2, 2], stats0, stats1)

    assert check["offered_in_window"] == 8
    assert check["influx_in_window"] == 7
    assert check["not_stored_in_window"] == 1
    assert check["short_by_sim"] == {"plc-2": 1}
    assert stored_points(influx_server, db) == {"process_value": 9}


def _result() -> dict[str, Any]:
    """A result shaped as `influx.opcua_influx` returns it."""
    return {
        "scenario": "opcua_influx_45k", "label": "OPC UA 10,000 tags / 222 ms -> InfluxDB", "asked_per_s": 45045,
        "offered_per_s": 44_800, "stored_per_s": 44_650, "stored_vs_offered": 0.997, "sim_late_rounds": 2,
        "simulators": 3, "machines_per_sim": [34, 33, 33], "tags": 10000, "connect_s": 12.5, "window_s": 25.1,
        "latency": {"p50_ms": 310.0, "p95_ms": 640.0, "p99_ms": 870.5, "max_ms": 990.0, "samples": 2200,
                    "resolution_ms": 280.0, "median_poll_gap_ms": 251.0},
        "behind_s_at_window_end": 0.4, "series_unseen_after_grace": 0, "grace_s": 15.0, "outbox_points_at_end": 4200,
        "agent_cpu_pct": 71.0, "agent_peak_rss_mb": 160.2, "cpu_pct": {"agent": 71.0, "influxd": 40.0},
        "agent_and_influxd_cpu_pct": 111.0, "received_per_s": 44_700, "source_reconnects_in_window": 0,
        "latency_poll": {"queries": 100, "points_read": 2300, "query_ms_total": 400, "query_ms_mean": 4.0,
                         "replayed": {"ms_per_query": 3.1, "influxd_cpu_ms_per_query": 1.2,
                                      "influxd_cpu_pct_at_poll_rate": 0.5}},
        "stamped_in_window_per_s": 44_600, "offered_in_window": 1_120_000, "influx_in_window": 1_119_000,
        "not_stored_in_window": 1000, "short_by_sim": {"plc-1": 1000}, "drain_after_stop_s": 1.5,
        "agent_counters": {"points_in": 1_500_000, "confirmed": 1_500_090, "received": 1_500_000,
                           "write_errors": 0, "dead_letters": 0, "dropped": 0, "outbox": 0},
        "influx_points": {"process_value": 1_499_900, "machine_state": 100, "source_heartbeat": 90},
        "influx_points_total": 1_500_090, "lost": 0, "confirmed_not_in_influx": 0, "duplicated": None,
        "settings": {"historian": "influxdb", "in_flight": 4, "latency_sample": "t00 of 20 machines"},
    }


def test_record_gives_the_scenario_its_own_section_and_keeps_the_others(tmp_path: Path, monkeypatch):
    doc = tmp_path / "benchmarks.md"
    other = "\n".join([report.START, "main table of an earlier run", report.END, "",
                       report._start("influx"), "drain of an earlier run", report._end("influx")])
    doc.write_text(report.INTRO + "\n" + other + "\n", encoding="utf-8")
    monkeypatch.setattr(report, "DOC", doc)
    info = {"cpu": "test cpu", "cores": 2, "ram_gb": 4, "os": "Linux", "python": "3.11", "asyncua": "2",
            "paho_mqtt": "2", "mosquitto": "2", "influxdb": "1.6.7"}

    report.record([_result()], info, ["--only", "opcua-influx", "--record"],
                  datetime(2026, 11, 30, 13, 0, tzinfo=UTC))

    text = doc.read_text(encoding="utf-8")
    assert "main table of an earlier run" in text and "drain of an earlier run" in text
    start, end = text.index("<!-- bench:opcua-influx:start"), text.index("<!-- bench:opcua-influx:end -->")
    section = text[start:end]
    assert "## OPC UA into InfluxDB results (2026-11-30 13:00 UTC)" in section
    assert report.OPCUA_INFLUX_METHOD in section
    assert "| OPC UA 10,000 tags / 222 ms -> InfluxDB | 44,800 | 44,650 | 310 | 870 | 990 |" in section
    assert "stored/offered 0.997" in section
    assert "1,120,000 changes the simulators wrote in the window" in section
    assert "sources reconnected 0 times in the window" in section
    assert "lost = committed but not in InfluxDB: 0, confirmed but not in InfluxDB: 0" in section
    assert "1,499,900 process_value, 100 machine_state, 90 source_heartbeat" in section

    # Recorded again, the section is replaced, not repeated.
    report.record([_result()], info, ["--only", "opcua-influx", "--record"], datetime(2026, 12, 1, tzinfo=UTC))
    text = doc.read_text(encoding="utf-8")
    assert text.count("<!-- bench:opcua-influx:start") == 1
    assert "(2026-12-01 00:00 UTC)" in text and "(2026-11-30 13:00 UTC)" not in text


def test_the_bench_runs_it_alone_and_after_the_opcua_group():
    from bench.__main__ import build_parser, options, plan

    alone = plan(build_parser().parse_args(["--only", "opcua-influx", "--quick"]),
                 options(build_parser().parse_args(["--quick"])), [])
    assert [title for title, _ in alone] == ["OPC UA ~45,000 changes/s into InfluxDB"]
    args = build_parser().parse_args([])
    titles = [title for title, _ in plan(args, options(args), [])]
    at = titles.index("OPC UA ~45,000 changes/s into InfluxDB")
    assert titles[at - 1].startswith("OPC UA ~") and not titles[at + 1].startswith("OPC UA")
