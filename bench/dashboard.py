"""Dashboard benchmarks: how fast a machine's state change at the PLC shows on the e-board in a real browser, many
live streams held with flat memory, and the board API's latency while they are held.

One system serves all three, each part in its own process as in `make demo`: Mosquitto, the PLC simulator, the
line simulator, the agent (SQLite historian) and the dashboard, on free loopback ports in a temp dir, on one
simulated clock (a Monday 09:00, the day shift) at speed 1.

1. PLC change -> DOM: the line page in headless Chromium with a MutationObserver recording every change of a
   machine tile's `data-state`; the bench forces a machine's board state at the PLC simulator (its `Force` node)
   and matches each write with the first tile change to that state after it. Along the way it also notes when
   the agent's live MQTT topic and a bench SSE client showed the new state, which splits the latency in three.
2. Streams: plain HTTP clients, each on its own thread, hold `/api/v1/stream` open (most on the line, some on
   the overview) while the dashboard's RSS is sampled; every client must keep receiving patches and heartbeats.
3. Board API: while the streams are held, keep-alive clients request the line board and the overview as fast as
   they can; requests/s and latency percentiles.

Nothing is asserted: figures are reported against the targets (PLC -> DOM p95 under 2 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import random
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import paho.mqtt.client as mqtt
import psutil
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from bench import configs
from bench.historian import percentiles
from bench.procs import BenchError, CpuMeter, Proc, http_get, metric, wait_until
from bench.scenarios import Workspace
from simulators.broker import Broker, free_port

SIM_START = "2026-11-23T09:00:00+08:00"  # a Monday 09:00 in the site's zone: the day shift, away from breaks
SIM_NS = "urn:shopfloor:plc-sim"
LINE = "line-1"
TARGET_P95_MS = 2000.0
TARGETS = ("FAULT", "RUNNING")  # forced in turn on each machine
CHANGES_KEPT = 10_000  # the page's record of tile changes is bounded

# Installed on the page after it has rendered: every change of an element's data-state, for elements carrying
# data-machine (tiles; attribute changes and tiles added anew), stamped with the browser's wall clock.
OBSERVER_JS = """
const kept = arguments[0];
window.__benchChanges = [];
const record = (node) => {
  const changes = window.__benchChanges;
  changes.push([performance.timeOrigin + performance.now(), node.getAttribute("data-machine"),
                node.getAttribute("data-state")]);
  if (changes.length > kept) changes.splice(0, changes.length - kept);
};
window.__benchObserver = new MutationObserver((mutations) => {
  for (const m of mutations) {
    if (m.type === "attributes") {
      if (m.target.hasAttribute && m.target.hasAttribute("data-machine") &&
          m.oldValue !== m.target.getAttribute("data-state")) record(m.target);
    } else {
      for (const node of m.addedNodes) {
        if (node.nodeType !== 1) continue;
        if (node.hasAttribute("data-machine") && node.hasAttribute("data-state")) record(node);
        for (const inner of node.querySelectorAll("[data-machine][data-state]")) record(inner);
      }
    }
  }
});
window.__benchObserver.observe(document.body, {subtree: true, childList: true, attributes: true,
                                               attributeFilter: ["data-state"], attributeOldValue: true});
