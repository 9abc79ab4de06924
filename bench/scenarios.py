"""The benchmark scenarios. Each starts its own broker/simulators/agent in a temp dir and returns its figures."""

from __future__ import annotations

import contextlib
import functools
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from agent.config import load as load_config
from bench import configs, profile
from bench.historian import LatencyTracker, RowCounter, wait_connect
from bench.procs import CpuMeter, Proc, metric, read_json, wait_until
from simulators.broker import Broker, free_port
from simulators.plant import Plant

# MQTT levers (DESIGN.md "Known hard parts"): the broker's per-client in-flight window and the agent's MQTT 5
# Receive Maximum. Both far above the defaults (20 and 1000), so neither caps a QoS 1 flood.
BROKER_MAX_INFLIGHT = 10_000
AGENT_RECEIVE_MAXIMUM = 10_000
PUBLISHER_WINDOW = 10_000
# Mosquitto queues at most 1,000,000 messages per session (simulators/broker.py); a flood stays below that,
# so the broker never drops what the agent has not taken yet.
FLOOD_CAP = 900_000
COUNT_EVERY_S = 0.2
LATENCY_EVERY_S = 0.025


@dataclass
class Options:
    """What to run and for how long."""

    mqtt_seconds: float = 25.0       # target length of the MQTT throughput run
    latency_seconds: float = 15.0    # length of the paced MQTT flood
    latency_rate: float = 20_000.0   # messages/s of the paced MQTT flood
    opcua_seconds: float = 25.0      # measuring window of each OPC UA run (after warm-up)
    opcua_warmup_s: float = 5.0
    opcua_tags: int = 10_000
    opcua_sims: int = 3
    publishers: int = 1              # MQTT flood processes (each on its own topics)
    mqtt_protocol: str = "3.1.1"     # the agent's MQTT version ("3.1.1" or "5")
    mqtt_workers: tuple[int, ...] = (2, 4)  # worker counts run beside the single connection (mqtt_steps)
    mqtt_latency_repeats: int = 3    # consecutive steady-rate runs per worker count (mqtt_steps)
    profile_s: float = 0.0           # py-spy the agent this long after an OPC UA window (0: no profile)
    keep: bool = False               # keep the temp dirs (configs, logs, historian) for a post-mortem


class Workspace:
    """A temp dir and every process started in it; `close()` stops them all (last started, first stopped)."""

    def __init__(self, name: str, keep: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"shopfloor-bench-{name}-"))
        self.keep = keep
        self.procs: list[Proc] = []
        self.brokers: list[Broker] = []

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(failed=exc_type is not None)

    def proc(self, name: str, argv: list[str], ready: str | None = None, timeout: float = 60) -> Proc:
        proc = Proc(name, argv, self.dir)
        self.procs.append(proc)  # registered before start, so a failed start is still cleaned up
        return proc.start(ready, timeout)

    def broker(self) -> Broker:
        # No persistence: the agent is what is measured, not Mosquitto's autosave of a deep queue.
        broker = Broker(port=free_port(), data_dir=self.dir / "broker", max_inflight=BROKER_MAX_INFLIGHT,
                        persistence=False, implementation="mosquitto")
        self.brokers.append(broker)
        return broker.start()

    def agent(self, config: Path, port: int) -> Proc:
        agent = self.proc("agent", ["agent", "--config", str(config)])
        wait_until(lambda: _metrics_up(port) or not agent.running, 60, "agent /metrics")
        agent.check()
        return agent

    def close(self, failed: bool = False) -> None:
        # Signal all first, then wait: they stop in parallel (an agent with a deep outbox takes ~10 s).
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.send()
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                # An agent with a deep outbox drains for up to 10 s on SIGTERM; its data is thrown away here.
                proc.stop(timeout=5 if proc.name == "agent" else 30)
        for broker in self.brokers:
            with contextlib.suppress(Exception):
                broker.stop()
        if self.keep or failed:
            print(f"  (kept {self.dir} for inspection)", flush=True)
            if not self.keep:
                # On a failure keep only the logs: the historian of a flood can be hundreds of MB.
                for path in self.dir.rglob("*.sqlite3*"):
                    path.unlink(missing_ok=True)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def _metrics_up(port: int) -> bool:
    from bench.procs import http_get

    try:
        return http_get(port, "/metrics", timeout=2)[0] == 200
    except OSError:
        return False


def _connected_sources(port: int) -> int:
    try:
        return int(metric(port, "shopfloor_source_connected"))
    except OSError:
        return 0


