"""Wiring: builds the agent from a config and runs it until SIGINT/SIGTERM."""

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

from agent.config import FactoryConfig
from agent.health import AgentState
from agent.http import AgentHttpServer
from agent.outbox import Outbox
from agent.pipeline import LivePublisher, Pipeline
from agent.sinks import open_historian
from agent.sinks.live import MqttLivePublisher
from agent.sources.base import Source, SourceContext, TagRef
from agent.sources.registry import KINDS

log = logging.getLogger(__name__)


class Agent:
    """One edge agent: its sources, pipeline, sinks and HTTP endpoints."""

    def __init__(self, cfg: FactoryConfig, data_dir: Path | None = None, http_port: int | None = None,
                 now_ns: Callable[[], int] | None = None) -> None:
        self.cfg = cfg
        self.data_dir = Path(data_dir or cfg.agent.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.state = AgentState(cfg.agent.id)
        self.outbox = Outbox(self.data_dir / "outbox.sqlite3", int(cfg.outbox.quota_mb * 1024 * 1024),
                             cfg.outbox.dead_letter_payload_max_bytes)
        self.historian = open_historian(cfg, self.data_dir)
        self.live: MqttLivePublisher | None = None
        if cfg.live.enabled and cfg.sources.mqtt:
            broker_id = cfg.live.mqtt or cfg.sources.mqtt[0].id
            broker = next(s for s in cfg.sources.mqtt if s.id == broker_id)
            self.live = MqttLivePublisher(cfg.site.id, cfg.agent.id, broker, cfg.live.min_interval_ms,
                                          [f"{line.id}/{machine.id}" for line, machine in cfg.machines()])
        live: LivePublisher | None = self.live
        clock = now_ns or time.time_ns
        entries = [(KINDS[kind], entry) for kind, entry in cfg.sources.entries()]
        self.pipeline = Pipeline(cfg, self.outbox, self.historian, self.state, live, now_ns=clock,
                                 heartbeat_sources=[e.id for k, e in entries if k.reads_tags])
        self.http = AgentHttpServer(self.state, self.outbox, cfg.agent.http_host,
                                    cfg.agent.http_port if http_port is None else http_port)
        tags = tag_refs(self.pipeline)
        self.sources: list[Source] = [
            kind.build(entry, SourceContext(self.pipeline, self.state, tags.get(entry.id, []), self.data_dir,
                                            cfg.site.id, cfg.agent.id, clock))
            for kind, entry in entries]
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def request_stop(self) -> None:
        """Ask a running agent to stop (any thread)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def run_async(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.pipeline.start()
        self.http.start()
        if self.live is not None:
            self.live.start()
        log.info("agent %s running: data in %s, health on http://%s:%s/healthz", self.cfg.agent.id,
                 self.data_dir, self.cfg.agent.http_host, self.http.port)
        tasks = [asyncio.create_task(s.run(self._stop)) for s in self.sources]
        watcher = asyncio.create_task(self._watch_pipeline())
        await self._stop.wait()
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
        return self._shutdown()

    async def _watch_pipeline(self) -> None:
        while self.pipeline.running:
            await asyncio.sleep(0.5)
        log.error("agent stops: a worker failed (%s)", self.pipeline.fatal)
        assert self._stop is not None
        self._stop.set()

    def _shutdown(self) -> int:
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
        """Run until SIGINT or SIGTERM; returns the process exit code."""
        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("signal %s: stopping", signum)
            self.request_stop()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, on_signal)
            signal.signal(signal.SIGTERM, on_signal)
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