return true;
"""

TILE_STATES_JS = """
const out = {};
for (const node of document.querySelectorAll("[data-machine]")) {
  const id = node.getAttribute("data-machine");
  if (!(id in out)) out[id] = node.getAttribute("data-state");
}
return out;
"""


@dataclass
class DashboardOptions:
    """Sizes and lengths of the dashboard scenarios (`--quick` shortens them)."""

    changes: int = 30                   # forced state changes at the PLC
    gap_s: tuple[float, float] = (1.5, 3.0)  # real seconds between two changes (uniform, seeded)
    grace_s: float = 10.0               # after the last change, how long to wait for the page
    streams: int = 50                   # SSE clients held at once
    overview_streams: int = 10          # of them, on the overview (the rest on the line)
    hold_s: float = 180.0               # how long the streams are held before the API load
    settle_s: float = 5.0               # after every stream has its snapshot, before the first RSS sample
    sample_every_s: float = 5.0         # RSS sampling
    api_clients: int = 8
    api_s: float = 30.0
    kiosk_s: float = 300.0              # a TV page rotating through the lines, its memory sampled
    kiosk_rotate_s: int = 5
    seed: int = 5
    keep: bool = False


# --- the system ---------------------------------------------------------------------------------------------


@dataclass
class _System:
    ws: Workspace
    broker: Broker
    config: Path
    site: str
    machines: list[str]
    endpoint: str
    agent_port: int
    port: int
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def dashboard(self) -> Proc:
        return self.procs["dashboard"]

    def check(self) -> None:
        for proc in self.procs.values():
            proc.check()

    def health(self) -> dict[str, Any]:
        status, body = http_get(self.port, "/api/v1/health")
        doc = json.loads(body) if status == 200 else None
        if not isinstance(doc, dict):
            raise BenchError(f"/api/v1/health answered {status}: {body[:200]}")
        return doc

    def board(self) -> dict[str, Any]:
        status, body = http_get(self.port, f"/api/v1/lines/{LINE}", timeout=10)
        doc = json.loads(body) if status == 200 else None
        if not isinstance(doc, dict):
            raise BenchError(f"/api/v1/lines/{LINE} answered {status}: {body[:200]}")
        return doc


def system_config(path: Path, broker_url: str, opcua_port: int, agent_port: int, data_dir: Path) -> Path:
    """config/factory.yaml pointed at this run's broker, PLC simulator, agent port and data dir (SQLite)."""
    data = yaml.safe_load(configs.FACTORY_YAML.read_text(encoding="utf-8"))
    data["sources"]["opcua"][0]["endpoint"] = f"opc.tcp://127.0.0.1:{opcua_port}/shopfloor/plc"
    for source in data["sources"]["mqtt"]:
        source["url"] = broker_url
    data["agent"].update({"data_dir": str(data_dir), "http_port": agent_port})
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _start(ws: Workspace, prepare: Callable[[Path], None] | None = None) -> _System:
    """The whole system on free ports; `prepare` may change its config file before anything starts."""
    broker = ws.broker()
    opcua_port, agent_port, port = free_port(), free_port(), free_port()
    endpoint = f"opc.tcp://127.0.0.1:{opcua_port}/shopfloor/plc"
    config = system_config(ws.dir / "factory.yaml", broker.url, opcua_port, agent_port, ws.dir / "agent")
    if prepare is not None:
        prepare(config)
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    machines = [m["id"] for ln in data["lines"] if ln["id"] == LINE for m in ln["machines"]]
    system = _System(ws, broker, config, data["site"]["id"], machines, endpoint, agent_port, port)
    anchor = ["--sim-anchor", f"{time.time():.3f}"]  # one clock for every process, whenever each starts
    clock = ["--speed", "1", "--start", SIM_START, *anchor]
    system.procs["plc"] = ws.proc("plc", ["simulate", "plc", "--config", str(config), "--endpoint", endpoint,
                                          *clock, "--sim-timestamps", "--cert-dir", str(ws.dir / "plc-pki")],
                                  ready="PLC simulator ready at", timeout=120)
    agent = system.procs["agent"] = ws.proc("agent", ["agent", "--config", str(config), "--sim-start", SIM_START,
                                                         *anchor])

    def agent_connected() -> bool:
        agent.check()
        return metric(agent_port, "shopfloor_source_connected") >= 2

    wait_until(agent_connected, 60, "the agent's OPC UA and MQTT sources connected")
    system.procs["line"] = ws.proc("line", ["simulate", "line", "--config", str(config), "--mqtt", broker.url,
                                            *clock, "--seed", "11", "--truth-file", str(ws.dir / "line-truth.json")],
                                   ready="line simulator publishing to", timeout=30)
    system.procs["dashboard"] = ws.proc("dashboard", ["dashboard", "--config", str(config), "--port", str(port),
                                                      "--sim-start", SIM_START, *anchor],
                                        ready="shopfloor dashboard: http://", timeout=60)

    def board_live() -> bool:
        system.check()
        tiles = system.board()["machines"]
        return all(tiles[m]["state"] != "OFFLINE" for m in machines)

    wait_until(board_live, 60, f"every machine of {LINE} with a live state on the dashboard", every=0.5)
    return system


# --- forcing states at the PLC simulator --------------------------------------------------------------------