def _round(d: dict[str, float], digits: int = 1) -> dict[str, float]:
    return {k: round(v, digits) for k, v in d.items()}


# --- MQTT ---------------------------------------------------------------------------------------------------


def _mqtt_system(ws: Workspace, protocol: str, workers: int = 1) -> tuple[Broker, Path, int, Proc]:
    broker = ws.broker()
    port = free_port()
    config = configs.mqtt_config(ws.dir / "factory.yaml", broker.url, ws.dir / "agent", port, AGENT_RECEIVE_MAXIMUM,
                                 protocol)
    if workers != 1:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
        for source in data["sources"]["mqtt"]:
            source["workers"] = workers
        config.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    agent = ws.agent(config, port)
    # The agent subscribes on connect; a flood published before the SUBACK would not reach its session. With
    # workers, each worker process is a connection of its own (series line-bus/w<k>).
    wait_until(lambda: _connected_sources(port) >= workers, 60, f"agent MQTT source connected ({workers} workers)")
    time.sleep(0.5)
    return broker, config, port, agent


def _flood(ws: Workspace, config: Path, broker: Broker, name: str, count: int, lane: tuple[int, int],
           rate: float | None = None) -> Proc:
    argv = ["simulate", "line", "--config", str(config), "--mqtt", broker.url, "--flood", str(count),
            "--flood-lane", f"{lane[0]}/{lane[1]}", "--max-inflight", str(PUBLISHER_WINDOW),
            "--truth-file", str(ws.dir / f"{name}-truth.json"), "--client-id", f"bench-{name}"]
    if rate is not None:
        argv += ["--flood-rate", str(rate)]
    return ws.proc(name, argv, ready="line simulator publishing to", timeout=30)


_FLOOD_LINE = re.compile(r"flood: (\d+) messages, published in ([\d.]+) s")


def _flood_rate(proc: Proc) -> float:
    """Messages/s the flood process itself reports (publish time only, without its start-up)."""
    m = _FLOOD_LINE.search(proc.log())
    return int(m.group(1)) / float(m.group(2)) if m and float(m.group(2)) > 0 else 0.0


def _acked(ws: Workspace, names: list[str]) -> int:
    return sum(int((read_json(ws.dir / f"{n}-truth.json") or {}).get("acked", 0)) for n in names)


def _mqtt_loss(rows: int, acked: int, delivered: float) -> dict[str, int]:
    # Rows are keyed by series + timestamp and written idempotently, so a redelivered message overwrites
    # its own row: "duplicated" counts rows beyond what the broker acknowledged (which would mean one
    # message stored twice under two keys); "redelivered" counts messages the agent received twice.
    return {"acked": acked, "rows": rows, "lost": max(0, acked - rows), "duplicated": max(0, rows - acked),
            "redelivered": max(0, int(delivered) - acked)}


def _series(config: Path) -> list[tuple[str, str, str]]:
    """(site, line, material) of every material level topic the line simulator floods."""
    cfg = load_config(config, resolve_secrets=False)
    floor = Plant(cfg)
    return [(cfg.site.id, ls.line.id, m.id) for ls in floor.lines.values() for m in ls.materials]


def _workers_label(workers: int) -> tuple[str, str]:
    """(scenario name suffix, label suffix) of a run with `workers` MQTT receiver processes."""
    return ("", "") if workers == 1 else (f"_w{workers}", f", {workers} workers")


def _agent_cpu(cpu: dict[str, float]) -> float:
    """CPU of the agent and its MQTT worker processes together (% of one core)."""
    return round(sum(v for k, v in cpu.items() if k == "agent" or k.startswith("worker-")), 1)


def _worker_cpu(agent: Proc) -> list[int]:
    """pids of the agent's MQTT worker processes (their CPU counts with the agent's)."""
    try:
        import psutil

        return [p.pid for p in psutil.Process(agent.pid).children()
                if "agent.mqtt_worker" in p.cmdline() and "/w" in " ".join(p.cmdline())]
    except Exception:
        return []


