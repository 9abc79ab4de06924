"""Receiver processes for one MQTT source: `workers: N` (N > 1) in the source's config.

One Python process takes some 20,000-28,000 QoS 1 messages a second: paho's reads, the mapper and the outbox
commit share one interpreter lock. With N workers the agent starts N small processes (`python -m
agent.mqtt_worker`, spawned, never forked, so the same code runs on Windows). Each is a receiver of its
own: a paho client `<client_id>-w<k>` in a persistent session, on the shared subscription
`$share/<group>/<filter>`; a mapper; an outbox file under the agent's data dir; and a drain to the historian.
Each worker acknowledges a message only after its own outbox commit, so the no-loss rule of the single
connection holds per worker: a message a worker took and did not commit stays in that worker's session and is
delivered again when it reconnects (the pool restarts a worker that dies).

The pool talks to each worker over its standard streams, which exist alike on Linux and Windows:
- to the worker: the spec (one JSON line: the config, which worker it is), then `pause` and `stop` lines; the end
  of its input (the agent is gone, even killed) stops it the same orderly way;
- from the worker: a status line (JSON) every second: connection, counters, outbox depth. The pool shows each
  worker in /healthz as source `<id>/w<k>` and adds its counters to the agent's /metrics.
A worker's log goes to the agent's standard error, so it lands in the agent's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from agent.clock import SimulatedClock
from agent.config import MqttSource as MqttSourceConfig
from agent.health import UNKNOWN_ID_KINDS
from agent.sources.base import Backoff, SourceContext
from agent.sources.mqtt.sessions import Session, SessionBook

log = logging.getLogger(__name__)

MAX_AUTO_WORKERS = 4
STATUS_EVERY_S = 1.0
STOP_TIMEOUT_S = 30.0
RETIRE_AGAIN = 3  # a retiring worker's exit code: not finished (the broker or the historian failed), try again
_ROOT = Path(__file__).resolve().parents[3]  # the folder that holds the `agent` package


def worker_count(cfg: MqttSourceConfig) -> int:
    """How many receivers the source runs: `workers` as configured; `auto` is one per core, at most 4."""
    if cfg.workers == "auto":
        return max(1, min(os.cpu_count() or 1, MAX_AUTO_WORKERS))
    return cfg.workers


def share_group(cfg: MqttSourceConfig, agent_id: str) -> str:
    """The shared-subscription group of a source's workers: `share_group` if set (agents that split one line's
    traffic set the same one), else one of this agent's own, so two agents never split traffic by accident."""
    return cfg.share_group or f"shopfloor-{agent_id}-{cfg.id}"


def topic_filters(filters: list[str], group: str | None) -> list[str]:
    """The filters as subscribed: `$share/<group>/<filter>` on a shared subscription, else as configured."""
    if not group:
        return list(filters)
    return [f"$share/{group}/{f}" for f in filters]