class PlcForces:
    """One OPC UA session to the PLC simulator, on its own event loop thread, writing machines' Force nodes.

    `force` returns time.time() taken just before the write request goes out (inside the loop, after the node
    lookup), so connecting and scheduling are not part of what is timed.
    """

    def __init__(self, endpoint: str) -> None:
        from asyncua import Client

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bench-plc-forces", daemon=True)
        self._thread.start()
        self._client = Client(endpoint, timeout=10)
        self._ns = 0
        self._nodes: dict[str, Any] = {}
        try:
            self._run(self._connect(), 60)
        except BaseException:
            self.close()
            raise

    def _run(self, coro: Any, timeout: float = 20) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    async def _connect(self) -> None:
        await self._client.connect()
        self._ns = await self._client.get_namespace_index(SIM_NS)

    async def _write(self, name: str, value: str) -> float:
        from asyncua import ua

        node = self._nodes.get(name)
        if node is None:
            node = self._nodes[name] = self._client.get_node(f"ns={self._ns};s={name}")
        dv = ua.DataValue(ua.Variant(value, ua.VariantType.String))
        t = time.time()
        await node.write_value(dv)
        return t

    def force(self, line: str, machine: str, state: str) -> float:
        """Force a machine's board state ("" releases it); the wall time just before the write."""
        return float(self._run(self._write(f"{line}.{machine}.Force", state)))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self._client.disconnect(), 10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


# --- server-sent events -------------------------------------------------------------------------------------


class SseClient(threading.Thread):
    """One `/api/v1/stream` client on plain http.client: connects, reads events until stopped, and keeps each
    event's (monotonic time, name); `on_event(name, data, wall time)` sees every event as it arrives."""

    def __init__(self, port: int, scope: str, on_event: Callable[[str, str, float], None] | None = None,
                 name: str = "bench-sse") -> None:
        super().__init__(name=name, daemon=True)
        self.port = port
        self.scope = scope
        self.on_event = on_event
        self.events: list[tuple[float, str]] = []
        self.status: int | None = None
        self.error: str | None = None
        self.closed_by_server = False
        self.bytes = 0
        self.snapshot_at: float | None = None  # monotonic time of the first snapshot
        self.started_at = 0.0
        self._stop_flag = threading.Event()
        self._conn: http.client.HTTPConnection | None = None

    def run(self) -> None:
        self.started_at = time.monotonic()
        try:
            conn = self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            conn.request("GET", f"/api/v1/stream?scope={quote(self.scope, safe='/')}",
                         headers={"Accept": "text/event-stream", "Cache-Control": "no-cache"})
            resp = conn.getresponse()
            self.status = resp.status
            if resp.status != 200:
                self.error = f"HTTP {resp.status}: {resp.read(300).decode(errors='replace')}"
                return
            name, data = "message", []
            while not self._stop_flag.is_set():
                raw = resp.readline()
                if not raw:
                    self.closed_by_server = not self._stop_flag.is_set()
                    return
                self.bytes += len(raw)
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if line:
                    key, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if key == "event":
                        name = value
                    elif key == "data":
                        data.append(value)
                    continue
                if data or name != "message":
                    now = time.monotonic()
                    self.events.append((now, name))
                    if name == "snapshot" and self.snapshot_at is None:
                        self.snapshot_at = now
                    if self.on_event is not None:
                        self.on_event(name, "\n".join(data), time.time())
                name, data = "message", []
        except Exception as exc:
            if not self._stop_flag.is_set():
                self.error = f"{type(exc).__name__}: {exc}"
        finally:
            with contextlib.suppress(Exception):
                if self._conn is not None:
                    self._conn.close()

    def stop(self) -> None:
        self._stop_flag.set()
        conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        """Events between monotonic t0 and t1: counts by name, and the longest silence (from t0 to t1)."""
        inside = [(t, n) for t, n in self.events if t0 <= t < t1]
        counts: dict[str, int] = {}
        for _, n in inside:
            counts[n] = counts.get(n, 0) + 1
        marks = [t0, *(t for t, _ in inside), t1]
        gap = max(b - a for a, b in zip(marks, marks[1:], strict=False))
        return {"counts": counts, "events": len(inside), "max_silence_s": gap}


def _stop_all(clients: list[SseClient]) -> None:
    for c in clients:
        c.stop()
    for c in clients:
        c.join(10)


# --- 1. PLC change -> DOM ------------------------------------------------------------------------------------


