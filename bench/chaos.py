"""`python -m bench.chaos`: the chaos suite. Each fault is done to a running system of real processes on loopback
(Mosquitto, the PLC and line simulators, the agent, InfluxDB, the sync job and the platform simulator), and what
the simulators produced is then compared with what was stored.

Faults: InfluxDB down; the broker stopped and started again; the PLC restarted (its counters start again from
zero, as a PLC's do after a power cycle); the agent killed with SIGKILL and started again; the outbox over its disk
quota while InfluxDB is down; the SQLite historian's disk full (its file on a tmpfs filled to the last bytes, then
space freed); the edge PC's clock jumping back an hour, then a day forward, then back to the true time; the
platform down while the sync job pushes capacity events.

Per fault the table gives: how long the fault lasted; what was produced (the line simulator's acknowledged valid
messages, one event point each, and the PLC simulator's true counts, in pieces; for the push, the capacity events
the sync job committed); what was stored (read back from the historian, or what the platform accepted); the
points the agent dropped over its quota (its `shopfloor_outbox_dropped_points` metric; 0 unless the quota was
reached); loss = produced - stored - dropped, which must be 0 (a negative loss is a duplicate); and the recovery
time: from the end of the fault until every source is connected again, the outbox is empty and the historian
has taken new points (for the push, until the platform holds every event).

    python -m bench.chaos            # every fault, 30 s each: about 10 minutes
    python -m bench.chaos --short    # every fault, 5 s each
    python -m bench.chaos --only disk_full clock_jump --record

The historian's full disk is a tmpfs mounted for the run: it needs root (otherwise that fault is an error row).
SHOPFLOOR_CHAOS_TRACE=1 prints when each phase of a run ends.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from asyncua import ua

from agent.config import load
from agent.sinks.influx import InfluxHistorian
from bench import report
from simulators.broker import Broker, free_port
from simulators.faults import FaultProxy
from simulators.harness import wait_until
from simulators.influxdb import InfluxServer

# The end-to-end tests' harness (System, Proc, plc_set, plc_truth), imported by name: mypy checks bench, not the
# test suite it would otherwise follow into.
e2e: Any = importlib.import_module("tests.e2e.conftest")
Proc: Any = e2e.Proc
System: Any = e2e.System
plc_set, plc_truth = e2e.plc_set, e2e.plc_truth

EVENT_MEASUREMENTS = ("operator_event", "andon_event", "material_level", "material_event", "order_event")
T_MIN, T_MAX = 946_684_800 * 10**9, 7_258_118_400 * 10**9
PLC_SPEED = 120  # simulated seconds per second: hundreds of pieces a minute, below the presses' half rollover
LINE_SPEED = 120
WARM_S = 3.0  # production before the first fault
TAIL_S = 3.0  # and after the last one
READY_S = 90.0  # how long a process may take to start: the machine this runs on is often shared
START, END = "<!-- bench:chaos:start (rewritten by `python -m bench.chaos --record`) -->", "<!-- bench:chaos:end -->"
MARK = START.split(" (")[0]


class ChaosError(RuntimeError):
    """A fault could not be run (a process did not start, a mount failed); the message says which."""


@dataclass
class Outcome:
    """One fault's row. Events and pieces are None where that kind of data was not produced in the run."""

    fault: str
    title: str
    duration_s: float
    events_produced: int | None = None
    events_stored: int | None = None
    pieces_produced: int | None = None
    pieces_stored: int | None = None
    dropped: int = 0
    recovery_s: float | None = None
    notes: list[str] = field(default_factory=list)
    mismatches: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def loss(self) -> int | None:
        if self.error:
            return None
        events = (self.events_produced or 0) - (self.events_stored or 0)
        pieces = (self.pieces_produced or 0) - (self.pieces_stored or 0)
        return events + pieces - self.dropped

    @property
    def ok(self) -> bool:
        return self.error is None and self.loss == 0 and not self.mismatches and self.recovery_s is not None


# --- reading back what was stored ------------------------------------------------------------------------


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _rows(self, query: str) -> list[tuple[Any, ...]]:
        return list(e2e.historian_rows(self.path, query))

    def counts(self) -> dict[tuple[str, str], int]:
        return {(m, c): int(s) for m, c, s in
                self._rows("SELECT machine, counter, SUM(delta) FROM machine_count GROUP BY machine, counter")}

    def events(self) -> dict[str, int]:
        return {m: int(self._rows(f"SELECT COUNT(*) FROM {m}")[0][0]) if self._rows(
            f"SELECT name FROM sqlite_master WHERE name='{m}'") else 0 for m in EVENT_MEASUREMENTS}


