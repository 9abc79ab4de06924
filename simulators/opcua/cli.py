"""`shopfloor simulate plc`: the OPC UA PLC simulator's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from agent.clock import caught_up
from simulators.opcua.server import DEFAULT_CERT_DIR, DEFAULT_ENDPOINT, SECURITY_POLICIES, PlcSimulator
from simulators.plc_cli import add_plant_arguments, load_config, start_logging, stop_on_signals

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the PLC simulator's options to a (sub)command parser."""
    add_plant_arguments(parser, "OPC UA", truth_help=(
        "write the plant's ground truth there (JSON, every second and on stop): time per board state, units per "
        "SKU and ideal time per machine and shift; staffing and material per line (docs/kpi.md)"))
    parser.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help="OPC UA endpoint URL to serve (default %(default)s)")
    parser.add_argument("--sim-timestamps", action="store_true",
                        help="stamp values with the simulated clock (default: the wall clock)")
    parser.add_argument("--paused", action="store_true", help="start with Sim.Running false (clock stopped)")
    parser.add_argument("--security", choices=sorted(SECURITY_POLICIES), default="none",
                        help="none; secure = Basic256Sha256 Sign and SignAndEncrypt only; all = both (default none)")
    parser.add_argument("--cert-dir", type=Path, default=DEFAULT_CERT_DIR, metavar="DIR",
                        help="where the server certificate and key are generated once (default %(default)s)")
    parser.add_argument("--username", help="require this user name (anonymous login is then refused)")
    parser.add_argument("--password-env", default="SHOPFLOOR_SIM_PASSWORD", metavar="VAR",
                        help="environment variable holding the password (default %(default)s)")
    parser.add_argument("--bench-tags", type=int, default=0, metavar="N",
                        help="add N changing Double tags (a multiple of 100), as machines bench.m<k> with tags "
                             "bench.m<k>.t00..t99 and a constant Int32 bench.m<k>.State = 1")
    parser.add_argument("--bench-period-ms", type=float, default=100.0, metavar="P",
                        help="each bench tag changes every P ms (default %(default)s)")
    parser.add_argument("--bench-only", action="store_true", help="serve only the bench tags, no machines")
    parser.add_argument("--bench-offset", type=int, default=0, metavar="K",
                        help="number the bench machines from m<K> (several simulators serve disjoint machines)")
    parser.add_argument("--operation-limit", type=int, default=None, metavar="N",
                        help="advertise N as MaxMonitoredItemsPerCall and MaxNodesPerRead (default: asyncua's)")
    parser.add_argument("--bench-stats-file", type=Path, default=None, metavar="PATH",
                        help="write the bench counters (changes written, rounds, late rounds) there as JSON "
                             "every second")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; 0 on a clean stop, 2 on a configuration problem."""
    start_logging("asyncua", logging.WARNING)  # asyncua logs every monitored item at INFO
    cfg = load_config(args.config)
    if cfg is None:
        return 2
    password = None
    if args.username:
        password = os.environ.get(args.password_env)
        if not password:
            print(f"--username needs a password in the environment variable {args.password_env}", file=sys.stderr)
            return 2
    source = args.source or (cfg.sources.opcua[0].id if cfg.sources.opcua else None)
    if not args.bench_only and source not in {s.id for s in cfg.sources.opcua}:
        print(f"{args.config}: no OPC UA source {source!r} (sources.opcua)", file=sys.stderr)
        return 2
    try:
        simulator = PlcSimulator(
            cfg, endpoint=args.endpoint, source=source, speed=args.speed, seed=args.seed, paused=args.paused,
            security=args.security, cert_dir=args.cert_dir, username=args.username, password=password,
            bench_tags=args.bench_tags, bench_period_ms=args.bench_period_ms, bench_only=args.bench_only,
            bench_offset=args.bench_offset, bench_stats_file=args.bench_stats_file,
            start_time=caught_up(args.start, args.speed, args.sim_anchor), sim_timestamps=args.sim_timestamps,
            operation_limit=args.operation_limit, origin=args.start, truth_file=args.truth,
        )
    except ValueError as exc:
        print(f"plc simulator: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(simulator))


async def _serve(simulator: PlcSimulator) -> int:
    stop = stop_on_signals()
    started = time.monotonic()
    async with simulator:
        if simulator.certificate_path is not None:
            print(f"PLC simulator certificate {simulator.certificate_path}", flush=True)
        print(f"PLC simulator ready at {simulator.endpoint}", flush=True)
        log.info("ready after %.1f s", time.monotonic() - started)
        await stop.wait()
    log.info("PLC simulator stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator standalone: `python -m simulators.opcua --config config/factory.yaml`."""
    parser = argparse.ArgumentParser(prog="shopfloor simulate plc",
                                     description="OPC UA PLC simulator showing the machines of the simulated plant")
    add_arguments(parser)
    return run(parser.parse_args(argv))