class _StateWatch:
    """When each machine of the line got each state, as seen by the agent's live topics and by an SSE client."""

    def __init__(self, site: str) -> None:
        self.site = site
        self.lock = threading.Lock()
        self.live: list[tuple[float, str, str]] = []  # (wall time, machine, state)
        self.sse: list[tuple[float, str, str]] = []
        self._board: dict[str, Any] | None = None
        self._shown: dict[str, str] = {}

    def on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        t = time.time()
        parts = msg.topic.split("/")  # shopfloor/v1/<site>/<line>/<machine>/state
        try:
            state = str(json.loads(msg.payload)["v"])
        except (ValueError, KeyError, TypeError):
            return
        with self.lock:
            self.live.append((t, parts[4], state))

    def on_event(self, name: str, data: str, t: float) -> None:
        from dashboard.hub import apply_patch

        try:
            doc = json.loads(data)
        except ValueError:
            return
        if name == "snapshot":
            self._board = doc.get("board")
        elif name == "patch" and self._board is not None:
            self._board = apply_patch(self._board, doc.get("patch"))
        else:
            return
        machines = (self._board or {}).get("machines") or {}
        with self.lock:
            for mid, tile in machines.items():
                state = str((tile or {}).get("state"))
                if self._shown.get(mid) != state:
                    self._shown[mid] = state
                    self.sse.append((t, mid, state))


def _first_after(seen: list[tuple[float, str, str]], machine: str, state: str, after: float,
                 before: float) -> float | None:
    for t, m, s in seen:
        if m == machine and s == state and after <= t < before:
            return t
    return None


def _clock_offset(driver: Any, rounds: int = 7) -> tuple[float, float]:
    """(browser wall clock - bench wall clock, uncertainty) in seconds, from the round trip with the least
    uncertainty."""
    best = (0.0, float("inf"))
    for _ in range(rounds):
        t0 = time.time()
        browser = float(driver.execute_script("return performance.timeOrigin + performance.now();")) / 1000
        t1 = time.time()
        if (t1 - t0) / 2 < best[1]:
            best = (browser - (t0 + t1) / 2, (t1 - t0) / 2)
    return best