def mqtt_throughput(opts: Options, workers: int = 1) -> dict[str, Any]:
    """QoS 1 material levels flooded through Mosquitto into the agent; rows/s committed to the historian."""
    suffix, label = _workers_label(workers)
    with Workspace(f"mqtt-throughput{suffix}", opts.keep) as ws:
        broker, config, port, agent = _mqtt_system(ws, opts.mqtt_protocol, workers)
        conn = wait_connect(ws.dir / "agent" / "historian.sqlite3")
        counter = RowCounter(conn, "material_level")
        names = [f"flood-{i}" for i in range(opts.publishers)]
        mosquitto = broker._process.pid if broker._process else None  # noqa: SLF001 - CPU figure only
        t_start = time.monotonic()
        pubs = [_flood(ws, config, broker, n, FLOOD_CAP // opts.publishers, (i, opts.publishers))
                for i, n in enumerate(names)]
        extra = {"mosquitto": mosquitto} if mosquitto else {}
        extra.update({f"worker-{k}": pid for k, pid in enumerate(_worker_cpu(agent))})
        meter = CpuMeter({"agent": agent, **{n: p for n, p in zip(names, pubs, strict=True)}}, extra or None)
        meter.start()
        first_row: float | None = None
        stop_sent: float | None = None
        acked_final: int | None = None
        pub_rate = 0.0
        backlog_at_stop = 0
        last_progress, last_rows = time.monotonic(), -1
        while True:
            agent.check()
            meter.tick()
            rows = counter.poll()
            now = time.monotonic()
            if rows != last_rows:
                last_progress, last_rows = now, rows
            if first_row is None and rows > 0:
                first_row = now
            if stop_sent is None:
                acked = _acked(ws, names)
                # Stop publishing once the agent has had about `mqtt_seconds` of work: its own rate so far
                # times the target length (the flood is usually faster, the rest waits in the broker).
                # Judged after 1 s of rows: the flood can be ten times faster than the agent, and each second
                # of overshoot is ten seconds of draining afterwards.
                agent_rate = rows / (now - first_row) if first_row is not None and now - first_row > 1 else 0.0
                if (now - t_start >= opts.mqtt_seconds or (agent_rate and acked >= agent_rate * opts.mqtt_seconds)
                        or not any(p.running for p in pubs)):
                    for p in pubs:
                        if p.running and p.popen is not None:
                            p.popen.send_signal(signal.SIGTERM)
                    stop_sent = now
                    backlog_at_stop = max(0, acked - rows)
            elif acked_final is None and not any(p.running for p in pubs):
                acked_final = _acked(ws, names)
                pub_rate = sum(_flood_rate(p) for p in pubs)
            if acked_final is not None and rows >= acked_final:
                break
            if now - last_progress > 20:
                break  # nothing new for 20 s: the rest is lost (reported below)
            time.sleep(max(0.0, COUNT_EVERY_S - (time.monotonic() - now)))
        t_done = counter.samples[-1][0]
        cpu = meter.stop()
        assert first_row is not None, "no row ever reached the historian"
        span = t_done - first_row
        steady = counter.rate(first_row + 0.1 * span, t_done - 0.1 * span)
        delivered = metric(port, "shopfloor_messages_in_total")
        rows = counter.poll()
        result: dict[str, Any] = {
            "scenario": f"mqtt_throughput{suffix}",
            "label": f"MQTT {opts.mqtt_protocol} QoS 1 flood -> historian{label}", "workers": workers,
            "offered_per_s": round(pub_rate), "stored_per_s": round(steady),
            "ingest_s": round(span, 1), "publishers": opts.publishers,
            "backlog_at_publisher_stop": backlog_at_stop,
            "saturated": backlog_at_stop > 0.05 * max(1, acked_final or 0),
            "agent_cpu_pct": round(cpu["agent"], 1), "agent_peak_rss_mb": round(agent.peak_rss_mb(), 1),
            "agent_and_workers_cpu_pct": _agent_cpu(cpu),
            "cpu_pct": _round(cpu), "count_query_ms_total": round(counter.query_s * 1000),
            "settings": {"agent_mqtt_protocol": opts.mqtt_protocol, "broker_max_inflight": BROKER_MAX_INFLIGHT, "agent_receive_maximum": AGENT_RECEIVE_MAXIMUM,
                         "publisher_window": PUBLISHER_WINDOW, "broker_persistence": False,
                         "live_publisher": True, "flood_client": "raw MQTT 3.1.1 (simulators/line/raw_publisher.py)"},
        }
        result.update(_mqtt_loss(rows, acked_final or 0, delivered))
        return result


def mqtt_latency(opts: Options, rate: float, profile_s: float = 0.0, workers: int = 1) -> dict[str, Any]:
    """A paced QoS 1 flood (`rate` msgs/s, `ts` = wall clock at publish); latency ts -> visible."""
    suffix, label = _workers_label(workers)
    with Workspace(f"mqtt-latency{suffix}", opts.keep) as ws:
        broker, config, port, agent = _mqtt_system(ws, opts.mqtt_protocol, workers)
        conn = wait_connect(ws.dir / "agent" / "historian.sqlite3")
        counter = RowCounter(conn, "material_level")
        tracker = LatencyTracker(conn, "material_level", ("site", "line", "material"), _series(config),
                                 after_ns=time.time_ns())
        total = int(rate * opts.latency_seconds)
        mosquitto = broker._process.pid if broker._process else None  # noqa: SLF001 - CPU figure only
        t_start = time.monotonic()
        pub = _flood(ws, config, broker, "flood-0", total, (0, 1), rate=rate)
        extra = {"mosquitto": mosquitto} if mosquitto else {}
        extra.update({f"worker-{k}": pid for k, pid in enumerate(_worker_cpu(agent))})
        meter = CpuMeter({"agent": agent, "flood-0": pub}, extra or None)
        meter.start()
        recording = (profile.Recording(agent.pid, min(profile_s, opts.latency_seconds), ws.dir / "agent-profile.txt")
                     if profile_s > 0 else None)
        next_count = 0.0
        acked_final: int | None = None
        pub_end = 0.0
        last_progress, last_rows = time.monotonic(), -1
        while True:
            agent.check()
            tracker.poll()
            now = time.monotonic()
            if now >= next_count:
                next_count = now + COUNT_EVERY_S
                meter.tick()
                rows = counter.poll()
                if rows != last_rows:
                    last_progress, last_rows = now, rows
                if acked_final is None and not pub.running:
                    acked_final = _acked(ws, ["flood-0"])
                    pub_end = now
                if acked_final is not None and rows >= acked_final:
                    break
                if now - last_progress > 20:
                    break
            time.sleep(max(0.0, LATENCY_EVERY_S - (time.monotonic() - now)))
        cpu = meter.stop()
        tracker.poll()
        rows = counter.poll()
        delivered = metric(port, "shopfloor_messages_in_total")
        first = next((t for t, r in counter.samples if r > 0), t_start)
        last = next((t for t, r in counter.samples if acked_final is not None and r >= acked_final),
                    counter.samples[-1][0])
        span = max(1e-6, last - first)
        result: dict[str, Any] = {
            "scenario": f"mqtt_latency_{int(rate)}{suffix}", "workers": workers,
            "label": f"MQTT {opts.mqtt_protocol} QoS 1 at {rate:,.0f}/s -> historian{label}",
            "offered_per_s": round(_flood_rate(pub)), "asked_per_s": rate,
            "publisher_s": round(pub_end - t_start, 1),
            "stored_per_s": round(counter.rate(first + 0.1 * span, last - 0.1 * span)),
            "latency": tracker.summary(),
            "agent_cpu_pct": round(cpu["agent"], 1), "agent_peak_rss_mb": round(agent.peak_rss_mb(), 1),
            "agent_and_workers_cpu_pct": _agent_cpu(cpu),
            "cpu_pct": _round(cpu), "poll_query_ms_total": round((tracker.query_s + counter.query_s) * 1000),
            "settings": {"agent_mqtt_protocol": opts.mqtt_protocol, "broker_max_inflight": BROKER_MAX_INFLIGHT, "agent_receive_maximum": AGENT_RECEIVE_MAXIMUM,
                         "poll_every_ms": LATENCY_EVERY_S * 1000, "live_publisher": True},
        }
        result.update(_mqtt_loss(rows, acked_final or 0, delivered))
        if recording is not None:
            result["profile"] = recording.finish()
            result["profile"]["when"] = "during the paced flood (py-spy itself takes a little CPU)"
        return result


def mqtt_steps(opts: Options, quick: bool = False) -> list[tuple[str, Callable[[], dict[str, Any] | None]]]:
    """The MQTT runs with receiver processes: for each count in `opts.mqtt_workers`, a flood and
    `opts.mqtt_latency_repeats` consecutive runs at the steady `opts.latency_rate` (one with --quick).
    Targets (docs/scaling.md): >= 30,000/s sustained on 2 cores; p99 < 1 s at 20,000/s in each of three
    consecutive runs; nothing lost or duplicated."""
    steps: list[tuple[str, Callable[[], dict[str, Any] | None]]] = []
    for n in opts.mqtt_workers:
        steps.append((f"MQTT throughput, {n} workers", functools.partial(mqtt_throughput, opts, workers=n)))
        for i in range(1 if quick else opts.mqtt_latency_repeats):
            steps.append((f"MQTT latency at {opts.latency_rate:,.0f}/s, {n} workers (run {i + 1})",
                          functools.partial(mqtt_latency, opts, opts.latency_rate, workers=n)))
    return steps


# --- OPC UA -------------------------------------------------------------------------------------------------


def _split(machines: int, sims: int) -> list[int]:
    return [machines // sims + (1 if i < machines % sims else 0) for i in range(sims)]


@dataclass
class OpcuaSystem:
    """The PLC simulators and the agent of an OPC UA run, started and connected."""

    dir: Path
    config: Path
    port: int  # the agent's HTTP port (/metrics, /healthz)
    agent: Proc
    sims: dict[str, Proc]
    machines_per_sim: list[int]
    asked_per_s: float
    connect_s: float

    @property
    def machines(self) -> int:
        return sum(self.machines_per_sim)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Each simulator's own counters (`--bench-stats-file`, rewritten every second): changes, late rounds."""
        return {n: read_json(self.dir / f"{n}-stats.json") or {} for n in self.sims}


def opcua_system(ws: Workspace, opts: Options, period_ms: float,
                 historian: dict[str, Any] | None = None) -> OpcuaSystem:
    """`opts.opcua_tags` Doubles changing every `period_ms` over `opts.opcua_sims` PLC simulator processes, and
    the agent (its historian: SQLite, or the `historian` section given) with every OPC UA source connected."""
    per_sim = _split(opts.opcua_tags // configs.TAGS_PER_MACHINE, opts.opcua_sims)
    ports = [free_port() for _ in per_sim]
    port = free_port()
    config = configs.opcua_config(ws.dir / "factory.yaml", ports, per_sim, ws.dir / "agent", port,
                                  historian=historian)
    sims: dict[str, Proc] = {}
    offset = 0
    for i, (sim_port, count) in enumerate(zip(ports, per_sim, strict=True)):
        name = f"plc-{i + 1}"
        # Started together, waited for below: building a few thousand nodes takes each a few seconds.
        sims[name] = ws.proc(name, [
            "simulate", "plc", "--config", str(config), "--endpoint",
            f"opc.tcp://127.0.0.1:{sim_port}/shopfloor/plc", "--bench-only",
            "--bench-tags", str(count * configs.TAGS_PER_MACHINE), "--bench-offset", str(offset),
            "--bench-period-ms", str(period_ms), "--bench-stats-file", str(ws.dir / f"{name}-stats.json"),
            "--cert-dir", str(ws.dir / "pki")])
        offset += count
    for name, sim in sims.items():
        def ready(sim: Proc = sim) -> bool:
            sim.check()
            return "PLC simulator ready at" in sim.log()

        wait_until(ready, 180, f"{name} ready")
    t_agent = time.monotonic()
    agent = ws.agent(config, port)

    def all_connected() -> bool:
        agent.check()  # a dead agent fails the wait at once, with its log
        return _connected_sources(port) >= len(per_sim)

    wait_until(all_connected, 180, "every OPC UA source connected")
    return OpcuaSystem(ws.dir, config, port, agent, sims, per_sim, opts.opcua_tags * 1000.0 / period_ms,
                       time.monotonic() - t_agent)


def measure(seconds: float, system: OpcuaSystem, meter: CpuMeter, poll: Callable[[], object], poll_every_s: float,
            count: Callable[[], object], count_every_s: float = COUNT_EVERY_S) -> tuple[float, float]:
    """The measuring window: `poll` (latency) every `poll_every_s`, `count` and the CPU meter every
    `count_every_s`, the agent checked alive throughout. Returns the window's (start, end) monotonic times."""
    t0 = time.monotonic()
    count()
    next_count = t0 + count_every_s
    while time.monotonic() - t0 < seconds:
        system.agent.check()
        poll()
        now = time.monotonic()
        if now >= next_count:
            next_count = now + count_every_s
            meter.tick()
            count()
        time.sleep(max(0.0, poll_every_s - (time.monotonic() - now)))
    count()
    return t0, time.monotonic()


def settle_latency(tracker: LatencyTracker, seconds: float, poll_every_s: float) -> dict[str, Any]:
    """After the window: let the points stamped inside it arrive (for at most min(15 s, window)), so a slow
    agent's tail is measured, not cut off; how far behind the slowest sampled series was at the window's end
    and how many were still short after the grace."""
    tracker.until_ns = window_end_ns = time.time_ns()
    behind_at_end = tracker.behind_s(window_end_ns)
    grace = min(15.0, seconds)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and min(tracker.cursor.values()) < window_end_ns:
        tracker.poll()
        time.sleep(poll_every_s)
    unseen = sum(1 for c in tracker.cursor.values() if c < window_end_ns)
    return {"behind_s_at_window_end": round(behind_at_end, 1), "series_unseen_after_grace": unseen,
            "grace_s": grace}


def offered(stats0: dict[str, dict[str, Any]], stats1: dict[str, dict[str, Any]]) -> tuple[float, int]:
    """(changes/s the simulators wrote, rounds they ran late) between two readings of their stats files."""
    rate = 0.0
    late = 0
    for n, a in stats0.items():
        b = stats1.get(n) or {}
        if a and b and b["time"] > a["time"]:
            rate += (b["changes"] - a["changes"]) / (b["time"] - a["time"])
            late += int(b["late_rounds"] - a["late_rounds"])
    return rate, late


def opcua_figures(system: OpcuaSystem, opts: Options, stats: tuple[dict[str, Any], dict[str, Any]],
                  window: tuple[float, float], stored: float, tracker: LatencyTracker, settled: dict[str, Any],
                  cpu: dict[str, float]) -> dict[str, Any]:
    """What every OPC UA scenario reports, whatever its historian."""
    rate, late = offered(*stats)
    lat = tracker.summary()
    return {
        "asked_per_s": round(system.asked_per_s), "offered_per_s": round(rate), "stored_per_s": round(stored),
        "stored_vs_offered": round(stored / rate, 3) if rate else None,
        "sim_late_rounds": late, "simulators": len(system.sims), "machines_per_sim": system.machines_per_sim,
        "tags": opts.opcua_tags, "connect_s": round(system.connect_s, 1), "window_s": round(window[1] - window[0], 1),
        "latency": lat, **settled,
        "outbox_points_at_end": int(metric(system.port, "shopfloor_outbox_depth_points")),
        "agent_cpu_pct": round(cpu["agent"], 1), "agent_peak_rss_mb": round(system.agent.peak_rss_mb(), 1),
        "cpu_pct": _round(cpu),
    }


def opcua(opts: Options, period_ms: float, profile_s: float = 0.0) -> dict[str, Any]:
    """`opts.opcua_tags` Doubles changing every `period_ms` over several PLC simulator processes."""
    asked = opts.opcua_tags * 1000.0 / period_ms
    with Workspace(f"opcua-{int(asked)}", opts.keep) as ws:
        system = opcua_system(ws, opts, period_ms)
        conn = wait_connect(ws.dir / "agent" / "historian.sqlite3")
        counter = RowCounter(conn, "process_value")
        wait_until(lambda: counter.poll() > 0, 60, "process values in the historian")
        time.sleep(opts.opcua_warmup_s)
        # Latency on a 1% sample (t00 of every machine): one cursor per series keeps the reads exact and cheap.
        series = [(cfg_site(system.config), configs.BENCH_LINE, f"m{k:03d}", "t00") for k in range(system.machines)]
        tracker = LatencyTracker(conn, "process_value", ("site", "line", "machine", "name"), series,
                                 after_ns=time.time_ns())
        stats0 = system.stats()
        meter = CpuMeter({"agent": system.agent, **system.sims})
        meter.start()
        t0, t1 = measure(opts.opcua_seconds, system, meter, tracker.poll, 2 * LATENCY_EVERY_S, counter.poll)
        cpu = meter.stop()
        stats1 = system.stats()
        settled = settle_latency(tracker, opts.opcua_seconds, 2 * LATENCY_EVERY_S)
        result: dict[str, Any] = {
            "scenario": f"opcua_{int(round(asked, -3) / 1000)}k",
            "label": f"OPC UA {opts.opcua_tags:,} tags / {period_ms:g} ms -> historian",
            **opcua_figures(system, opts, (stats0, stats1), (t0, t1), counter.rate(t0, t1), tracker, settled, cpu),
            "poll_query_ms_total": round((tracker.query_s + counter.query_s) * 1000),
            "settings": {"publishing_interval_ms": 100, "sampling_ms": 0, "queue_size": 1,
                         "latency_sample": "t00 of every machine"},
        }
        if profile_s > 0:
            result["profile"] = profile.record(system.agent.pid, profile_s, ws.dir / "agent-profile.txt")
            result["profile"]["when"] = "after the measuring window, same load"
        return result


def cfg_site(config: Path) -> str:
    return load_config(config, resolve_secrets=False).site.id