class WorkerProcess:
    """One receiver process and the thread that keeps it running.

    A retiring worker (`retire` set) takes in what an old session still holds and ends the session; it is done
    when it exits with 0, and started again otherwise."""

    def __init__(self, pool: WorkerPool, name: str, client_id: str, retire: Session | None = None,
                 stale_filters: list[str] | None = None) -> None:
        self.pool = pool
        self.name = name
        self.client_id = client_id
        self.retire = retire
        self.stale_filters = stale_filters or []
        self.health = pool.ctx.health(self.name, "mqtt")
        pool.ctx.state.metrics.worker_restarts.labels(self.name)
        pool.ctx.state.metrics.worker_messages.labels(self.name)
        self.proc: subprocess.Popen[str] | None = None
        self.restarts = 0
        self._lock = threading.Lock()  # writes to the worker's input
        self._totals: dict[str, float] = {}  # the counters of the running process, as last reported
        self._thread = threading.Thread(target=self._supervise, name=f"mqtt-{self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def send(self, line: str) -> None:
        with self._lock:
            proc = self.proc
            if proc is None or proc.stdin is None or proc.poll() is not None:
                return
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.write(line + "\n")
                proc.stdin.flush()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _spawn(self) -> subprocess.Popen[str]:
        spec = {
            "config": self.pool.config_json, "source": self.pool.cfg.id, "name": self.name,
            "client_id": self.client_id, "share_group": self.pool.group, "workers": max(1, self.pool.count),
            "data_dir": str(self.pool.ctx.data_dir), "agent_id": self.pool.ctx.agent_id,
            "mode": "retire" if self.retire else "receive",
            "stale_filters": list(self.retire.filters) if self.retire else self.stale_filters,
            # the agent's clock, when it is a simulated one (a demo): the worker stamps on the same
            "clock": now.spec() if isinstance(now := self.pool.ctx.now_ns, SimulatedClock) else None,
        }
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH", "")) if p)
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.mqtt_worker", self.name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=None, text=True, encoding="utf-8", env=env, cwd=str(_ROOT), bufsize=1)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(spec) + "\n")
        proc.stdin.flush()
        return proc

    def _supervise(self) -> None:
        backoff = Backoff(first=1.0)
        while not self.pool.stopping.is_set():
            started = time.monotonic()
            try:
                proc = self._spawn()
            except OSError as exc:
                log.error("MQTT worker %s cannot start: %s", self.name, exc)
                self._down(f"worker cannot start: {exc}")
                self.pool.stopping.wait(backoff.next())
                continue
            with self._lock:
                self.proc = proc
            self._totals = {}
            if self.pool.paused:
                self.send("pause")
            if self.pool.stopping.is_set():
                self.send("stop")  # the agent began to stop while this one started
            assert proc.stdout is not None
            self._read(proc.stdout)
            code = proc.wait()
            if self.pool.stopping.is_set():
                break
            if self.retire is not None and code == 0:
                self.pool.retired(self)
                return
            if self.retire is not None and code == RETIRE_AGAIN:
                self._down("retiring the old session did not finish; trying again")
                self.pool.stopping.wait(10.0)
                continue
            self.restarts += 1
            self.pool.ctx.state.metrics.worker_restarts.labels(self.name).inc()
            log.error("MQTT worker %s (pid %s) exited with code %s; starting it again", self.name, proc.pid, code)
            self._down(f"worker exited with code {code}; restarting")
            if time.monotonic() - started > 60:
                backoff.reset()  # it had run a while: not a crash loop
            self.pool.stopping.wait(backoff.next())

    def _down(self, error: str) -> None:
        if self.health.connected:
            self.pool.ctx.state.metrics.connected.labels(self.name).set(0)
        self.health.down(error)

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                status = json.loads(line)
            except ValueError:
                log.warning("MQTT worker %s wrote %r", self.name, line[:200])
                continue
            if isinstance(status, dict) and "live" in status:
                self._live(status["live"])
            elif isinstance(status, dict):
                self._apply(status)

    def _live(self, values: Any) -> None:
        """The worker's newest live values since its last line: to the agent's one live publisher."""
        try:
            items = [(str(topic), int(ts), str(payload).encode()) for topic, ts, payload in values]
        except (TypeError, ValueError):
            log.warning("MQTT worker %s wrote live values the agent cannot read", self.name)
            return
        self.pool.ctx.ingest.live_values(items)

    def _apply(self, status: dict[str, Any]) -> None:
        """Mirror one status line into the agent's health and metrics (counters as increments)."""
        h = self.health
        m = self.pool.ctx.state.metrics
        if status.get("connected"):
            h.up()
            if status.get("last_error"):  # connected, and yet something is wrong (a refused subscription)
                h.last_error = str(status["last_error"])
        elif h.connected or status.get("last_error"):
            h.down(str(status.get("last_error") or "not connected"))
        h.reconnects = int(status.get("reconnects", h.reconnects)) + self.restarts
        h.last_data_ns = max(h.last_data_ns, int(status.get("last_data_ns") or 0))
        h.last_received = max(h.last_received, float(status.get("last_received") or 0.0))
        m.connected.labels(self.name).set(1 if h.connected else 0)
        source = self.pool.cfg.id
        for key, counter in (("messages_in", m.messages_in.labels(source)), ("points_in", m.points_in),
                             ("points_out", m.points_out.labels("historian")),
                             ("dead_letters", m.dead_letters.labels(source)),
                             *((f"unknown_ids/{kind}", m.unknown_ids.labels(kind)) for kind in UNKNOWN_ID_KINDS),
                             ("messages_in_worker", m.worker_messages.labels(self.name))):
            now = float(status.get(key.removesuffix("_worker")) or 0)
            delta = now - self._totals.get(key, 0.0)
            if delta > 0:
                counter.inc(delta)
            self._totals[key] = now
        m.worker_outbox_points.labels(self.name).set(int(status.get("outbox_points") or 0))
        if status.get("lag_s") is not None:
            m.lag.labels(self.name).set(float(status["lag_s"]))
        self.pool.ctx.state.workers[self.name] = {
            "pid": self.proc.pid if self.proc else None, "client_id": self.client_id, "restarts": self.restarts,
            "outbox_points": int(status.get("outbox_points") or 0),
            "outbox_bytes": int(status.get("outbox_bytes") or 0),
            "dropped_points": int(status.get("dropped_points") or 0),
            "dead_letters": int(status.get("dead_letters_total") or 0),
            "historian_error": status.get("historian_error") or None,
            "historian_stalled_s": float(status.get("historian_stalled_s") or 0.0),
        }


class WorkerPool:
    """The MQTT source as `count` receiver processes on one shared subscription, kept running by the agent,
    plus a process for each old session to retire (`count` may be 0: only retiring, beside the agent's own
    connection)."""

    kind = "mqtt"

    def __init__(self, cfg: MqttSourceConfig, ctx: SourceContext, count: int, book: SessionBook,
                 retire: list[Session], stale: dict[str, list[str]]) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.ctx = ctx
        self.count = count
        self.book = book
        self.group = share_group(cfg, ctx.agent_id)
        full = getattr(ctx.ingest, "cfg", None)  # the agent's whole config: each worker maps with it
        if full is None:
            raise TypeError("MQTT workers need the agent's pipeline as their Ingest (it carries the config)")
        self.config_json = full.model_dump(mode="json")
        self.stopping = threading.Event()
        self.paused = False
        self.workers = [WorkerProcess(self, f"{cfg.id}/w{k}", f"{cfg.client_id}-w{k}",
                                      stale_filters=stale.get(f"{cfg.client_id}-w{k}"))
                        for k in range(count)]
        self.workers += [WorkerProcess(self, f"{cfg.id}/retire:{old.client_id}", old.client_id, retire=old)
                         for old in retire]

    def retired(self, worker: WorkerProcess) -> None:
        """An old session is taken in and ended: it leaves the record and /healthz."""
        assert worker.retire is not None
        self.book.forget(worker.retire.client_id)
        self.ctx.state.sources.pop(worker.name, None)
        self.ctx.state.workers.pop(worker.name, None)
        self.ctx.state.metrics.connected.labels(worker.name).set(0)
        log.info("MQTT session %s retired: what it held is stored, the session is ended at the broker",
                 worker.client_id)

    async def run(self, stop: asyncio.Event) -> None:
        if self.count:
            log.info("MQTT source %s: %s workers on $share/%s/%s", self.cfg.id, self.count, self.group,
                     ", ".join(self.cfg.subscribe))
        for worker in self.workers:
            worker.start()
        await stop.wait()

    def pause(self) -> None:
        """Workers take no new messages; what they hold is committed and acknowledged as they stop."""
        self.paused = True
        for worker in self.workers:
            worker.send("pause")

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.stop)

    def stop(self) -> None:
        """Each worker commits, acknowledges and drains what it has (as the agent does on stop), then exits."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        for worker in self.workers:
            worker.send("stop")
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for worker in self.workers:
            proc = worker.proc
            if proc is None:
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("MQTT worker %s did not stop in time; ending it (its outbox is replayed next start)",
                            worker.name)
                proc.kill()
                proc.wait(5)
        for worker in self.workers:
            worker.join(5)