class _TreeCpu:
    """CPU seconds of a process and all its descendants (Chromium is a dozen processes under chromedriver)."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.seen: dict[int, float] = {}

    def read(self) -> float:
        with contextlib.suppress(psutil.Error):
            for proc in [self.root, *self.root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = proc.cpu_times()
                    self.seen[proc.pid] = float(t.user + t.system)
        return sum(self.seen.values())  # a child that exited keeps its last figure


def latency(system: _System, opts: DashboardOptions) -> dict[str, Any]:
    from simulators.browser import chromium

    rng = random.Random(opts.seed)
    watch = _StateWatch(system.site)
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-dashboard-{free_port()}")
    sub.on_message = watch.on_message
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe(f"shopfloor/v1/{system.site}/{LINE}/+/state", qos=0)
    sub.connect("127.0.0.1", system.broker.port)
    sub.loop_start()
    probe = SseClient(system.port, f"line/{LINE}", watch.on_event, name="bench-sse-probe")
    probe.start()
    driver: Any = None
    forces: PlcForces | None = None
    meter = CpuMeter(system.procs)
    try:
        driver = chromium()
        browser = _TreeCpu(driver.service.process.pid)
        t_load = time.monotonic()
        driver.get(f"http://127.0.0.1:{system.port}/lines/{LINE}")

        def tiles_live() -> dict[str, str] | None:
            system.check()
            states = driver.execute_script(TILE_STATES_JS) or {}
            ok = all(states.get(m) not in (None, "", "OFFLINE") for m in system.machines)
            return states if ok else None

        first_states = wait_until(tiles_live, 60, f"the {LINE} page showing every machine's live state", every=0.2)
        page_ready_s = time.monotonic() - t_load
        driver.execute_script(OBSERVER_JS, CHANGES_KEPT)
        offset0, unc0 = _clock_offset(driver)
        forces = PlcForces(system.endpoint)
        meter.start()
        browser_cpu0, t_cpu0 = browser.read(), time.monotonic()
        writes: list[dict[str, Any]] = []
        for i in range(opts.changes):
            machine = system.machines[i % len(system.machines)]
            shown = (driver.execute_script(TILE_STATES_JS) or {}).get(machine)
            # FAULT and RUNNING in turn; never the state the tile already shows, or nothing would change
            target = TARGETS[0] if shown != TARGETS[0] else TARGETS[1]
            t = forces.force(LINE, machine, target)
            writes.append({"t": t, "machine": machine, "state": target, "shown_before": shown})
            meter.tick()
            browser.read()
            system.check()
            time.sleep(rng.uniform(*opts.gap_s))

        def all_seen() -> bool:
            changes = driver.execute_script("return window.__benchChanges.length;")
            seen = driver.execute_script("return window.__benchChanges.slice(-50);") or []
            last = writes[-1]
            return bool(changes) and any(c[1] == last["machine"] and c[2] == last["state"]
                                         and c[0] / 1000 - offset0 >= last["t"] for c in seen)

        with contextlib.suppress(BenchError):
            wait_until(all_seen, opts.grace_s, "the page showing the last change", every=0.2)
        time.sleep(0.5)
        cpu = meter.stop()
        cpu["chromium"] = 100 * (browser.read() - browser_cpu0) / (time.monotonic() - t_cpu0)
        changes = driver.execute_script("return window.__benchChanges;") or []
        offset1, unc1 = _clock_offset(driver)
        for machine in system.machines:
            forces.force(LINE, machine, "")  # release: the machines run on by themselves again
    finally:
        if forces is not None:
            forces.close()
        if driver is not None:
            driver.quit()
        probe.stop()
        probe.join(10)
        sub.loop_stop()
        with contextlib.suppress(Exception):
            sub.disconnect()

    # Browser times onto the bench's clock with the offset measured before the changes (drift shown apart).
    dom = [(float(t) / 1000 - offset0, str(m), str(s)) for t, m, s in changes]
    with watch.lock:
        live, sse = list(watch.live), list(watch.sse)
    rows: list[dict[str, Any]] = []
    end = time.time() + 1e9
    for k, w in enumerate(writes):
        nxt = next((x["t"] for x in writes[k + 1:] if x["machine"] == w["machine"]), end)
        t_dom = _first_after(dom, w["machine"], w["state"], w["t"] - 0.05, nxt)
        t_live = _first_after(live, w["machine"], w["state"], w["t"], nxt)
        t_sse = _first_after(sse, w["machine"], w["state"], w["t"], nxt)

        def ms(t: float | None, w: dict[str, Any] = w) -> float | None:
            return None if t is None else round(1000 * (t - w["t"]), 1)

        rows.append({"machine": w["machine"], "state": w["state"], "shown_before": w["shown_before"],
                     "live_topic_ms": ms(t_live), "sse_ms": ms(t_sse), "dom_ms": ms(t_dom)})
    dom_ms = [r["dom_ms"] for r in rows if r["dom_ms"] is not None]
    stage = {}
    for key in ("live_topic_ms", "sse_ms", "dom_ms"):
        values = [r[key] for r in rows if r[key] is not None]
        stage[key] = round(statistics.median(values), 1) if values else None
    stats = percentiles(dom_ms)
    return {
        "changes": len(writes), "matched": len(dom_ms), "missed": len(writes) - len(dom_ms),
        "p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"], "max_ms": stats["max_ms"],
        "mean_ms": round(statistics.fmean(dom_ms), 1) if dom_ms else None,
        "target_p95_ms": TARGET_P95_MS, "median_stage_ms": stage,
        "live_topic_missed": sum(r["live_topic_ms"] is None for r in rows),
        "sse_missed": sum(r["sse_ms"] is None for r in rows),
        "dom_changes_recorded": len(changes), "page_ready_s": round(page_ready_s, 1),
        "first_states": first_states,
        "clock_offset_ms": {"before": round(1000 * offset0, 2), "after": round(1000 * offset1, 2),
                            "uncertainty": round(1000 * max(unc0, unc1), 2)},
        "cpu_pct": {k: round(v, 1) for k, v in cpu.items()},
        "probe_error": probe.error, "writes": rows,
    }


# --- 2. streams held, 3. board API under load ---------------------------------------------------------------


def _slope_mb_per_h(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) samples, in MB per hour."""
    if len(samples) < 3:
        return None
    ts = [t for t, _ in samples]
    ys = [y for _, y in samples]
    tm, ym = statistics.fmean(ts), statistics.fmean(ys)
    den = sum((t - tm) ** 2 for t in ts)
    if den == 0:
        return None
    return 3600 * sum((t - tm) * (y - ym) for t, y in zip(ts, ys, strict=True)) / den