class InfluxStore:
    def __init__(self, url: str, database: str) -> None:
        self.historian = InfluxHistorian(url, database=database)

    def counts(self) -> dict[tuple[str, str], int]:
        return {(b.machine, b.counter): b.delta for b in self.historian.count_sums(T_MIN, T_MAX, 10**9)}

    def events(self) -> dict[str, int]:
        return {m: len(self.historian.events(m, T_MIN, T_MAX)) for m in EVENT_MEASUREMENTS}


# --- one run --------------------------------------------------------------------------------------------


class Run:
    """Broker, simulators and agent for one run, in a temp dir of its own. `configure` writes the config (after
    the steps' setup, which may start servers the config names)."""

    def __init__(self, tmp: Path, plc: bool = True) -> None:
        self.tmp = tmp
        self.broker = Broker(port=free_port(), data_dir=tmp / "broker")
        self.with_plc = plc
        self.store: SqliteStore | InfluxStore = SqliteStore(tmp / "agent" / "historian.sqlite3")
        self.agent: Any = None
        self.plc: Any = None
        self.line: Any = None
        self.offset_file: Path | None = None
        self.mount: Path | None = None
        self.influx: InfluxServer | None = None
        self.proxy: FaultProxy | None = None
        self.truth_before: dict[tuple[str, str], int] = {}
        self.seen: dict[str, Any] = {}
        self._system: Any = None
        self.cfg: Any = None

    @property
    def system(self) -> Any:
        if self._system is None:
            raise ChaosError("the run is not configured yet")
        return self._system

    def configure(self, change: Callable[[dict[str, Any]], None]) -> None:
        self._system = System(self.tmp, self.broker, change)
        self.cfg = load(self._system.config)

    def start_agent(self, name: str = "agent") -> Any:
        system = self.system
        proc = Proc(name, ["agent", "--config", str(system.config)], self.tmp)
        if self.offset_file is not None:  # the agent on a clock the suite can jump (bench/chaos_clock.py)
            proc.argv = [sys.executable, "-m", "bench.chaos_clock", str(self.offset_file), *proc.argv[3:]]
        proc.start()
        system.procs.append(proc)
        wait_until(lambda: not proc.running or system.http("/metrics")[0] == 200, READY_S, f"{name} /metrics")
        if not proc.running:
            raise ChaosError(f"{name} exited: {proc.log()[-2000:]}")
        self.agent = proc
        return proc

    def start_plc(self, name: str = "plc") -> Any:
        """The OPC UA PLC simulator (as the end-to-end tests start it), paused: Sim.Running starts production."""
        system = self.system
        proc = Proc(name, ["simulate", "plc", "--config", str(system.config), "--endpoint", system.endpoint,
                           "--speed", str(PLC_SPEED), "--start", e2e.SIM_START, "--cert-dir",
                           str(self.tmp / "plc-pki"), "--paused"], self.tmp)
        system.procs.append(proc)
        self.plc = proc.start(ready="PLC simulator ready at", timeout=READY_S)
        return proc

    def start(self, line_args: Sequence[str] = ()) -> None:
        self.broker.start()
        if self.with_plc:
            self.start_plc()
            _trace("PLC ready")
        self.start_agent()
        _trace("agent ready")
        if self.with_plc:
            wait_until(lambda: len(self.store.counts()) == 18, READY_S, "the first reading of all 18 counters")
            _trace("18 counters read")
            plc_set(self.system.endpoint, "Sim.Running", True, ua.VariantType.Boolean)
        # runs until stopped (SIGTERM: it writes its truth and exits 0 once the broker acknowledged everything)
        line = Proc("line", ["simulate", "line", "--config", str(self.system.config), "--mqtt", self.broker.url,
                             "--truth-file", str(self.tmp / "line-truth.json"), "--speed", str(LINE_SPEED),
                             "--seed", "11", "--duration", "3600", *line_args], self.tmp)
        self.system.procs.append(line)
        self.line = line.start(ready="line simulator publishing to", timeout=READY_S)

    def written(self) -> float:
        """Points the running agent has had confirmed by the historian."""
        return float(self.system.metric("shopfloor_points_out_total"))

    def healthy(self) -> bool:
        health = self.system.health()
        return bool(health["outbox"]["points"] == 0 and all(s["connected"] for s in health["sources"].values()))

    def recovery(self, since: float, timeout: float = 180) -> float | None:
        """Seconds from `since` (the end of a fault) until every source is connected, the outbox is empty and
        the historian has taken new points; None when that does not happen within `timeout`."""
        written = self.written()
        try:
            wait_until(lambda: self.healthy() and self.written() > written, timeout,
                       "every source connected, the outbox empty and new points written", every=0.1)
        except AssertionError:
            return None
        return time.monotonic() - since

    def finish(self, out: Outcome) -> Outcome:
        """Stop the line simulator and the plant, and compare the historian with the ground truth."""
        assert self.line is not None
        if self.line.stop(signal.SIGTERM, timeout=60) != 0:
            raise ChaosError(f"the line simulator failed: {self.line.log()[-2000:]}")
        truth: dict[tuple[str, str], int] = {}
        if self.with_plc:
            plc_set(self.system.endpoint, "Sim.Running", False, ua.VariantType.Boolean)
            now = plc_truth(self.system.endpoint, self.cfg)
            truth = {k: now.get(k, 0) + self.truth_before.get(k, 0) for k in set(now) | set(self.truth_before)}
        line_truth = self.system.line_truth()
        expected = {m: int(line_truth["valid"].get(m, 0)) for m in EVENT_MEASUREMENTS}
        dropped = int(self.system.metric("shopfloor_outbox_dropped_points"))

        def settled() -> bool:
            if self.system.health()["outbox"]["points"]:
                return False
            events = self.store.events()
            if dropped == 0 and events != expected:
                return False
            return not self.with_plc or self.store.counts() == truth
        with contextlib.suppress(AssertionError):
            wait_until(settled, 60, "the historian to hold the ground truth")
        stored_events = self.store.events()
        out.events_produced, out.events_stored = sum(expected.values()), sum(stored_events.values())
        out.dropped = int(self.system.metric("shopfloor_outbox_dropped_points"))
        if dropped == 0:
            out.mismatches.update({m: (stored_events.get(m), n) for m, n in expected.items()
                                   if stored_events.get(m) != n})
        if self.with_plc:
            counts = self.store.counts()
            out.pieces_produced, out.pieces_stored = sum(truth.values()), sum(counts.get(k, 0) for k in truth)
            out.mismatches.update({f"{m}/{c}": (counts.get((m, c)), n) for (m, c), n in truth.items()
                                   if counts.get((m, c)) != n})
        if out.mismatches:
            out.notes.append("stored != truth for " + ", ".join(f"{k} (stored {v[0]}, truth {v[1]})"
                                                                 for k, v in sorted(out.mismatches.items())))
        dead = self.system.health()["outbox"]["dead_letters"]
        if dead:
            out.notes.append(f"{dead} dead letters")
        return out

    def close(self) -> None:
        if self._system is not None:
            self._system.close()
        self.broker.close()


