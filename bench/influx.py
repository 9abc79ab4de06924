"""InfluxDB benchmarks: OPC UA value changes into a real InfluxDB, the outbox drained into it, the catch-up after
an outage, and shift-OEE queries over 30 days of history.

Every scenario starts its own InfluxDB 1.x (`simulators.influxdb.InfluxServer`) in a temp dir, on a free
loopback port. The drain runs the agent's real `Outbox` and `Pipeline` inside the bench process (the pipeline
is the agent's drain thread, so the bench process's CPU is the agent's); the outage runs the whole system as
separate processes; the query scenario fills a database through `InfluxHistorian.write` and times the reads a
shift board needs.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psutil
import yaml

from agent.config import FactoryConfig
from agent.config import load as load_config
from agent.core.schema import MEASUREMENTS, Point
from agent.health import AgentState
from agent.historian import Historian
from agent.outbox import Outbox
from agent.pipeline import Pipeline
from agent.sinks.influx import GZIP_LEVEL, IN_FLIGHT, InfluxHistorian
from agent.sinks.influx_protocol import LineEncoder
from agent.sinks.sqlite_historian import SqliteHistorian
from bench import configs
from bench.historian import LatencyTracker, percentiles
from bench.procs import BenchError, CpuMeter, Proc, http_get, metric, wait_until
from bench.scenarios import Options, Workspace, cfg_site, measure, opcua_figures, opcua_system, settle_latency
from bench.shop_history import (
    NS,
    MachineOee,
    every_shift_oee,
    history,
    ideal_cycles,
    mean_oee,
    same_oee,
    shift_oee,
    shift_windows,
)
from simulators.broker import free_port
from simulators.influxdb import InfluxServer

ENQUEUE_BATCH = 5000  # points per outbox commit: the agent's outbox.batch_points default
DRAIN_TARGET_PER_S = 50_000
QUERY_TARGET_P95_MS = 300.0
SIM_START = "2026-11-23T09:00:00+08:00"  # a Monday 09:00 in the site's zone: the day shift, away from breaks
DB = "plant"
LATENCY_SERIES = 20  # OPC UA into InfluxDB: t00 of this many machines, spread over the simulators
LATENCY_POLL_S = 0.25
COUNT_POLL_S = 1.0  # the agent's /metrics, for the confirmed-writes rate
DRAIN_LIMIT_S = 180.0


@dataclass
class InfluxOptions:
    """Sizes and lengths of the InfluxDB scenarios (`--quick` shortens them)."""

    drain_points: int = 1_000_000
    drain_runs: int = 3
    drain_in_flight: int = IN_FLIGHT  # the agent's default historian.in_flight
    outage_s: float = 600.0
    before_outage_s: float = 20.0
    speed: float = 60.0
    history_days: int = 30
    query_runs: int = 40
    query_warmups: int = 3
    keep: bool = False


def _pid(server: InfluxServer) -> int:
    process = server._process  # noqa: SLF001 - the CPU figure needs influxd's pid, which is not public
    if process is None:
        raise BenchError("influxd is not running")
    return process.pid


@contextlib.contextmanager
def _scratch(name: str, keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"shopfloor-bench-{name}-"))
    try:
        yield path
    finally:
        if keep:
            print(f"  (kept {path})", flush=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _stored(server: InfluxServer, db: str, expected: Counter[str]) -> dict[str, int]:
    """Points per measurement in `db`, counted by a field every point of it carries."""
    field_of = {"process_value": "value", "machine_count": "delta", "machine_state": "state"}
    names = sorted(expected)
    doc = server.query(";".join(f'SELECT COUNT("{field_of[n]}") FROM "{n}"' for n in names), db=db)
    out = {}
    for name, result in zip(names, doc["results"], strict=True):
        series = result.get("series") or [{"values": [[0, 0]]}]
        out[name] = int(series[0]["values"][0][1])
    return out


def _loss(expected: Counter[str], stored: dict[str, int]) -> dict[str, int]:
    # Writes are idempotent (same series and time: one point), so "duplicated" means more points than were
    # written: one point stored under two identities.
    return {"lost": sum(max(0, n - stored.get(m, 0)) for m, n in expected.items()),
            "duplicated": sum(max(0, stored.get(m, 0) - n) for m, n in expected.items())}


# --- OPC UA value changes into InfluxDB -----------------------------------------------------------------------


class InfluxLatencyTracker(LatencyTracker):
    """`LatencyTracker` (visibility against the point's own time, the same summary) over InfluxDB: one query per
    poll for all sampled series, grouped by machine.

    With several writes in flight, a series' points can become visible out of order (a later request confirmed
    first), so a cursor at the newest point would step over an older one still on its way: each poll reads back
    `OUT_OF_ORDER_S` behind the slowest series' newest point and remembers the times it has seen there. A point is
    seen at the first poll whose request was sent after the server had stored it, so a latency overstates the
    true one by less than the gap between two polls (`resolution_ms`)."""

    OUT_OF_ORDER_S = 2.0

    def __init__(self, server: InfluxServer, db: str, site: str, line: str, machines: list[str], name: str,
                 after_ns: int) -> None:
        # Not LatencyTracker.__init__: that one prepares SQLite statements; the bookkeeping below is the same.
        self.server = server
        self.db = db
        which = " OR ".join(f"\"machine\" = '{m}'" for m in machines)
        self.sql = (f"SELECT \"value\" FROM \"process_value\" WHERE \"site\" = '{site}' AND \"line\" = '{line}' "
                    f"AND \"name\" = '{name}' AND ({which}) AND time > {{after}}{{until}} GROUP BY \"machine\"")
        self.series = [(m,) for m in machines]
        self.after_ns = after_ns
        self.cursor = dict.fromkeys(self.series, after_ns)  # the newest point seen of each series
        self.seen: dict[tuple[str], set[int]] = {key: set() for key in self.series}
        self.latencies_ms: list[float] = []
        self.poll_starts: list[float] = []
        self.query_s = 0.0
        self.queries = 0
        self.points_read = 0
        self.out_of_order = 0  # points that became visible after a newer one of their series
        self.until_ns: int | None = None

    def poll(self) -> int:
        seen_ns = time.time_ns()
        t0 = time.monotonic()
        self.poll_starts.append(t0)
        lookback = int(self.OUT_OF_ORDER_S * 1e9)
        after = max(self.after_ns, min(self.cursor.values()) - lookback)
        doc = self.server.query(self.sql.format(after=after, until=""), db=self.db)
        self.query_s += time.monotonic() - t0
        self.queries += 1
        new = 0
        until = self.until_ns
        for series in doc["results"][0].get("series", []):
            key = (series["tags"]["machine"],)
            if key not in self.cursor:
                continue
            seen, newest = self.seen[key], self.cursor[key]
            self.points_read += len(series["values"])
            for t in (int(v[0]) for v in series["values"]):
                if t in seen:
                    continue
                seen.add(t)
                new += 1
                if t < newest:
                    self.out_of_order += 1
                newest = max(newest, t)
                if until is None or t <= until:
                    self.latencies_ms.append((seen_ns - t) / 1e6)
            self.cursor[key] = newest
        # forget what the next poll no longer reads
        after = max(self.after_ns, min(self.cursor.values()) - lookback)
        self.seen = {key: {t for t in seen if t > after} for key, seen in self.seen.items()}
        return new

    def cost(self, influxd: psutil.Process, from_ns: int, polls: int = 40) -> dict[str, float]:
        """What one poll costs, replayed on stored points once the simulators have stopped: `polls` queries,
        each for the points of one poll interval from `from_ns` on (as many as a poll read during the window)."""
        step = int(LATENCY_POLL_S * 1e9)
        cpu0 = sum(influxd.cpu_times()[:2])
        t0 = time.perf_counter()
        for i in range(polls):
            after = from_ns + i * step
            self.server.query(self.sql.format(after=after, until=f" AND time <= {after + step}"), db=self.db)
        wall = time.perf_counter() - t0
        cpu = sum(influxd.cpu_times()[:2]) - cpu0
        return {"ms_per_query": round(1000 * wall / polls, 1),
                "influxd_cpu_ms_per_query": round(1000 * cpu / polls, 1),
                "influxd_cpu_pct_at_poll_rate": round(100 * cpu / polls / LATENCY_POLL_S, 1)}


def stored_points(server: InfluxServer, db: str) -> dict[str, int]:
    """Points per measurement in `db` (each counted by a field all its points carry)."""
    doc = server.query("SHOW MEASUREMENTS", db=db)
    names = [v[0] for s in doc["results"][0].get("series", []) for v in s["values"]]
    out = {}
    for name in names:
        field = MEASUREMENTS[name].required_fields[0]
        series = server.query(f'SELECT COUNT("{field}") FROM "{name}"', db=db)["results"][0].get("series", [])
        out[name] = int(series[0]["values"][0][1]) if series else 0
    return out


def _counts_by_machine(server: InfluxServer, db: str, after_ns: int | None = None,
                       until_ns: int | None = None) -> dict[str, int]:
    """process_value points per machine, stamped in (after_ns, until_ns] when given."""
    where = []
    if after_ns is not None:
        where.append(f"time > {after_ns}")
    if until_ns is not None:
        where.append(f"time <= {until_ns}")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    doc = server.query(f'SELECT COUNT("value") FROM "process_value"{clause} GROUP BY "machine"', db=db)
    return {s["tags"]["machine"]: int(s["values"][0][1]) for s in doc["results"][0].get("series", [])}


def _machines_of(per_sim: list[int]) -> dict[str, list[str]]:
    """The machine ids each simulator serves (plc-1: m000.., in the order of `machines_per_sim`)."""
    out, k = {}, 0
    for i, count in enumerate(per_sim):
        out[f"plc-{i + 1}"] = [f"m{j:03d}" for j in range(k, k + count)]
        k += count
    return out


def _agent_counters(port: int) -> dict[str, int]:
    return {"points_in": int(metric(port, "shopfloor_points_in_total")),
            "confirmed": int(metric(port, "shopfloor_points_out_total", 'sink="historian"')),
            "received": int(metric(port, "shopfloor_messages_in_total")),
            "write_errors": int(metric(port, "shopfloor_sink_write_errors_total", 'sink="historian"')),
            "dead_letters": int(metric(port, "shopfloor_dead_letters_total")),
            "dropped": int(metric(port, "shopfloor_outbox_dropped_points")),
            "outbox": int(metric(port, "shopfloor_outbox_depth_points"))}


def window_check(server: InfluxServer, db: str, per_sim: list[int], stats0: dict[str, dict[str, Any]],
                 stats1: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each simulator's changes in the window (its stats files) against the points InfluxDB holds for its
    machines stamped in the same window. A round is stamped before it is counted and the stats are written
    after it, so both sides cover exactly the same rounds: a shortfall is a change that never reached InfluxDB,
    whether the OPC UA server replaced it before the agent's subscription took it (queue size 1) or the agent
    dropped it."""
    expected = stored = 0
    short = {}
    for sim, machines in _machines_of(per_sim).items():
        a, b = stats0.get(sim) or {}, stats1.get(sim) or {}
        if not a or not b:
            continue
        counts = _counts_by_machine(server, db, int(a["time"] * 1e9), int(b["time"] * 1e9))
        want = int(b["changes"] - a["changes"])
        have = sum(counts.get(m, 0) for m in machines)
        expected += want
        stored += have
        if have != want:
            short[sim] = want - have
    return {"offered_in_window": expected, "influx_in_window": stored, "not_stored_in_window": expected - stored,
            "short_by_sim": short}