def _window_stats(clients: list[SseClient], t0: float, t1: float) -> dict[str, Any]:
    """Events the clients received between t0 and t1 (all of them, and per scope: line or overview)."""
    out = _stats_of(clients, t0, t1)
    for kind in ("line", "overview"):
        some = [c for c in clients if c.scope.split("/")[0] == kind]
        if some:
            out[kind] = _stats_of(some, t0, t1)
    return out


def _stats_of(clients: list[SseClient], t0: float, t1: float) -> dict[str, Any]:
    per = [c.window(t0, t1) for c in clients]
    beats = [p["counts"].get("heartbeat", 0) for p in per]
    patches = [p["counts"].get("patch", 0) for p in per]
    events = [p["events"] for p in per]
    silences = [p["max_silence_s"] for p in per]
    return {"seconds": round(t1 - t0, 1), "events_min": min(events), "events_median": statistics.median(events),
            "patches_min": min(patches), "patches_median": statistics.median(patches),
            "heartbeats_min": min(beats), "heartbeats_median": statistics.median(beats),
            "snapshots_after_first": sum(p["counts"].get("snapshot", 0) for p in per),
            "max_silence_s": round(max(silences), 2), "silent_clients": sum(e == 0 for e in events)}


class _ApiLoad:
    """`clients` keep-alive HTTP clients requesting the line board and the overview in turn."""

    PATHS = (f"/api/v1/lines/{LINE}", "/api/v1/overview")

    def __init__(self, port: int, clients: int) -> None:
        self.port = port
        self.clients = clients
        self.times: dict[str, list[float]] = {p: [] for p in self.PATHS}
        self.errors: list[str] = []
        self.bytes = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def _client(self, k: int) -> None:
        conn: http.client.HTTPConnection | None = None
        i = k
        local: dict[str, list[float]] = {p: [] for p in self.PATHS}
        errors: list[str] = []
        size = 0
        while not self._stop.is_set():
            path = self.PATHS[i % len(self.PATHS)]
            i += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                t0 = time.perf_counter()
                conn.request("GET", path, headers={"Accept": "application/json"})
                resp = conn.getresponse()
                body = resp.read()
                elapsed = 1000 * (time.perf_counter() - t0)
                if resp.status != 200:
                    errors.append(f"{path}: HTTP {resp.status}")
                    continue
                local[path].append(elapsed)
                size += len(body)
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"{path}: {type(exc).__name__}: {exc}")
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()
        with self._lock:
            for p, values in local.items():
                self.times[p] += values
            self.errors += errors
            self.bytes += size

    def run(self, seconds: float, during: Callable[[], None]) -> float:
        threads = [threading.Thread(target=self._client, args=(k,), name=f"bench-api-{k}", daemon=True)
                   for k in range(self.clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        deadline = t0 + seconds
        while time.monotonic() < deadline:
            during()
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        self._stop.set()
        for t in threads:
            t.join(40)
        return time.monotonic() - t0


def streams_and_api(system: _System, opts: DashboardOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    dash = system.dashboard
    # The browser and the probe of part 1 are gone: a stream ends at the server when its next write fails.
    with contextlib.suppress(BenchError):
        wait_until(lambda: system.health()["streams"] == 0, 15, "the dashboard to drop part 1's streams")
    streams_before = system.health()["streams"]
    rss_before = dash.rss_mb()
    scopes = ["overview"] * opts.overview_streams + [f"line/{LINE}"] * (opts.streams - opts.overview_streams)
    clients = [SseClient(system.port, scope, name=f"bench-sse-{k}") for k, scope in enumerate(scopes)]
    api: dict[str, Any] = {}
    try:
        t_open = time.monotonic()
        for c in clients:
            c.start()

        def all_snapshots() -> bool:
            failed = [c for c in clients if c.error or c.closed_by_server]
            if failed:
                raise BenchError(f"{len(failed)} of {len(clients)} streams failed: {failed[0].error or 'closed'}")
            return all(c.snapshot_at is not None for c in clients)

        wait_until(all_snapshots, 60, f"{len(clients)} streams with their first snapshot", every=0.05)
        connect_s = [c.snapshot_at - t_open for c in clients if c.snapshot_at is not None]
        all_connected_s = max(connect_s)
        time.sleep(opts.settle_s)
        health_held = system.health()

        meter = CpuMeter(system.procs)
        samples: list[tuple[float, float]] = []
        t0 = time.monotonic()
        meter.start()
        deadline = t0 + opts.hold_s
        while True:
            now = time.monotonic()
            samples.append((now - t0, dash.rss_mb()))
            meter.tick()
            system.check()
            if now >= deadline:
                break
            time.sleep(min(opts.sample_every_s, max(0.0, deadline - time.monotonic())))
        t1 = time.monotonic()
        cpu = meter.stop()
        health_end = system.health()
        hold = _window_stats(clients, t0, t1)
        slope = _slope_mb_per_h(samples)
        # The first minutes include warm-up (caches filling); the second half's slope is closer to the long run.
        late = _slope_mb_per_h([x for x in samples if x[0] >= samples[-1][0] / 2])
        streams = {
            "clients": len(clients), "scopes": {"line": opts.streams - opts.overview_streams,
                                                "overview": opts.overview_streams},
            "held_s": round(t1 - t0, 1), "connect_p50_ms": round(1000 * statistics.median(connect_s), 1),
            "all_connected_s": round(all_connected_s, 2),
            "rss_before_mb": round(rss_before, 1), "rss_start_mb": round(samples[0][1], 1),
            "rss_end_mb": round(samples[-1][1], 1), "rss_max_mb": round(max(y for _, y in samples), 1),
            "rss_slope_mb_per_h": None if slope is None else round(slope, 1),
            "rss_slope_second_half_mb_per_h": None if late is None else round(late, 1),
            "per_stream_kb": round(1024 * (samples[0][1] - rss_before) / len(clients), 1),
            "rss_samples": [(round(t, 1), round(y, 1)) for t, y in samples],
            "dashboard_cpu_pct": round(cpu["dashboard"], 1),
            "cpu_pct": {k: round(v, 1) for k, v in cpu.items()},
            "health_streams_before": streams_before, "health_streams_held": health_held["streams"],
            "health_streams_end": health_end["streams"], "rebuilds": health_end.get("rebuilds"),
            "history_reads": health_end.get("history_reads"),
            "events": hold,
            "errors": sorted({c.error for c in clients if c.error}),
            "closed_by_server": sum(c.closed_by_server for c in clients),
        }

        load = _ApiLoad(system.port, opts.api_clients)
        meter = CpuMeter(system.procs)
        meter.start()
        rss_load_start = dash.rss_mb()
        a0 = time.monotonic()
        def watch() -> None:
            meter.tick()
            system.check()

        wall = load.run(opts.api_s, watch)
        a1 = time.monotonic()
        cpu = meter.stop()
        everything = [v for values in load.times.values() for v in values]
        stats = percentiles(everything)
        api = {
            "clients": opts.api_clients, "seconds": round(wall, 1), "requests": len(everything),
            "requests_per_s": round(len(everything) / wall, 1), "p50_ms": stats["p50_ms"],
            "p99_ms": stats["p99_ms"], "max_ms": stats["max_ms"], "errors": len(load.errors),
            "error_examples": sorted(set(load.errors))[:5],
            "kb_per_request": round(load.bytes / 1024 / max(1, len(everything)), 1),
            "per_path": {p: {"requests": len(v), **percentiles(v)} for p, v in load.times.items()},
            "streams_held": system.health()["streams"],
            "stream_events_during": _window_stats(clients, a0, a1),
            "rss_start_mb": round(rss_load_start, 1), "rss_end_mb": round(dash.rss_mb(), 1),
            "dashboard_cpu_pct": round(cpu["dashboard"], 1), "cpu_pct": {k: round(v, 1) for k, v in cpu.items()},
        }
    finally:
        _stop_all(clients)
    with contextlib.suppress(BenchError):
        wait_until(lambda: system.health()["streams"] == 0, 15, "the dashboard to drop the closed streams")
    streams["health_streams_after_close"] = system.health()["streams"]
    streams["rss_after_close_mb"] = round(dash.rss_mb(), 1)
    return streams, api


# --- a TV left on ---------------------------------------------------------------------------------------------


def kiosk_memory(system: _System, opts: DashboardOptions) -> dict[str, Any]:
    """The kiosk page rotating through the lines: the browser's JS heap (after a forced GC), DOM nodes, event
    listeners and documents, sampled every 15 s. A page that keeps something per update or per rotation grows."""
    from simulators.browser import chromium

    driver = chromium()
    samples: list[dict[str, float]] = []
    try:
        driver.get(f"http://127.0.0.1:{system.port}/kiosk?rotate={opts.kiosk_rotate_s}&lang=zh-CN")
        driver.execute_cdp_cmd("Performance.enable", {})
        t0 = time.monotonic()
        while True:
            driver.execute_cdp_cmd("HeapProfiler.collectGarbage", {})
            m = {x["name"]: x["value"] for x in driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]}
            samples.append({"t": time.monotonic() - t0, "heap_mb": m["JSHeapUsedSize"] / 1e6, "nodes": m["Nodes"],
                            "listeners": m["JSEventListeners"], "documents": m["Documents"]})
            if time.monotonic() - t0 >= opts.kiosk_s:
                break
            time.sleep(min(15.0, max(0.5, opts.kiosk_s / 20)))
    finally:
        driver.quit()
    warm = [x for x in samples if x["t"] >= 30] or samples  # the first rotations fill the page once
    heap = [x["heap_mb"] for x in warm]
    return {"seconds": round(samples[-1]["t"]), "rotate_s": opts.kiosk_rotate_s,
            "rotations": int(samples[-1]["t"] // opts.kiosk_rotate_s), "samples": len(samples),
            "heap_mb_first": round(heap[0], 2), "heap_mb_last": round(heap[-1], 2), "heap_mb_max": round(max(heap), 2),
            "heap_slope_mb_per_h": _slope_mb_per_h([(x["t"], x["heap_mb"]) for x in warm]),
            "nodes_min": int(min(x["nodes"] for x in warm)), "nodes_max": int(max(x["nodes"] for x in warm)),
            "listeners_max": int(max(x["listeners"] for x in warm)),
            "documents_max": int(max(x["documents"] for x in warm))}


# --- the whole run -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _part(errors: dict[str, str], name: str) -> Iterator[None]:
    """Run one part; a BenchError or a failure of its own is recorded so the other parts still run."""
    try:
        yield
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        import traceback

        traceback.print_exc()
        errors[name] = f"{type(exc).__name__}: {exc}"[:500]


def run(opts: DashboardOptions) -> dict[str, Any]:
    """Start the system once and run the three parts on it."""
    errors: dict[str, str] = {}
    result: dict[str, Any] = {"scenario": "dashboard", "label": f"dashboard ({LINE}, speed 1)"}
    result["load_average_before"] = [round(x, 2) for x in os.getloadavg()]  # other work on the machine
    with Workspace("dashboard", opts.keep) as ws:
        t0 = time.monotonic()
        system = _start(ws)
        result["startup_s"] = round(time.monotonic() - t0, 1)
        print(f"  system up in {result['startup_s']} s; PLC -> DOM latency, {opts.changes} changes ...", flush=True)
        with _part(errors, "latency"):
            result["latency"] = latency(system, opts)
        system.check()
        print(f"  {opts.streams} streams held {opts.hold_s:.0f} s, then {opts.api_clients} API clients "
              f"{opts.api_s:.0f} s ...", flush=True)
        with _part(errors, "streams"):
            result["streams"], result["api"] = streams_and_api(system, opts)
        system.check()
        print(f"  a kiosk page rotating every {opts.kiosk_rotate_s} s for {opts.kiosk_s:.0f} s ...", flush=True)
        with _part(errors, "kiosk"):
            result["kiosk"] = kiosk_memory(system, opts)
        system.check()
        result["dashboard_peak_rss_mb"] = round(system.dashboard.peak_rss_mb(), 1)
        result["log_warnings"] = _warnings(system.dashboard)
        result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    if errors:
        result["errors"] = errors
    result["settings"] = {"sim_start": SIM_START, "speed": 1, "line": LINE, "changes": opts.changes,
                          "gap_s": f"{opts.gap_s[0]}-{opts.gap_s[1]}", "streams": opts.streams,
                          "overview_streams": opts.overview_streams, "hold_s": opts.hold_s,
                          "sample_every_s": opts.sample_every_s, "api_clients": opts.api_clients,
                          "api_s": opts.api_s, "kiosk_s": opts.kiosk_s, "seed": opts.seed}
    return result


def _warnings(proc: Proc) -> list[str]:
    """The dashboard's WARNING and ERROR log lines (at most 10, each cut to 200 characters)."""
    lines = [ln for ln in proc.log().splitlines() if " WARNING " in ln or " ERROR " in ln or "Traceback" in ln]
    return [ln[:200] for ln in lines[:10]]