@dataclass
class Step:
    """A fault done to a running plant: `begin` does it and holds it for the seconds given, `end` undoes it.
    `change` adjusts the config and `setup` the run before anything starts; `cleanup` runs at the very end."""

    name: str
    title: str
    begin: Callable[[Run, float], None]
    end: Callable[[Run], None]
    change: Callable[[dict[str, Any], Run], None] | None = None
    setup: Callable[[Run], None] | None = None
    cleanup: Callable[[Run], None] | None = None
    after: Callable[[Run, Outcome], None] | None = None
    resume: Callable[[Run], None] | None = None  # once recovered: e.g. the restarted PLC's machines start again


def _trace(text: str) -> None:
    if os.environ.get("SHOPFLOOR_CHAOS_TRACE"):
        print(f"  {time.strftime('%H:%M:%S')} {text}", flush=True)


def plant_run(tmp: Path, steps: Sequence[Step], seconds: float, plc: bool = True,
              line_args: Sequence[str] = ()) -> list[Outcome]:
    """Production starts, then each step's fault in turn, `seconds` each, each followed by the wait for the
    recovery; at the end what was stored is compared with what was produced, once for the whole run. One
    outcome per step: the comparison's figures are the run's (all of them, when several steps share a run)."""
    holder: dict[str, Run] = {}

    def change(data: dict[str, Any]) -> None:
        for step in steps:
            if step.change:
                step.change(data, holder["run"])
    run = Run(tmp, plc)
    holder["run"] = run
    outs = [Outcome(s.name, s.title, 0.0) for s in steps]
    try:
        for step in steps:
            if step.setup:
                step.setup(run)
        run.configure(change)
        t0 = time.monotonic()
        run.start(line_args=line_args)
        _trace(f"started in {time.monotonic() - t0:.1f} s")
        time.sleep(WARM_S)
        for step, out in zip(steps, outs, strict=True):
            began = time.monotonic()
            step.begin(run, seconds)
            time.sleep(max(0.0, seconds - (time.monotonic() - began)))
            step.end(run)
            ended = time.monotonic()
            out.duration_s = ended - began
            out.recovery_s = run.recovery(ended)
            _trace(f"{step.name}: recovered in {out.recovery_s} s")
            if step.resume:
                step.resume(run)
        time.sleep(TAIL_S)
        t0 = time.monotonic()
        total = run.finish(Outcome("", "", 0.0))
        _trace(f"compared in {time.monotonic() - t0:.1f} s")
        for step, out in zip(steps, outs, strict=True):
            for name in ("events_produced", "events_stored", "pieces_produced", "pieces_stored", "dropped"):
                setattr(out, name, getattr(total, name))
            out.mismatches = dict(total.mismatches)
            out.notes = list(total.notes)
            if step.after:
                step.after(run, out)
        return outs
    finally:
        run.close()
        for step in steps:
            if step.cleanup:
                step.cleanup(run)


