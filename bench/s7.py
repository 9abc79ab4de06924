"""S7 benchmark: values per second one agent reads from S7 PLCs into the historian, and how long a change takes.

Each PLC is a snap7 S7 server in its own process (`python -m bench.s7 serve`): machines m000.. in DB1..DBn, each
with an INT state (DBW0, always 1 = RUNNING) and 100 REALs t00..t99 (DBD2..DBD398) that all change every period.
t00 holds the wall-clock second (modulo 10,000) it was written at, so the bench knows when each stored value
changed on the PLC. The agent polls every tag every `poll_ms` (one S7 source per PLC; the planner reads a
machine's 402 bytes as one item), hands over what changed, and commits it.

- offered/s: what polling can see, tags * 1000 / max(change period, poll_ms) (a poll sees the newest of the
  changes since the one before; the PLCs change every REAL faster than the agent polls, so every poll sees
  news); stored/s: process_value rows committed per second.
- latency: t00 of every machine, from the PLC writing the value to the row being visible in the historian: it
  includes the wait for the next poll (up to `poll_ms`) and the pipeline's commit.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from bench import report
from bench.configs import FACTORY_YAML
from bench.historian import RowCounter, percentiles, wait_connect
from bench.procs import CpuMeter, Proc, metric, read_json, wait_until
from bench.scenarios import Workspace, _connected_sources, _round
from simulators.broker import free_port

TAGS = 100
DB_BYTES = 2 + 4 * TAGS
WRAP_S = 10_000.0  # t00 = wall-clock seconds modulo this (a REAL keeps ~1 ms at that size)
LINE = "bench"
SERVER_READY = "S7 bench server ready"


@dataclass
class S7Options:
    seconds: float = 25.0  # measuring window
    warmup_s: float = 5.0
    plcs: int = 3
    machines_per_plc: int = 10
    period_ms: float = 50.0  # every REAL changes this often (faster than the poll: every poll sees news)
    poll_ms: int = 100  # the agent reads every tag this often
    keep: bool = False


# --- the PLC ------------------------------------------------------------------------------------------------


def serve(port: int, machines: int, period_ms: float, stats_file: Path | None) -> int:
    """A snap7 S7 server whose REALs all change every `period_ms`, until SIGTERM."""
    import logging

    from snap7.server import Server
    from snap7.type import SrvArea

    logging.getLogger("snap7").setLevel(logging.ERROR)
    server = Server(log=False)
    dbs = [bytearray(DB_BYTES) for _ in range(machines)]
    for k, data in enumerate(dbs):
        struct.pack_into(">h", data, 0, 1)
        server.register_area(SrvArea.DB, k + 1, data)
    server.start_to("127.0.0.1", port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"{SERVER_READY} on 127.0.0.1:{port}, {machines} machines", flush=True)
    rng = random.Random(port)
    changes = rounds = late = 0
    period = period_ms / 1000
    next_at = t0 = next_stats = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if now > next_at + period:
            late += 1
        next_at = max(next_at + period, now)
        stop.wait(max(0.0, next_at - time.monotonic()))
        written = time.time() % WRAP_S
        t = time.monotonic() - t0
        for k, data in enumerate(dbs):
            values = [written] + [math.sin(t / 5 + k + j) * 50 + rng.gauss(0, 0.5) for j in range(1, TAGS)]
            server.lock_area(SrvArea.DB, k + 1)
            try:
                struct.pack_into(f">{TAGS}f", data, 2, *values)
            finally:
                server.unlock_area(SrvArea.DB, k + 1)
        changes += TAGS * machines
        rounds += 1
        if stats_file is not None and time.monotonic() >= next_stats:
            next_stats = time.monotonic() + 1.0
            stats_file.write_text(json.dumps({"time": time.monotonic(), "changes": changes, "rounds": rounds,
                                              "late_rounds": late}))
    server.stop()
    return 0


# --- the agent's config -------------------------------------------------------------------------------------


def config(path: Path, ports: list[int], machines_per_plc: int, poll_ms: int, data_dir: Path, http_port: int) -> Path:
    """factory.yaml reduced to line `bench`: machines m000.. of type `s7-bench`, one S7 source per PLC; the
    tags are named by the type (`DBD2:REAL`...) and placed by each machine's `node_prefix` (`DB3.`)."""
    data = yaml.safe_load(FACTORY_YAML.read_text(encoding="utf-8"))
    data["sources"] = {"s7": [{"id": f"plc-{i + 1}", "host": "127.0.0.1", "port": port, "poll_ms": poll_ms}
                              for i, port in enumerate(ports)]}
    data["live"] = {"enabled": False}
    data["products"] = []
    data["state_maps"]["bench-codes"] = {"kind": "code", "codes": {1: "RUNNING"}}
    tags: list[dict[str, Any]] = [{"node": "DBW0", "signal": "state"}]
    tags += [{"node": f"DBD{2 + 4 * j}:REAL", "signal": "process_value", "name": f"t{j:02d}"} for j in range(TAGS)]
    data["machine_types"] = {"s7-bench": {"description": "benchmark machine: 100 changing REALs",
                                          "state_map": "bench-codes", "tags": tags}}
    machines = [{"id": f"m{i * machines_per_plc + k:03d}", "type": "s7-bench", "source": f"plc-{i + 1}",
                 "node_prefix": f"DB{k + 1}."} for i in range(len(ports)) for k in range(machines_per_plc)]
    data["lines"] = [{"id": LINE, "name": "Benchmark line", "stations": [], "machines": machines}]
    data["agent"].update({"data_dir": str(data_dir), "http_port": http_port})
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


