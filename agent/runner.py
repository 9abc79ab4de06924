"""Wiring: builds the agent from a config and runs it until SIGINT/SIGTERM; SIGHUP reloads the config.

A reload reads the config again and, when it is valid, stops the sources and the pipeline as a stop would (what
has arrived is committed and acknowledged, the sources disconnect) and starts them again on the new config. The
outbox, /healthz and /metrics stay up throughout: what waits in the outbox is drained by the new pipeline, and a
broker redelivers what it sent meanwhile to the same persistent session. An invalid config is logged with every
problem and the agent goes on with the config it has.

Under systemd (agent/notify.py) the agent says READY=1 once it serves, RELOADING=1 and READY=1 around a reload,
STOPPING=1 when it stops, and WATCHDOG=1 from its event loop only while its pipeline commits what comes in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from agent import notify
from agent.config import ConfigError, FactoryConfig
from agent.health import AgentState
from agent.historian import Historian
from agent.http import AgentHttpServer
from agent.outbox import Outbox
from agent.pipeline import LivePublisher, Pipeline
from agent.sinks import open_historian
from agent.sinks.live import MqttLivePublisher
from agent.sources.base import Source, SourceContext, TagRef
from agent.sources.registry import KINDS

log = logging.getLogger(__name__)

# A reload drains the outbox to the historian for this long at most before it stops the old pipeline: what is
# left waits in the outbox for the new one.
RELOAD_DRAIN_S = 2.0
# How long a reload waits for the old pipeline's threads (a historian write in flight ends within its timeout).
RELOAD_STOP_S = 30.0
# What a reload cannot change in a running agent: the process's identity, its files and its port.
RESTART_ONLY = ("id", "data_dir", "http_host", "http_port")


class Agent:
    """One edge agent: its sources, pipeline, sinks and HTTP endpoints.

    `reload_config` reads the config again for a SIGHUP (raising ConfigError when it is not valid); without it
    SIGHUP is logged and ignored.
    """

    def __init__(self, cfg: FactoryConfig, data_dir: Path | None = None, http_port: int | None = None,
                 now_ns: Callable[[], int] | None = None,
                 reload_config: Callable[[], FactoryConfig] | None = None) -> None:
        self.cfg = cfg
        self.data_dir = Path(data_dir or cfg.agent.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._fixed = {"data_dir": data_dir is not None, "http_port": http_port is not None}
        self.clock = now_ns or time.time_ns
        self.reload_config = reload_config
        self.state = AgentState(cfg.agent.id)
        self.outbox = Outbox(self.data_dir / "outbox.sqlite3", int(cfg.outbox.quota_mb * 1024 * 1024),
                             cfg.outbox.dead_letter_payload_max_bytes)
        self.http = AgentHttpServer(self.state, self.outbox, cfg.agent.http_host,
                                    cfg.agent.http_port if http_port is None else http_port)
        self._build(cfg)
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False  # a stop (not a reload) was asked for
        self._next_cfg: FactoryConfig | None = None  # the config a reload under way starts on
        self._reload_task: asyncio.Task[None] | None = None
        self._last_ingested = -1.0

    def _build(self, cfg: FactoryConfig) -> None:
        """Historian, live publisher, pipeline and sources for `cfg`, around the outbox and state kept."""
        historian = open_historian(cfg, self.data_dir)
        try:
            live: MqttLivePublisher | None = None
            if cfg.live.enabled and cfg.sources.mqtt:
                broker_id = cfg.live.mqtt or cfg.sources.mqtt[0].id
                broker = next(s for s in cfg.sources.mqtt if s.id == broker_id)
                live = MqttLivePublisher(cfg.site.id, cfg.agent.id, broker, cfg.live.min_interval_ms,
                                         [f"{line.id}/{machine.id}" for line, machine in cfg.machines()])
            publisher: LivePublisher | None = live
            entries = [(KINDS[kind], entry) for kind, entry in cfg.sources.entries()]
            pipeline = Pipeline(cfg, self.outbox, historian, self.state, publisher, now_ns=self.clock,
                                heartbeat_sources=[e.id for k, e in entries if k.reads_tags])
            self._forget_sources({e.id for _, e in entries})
            tags = tag_refs(pipeline)
            sources: list[Source] = [
                kind.build(entry, SourceContext(pipeline, self.state, tags.get(entry.id, []), self.data_dir,
                                                cfg.site.id, cfg.agent.id, self.clock))
                for kind, entry in entries]
        except BaseException:
            historian.close()
            raise
        self.cfg = cfg
        self.outbox.quota_bytes = int(cfg.outbox.quota_mb * 1024 * 1024)
        self.state.metrics.outbox_quota.set(self.outbox.quota_bytes)
        self.outbox.dead_letter_payload_max = cfg.outbox.dead_letter_payload_max_bytes
        self.historian: Historian = historian
        self.live = live
        self.pipeline = pipeline
        self.sources = sources

    def _forget_sources(self, keep: set[str]) -> None:
        """Sources and receiver processes of an earlier config leave /healthz and their series leave /metrics."""
        m = self.state.metrics
        for source_id in [s for s in self.state.sources if s not in keep]:
            for labelled in (m.connected, m.messages_in, m.dead_letters, m.reconnects, m.lag):
                with contextlib.suppress(KeyError):
                    labelled.remove(source_id)
        self.state.sources.clear()
        self.state.workers.clear()

    # --- control, from any thread ---

    def request_stop(self) -> None:
        """Ask a running agent to stop (any thread)."""
        self._stopping = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._set_stop)

    def request_reload(self) -> None:
        """Ask a running agent to read its config again (any thread); see the module docstring."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._begin_reload)

    def _set_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    # --- running ---

    async def run_async(self) -> int:
        self._loop = asyncio.get_running_loop()
        self.http.start()
        first = True
        while True:
            self._stop = asyncio.Event()
            self._next_cfg = None
            if self._stopping:
                self._stop.set()
            await self._serve(first)
            first = False
            cfg = self._next_cfg
            if cfg is None or self._stopping or self.pipeline.fatal is not None:
                return self._shutdown()
            if not await self._restart_on(cfg):
                return self._shutdown()

    async def _serve(self, first: bool) -> None:
        """Run the sources and the pipeline of the current config until a stop or a reload; stop the sources."""
        assert self._stop is not None
        self.pipeline.start()
        if self.live is not None:
            self.live.start()
        tasks = [asyncio.create_task(s.run(self._stop)) for s in self.sources]
        if first:
            log.info("agent %s running: data in %s, health on http://%s:%s/healthz", self.cfg.agent.id,
                     self.data_dir, self.cfg.agent.http_host, self.http.port)
        notify.ready(f"agent {self.cfg.agent.id}: {len(self.sources)} sources, health on port {self.http.port}")
        watchers = [asyncio.create_task(self._watch_pipeline())]
        period = notify.watchdog_period()
        if period is not None:
            watchers.append(asyncio.create_task(self._watchdog(period)))
        await self._stop.wait()
        if self._next_cfg is None:
            notify.stopping()
        for watcher in watchers:
            watcher.cancel()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # Commit and acknowledge what has arrived while the broker connections are still up, so the broker
        # does not redeliver it on the next start; then disconnect and drain.
        for source in self.sources:
            source.pause()
        self.pipeline.flush()
        for source in self.sources:
            with contextlib.suppress(Exception):
                await source.close()

    async def _watch_pipeline(self) -> None:
        while self.pipeline.running:
            await asyncio.sleep(0.5)
        log.error("agent stops: a worker failed (%s)", self.pipeline.fatal)
        self._stopping = True
        assert self._stop is not None
        self._stop.set()

    # --- systemd's watchdog ---

    async def _watchdog(self, period: float) -> None:
        """WATCHDOG=1 every `period` while the pipeline works: its threads run, and the ingest thread has
        committed since the last time or, with nothing coming in, answers a flush within `period`. A pipeline
        that cannot commit (the outbox's disk hangs or its database stays locked) gets no more notifications,
        and systemd restarts the agent after WatchdogSec."""
        vitals = notify.Vitals(f"agent {self.cfg.agent.id}")
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            if not self.pipeline.running:
                vitals.report(False, f"a worker failed: {self.pipeline.fatal}")
                continue
            ingested = self._ingested()
            if ingested != self._last_ingested:
                self._last_ingested = ingested
                vitals.report(True)
                continue
            flushed = await loop.run_in_executor(None, self.pipeline.flush, period)
            vitals.report(flushed, f"the ingest thread committed nothing and answered no flush in {period:g} s")

    def _ingested(self) -> float:
        """Readings and messages committed so far, all sources."""
        return sum(sample.value for metric in self.state.metrics.messages_in.collect()
                   for sample in metric.samples if sample.name.endswith("_total"))

    # --- reload ---

    def _begin_reload(self) -> None:
        if self._stopping or self._stop is None or self._stop.is_set():
            log.warning("SIGHUP while the agent stops or restarts: ignored")
            return
        if self._reload_task is not None and not self._reload_task.done():
            log.warning("SIGHUP while a config reload is under way: ignored")
            return
        self._reload_task = asyncio.create_task(self._check_reload())

    async def _check_reload(self) -> None:
        """Read the config again; a valid one stops the current cycle (`run_async` starts the next on it)."""
        if self.reload_config is None:
            log.warning("SIGHUP: this agent was not started from a config file; nothing to reload")
            return
        notify.reloading()
        try:
            cfg = await asyncio.get_running_loop().run_in_executor(None, self.reload_config)
        except ConfigError as exc:
            problems = [str(p) for p in exc.problems]
            log.error("config reload refused, the agent goes on with the config it has: %s problem(s):\n%s",
                      len(problems), "\n".join(problems), extra={"problems": problems})
            notify.ready()
            return
        except (Exception, SystemExit) as exc:  # SystemExit: a --historian override that no longer checks out
            log.error("config reload refused, the agent goes on with the config it has: %s", exc)
            notify.ready()
            return
        changed = self.restart_only_changes(cfg)
        if changed:
            log.error("config reload refused, the agent goes on with the config it has: %s changed, which "
                      "takes a restart of the agent", ", ".join(f"agent.{key}" for key in changed),
                      extra={"restart_only": changed})
            notify.ready()
            return
        if self._stopping or self._stop is None or self._stop.is_set():
            return
        log.info("config reload: stopping the sources and the pipeline; the outbox stays")
        self._next_cfg = cfg
        self._stop.set()

    def restart_only_changes(self, cfg: FactoryConfig) -> list[str]:
        """Settings of `cfg` that differ from the running config and only a restart can change."""
        return [key for key in RESTART_ONLY if not self._fixed.get(key)
                and getattr(cfg.agent, key) != getattr(self.cfg.agent, key)]

    async def _restart_on(self, cfg: FactoryConfig) -> bool:
        """Stop the pipeline (what it has is committed), then build and start everything on `cfg`. False when
        the old pipeline did not stop in time, and the agent must stop instead."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._stop_pipeline)
        if not self.pipeline.stopped:
            log.error("config reload: a worker did not stop within %s s; the agent stops instead (started again, "
                      "as by its service, it runs the new config and replays what was not settled)", RELOAD_STOP_S)
            return False
        self.historian.close()
        self.outbox.release()  # what the old drain claimed and did not settle goes out again, oldest first
        old = self.cfg
        try:
            await loop.run_in_executor(None, self._build, cfg)
        except Exception:
            log.exception("config reload: the agent cannot start on the new config; it goes on with the one it had")
            await loop.run_in_executor(None, self._build, old)
        else:
            log.info("config reloaded: %s sources, %s tags; %s points wait in the outbox", len(self.sources),
                     len(self.pipeline.bindings), self.outbox.depth()[1])
        return True

    def _stop_pipeline(self) -> None:
        self.pipeline.stop(RELOAD_DRAIN_S)
        deadline = time.monotonic() + RELOAD_STOP_S
        while not self.pipeline.stopped and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.live is not None:
            self.live.stop()

    def _shutdown(self) -> int:
        notify.stopping()  # again if a stop came during a reload
        failed = self.pipeline.fatal is not None
        self.pipeline.stop()
        if self.live is not None:
            self.live.stop()
        self.http.stop()
        depth = self.outbox.depth()[1]
        if self.pipeline.stopped:
            self.outbox.close()
            self.historian.close()
        else:
            # a worker is still inside a write: leave the files to the process exit rather than pull them away
            log.warning("a worker did not stop in time; the next start replays what it had not settled")
        log.info("agent %s stopped; %s points wait in the outbox for the next start", self.cfg.agent.id, depth)
        return 1 if failed else 0

    def run(self) -> int:
        """Run until SIGINT or SIGTERM (SIGHUP: reload the config); returns the process exit code."""
        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("signal %s: stopping", signum)
            self.request_stop()

        def on_hangup(signum: int, frame: FrameType | None) -> None:
            log.info("signal %s: reloading the config", signum)
            self.request_reload()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, on_signal)
            signal.signal(signal.SIGTERM, on_signal)
            if hasattr(signal, "SIGHUP"):  # not on Windows: there a service restart reads the config again
                signal.signal(signal.SIGHUP, on_hangup)
        return asyncio.run(self.run_async())


def tag_refs(pipeline: Pipeline) -> dict[str, list[TagRef]]:
    """Per source id, the tags it reads; a reading carries the tag's index in the pipeline's bindings."""
    out: dict[str, list[TagRef]] = {}
    for index, b in enumerate(pipeline.bindings):
        spec = b.spec
        out.setdefault(b.source, []).append(TagRef(
            index, b.node_id, b.machine, spec.signal, spec.node, spec.poll_ms, spec.sampling_ms, spec.queue_size,
            spec.deadband))
    return out
