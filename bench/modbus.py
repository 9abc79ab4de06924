"""Modbus TCP benchmark: how many polled values per second one agent stores, and how long a change takes to
reach the historian.

Method: `shopfloor simulate modbus --bench-units` processes (one per Modbus source, several units each) show
`tags` uint32 values per unit that all change every `period_ms` to the wall-clock time of the change in ms. The
agent polls every unit every `poll_ms` (one read request per unit: 2 x tags + 2 registers), hands the changed
values on and stores them as process values. Stored/s is the rows committed per second over the window; the
latency of a row is when it became visible to a reader of the historian minus the change time its value carries,
so it includes the wait for the next poll (up to `poll_ms`) as well as the agent's own path, on a sample of
the first tag of every unit.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import configs, report
from bench.historian import RowCounter, percentiles, wait_connect
from bench.procs import CpuMeter, Proc, metric, wait_until
from bench.scenarios import COUNT_EVERY_S, Workspace, cfg_site
from simulators.broker import free_port

BENCH_TYPE = "bench-modbus"
WRAP_MS = 1 << 32


@dataclass
class ModbusOptions:
    """Sizes of the Modbus scenario: 2 simulated gateways x 10 units x 50 values, changing and polled every 100 ms."""

    devices: int = 2
    units_per_device: int = 10
    tags: int = 50
    period_ms: float = 100.0
    poll_ms: int = 100
    seconds: float = 25.0
    warmup_s: float = 5.0
    keep: bool = False


def modbus_config(path: Path, ports: list[int], opts: ModbusOptions, data_dir: Path, http_port: int) -> Path:
    """factory.yaml reduced to one line `bench` of machines m000.., one Modbus source per simulated gateway,
    each machine one unit of it."""
    data = configs._factory()
    data["sources"] = {"modbus": [
        {"id": f"mb-{i + 1}", "host": "127.0.0.1", "port": port, "poll_ms": opts.poll_ms, "timeout_s": 2}
        for i, port in enumerate(ports)]}
    data["live"] = {"enabled": False}
    data["products"] = []
    data["state_maps"] = {configs.BENCH_STATE_MAP: {"kind": "code", "codes": {1: "RUNNING"}}}
    tags: list[dict[str, Any]] = [{"node": "hr:0", "signal": "state"}]
    tags += [{"node": f"hr:{2 + 2 * j}:uint32", "signal": "process_value", "name": f"t{j:02d}"}
             for j in range(opts.tags)]
    data["machine_types"] = {BENCH_TYPE: {"description": "benchmark machine: changing uint32 values",
                                          "state_map": configs.BENCH_STATE_MAP, "tags": tags}}
    machines: list[dict[str, Any]] = []
    for i in range(len(ports)):
        for unit in range(1, opts.units_per_device + 1):
            machines.append({"id": f"m{len(machines):03d}", "type": BENCH_TYPE, "source": f"mb-{i + 1}",
                             "node_prefix": f"{unit}/"})
    data["lines"] = [{"id": configs.BENCH_LINE, "name": "Benchmark line", "stations": [], "machines": machines}]
    data["agent"].update({"data_dir": str(data_dir), "http_port": http_port})
    return configs._write(path, data)


class ChangeLatency:
    """Per sampled series: each new row's visibility time minus the change time (ms) its value carries."""

    def __init__(self, conn: sqlite3.Connection, series: list[tuple[str, str, str, str]], after_ns: int) -> None:
        self.conn = conn
        self.sql = ("SELECT time, value FROM process_value WHERE site = ? AND line = ? AND machine = ? AND name = ? "
                    "AND time > ? ORDER BY time")
        self.cursor = dict.fromkeys(series, after_ns)
        self.latencies_ms: list[float] = []
        self.until_ns: int | None = None

    def poll(self) -> None:
        seen_ms = time.time_ns() / 1e6
        self.conn.execute("BEGIN")
        try:
            for key, cursor in self.cursor.items():
                rows = self.conn.execute(self.sql, (*key, cursor)).fetchall()
                if not rows:
                    continue
                self.cursor[key] = rows[-1][0]
                for row_ns, value in rows:
                    if self.until_ns is not None and row_ns > self.until_ns:
                        continue
                    changed_ms = seen_ms - (seen_ms - value) % WRAP_MS  # the value is the change time mod 2^32
                    self.latencies_ms.append(seen_ms - changed_ms)
        finally:
            self.conn.execute("COMMIT")


