"""What the PLC simulators' command lines share (`shopfloor simulate plc|modbus|s7`): the options that choose
the plant and its clock, reading the factory config, and serving until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

from agent import config as agent_config
from agent.clock import add_anchor_argument

log = logging.getLogger(__name__)


def add_plant_arguments(parser: argparse.ArgumentParser, kind: str, truth_help: str = "") -> None:
    """--config, --source, --speed, --seed, --start, the clock anchor, --truth and --paused."""
    parser.add_argument("--config", required=True, type=Path, metavar="FILE", help="factory config (YAML)")
    parser.add_argument("--source", help=f"serve the machines of this {kind} source id (default: the first one)")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="simulated seconds per real second (default %(default)s; 60 = a minute per second)")
    parser.add_argument("--seed", type=int, default=1, help="random seed; same seed, same behaviour (default 1)")
    parser.add_argument("--start", type=datetime.fromisoformat, metavar="ISO_TIME",
                        help="simulated clock start, e.g. 2025-03-03T09:00+08:00 (default: now)")
    add_anchor_argument(parser)
    parser.add_argument("--truth", type=Path, default=None, metavar="FILE",
                        help=truth_help or "write the plant's ground truth there (JSON, every 2 s and on stop; "
                                           "docs/kpi.md)")


def start_logging(library: str, level: int) -> None:
    """The simulators' log format; `library`'s own chatter (every client, every monitored item) above `level`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger(library).setLevel(level)


def load_config(path: Path) -> agent_config.FactoryConfig | None:
    """The factory config, or None after printing what is wrong with it (the caller exits 2)."""
    try:
        return agent_config.load(path, resolve_secrets=False)
    except agent_config.ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, on Linux and on Windows (which has no loop signal handlers)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except NotImplementedError:
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))
    return stop


async def serve(name: str, where: Callable[[], str], start: Callable[[], Awaitable[None]],
                stop: Callable[[], Awaitable[None]], refused: tuple[type[BaseException], ...] = (OSError,)) -> int:
    """Start a simulator's server, print `<name> simulator ready at <where()>` (tests and the demo wait for that
    line; `where` is asked after the start, which may have chosen the port), serve until a signal, stop. A
    server that cannot listen is one line and exit 2."""
    stopping = stop_on_signals()
    started = time.monotonic()
    try:
        await start()
    except refused as exc:
        print(f"{name.lower()} simulator: cannot listen on {where()}: {exc}", file=sys.stderr)
        await stop()
        return 2
    try:
        print(f"{name} simulator ready at {where()}", flush=True)
        log.info("%s simulator ready after %.1f s", name, time.monotonic() - started)
        await stopping.wait()
    finally:
        await stop()
    log.info("%s simulator stopped", name)
    return 0