# --- the run ------------------------------------------------------------------------------------------------


class ChangeLatency:
    """For t00 of every machine: when each new row became visible, against the PLC time its value carries."""

    def __init__(self, conn: sqlite3.Connection, machines: list[str], after_ns: int) -> None:
        self.conn = conn
        self.cursor = dict.fromkeys(machines, after_ns)
        self.latencies_ms: list[float] = []
        self.poll_starts: list[float] = []
        self.until_ns: int | None = None

    def summary(self) -> dict[str, Any]:
        """Percentiles, and how finely they are resolved: a row seen by a poll became visible since the last."""
        gaps = sorted(b - a for a, b in zip(self.poll_starts, self.poll_starts[1:], strict=False))
        gap_ms = round(1000.0 * gaps[len(gaps) // 2], 1) if gaps else 0.0
        return percentiles(self.latencies_ms) | {"samples": len(self.latencies_ms), "resolution_ms": gap_ms,
                                                 "median_poll_gap_ms": gap_ms}

    def poll(self) -> None:
        seen = time.time()
        self.poll_starts.append(time.monotonic())
        for machine, cursor in self.cursor.items():
            rows = self.conn.execute("SELECT time, value FROM process_value WHERE line = ? AND machine = ? "
                                     "AND name = 't00' AND time > ? ORDER BY time", (LINE, machine, cursor)).fetchall()
            for t, value in rows:
                self.cursor[machine] = t
                if self.until_ns is not None and t > self.until_ns:
                    continue
                written = seen - ((seen - float(value)) % WRAP_S)
                self.latencies_ms.append(1000.0 * (seen - written))


def run(opts: S7Options) -> dict[str, Any]:
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    machines = opts.plcs * opts.machines_per_plc
    tags = machines * TAGS
    asked = tags * 1000.0 / opts.period_ms
    with Workspace(f"s7-{int(asked)}", opts.keep) as ws:
        ports = [free_port() for _ in range(opts.plcs)]
        http_port = free_port()
        cfg = config(ws.dir / "factory.yaml", ports, opts.machines_per_plc, opts.poll_ms, ws.dir / "agent", http_port)
        plcs: dict[str, Proc] = {}
        for i, port in enumerate(ports):
            name = f"plc-{i + 1}"
            proc = Proc(name, [], ws.dir)
            proc.argv = [sys.executable, "-m", "bench.s7", "serve", "--port", str(port), "--machines",
                         str(opts.machines_per_plc), "--period-ms", str(opts.period_ms), "--stats-file",
                         str(ws.dir / f"{name}-stats.json")]
            ws.procs.append(proc)
            plcs[name] = proc.start(SERVER_READY, 30)
        t_agent = time.monotonic()
        agent = ws.agent(cfg, http_port)

        def connected() -> bool:
            agent.check()
            return _connected_sources(http_port) >= opts.plcs

        wait_until(connected, 60, "every S7 source connected")
        connect_s = time.monotonic() - t_agent
        conn = wait_connect(ws.dir / "agent" / "historian.sqlite3")
        counter = RowCounter(conn, "process_value")
        wait_until(lambda: counter.poll() > 0, 60, "process values in the historian")
        time.sleep(opts.warmup_s)
        latency = ChangeLatency(conn, [m["id"] for m in _machines(cfg)], after_ns=time.time_ns())
        stats0 = {n: read_json(ws.dir / f"{n}-stats.json") or {} for n in plcs}
        meter = CpuMeter({"agent": agent, **plcs})
        meter.start()
        t0 = time.monotonic()
        counter.poll()
        while time.monotonic() - t0 < opts.seconds:
            agent.check()
            latency.poll()
            meter.tick()
            time.sleep(0.05)
        counter.poll()
        t1 = time.monotonic()
        cpu = meter.stop()
        stats1 = {n: read_json(ws.dir / f"{n}-stats.json") or {} for n in plcs}
        latency.until_ns = time.time_ns()
        behind_at_end = time.time() - min(latency.cursor.values()) / 1e9
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            latency.poll()
            time.sleep(0.05)
        writes = 0.0
        late = 0
        for n in plcs:
            a, b = stats0[n], stats1[n]
            if a and b and b["time"] > a["time"]:
                writes += (b["changes"] - a["changes"]) / (b["time"] - a["time"])
                late += int(b["late_rounds"] - a["late_rounds"])
        stored = counter.rate(t0, t1)
        # what a poller can see: the newest value of every tag once per poll (or per change, if rarer)
        readable = tags * 1000.0 / max(opts.period_ms, opts.poll_ms)
        return {
            "scenario": f"s7_{int(round(readable, -3) / 1000)}k",
            "label": f"S7 {tags:,} REALs polled every {opts.poll_ms} ms -> historian",
            "asked_per_s": round(readable), "offered_per_s": round(readable), "stored_per_s": round(stored),
            "stored_vs_offered": round(stored / readable, 3), "plc_writes_per_s": round(writes),
            "sim_late_rounds": late, "simulators": opts.plcs, "machines_per_plc": opts.machines_per_plc,
            "connect_s": round(connect_s, 1), "window_s": round(t1 - t0, 1),
            "latency": latency.summary(),
            "behind_s_at_window_end": round(behind_at_end, 1),
            "s7_read_errors": int(metric(http_port, "shopfloor_s7_read_errors_total")),
            "outbox_points_at_end": int(metric(http_port, "shopfloor_outbox_depth_points")),
            "agent_cpu_pct": round(cpu["agent"], 1), "agent_peak_rss_mb": round(agent.peak_rss_mb(), 1),
            "cpu_pct": _round(cpu),
            "settings": {"poll_ms": opts.poll_ms, "plc_change_period_ms": opts.period_ms, "s7_sources": opts.plcs,
                         "latency": "PLC write -> historian row visible (t00 of every machine; includes the "
                                    "wait for the next poll)",
                         "load_average_1m_before": round(load_before, 1) if load_before is not None else "n/a"},
        }


def record(results: list[dict[str, Any]], info: dict[str, Any], argv: list[str], when: datetime) -> Path:
    """Rewrite (or add) the S7 section of docs/benchmarks.md, leaving the other sections as they are."""
    text = report.DOC.read_text(encoding="utf-8") if report.DOC.exists() else report.INTRO + "\n"
    rows = [r for r in results if str(r.get("scenario", "")).startswith("s7_")]
    lines = report._section("s7", "S7 results", rows, info, argv, when)
    for r in rows:
        load = r.get("settings", {}).get("load_average_1m_before", "n/a")
        lines.insert(len(lines) - 2, f"- S7: offered/s is what polling can see, every tag once per poll (the PLCs "
                                     f"wrote {r['plc_writes_per_s']:,} changes/s, faster than the poll); latency "
                                     f"includes the wait for the next poll. Measured with a 1-minute load average "
                                     f"of {load} on {info['cores']} cores before the run: other work shared the "
                                     f"machine, so these figures are a floor, not the agent's capacity.")
    section = "\n".join(lines)
    start, end = report._start("s7").split(" (")[0], report._end("s7")
    if start in text and end in text:
        text = text[:text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    report.DOC.write_text(text, encoding="utf-8")
    return report.DOC


def _machines(cfg: Path) -> list[dict[str, Any]]:
    data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    machines: list[dict[str, Any]] = data["lines"][0]["machines"]
    return machines


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.s7 serve ...`: one benchmark PLC (the bench starts these itself)."""
    parser = argparse.ArgumentParser(prog="python -m bench.s7")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="one benchmark PLC")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--machines", type=int, default=10)
    p.add_argument("--period-ms", type=float, default=100.0)
    p.add_argument("--stats-file", type=Path)
    args = parser.parse_args(argv)
    return serve(args.port, args.machines, args.period_ms, args.stats_file)


if __name__ == "__main__":
    sys.exit(main())
