"""`shopfloor sync`: the capacity push on its own, beside a dashboard or without one. It reads the historian and the
holds the dashboard keeps, and serves /healthz and /metrics on a small HTTP server of its own (no Flask)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent import notify
from agent.config import FactoryConfig
from agent.http import StatusServer
from agent.sinks import open_historian
from dashboard import wall_clock_ns

if TYPE_CHECKING:
    from dashboard.push import PushJob

log = logging.getLogger(__name__)


def run_sync(cfg: FactoryConfig, args: argparse.Namespace) -> int:
    from dashboard.c2m import CapacityService
    from dashboard.holds import HoldStore
    from dashboard.push import PushBusy, PushJob

    if not cfg.capacity.push.endpoints:
        print("shopfloor sync: capacity.push.endpoints is empty: there is nowhere to push to", file=sys.stderr)
        return 2
    data_dir = Path(args.data_dir or cfg.agent.data_dir)
    historian = open_historian(cfg, data_dir)
    holds = HoldStore(data_dir / "c2m-holds.sqlite3")
    try:
        job = PushJob(cfg, CapacityService(cfg, historian, wall_clock_ns, holds), data_dir, args.feed_url)
    except PushBusy as exc:
        print(f"shopfloor sync: {exc}", file=sys.stderr)
        holds.close()
        historian.close()
        return 2

    def healthz() -> tuple[int, str, bytes]:
        health = job.health()
        return 200, "application/json", json.dumps({"status": health["status"], "push": health}, indent=1).encode()

    def metrics() -> tuple[int, str, bytes]:
        job.health()  # refreshes the queue gauges
        return 200, CONTENT_TYPE_LATEST, generate_latest(job.metrics.registry)

    try:
        server = StatusServer("127.0.0.1", args.port, {"/healthz": healthz, "/metrics": metrics}, "sync-http")
    except OSError as exc:
        print(f"shopfloor sync: cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        job.close()
        return 3
    server.start()
    job.start()
    print(f"shopfloor sync: pushing capacity; health on http://127.0.0.1:{server.port}/healthz",
          flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    notify.ready()
    vitals = notify.Vitals("sync")
    while not stop.wait(notify.watchdog_period()):  # under systemd's watchdog: WATCHDOG=1 while pushing works
        vitals.report(*_pushing(job))
    notify.stopping()
    job.stop()
    server.stop()
    holds.close()
    historian.close()
    return 0


def _pushing(job: PushJob) -> tuple[bool, str]:
    """Whether the push works, and if not, why: its schedule runs and every endpoint's delivery thread is alive
    (an endpoint the platform disabled is not a fault of this process, and a restart would not mend it)."""
    if job.scheduler is None or not job.scheduler.running:
        return False, "the push schedule does not run"
    stalled = [e["name"] for e in job.health()["endpoints"] if not e["delivering"] and not e["disabled"]]
    if stalled:
        return False, f"delivery to {', '.join(stalled)} has stopped"
    return True, ""