# --- the faults -------------------------------------------------------------------------------------------


def _influx_step(name: str, title: str, quota_mb: float | None = None) -> Step:
    """InfluxDB (behind a fault proxy) as the historian, stopped for the fault: connections refused."""
    def setup(run: Run) -> None:
        run.influx = InfluxServer(run.tmp / "influxdb").start()
        run.influx.create_database("plant")
        run.proxy = FaultProxy(run.influx.url).start()
        run.store = InfluxStore(run.influx.url, "plant")

    def change(data: dict[str, Any], run: Run) -> None:
        assert run.proxy is not None
        data["historian"] = {"kind": "influxdb", "url": run.proxy.url, "database": "plant", "in_flight": 4}
        if quota_mb is not None:
            data["outbox"]["quota_mb"] = quota_mb

    def down(run: Run, seconds: float) -> None:
        assert run.influx is not None and run.proxy is not None
        run.influx.stop()
        run.proxy.stop()

    def up(run: Run) -> None:
        assert run.influx is not None and run.proxy is not None
        run.influx.start()
        run.proxy.start()

    def cleanup(run: Run) -> None:
        if run.proxy is not None:
            run.proxy.stop()
        if run.influx is not None:
            run.influx.stop()
    return Step(name, title, down, up, change, setup, cleanup)


def _broker_down(run: Run, seconds: float) -> None:
    run.broker.stop()


def _broker_up(run: Run) -> None:
    run.broker.start()


def _plc_power_off(run: Run, seconds: float) -> None:
    # The PLC stops producing, then loses power: counts made between the agent's last read and a power cut are
    # gone with the PLC's (non-retentive) counters, on a real PLC too; pausing first keeps the truth exact.
    plc_set(run.system.endpoint, "Sim.Running", False, ua.VariantType.Boolean)
    run.truth_before = plc_truth(run.system.endpoint, run.cfg)
    time.sleep(1.5)  # the agent's subscription takes in the last changes
    assert run.plc is not None
    run.plc.stop(signal.SIGKILL)


def _plc_power_on(run: Run) -> None:
    # Back with its counters at zero, its machines held until the agent is connected again: a counter the
    # agent first reads above its value before the restart looks like progress, not a reset (see the note).
    run.start_plc("plc-2")


def _plc_power_on_running(run: Run) -> None:
    # Back with its counters at zero and its machines producing at once, before the agent is connected again.
    run.start_plc("plc-2")
    _plc_production(run)


def _plc_production(run: Run) -> None:
    plc_set(run.system.endpoint, "Sim.Running", True, ua.VariantType.Boolean)


def _agent_kill(run: Run, seconds: float) -> None:
    assert run.agent is not None
    run.agent.stop(signal.SIGKILL)


def _agent_start(run: Run) -> None:
    run.start_agent(f"agent-{len([p for p in run.system.procs if p.name.startswith('agent')]) + 1}")


def _disk_setup(run: Run) -> None:
    if os.geteuid() != 0:
        raise ChaosError("disk_full mounts a tmpfs: run as root")
    run.mount = run.tmp / "historian-fs"
    run.mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(run.mount)], check=True,
                   capture_output=True)
    run.store = SqliteStore(run.mount / "historian.sqlite3")


def _disk_change(data: dict[str, Any], run: Run) -> None:
    assert run.mount is not None
    data["historian"] = {"kind": "sqlite", "path": str(run.mount / "historian.sqlite3"), "retention_days": 400}