def opcua_influx(opts: Options, period_ms: float) -> dict[str, Any]:
    """The OPC UA scenario (same simulators and tags) with the agent writing into a real InfluxDB: the rate the
    server confirmed, the latency until a point can be read back, and after the window every change the
    simulators offered in it counted back from InfluxDB."""
    asked = opts.opcua_tags * 1000.0 / period_ms
    with Workspace(f"opcua-influx-{int(asked)}", opts.keep) as ws, InfluxServer(ws.dir / "influxdb") as server:
        server.create_database(DB)
        historian = {"kind": "influxdb", "url": server.url, "database": DB}
        system = opcua_system(ws, opts, period_ms, historian)
        port = system.port
        wait_until(lambda: metric(port, "shopfloor_points_out_total", 'sink="historian"') > 0, 60,
                   "process values confirmed by InfluxDB")
        time.sleep(opts.opcua_warmup_s)
        cfg = load_config(system.config, resolve_secrets=False)
        step = max(1, system.machines // LATENCY_SERIES)
        sample = [f"m{k:03d}" for k in range(0, system.machines, step)][:LATENCY_SERIES]
        tracker = InfluxLatencyTracker(server, DB, cfg_site(system.config), configs.BENCH_LINE, sample, "t00",
                                       after_ns=time.time_ns())
        confirmed: list[tuple[float, int, int, int]] = []  # (monotonic, wall clock ns, confirmed, received)

        def count() -> None:
            confirmed.append((time.monotonic(), time.time_ns(),
                              int(metric(port, "shopfloor_points_out_total", 'sink="historian"')),
                              int(metric(port, "shopfloor_messages_in_total"))))

        stats0 = system.stats()
        reconnects0 = metric(port, "shopfloor_source_reconnects_total")
        meter = CpuMeter({"agent": system.agent, **system.sims}, {"influxd": _pid(server)})
        meter.start()
        t0, t1 = measure(opts.opcua_seconds, system, meter, tracker.poll, LATENCY_POLL_S, count, COUNT_POLL_S)
        cpu = meter.stop()
        stats1 = system.stats()
        (ta, wall_a, ca, ra), (tb, wall_b, cb, rb) = confirmed[0], confirmed[-1]
        stored = (cb - ca) / (tb - ta) if tb > ta else 0.0
        settled = settle_latency(tracker, opts.opcua_seconds, LATENCY_POLL_S)
        result: dict[str, Any] = {
            "scenario": f"opcua_influx_{int(round(asked, -3) / 1000)}k",
            "label": f"OPC UA {opts.opcua_tags:,} tags / {period_ms:g} ms -> InfluxDB",
            **opcua_figures(system, opts, (stats0, stats1), (t0, t1), stored, tracker, settled, cpu),
            "agent_and_influxd_cpu_pct": round(cpu["agent"] + cpu.get("influxd", 0.0), 1),
            "received_per_s": round((rb - ra) / (tb - ta)) if tb > ta else 0,
            # a source that lost its connection in the window makes its figures those of a reconnect, not of load
            "source_reconnects_in_window": int(metric(port, "shopfloor_source_reconnects_total") - reconnects0),
            "latency_poll": {"queries": tracker.queries, "points_read": tracker.points_read,
                             "out_of_order": tracker.out_of_order, "lookback_s": tracker.OUT_OF_ORDER_S,
                             "query_ms_total": round(tracker.query_s * 1000),
                             "query_ms_mean": round(1000 * tracker.query_s / max(1, tracker.queries), 1)},
        }
        # Then nothing more is offered: the simulators stop, the outbox must empty, and InfluxDB must hold
        # every change of the window and every point the agent counted as confirmed.
        for sim in system.sims.values():
            sim.stop()
        t_stop = time.monotonic()

        def drained() -> bool:
            system.agent.check()
            return metric(port, "shopfloor_outbox_depth_points") == 0

        wait_until(drained, DRAIN_LIMIT_S, "the agent's outbox empty after the simulators stopped", every=0.5)
        drained_s = time.monotonic() - t_stop
        counters = _agent_counters(port)
        check = window_check(server, DB, system.machines_per_sim, stats0, stats1)
        window_counts = _counts_by_machine(server, DB, wall_a, wall_b)
        in_influx = stored_points(server, DB)
        # The pipeline's source heartbeats are written like points but not counted in points_in.
        from_sources = sum(n for m, n in in_influx.items() if m != "source_heartbeat")
        result["latency_poll"]["replayed"] = tracker.cost(psutil.Process(_pid(server)), wall_a)
        result.update({
            "stamped_in_window_per_s": round(sum(window_counts.values()) / ((wall_b - wall_a) / 1e9)),
            **check, "drain_after_stop_s": round(drained_s, 1), "agent_counters": counters,
            "influx_points": in_influx, "influx_points_total": sum(in_influx.values()),
            # Lost: points the agent committed to its outbox (so acknowledged to the source) that InfluxDB does
            # not hold once the outbox is empty. Changes the simulators offered but the agent never received
            # are in not_stored_in_window and stored/offered, not here.
            "lost": max(0, counters["points_in"] - from_sources),
            "confirmed_not_in_influx": max(0, counters["confirmed"] - sum(in_influx.values())),
            "duplicated": None,  # a point is identified by series and time: written twice, it is stored once
            "settings": {"historian": "influxdb", "in_flight": cfg.historian.in_flight,
                         "batch_lines": cfg.historian.batch_lines, "gzip": cfg.historian.gzip,
                         "publishing_interval_ms": 100, "sampling_ms": 0, "queue_size": 1,
                         "latency_sample": f"t00 of {len(sample)} machines",
                         "latency_poll_ms": LATENCY_POLL_S * 1000},
        })
        return result


# --- 1. outbox drain ----------------------------------------------------------------------------------------


def shop_floor_points(cfg: FactoryConfig, total: int, t0_ns: int, seed: int = 7) -> list[Point]:
    """`total` points shaped like an edge agent's stream, in time order, no two with the same identity.

    Every 100 ms tick: one process value of each of 100 tags per machine (600 series with the six machines of
    the config), one reading of each machine's three counters, and on every tenth tick a state per machine.
    Fields are the ones the mapper writes, so the lines are as long as the agent's.
    """
    rng = random.Random(seed)
    site = cfg.site.id
    machines = [(line.id, m.id) for line, m in cfg.machines()]
    pv_tags = [{"site": site, "line": ln, "machine": mc, "name": f"pv{k:02d}"} for ln, mc in machines
               for k in range(100)]
    count_tags = [{"site": site, "line": ln, "machine": mc, "counter": c} for ln, mc in machines
                  for c in ("total", "good", "reject")]
    state_tags = [{"site": site, "line": ln, "machine": mc} for ln, mc in machines]
    states = ("RUNNING", "MICROSTOP", "RUNNING", "STOPPED", "RUNNING", "FAULT")
    values = dict.fromkeys(range(len(count_tags)), 0)
    points: list[Point] = []
    tick = 0
    while len(points) < total:
        t = t0_ns + tick * NS // 10
        for k, tags in enumerate(pv_tags):
            ts = t + k * 1000  # a sampling instant per tag, as OPC UA source timestamps are
            points.append(Point("process_value", tags, {"status": 0, "quality": "good", "server_time_ns": ts + 2_000_000,
                                                        "value": round(rng.gauss(60.0, 8.0), 3)}, ts))
        for k, tags in enumerate(count_tags):
            delta = 0 if tags["counter"] == "reject" and rng.random() < 0.9 else 1
            values[k] += delta
            points.append(Point("machine_count", tags, {"delta": delta, "value": values[k]}, t + 700_000 + k))
        if tick % 10 == 0:
            for k, tags in enumerate(state_tags):
                state = states[(tick // 10 + k) % len(states)]
                points.append(Point("machine_state", tags, {"state": state, "raw": state}, t + 800_000 + k))
        tick += 1
    return points[:total]


class _TimedInflux(InfluxHistorian):
    """The real InfluxHistorian, adding up where its time goes: `write` (encode, slice, then requests) and
    `_post` (gzip, then the HTTP round trip to the server). With several writes in flight these are sums over
    the writer threads, so they can exceed the wall time."""

    write_s = 0.0
    post_s = 0.0
    requests = 0
    _tally = threading.Lock()

    def write(self, points: Sequence[Point]) -> Any:
        t0 = time.perf_counter()
        try:
            return super().write(points)
        finally:
            with self._tally:
                self.write_s += time.perf_counter() - t0

    def _post(self, lines: list[str]) -> Any:
        t0 = time.perf_counter()
        try:
            return super()._post(lines)
        finally:
            with self._tally:
                self.post_s += time.perf_counter() - t0
                self.requests += 1


def _encode_and_gzip_cost(points: list[Point], batch_lines: int = 5000) -> dict[str, float]:
    """Line encoding and gzip alone, per point, on a sample: what the drain thread spends before the server."""
    sample = points[:100_000]
    encoder = LineEncoder()
    t0 = time.perf_counter()
    lines = encoder.lines(sample)[0]
    t1 = time.perf_counter()
    raw = gzipped = 0
    for start in range(0, len(lines), batch_lines):
        body = "\n".join(lines[start:start + batch_lines]).encode()
        raw += len(body)
        gzipped += len(gzip.compress(body, GZIP_LEVEL))
    t2 = time.perf_counter()
    return {"encode_us_per_point": round(1e6 * (t1 - t0) / len(sample), 2),
            "join_gzip_us_per_point": round(1e6 * (t2 - t1) / len(sample), 2),
            "bytes_per_line": round(raw / len(sample), 1), "gzip_ratio": round(raw / max(1, gzipped), 1)}


def _drain_once(server: InfluxServer, cfg: FactoryConfig, points: list[Point], expected: Counter[str],
                work: Path, db: str, in_flight: int) -> dict[str, Any]:
    server.create_database(db)
    outbox = Outbox(work / f"outbox-{db}.sqlite3", int(cfg.outbox.quota_mb * 2**20))
    t0 = time.perf_counter()
    for start in range(0, len(points), ENQUEUE_BATCH):
        outbox.enqueue(points[start:start + ENQUEUE_BATCH])
    fill_s = time.perf_counter() - t0
    historian = _TimedInflux(server.url, database=db, in_flight=in_flight)
    pipeline = Pipeline(cfg, outbox, historian, AgentState("bench"))
    me, influxd = psutil.Process(), psutil.Process(_pid(server))
    cpu0 = (sum(me.cpu_times()[:2]), sum(influxd.cpu_times()[:2]))
    t0 = time.perf_counter()
    pipeline.start()
    try:
        while outbox.depth()[1]:
            if not pipeline.running:
                raise BenchError(f"the pipeline stopped: {pipeline.fatal}")
            if time.perf_counter() - t0 > 600:
                raise BenchError(f"the outbox still holds {outbox.depth()[1]:,} points after 600 s")
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        cpu1 = (sum(me.cpu_times()[:2]), sum(influxd.cpu_times()[:2]))
    finally:
        pipeline.stop(timeout=5)
        dead = outbox.dead_letters_total
        outbox.close()
        historian.close()
    stored = _stored(server, db, expected)
    return {"points_per_s": round(len(points) / wall), "seconds": round(wall, 2), "fill_s": round(fill_s, 1),
            "bench_cpu_pct": round(100 * (cpu1[0] - cpu0[0]) / wall, 1),
            "influxd_cpu_pct": round(100 * (cpu1[1] - cpu0[1]) / wall, 1),
            "in_write_s": round(historian.write_s, 2), "in_post_s": round(historian.post_s, 2),
            "requests": historian.requests, "stored": stored, "dead_letters": dead, **_loss(expected, stored)}


def drain(opts: InfluxOptions) -> dict[str, Any]:
    """~1,000,000 points in a real outbox, drained by the real pipeline into InfluxDB: points/s, median of runs."""
    cfg = load_config(configs.FACTORY_YAML, resolve_secrets=False)
    points = shop_floor_points(cfg, opts.drain_points, 1_795_219_200 * NS)
    expected = Counter(p.measurement for p in points)
    with _scratch("influx-drain", opts.keep) as work, InfluxServer(work / "influxdb") as server:
        runs = [_drain_once(server, cfg, points, expected, work, f"drain{i + 1}", opts.drain_in_flight)
                for i in range(opts.drain_runs)]
    median = sorted(runs, key=lambda r: r["points_per_s"])[len(runs) // 2]
    return {
        "scenario": "influx_drain", "label": f"outbox drain -> InfluxDB ({len(points):,} points)",
        "stored_per_s": median["points_per_s"], "target_per_s": DRAIN_TARGET_PER_S,
        "agent_cpu_pct": median["bench_cpu_pct"],
        "cpu_pct": {"influxd": median["influxd_cpu_pct"]},
        "lost": sum(r["lost"] for r in runs), "duplicated": sum(r["duplicated"] for r in runs),
        "points": len(points), "mix": dict(expected), "runs": runs, "cost": _encode_and_gzip_cost(points),
        "settings": {"enqueue_batch": ENQUEUE_BATCH, "drain_claim_points": 4 * cfg.outbox.batch_points,
                     "lines_per_request": 5000, "gzip_level": GZIP_LEVEL, "outbox_in_memory_handoff": 500_000,
                     "writes_in_flight": opts.drain_in_flight, "runs": opts.drain_runs},
    }


# --- 2. catch-up after an outage ----------------------------------------------------------------------------


def system_config(path: Path, broker_url: str, opcua_port: int, http_port: int, data_dir: Path,
                  influx_url: str) -> Path:
    """config/factory.yaml pointed at this run's broker, PLC simulator, port, data dir and InfluxDB."""
    data = yaml.safe_load(configs.FACTORY_YAML.read_text(encoding="utf-8"))
    data["sources"]["opcua"][0]["endpoint"] = f"opc.tcp://127.0.0.1:{opcua_port}/shopfloor/plc"
    for source in data["sources"]["mqtt"]:
        source["url"] = broker_url
    data["agent"].update({"data_dir": str(data_dir), "http_port": http_port})
    data["historian"] = {"kind": "influxdb", "url": influx_url, "database": DB}
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _health(port: int) -> dict[str, Any]:
    status, body = http_get(port, "/healthz")
    doc = json.loads(body) if body else {}
    if not isinstance(doc, dict) or "outbox" not in doc:
        raise BenchError(f"/healthz answered {status}: {body[:200]}")
    return doc


def _sleep_watching(seconds: float, procs: Sequence[Proc], port: int, samples: list[tuple[float, int]],
                    t_ref: float) -> None:
    """Sleep `seconds`, checking every second that the processes live and sampling the outbox depth."""
    deadline = time.monotonic() + seconds
    next_sample = 0.0
    while (left := deadline - time.monotonic()) > 0:
        for proc in procs:
            proc.check()
        if time.monotonic() >= next_sample:
            next_sample = time.monotonic() + 5
            samples.append((round(time.monotonic() - t_ref, 1), int(metric(port, "shopfloor_outbox_depth_points"))))
        time.sleep(min(1.0, left))


def outage(opts: InfluxOptions) -> dict[str, Any]:
    """PLC and line simulators at `opts.speed`, the agent writing to InfluxDB, which is stopped for
    `opts.outage_s`: what waits in the outbox, and how long the agent takes to catch up after the restart."""
    with Workspace("influx-outage", opts.keep) as ws, InfluxServer(ws.dir / "influxdb") as server:
        server.create_database(DB)
        broker = ws.broker()
        opcua_port, port = free_port(), free_port()
        config = system_config(ws.dir / "factory.yaml", broker.url, opcua_port, port, ws.dir / "agent", server.url)
        plc = ws.proc("plc", ["simulate", "plc", "--config", str(config), "--endpoint",
                              f"opc.tcp://127.0.0.1:{opcua_port}/shopfloor/plc", "--speed", str(opts.speed),
                              "--start", SIM_START, "--cert-dir", str(ws.dir / "plc-pki")],
                      ready="PLC simulator ready at", timeout=120)
        agent = ws.agent(config, port)
        line = ws.proc("line", ["simulate", "line", "--config", str(config), "--mqtt", broker.url, "--speed",
                                str(opts.speed), "--seed", "11", "--truth-file", str(ws.dir / "line-truth.json")],
                       ready="line simulator publishing to", timeout=30)
        procs = [agent, plc, line]

        def connected() -> bool:
            agent.check()
            return metric(port, "shopfloor_source_connected") >= 2

        wait_until(connected, 60, "the agent's OPC UA and MQTT sources connected")
        t_ref = time.monotonic()
        in0 = metric(port, "shopfloor_points_in_total")
        depth_samples: list[tuple[float, int]] = []
        _sleep_watching(opts.before_outage_s, procs, port, depth_samples, t_ref)
        offered = (metric(port, "shopfloor_points_in_total") - in0) / (time.monotonic() - t_ref)

        server.stop()
        down = time.monotonic()
        _sleep_watching(opts.outage_s, procs, port, depth_samples, t_ref)
        waiting = int(metric(port, "shopfloor_outbox_depth_points"))
        oldest_age = metric(port, "shopfloor_outbox_oldest_age_seconds")
        health = _health(port)
        outage_s = time.monotonic() - down

        out0 = metric(port, "shopfloor_points_out_total", 'sink="historian"')
        t_call = time.monotonic()
        server.start()
        up, up_wall = time.monotonic(), time.time()
        mosquitto = broker._process.pid if broker._process else None  # noqa: SLF001 - CPU figure only
        meter = CpuMeter({"agent": agent, "plc": plc, "line": line},
                         {"influxd": _pid(server), **({"mosquitto": mosquitto} if mosquitto else {})})
        meter.start()
        first_write: float | None = None
        caught_up: float | None = None
        limit = max(120.0, opts.outage_s)
        while time.monotonic() - up < limit:
            agent.check()
            meter.tick()
            now = time.monotonic()
            doc = _health(port)
            if first_write is None and (doc["historian"].get("last_write") or 0) >= up_wall:
                first_write = now
            if doc["outbox"]["points"] == 0:
                caught_up = now
                break
            time.sleep(max(0.0, 0.2 - (time.monotonic() - now)))
        cpu = meter.stop()
        out1 = metric(port, "shopfloor_points_out_total", 'sink="historian"')
        end = caught_up or time.monotonic()
        catch_up = end - up
        written = int(out1 - out0)
        # The drain rate counts from the first confirmed write, so it leaves out the agent's retry backoff; a
        # drain shorter than 1 s is too short to time at 0.2 s polling.
        draining = end - first_write if first_write is not None else 0.0
        return {
            "scenario": "influx_outage", "label": f"catch-up after a {opts.outage_s:.0f} s InfluxDB outage",
            "offered_per_s": round(offered), "stored_per_s": round(written / draining) if draining >= 1 else None,
            "waiting_points": waiting, "oldest_age_s": round(oldest_age, 1), "outage_s": round(outage_s, 1),
            "last_error_at_end": (health["historian"].get("last_error") or "")[:200],
            "restart_s": round(up - t_call, 2), "caught_up": caught_up is not None,
            "catch_up_s": round(catch_up, 2),
            "first_write_s": round(first_write - up, 2) if first_write is not None else None,
            "written_during_catch_up": written,
            "drain_s": round(draining, 2),
            "agent_cpu_pct": round(cpu["agent"], 1), "agent_peak_rss_mb": round(agent.peak_rss_mb(), 1),
            "cpu_pct": {k: round(v, 1) for k, v in cpu.items()}, "depth_samples": depth_samples,
            "settings": {"speed": opts.speed, "before_outage_s": opts.before_outage_s, "poll_every_s": 0.2,
                         "sim_start": SIM_START, "line_seed": 11},
        }


# --- 3. shift OEE over 30 days --------------------------------------------------------------------------------


def _timed(runs: int, warmups: int, call: Callable[[int], Any]) -> dict[str, Any]:
    for i in range(warmups):
        call(i)
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        call(i)
        times.append(1000 * (time.perf_counter() - t0))
    stats = percentiles(times)
    return {"runs": runs, "p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"], "max_ms": stats["max_ms"],
            "mean_ms": round(statistics.fmean(times), 1)}


def queries(opts: InfluxOptions) -> dict[str, Any]:
    """`opts.history_days` of 6 machines written through InfluxHistorian.write (and into SQLite); then the
    latency of one shift's OEE and of every shift's OEE."""
    cfg = load_config(configs.FACTORY_YAML, resolve_secrets=False)
    first_day = date(2026, 10, 5)  # a Monday
    shifts = shift_windows(cfg, first_day, opts.history_days)
    ideal = ideal_cycles(cfg)
    period = (shifts[0].start_ns, shifts[-1].end_ns)
    with _scratch("influx-queries", opts.keep) as work, InfluxServer(work / "influxdb") as server:
        server.create_database(DB)
        influx = InfluxHistorian(server.url, database=DB)
        sqlite = SqliteHistorian(work / "historian.sqlite3", retention_days=None)
        written: Counter[str] = Counter()
        influx_s = sqlite_s = 0.0
        me, influxd = psutil.Process(), psutil.Process(_pid(server))
        cpu_bench = cpu_influxd = 0.0
        for day in history(cfg, first_day, opts.history_days):
            written.update(p.measurement for p in day)
            c0 = (sum(me.cpu_times()[:2]), sum(influxd.cpu_times()[:2]))
            t0 = time.perf_counter()
            for start in range(0, len(day), 50_000):
                result = influx.write(day[start:start + 50_000])
                if result.rejected:
                    raise BenchError(f"InfluxDB refused {len(result.rejected)} points: {result.rejected[0][1]}")
            t1 = time.perf_counter()
            c1 = (sum(me.cpu_times()[:2]), sum(influxd.cpu_times()[:2]))
            cpu_bench, cpu_influxd = cpu_bench + c1[0] - c0[0], cpu_influxd + c1[1] - c0[1]
            sqlite.write(day)
            sqlite_s += time.perf_counter() - t1
            influx_s += t1 - t0
        points = sum(written.values())
        stored = _stored(server, DB, written)
        # Day shifts and night shifts alike, spread over the period, so no one shift's data stays cached.
        picks = [shifts[(i * 7) % len(shifts)] for i in range(opts.query_runs + opts.query_warmups)]

        def one_shift(h: Historian) -> Callable[[int], dict[str, MachineOee]]:
            def run(i: int) -> dict[str, MachineOee]:
                w = picks[i]
                return shift_oee(h.state_intervals(w.start_ns, w.end_ns), h.count_sums(w.start_ns, w.end_ns, 3600),
                                 w.start_ns, w.end_ns, ideal)
            return run

        def all_shifts(i: int) -> list[dict[str, MachineOee]]:
            return every_shift_oee(influx.state_intervals(*period), influx.count_sums(*period, 3600), shifts, ideal)

        a_influx = _timed(opts.query_runs, opts.query_warmups, one_shift(influx))
        a_sqlite = _timed(opts.query_runs, opts.query_warmups, one_shift(sqlite))
        b_runs = max(5, opts.query_runs // 4) if opts.history_days < 30 else opts.query_runs
        b_influx = _timed(b_runs, opts.query_warmups, all_shifts)
        sample = picks[opts.query_warmups]
        sample_oee = one_shift(sqlite)(opts.query_warmups)
        agree = same_oee(one_shift(influx)(opts.query_warmups), sample_oee)
        everything = all_shifts(0)
        states_per_machine_day = written["machine_state"] / len(ideal) / opts.history_days
        influx.close()
        sqlite.close()
    a_label = "one shift's OEE (6 machines)"
    return {
        "scenario": "influx_queries", "label": f"{opts.history_days} days of 6 machines written to InfluxDB",
        "stored_per_s": round(points / influx_s), "points": points, "mix": dict(written),
        "write_s": round(influx_s, 1), "sqlite_write_s": round(sqlite_s, 1),
        "sqlite_per_s": round(points / sqlite_s), **_loss(written, stored),
        "agent_cpu_pct": round(100 * cpu_bench / influx_s, 1),
        "cpu_pct": {"influxd": round(100 * cpu_influxd / influx_s, 1)},
        "states_per_machine_day": round(states_per_machine_day), "shifts": len(shifts),
        "sample_shift": {"shift": sample.shift, "start": datetime.fromtimestamp(
            sample.start_ns / NS, ZoneInfo(cfg.site.timezone)).isoformat(), "mean_oee": mean_oee(sample_oee)},
        "period_mean_oee": round(statistics.fmean(mean_oee(s) for s in everything), 4),
        "backends_agree": agree,
        "queries": [
            {"query": a_label, "historian": "InfluxDB", **a_influx, "target_p95_ms": QUERY_TARGET_P95_MS},
            {"query": a_label, "historian": "SQLite", **a_sqlite},
            {"query": f"OEE of every shift of {opts.history_days} days ({len(shifts)} shifts)",
             "historian": "InfluxDB", **b_influx},
        ],
        "settings": {"first_day": first_day.isoformat(), "count_bucket_s": 3600, "write_call_points": 50_000,
                     "lines_per_request": 5000, "warmups": opts.query_warmups, "seed": 22400},
    }