def run(opts: ModbusOptions) -> dict[str, Any]:
    units = opts.devices * opts.units_per_device
    values = units * opts.tags
    asked = values * 1000.0 / max(opts.period_ms, opts.poll_ms)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with Workspace(f"modbus-{int(asked)}", opts.keep) as ws:
        ports = [free_port() for _ in range(opts.devices)]
        port = free_port()
        config = modbus_config(ws.dir / "factory.yaml", ports, opts, ws.dir / "agent", port)
        sims: dict[str, Proc] = {}
        for i, sim_port in enumerate(ports):
            sims[f"modbus-{i + 1}"] = ws.proc(f"modbus-{i + 1}", [
                "simulate", "modbus", "--config", str(config), "--port", str(sim_port),
                "--bench-units", str(opts.units_per_device), "--bench-tags", str(opts.tags),
                "--bench-period-ms", str(opts.period_ms)], ready="Modbus simulator ready at")
        t_agent = time.monotonic()
        agent = ws.agent(config, port)

        def connected() -> bool:
            agent.check()
            return metric(port, "shopfloor_source_connected") >= opts.devices

        wait_until(connected, 60, "every Modbus source connected")
        connect_s = time.monotonic() - t_agent
        conn = wait_connect(ws.dir / "agent" / "historian.sqlite3")
        counter = RowCounter(conn, "process_value")
        wait_until(lambda: counter.poll() > 0, 60, "process values in the historian")
        time.sleep(opts.warmup_s)
        site = cfg_site(config)
        tracker = ChangeLatency(conn, [(site, configs.BENCH_LINE, f"m{k:03d}", "t00") for k in range(units)],
                                after_ns=time.time_ns())
        meter = CpuMeter({"agent": agent, **sims})
        meter.start()
        errors0 = metric(port, "shopfloor_source_read_errors_total")
        t0 = time.monotonic()
        counter.poll()
        while time.monotonic() - t0 < opts.seconds:
            agent.check()
            tracker.poll()
            meter.tick()
            counter.poll()
            time.sleep(COUNT_EVERY_S)
        counter.poll()
        t1 = time.monotonic()
        cpu = meter.stop()
        tracker.until_ns = window_end_ns = time.time_ns()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and min(tracker.cursor.values()) < window_end_ns:
            tracker.poll()
            time.sleep(COUNT_EVERY_S)
        stored = counter.rate(t0, t1)
        return {
            "scenario": "modbus",
            "label": f"Modbus TCP {values:,} values / {opts.poll_ms} ms poll -> historian",
            "asked_per_s": round(asked), "offered_per_s": round(asked), "stored_per_s": round(stored),
            "stored_vs_offered": round(stored / asked, 3) if asked else None, "sim_late_rounds": 0,
            "simulators": opts.devices, "connect_s": round(connect_s, 1), "window_s": round(t1 - t0, 1),
            "latency": percentiles(tracker.latencies_ms) | {"samples": len(tracker.latencies_ms),
                                                            "resolution_ms": COUNT_EVERY_S * 1000,
                                                            "median_poll_gap_ms": COUNT_EVERY_S * 1000},
            "behind_s_at_window_end": round(max(0.0, (window_end_ns - min(tracker.cursor.values())) / 1e9), 1),
            "series_unseen_after_grace": sum(1 for c in tracker.cursor.values() if c < window_end_ns),
            "grace_s": 10,
            "outbox_points_at_end": int(metric(port, "shopfloor_outbox_depth_points")),
            "read_errors": int(metric(port, "shopfloor_source_read_errors_total") - errors0),
            "agent_cpu_pct": round(cpu["agent"], 1), "agent_peak_rss_mb": round(agent.peak_rss_mb(), 1),
            "cpu_pct": {k: round(v, 1) for k, v in cpu.items()},
            "settings": {"devices": opts.devices, "units_per_device": opts.units_per_device,
                         "values_per_unit": opts.tags, "change_period_ms": opts.period_ms, "poll_ms": opts.poll_ms,
                         "reads_per_poll": units, "latency": "change on the device -> visible in the historian, "
                                                            "t00 of every unit",
                         "load_average_1m_before": round(load_before, 1) if load_before is not None else "n/a"},
        }


def record(results: list[dict[str, Any]], info: dict[str, Any], argv: list[str], when: datetime) -> Path:
    """Rewrite (or add) the Modbus section of docs/benchmarks.md, leaving the other sections as they are."""
    text = report.DOC.read_text(encoding="utf-8") if report.DOC.exists() else report.INTRO + "\n"
    rows = [r for r in results if r.get("scenario") == "modbus"]
    section = "\n".join(report._section("modbus", "Modbus TCP results", rows, info, argv, when))
    start, end = report._start("modbus").split(" (")[0], report._end("modbus")
    if start in text and end in text:
        text = text[:text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    report.DOC.write_text(text, encoding="utf-8")
    return report.DOC