def _disk_fill(run: Run, seconds: float) -> None:
    assert run.mount is not None
    # Filled to the last block, as a disk fills up: the agent writes beside the ballast meanwhile, so no size
    # taken up front is exact.
    chunk = b"\0" * (1024 * 1024)
    with (run.mount / "ballast").open("wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) <= 4096:
                    break
                chunk = chunk[: len(chunk) // 4]
    error = wait_until(lambda: run.system.health()["historian"].get("last_error"), max(10.0, seconds),
                       "the agent to report the full disk")
    run.seen["historian_error"] = str(error)


def _disk_free(run: Run) -> None:
    assert run.mount is not None
    (run.mount / "ballast").unlink()


def _disk_cleanup(run: Run) -> None:
    if run.mount is not None:
        subprocess.run(["umount", "-l", str(run.mount)], check=False, capture_output=True)


def _disk_after(run: Run, out: Outcome) -> None:
    if "historian_error" in run.seen:
        reported = run.seen["historian_error"].rsplit(": ", 1)[-1]  # the message, without the temp dir's path
        out.notes.append(f"the agent reported: {reported}")


def _clock_setup(run: Run) -> None:
    run.offset_file = run.tmp / "clock-offset"
    run.offset_file.write_text("0\n")


def _clock_probe(run: Run, label: str) -> None:
    """What the agent's clock reads now: a message that is not JSON, which the agent keeps as a dead letter
    stamped with its own clock; the offset from the true time is kept in `run.seen["clock"]`."""
    from paho.mqtt import publish

    payload = f"chaos clock probe {label}".encode()
    sent = time.time_ns()
    publish.single("line/line-1/chaos-probe/andon", payload, qos=1, hostname="127.0.0.1", port=run.broker.port)
    rows = wait_until(lambda: run.system.outbox_sql("SELECT received_ns FROM dead_letter WHERE payload = ?", payload),
                      15, f"the clock probe {label!r} as a dead letter")
    run.seen.setdefault("clock", {})[label] = (int(rows[0][0]) - sent) / 1e9


def _clock_jumps(run: Run, seconds: float) -> None:
    assert run.offset_file is not None
    began = time.monotonic()
    run.offset_file.write_text("-3600\n")
    time.sleep(0.5)  # the agent reads the offset every 0.2 s
    _clock_probe(run, "1 h back")
    time.sleep(max(0.0, seconds / 2 - (time.monotonic() - began)))
    run.offset_file.write_text("86400\n")
    time.sleep(0.5)
    _clock_probe(run, "1 day ahead")


def _clock_true(run: Run) -> None:
    assert run.offset_file is not None
    run.offset_file.write_text("0\n")


def _clock_after(run: Run, out: Outcome) -> None:
    """Proof that the agent's clock did jump: the probes it stamped, an hour back and a day ahead."""
    read = run.seen.get("clock", {})
    out.notes.append("the agent's clock read " + ", ".join(f"{v / 3600:+.2f} h ({k})" for k, v in read.items())
                     + f"; its {len(read)} probes are the dead letters")


STEPS: dict[str, Step] = {
    "influx_outage": _influx_step("influx_outage", "InfluxDB outage"),
    "broker_restart": Step("broker_restart", "MQTT broker down, then restarted", _broker_down,
                           _broker_up),
    "plc_restart": Step("plc_restart", "PLC power cycle (counters restart from 0)", _plc_power_off, _plc_power_on,
                        resume=_plc_production),
    "plc_restart_running": Step("plc_restart_running", "PLC power cycle, machines producing before the agent is back",
                                _plc_power_off, _plc_power_on_running),
    "agent_sigkill": Step("agent_sigkill", "agent killed (SIGKILL), restarted", _agent_kill, _agent_start),
    "disk_full": Step("disk_full", "historian disk full (SQLite on a 64 MB tmpfs)", _disk_fill, _disk_free,
                      _disk_change, _disk_setup, _disk_cleanup, _disk_after),
    "clock_jump": Step("clock_jump", "edge clock 1 h back, then 1 day ahead, then true", _clock_jumps, _clock_true,
                       setup=_clock_setup, after=_clock_after),
}


def quota(tmp: Path, seconds: float) -> Outcome:
    """MQTT only (no PLC: every point in the outbox is then an event, so the dropped points are events), InfluxDB
    down, and an outbox quota of 64 KB that the line's messages outgrow."""
    def mqtt_only(data: dict[str, Any], run: Run) -> None:
        for kind in ("opcua", "modbus", "s7"):
            data["sources"].pop(kind, None)
        for line in data["lines"]:
            line["machines"] = []
    step = _influx_step("quota", "outbox quota reached (InfluxDB down, 64 KB quota)", quota_mb=0.0625)
    influx_change = step.change
    assert influx_change is not None

    def change(data: dict[str, Any], run: Run) -> None:
        mqtt_only(data, run)
        influx_change(data, run)
    step.change = change
    (out,) = plant_run(tmp, [step], seconds, plc=False, line_args=("--speed", str(LINE_SPEED * 5)))
    if out.dropped == 0:
        out.notes.append("the quota was not reached: lengthen the fault")
    return out


SHORT = ("clock_jump", "disk_full", "broker_restart")


def short_combined(tmp: Path, seconds: float, names: Sequence[str] = SHORT) -> list[Outcome]:
    """`make test`'s form: one plant, on the SQLite historian's tmpfs and the agent's jumping clock, through the
    clock jumps, a full disk and a broker restart in turn (one start, one comparison). The agent's SIGKILL has
    end-to-end tests of its own (test_mqtt_flow, test_opcua_flow, test_influx_outage)."""
    return plant_run(tmp, [STEPS[n] for n in names], seconds)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = resp.read()
    return json.loads(body) if url.endswith(("/state", "/healthz")) else body.decode()


def platform_outage(tmp: Path, seconds: float) -> Outcome:
    """`shopfloor sync` pushes capacity every 1.2 s to the platform simulator, which is stopped and started
    again (with its state file) meanwhile. Produced: the events the sync job committed
    (`shopfloor_push_events_total`); stored: the events the platform accepted once each."""
    secret = tmp / "platform-secret"
    secret.write_text("whsec_" + base64.b64encode(b"a-key-for-the-chaos-suite-0001").decode())
    platform_port, sync_port = free_port(), free_port()
    platform_argv = ["simulate", "platform", "--port", str(platform_port), "--secret-file", str(secret),
                     "--state-file", str(tmp / "platform-state.json")]

    def push(data: dict[str, Any]) -> None:
        data["capacity"] = {"push": {"in_dashboard": False, "interval_min": 0.02, "check_s": 1, "endpoints": [{
            "name": "platform", "url": f"http://127.0.0.1:{platform_port}/events", "secret_files": [str(secret)]}]}}
    broker = Broker(port=free_port(), data_dir=tmp / "broker")  # named in the config; the push needs no broker
    system = System(tmp, broker, push)
    base = f"http://127.0.0.1:{sync_port}"
    try:
        platform = Proc("platform", platform_argv, tmp).start(ready="platform simulator listening", timeout=READY_S)
        system.procs.append(platform)
        sync = Proc("sync", ["sync", "--config", str(system.config), "--port", str(sync_port)], tmp)
        system.procs.append(sync)
        sync.start(ready="shopfloor sync: pushing capacity", timeout=READY_S)
        state = f"http://127.0.0.1:{platform_port}/state"
        wait_until(lambda: _get(state)["accepted"] >= 2, READY_S, "the first events at the platform")
        time.sleep(WARM_S)
        began = time.monotonic()
        platform.stop()
        time.sleep(max(0.0, seconds - (time.monotonic() - began)))
        platform = Proc("platform-2", platform_argv, tmp).start(ready="platform simulator listening",
                                                                timeout=READY_S)
        system.procs.append(platform)
        ended = time.monotonic()
        out = Outcome("platform_outage", "platform down during the capacity push", ended - began)

        def endpoint() -> dict[str, Any]:
            return dict(_get(f"{base}/healthz")["push"]["endpoints"][0])

        def produced() -> int:
            return int(sum(float(line.rsplit(" ", 1)[1]) for line in _get(f"{base}/metrics").splitlines()
                           if line.startswith("shopfloor_push_events_total")))
        try:
            wait_until(lambda: endpoint()["queue"] == 0, 180, "the push queue to empty")
            out.recovery_s = time.monotonic() - ended
        except AssertionError:
            out.notes.append("the push queue did not empty within 180 s")

        def snapshot() -> tuple[int, int, dict[str, Any], dict[str, Any]] | None:
            # produced, then the platform, then produced again: equal, with nothing queued, is one moment
            before, e1 = produced(), endpoint()
            st = _get(state)
            after, e2 = produced(), endpoint()
            if before == after and e1["queue"] == e2["queue"] == 0:
                return before, int(st["accepted"]), e2, st
            return None
        taken = wait_until(snapshot, 60, "a quiet moment between two pushes", every=0.05)
        out.events_produced, out.events_stored, health, st = taken
        out.dropped = int(health.get("dropped") or 0)
        if st["duplicates"]:
            out.notes.append(f"{st['duplicates']} retried events taken once (duplicates, not stored twice)")
        if st["rejected"]:
            out.notes.append(f"refused by the platform: {st['rejected']}")
        out.notes.append(f"{health['failures']} failed deliveries retried")
        return out
    finally:
        system.close()


def _single(name: str) -> Callable[[Path, float], Outcome]:
    return lambda tmp, seconds: plant_run(tmp, [STEPS[name]], seconds)[0]


FAULTS: dict[str, Callable[[Path, float], Outcome]] = {
    "influx_outage": _single("influx_outage"), "broker_restart": _single("broker_restart"),
    "plc_restart": _single("plc_restart"), "agent_sigkill": _single("agent_sigkill"), "quota": quota,
    "disk_full": _single("disk_full"), "clock_jump": _single("clock_jump"), "platform_outage": platform_outage,
    "plc_restart_running": _single("plc_restart_running"),
}
# Run by default: every fault of the suite. plc_restart_running, only when asked for, shows what a PLC restart
# costs when its counters pass their old values before the agent reconnects (the limit plc_restart's note names).
DEFAULT = [name for name in FAULTS if name != "plc_restart_running"]


def run_fault(name: str, seconds: float, keep: bool = False) -> Outcome:
    """One fault in a temp dir of its own; an error is a row with `error` set, not an exception."""
    tmp = Path(tempfile.mkdtemp(prefix=f"shopfloor-chaos-{name}-"))
    try:
        return FAULTS[name](tmp, seconds)
    except Exception as exc:
        traceback.print_exc()
        logs = "".join(f"\n--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
                       for p in sorted(tmp.glob("*.log")))
        return Outcome(name, name, seconds, error=f"{type(exc).__name__}: {exc}", notes=[logs[-4000:]])
    finally:
        if not keep:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
        else:
            print(f"  kept {tmp}")


# --- the table --------------------------------------------------------------------------------------------

COLUMNS = ("fault", "duration s", "events produced", "events stored", "pieces produced", "pieces stored",
           "dropped", "loss", "recovery s", "result")


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def rows(outcomes: list[Outcome]) -> list[list[str]]:
    out = []
    for o in outcomes:
        result = "error" if o.error else "ok" if o.ok else "LOSS" if (o.loss or 0) > 0 else \
            "DUPLICATES" if (o.loss or 0) < 0 else "mismatch" if o.mismatches else "not recovered"
        out.append([o.title, f"{o.duration_s:.1f}", _n(o.events_produced), _n(o.events_stored),
                    _n(o.pieces_produced), _n(o.pieces_stored), _n(o.dropped), _n(o.loss),
                    "-" if o.recovery_s is None else f"{o.recovery_s:.1f}", result])
    return out


def text_table(outcomes: list[Outcome]) -> str:
    body = rows(outcomes)
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
              for r in body]
    return "\n".join(lines)


def markdown_table(outcomes: list[Outcome]) -> str:
    head = "| " + " | ".join(COLUMNS) + " |\n|---" + "|---:" * (len(COLUMNS) - 2) + "|---|"
    return head + "\n" + "\n".join("| " + " | ".join(r) + " |" for r in rows(outcomes))


def _explain(o: Outcome) -> list[str]:
    """What a figure means where it is not plain: read from the figures, so a saved run reads the same."""
    out: list[str] = []
    if o.error:
        return out
    if o.fault == "plc_restart":
        out.append("the restarted PLC's machines start once the agent is connected again: the agent tells a "
                   "counter reset from progress only when the first value it reads after the restart is below the "
                   "last one before it, so a PLC that counts past that value before the agent reconnects loses "
                   "the counts it made before the restart (a PLC whose counters are retentive loses nothing)")
    if o.fault == "plc_restart_running" and (o.loss or 0) > 0:
        out.append("the loss is the counts the restarted PLC made before the agent's first read of it: that read "
                   "was above the last value before the restart, so the agent took it for progress, not a reset")
    if o.fault in ("plc_restart", "plc_restart_running", "agent_sigkill") and o.duration_s > 0:
        out.append("the duration runs until the restarted process answers again, its own start included")
    if o.fault == "platform_outage" and o.recovery_s is not None and o.recovery_s > 5:
        out.append("the recovery is the push's wait before its next try: the delay between tries doubles while "
                   "the platform is down (random up to 1, 2, 4 ... 60 s), so a platform back after a long outage "
                   "is tried again up to a minute later; nothing is lost meanwhile, the events wait in the push outbox")
    if o.fault == "quota" and o.dropped:
        out.append(f"{o.dropped:,} oldest points dropped over the quota, every one counted by "
                   "shopfloor_outbox_dropped_points: produced = stored + dropped")
    return out


def notes(outcomes: list[Outcome]) -> list[str]:
    out = []
    for o in outcomes:
        said = [n for n in o.notes if n] + _explain(o)
        if said or o.error:
            out.append(f"{o.title}: {'; '.join(said)}" + (f" (error: {o.error})" if o.error else ""))
    return out


HOW = """How the faults are made. InfluxDB, the broker and the platform are stopped and started again on the same
port (InfluxDB behind a proxy that refuses connections while it is down). The PLC simulator is paused, its true
counts read, then killed (SIGKILL); it comes back with its counters at zero and its machines held until the agent
is connected again. The full disk is real: the SQLite historian's file on a tmpfs (mounted for the run, root)
filled by a ballast file written until the disk is full and the agent reports "database or disk is full", then the ballast
is deleted. The clock jump is the agent's own wall clock (`bench/chaos_clock.py` replaces `time.time` and
`time.time_ns` before Shopfloor is imported, the monotonic clock runs on): stepping the machine's clock needs root
and would jump every other process on the machine, and libfaketime 0.9.10 (Debian bookworm) breaks Python 3.11's
`time.sleep` when the monotonic clock is left alone (wolfcw/libfaketime#426); messages that are not JSON, kept
as dead letters stamped by the agent's clock, show the clock it read. The quota run reads MQTT only (no PLC), so
that every point in the outbox is an event and the dropped points can be set against the events. Each fault has a
system of its own: broker, PLC simulator (speed 120), line simulator (speed 120; 600 in the quota run) and agent
started afresh, 3 s of production before the fault and 3 s after the recovery."""


def record(outcomes: list[Outcome], info: dict[str, Any], argv: list[str], when: Any) -> Path:
    """Rewrite (or append at the end) the chaos section of docs/benchmarks.md; other sections stay as they are."""
    method = (__doc__ or "").split("\n\n")[1:3] + [HOW]
    load = info.get("load_1m_before")
    took = info.get("elapsed_s")
    section = "\n".join([
        START, "", f"## Chaos results ({when.strftime('%Y-%m-%d %H:%M')} UTC)", "", *[p.replace("\n", " ") + "\n"
                                                                                     for p in method],
        f"Command: `python -m bench.chaos{''.join(' ' + a for a in argv)}` (`make chaos`)"
        + (f"; the run took {took / 60:.1f} min" if took else "") + ".", "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB RAM; {info['os']}; "
        f"Python {info['python']}, asyncua {info['asyncua']}, paho-mqtt {info['paho_mqtt']}, "
        f"Mosquitto {info['mosquitto']}, InfluxDB {info.get('influxdb', 'not recorded')}"
        + (f"; 1-minute load average {load:.1f} before the run (other work shared the 2 cores: durations and "
           "recovery times are longer than on a quiet machine)" if load is not None else "") + ".", "",
        markdown_table(outcomes), "", *(f"- {line.strip()}" for line in notes(outcomes)), "", END])
    doc = report.DOC
    text = doc.read_text(encoding="utf-8")
    if MARK in text and END in text:
        text = text[:text.index(MARK)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text, encoding="utf-8")
    return doc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--short", action="store_true", help="5 s per fault instead of 30 s")
    parser.add_argument("--seconds", type=float, metavar="N", help="length of each fault (default 30; --short 5)")
    parser.add_argument("--only", nargs="+", choices=sorted(FAULTS), metavar="FAULT",
                        help=f"run only these faults ({', '.join(FAULTS)})")
    parser.add_argument("--record", action="store_true", help="write the table into docs/benchmarks.md")
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs (configs, logs, historians)")
    parser.add_argument("--from-json", type=Path, metavar="FILE",
                        help="print (and with --record, record) a saved run from bench/results instead of running")
    return parser


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    seconds = args.seconds or (5.0 if args.short else 30.0)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    if args.from_json:
        return _from_json(args.from_json, args.record)
    when, info = report.now_utc(), report.machine_info()
    info["load_1m_before"] = os.getloadavg()[0]
    print(f"machine: {info['cpu']}, {info['cores']} cores; load average {info['load_1m_before']:.1f}", flush=True)
    began = time.monotonic()
    outcomes: list[Outcome] = []
    for name in args.only or DEFAULT:
        print(f"fault: {name}, {seconds:.0f} s ...", flush=True)
        started = time.monotonic()
        try:
            outcome = run_fault(name, seconds, args.keep)
        except KeyboardInterrupt:
            print("interrupted: processes stopped", flush=True)
            return 130
        outcomes.append(outcome)
        print(f"  done in {time.monotonic() - started:.0f} s: "
              + (outcome.error or f"loss {outcome.loss}, recovery {outcome.recovery_s}"), flush=True)
    info["elapsed_s"] = time.monotonic() - began
    print()
    print(text_table(outcomes))
    for line in notes(outcomes):
        print(f"- {line}")
    results = [{**asdict(o), "loss": o.loss, "ok": o.ok} for o in outcomes]
    path = report.save_json([{"scenario": "chaos", **r} for r in results], info, ["chaos", *argv], when)
    print(f"\nresults saved to {path.relative_to(report.ROOT)}")
    if args.record:
        print(f"recorded in {record(outcomes, info, argv, when).relative_to(report.ROOT)}")
    return 0 if all(o.ok for o in outcomes) else 1


def _from_json(path: Path, record_it: bool) -> int:
    from datetime import datetime

    saved = json.loads(path.read_text(encoding="utf-8"))
    names = {f.name for f in fields(Outcome)}
    outcomes = [Outcome(**{k: v for k, v in r.items() if k in names}) for r in saved["results"]]
    print(text_table(outcomes))
    for line in notes(outcomes):
        print(f"- {line}")
    if record_it:
        argv = [a for a in saved["argv"] if a != "chaos"]
        when = datetime.fromisoformat(saved["time"])
        print(f"recorded in {record(outcomes, saved['machine'], argv, when).relative_to(report.ROOT)}")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
