"""The `shopfloor` command line: a thin layer over the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from agent.clock import add_anchor_argument
from agent.config import ConfigError, FactoryConfig, HistorianSettings, load
from shopfloor import logs


def _load_or_exit(path: str) -> object:
    try:
        return load(path)
    except ConfigError as exc:
        print(f"shopfloor: the config has {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(2) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load_or_exit(args.file)
    print(f"{args.file}: valid")
    if not args.connect:
        return 0
    from shopfloor.connect import check_connections

    problems = check_connections(cfg)  # type: ignore[arg-type]
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    if problems:
        print(f"{args.file}: {len(problems)} connection problem(s)", file=sys.stderr)
        return 3
    print(f"{args.file}: historian and sources reachable")
    return 0


def _with_historian(cfg: FactoryConfig, url: str) -> FactoryConfig:
    """`cfg` writing to the InfluxDB of `url` (--historian, as the demo reads it); exit 2 with one line per
    problem when the URL or the secret it needs is wrong."""
    from agent.config.runtime import check_historian
    from shopfloor.demo import historian_from_url

    try:
        historian = HistorianSettings.model_validate(historian_from_url(url))
    except (ValueError, ValidationError) as exc:
        print(f"shopfloor agent: --historian {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    issues = check_historian(historian, resolve_secrets=True)
    for loc, _found, expected in issues:
        print(f"shopfloor agent: --historian {url}: {'.'.join(map(str, loc))}: expected {expected}", file=sys.stderr)
    if issues:
        raise SystemExit(2)
    return cfg.model_copy(update={"historian": historian})


def cmd_agent(args: argparse.Namespace) -> int:
    from agent.clock import caught_up, simulated_clock
    from agent.http import ListenError
    from agent.runner import Agent

    cfg: FactoryConfig = _load_or_exit(args.config)  # type: ignore[assignment]
    if args.historian:
        cfg = _with_historian(cfg, args.historian)

    def reload_config() -> FactoryConfig:  # SIGHUP: the same file and options again; ConfigError when invalid
        again = load(args.config)
        return _with_historian(again, args.historian) if args.historian else again
    start = caught_up(args.sim_start, args.speed, args.sim_anchor)
    clock = simulated_clock(start, args.speed) if start else None
    try:
        agent = Agent(cfg, data_dir=Path(args.data_dir) if args.data_dir else None,
                      http_port=args.agent_port, now_ns=clock, reload_config=reload_config)
    except ListenError as exc:
        print(f"shopfloor agent: {exc} (another program has the port? choose one with --agent-port or "
              "agent.http_port)", file=sys.stderr)
        return 3
    return agent.run()


def cmd_dashboard(args: argparse.Namespace) -> int:
    from agent.clock import caught_up, simulated_clock
    from dashboard.server import serve

    cfg = _load_or_exit(args.config)
    start = caught_up(args.sim_start, args.speed, args.sim_anchor)
    clock = simulated_clock(start, args.speed) if start else None
    return serve(cfg, data_dir=Path(args.data_dir) if args.data_dir else None,  # type: ignore[arg-type]
                 host=args.host, port=args.port, now_ns=clock, clock_speed=args.speed if clock else 1.0)


def cmd_sync(args: argparse.Namespace) -> int:
    from dashboard.sync import run_sync

    return run_sync(_load_or_exit(args.config), args)  # type: ignore[arg-type]


def cmd_simulate(args: argparse.Namespace) -> int:
    return int(args.simulator_run(args))


def cmd_demo(args: argparse.Namespace) -> int:
    from shopfloor.demo import run_demo

    return run_demo(args)


def cmd_token(args: argparse.Namespace) -> int:
    """A new feed token: the token goes to the platform, its SHA-256 into capacity.tokens."""
    import hashlib
    import secrets

    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
    if args.out:
        path = Path(args.out)
        try:
            path.write_text(token + "\n", encoding="utf-8")
            path.chmod(0o600)
        except OSError as exc:
            print(f"shopfloor token: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        print(f"token written to {path} (give it to the platform; keep it secret)")
    else:
        print(f"token:  {token}   (give it to the platform; it is not kept anywhere)")
    print("config: add under capacity.tokens:")
    print(f"  - {{name: {args.name}, sha256: {digest}}}")
    return 0


# Commands that live in a module of their own: each module has `register(sub)`, which adds its parser(s) to the
# subparsers and sets `func`; imported when the parser is built.
COMMAND_MODULES: tuple[str, ...] = ("shopfloor.certs", "shopfloor.passwd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shopfloor", description="Shop-floor agent, simulators and tools.")
    logs.add_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check-config", help="validate a config file; exit 0 when valid, 2 with every problem")
    p.add_argument("file")
    p.add_argument("--connect", action="store_true",
                   help="also reach the historian (with its credentials: write and read rights) and the sources' "
                        "servers; exit 3 when one fails")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("agent", help="run an edge agent")
    p.add_argument("--config", required=True)
    p.add_argument("--data-dir", help="outbox, historian and certificates (default: agent.data_dir)")
    p.add_argument("--agent-port", type=int, default=None, help="port of /healthz and /metrics (default 9108)")
    p.add_argument("--historian", metavar="URL",
                   help="write to this InfluxDB instead of the config's historian, as `shopfloor demo --historian`: "
                        "influxdb://[user@]host:port/database[?rp=POLICY] (password from INFLUX_PASSWORD) or "
                        "influxdb2://host:port/bucket?org=ORG (token from INFLUX_TOKEN); influxdbs:// and "
                        "influxdb2s:// for HTTPS")
    p.add_argument("--sim-start", type=datetime.fromisoformat, default=None, metavar="ISO_TIME",
                   help="stamp what the agent itself decides (OFFLINE, dead letters) on a simulated clock starting "
                        "here, as the demo's simulators do")
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second (with --sim-start)")
    add_anchor_argument(p)
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser("dashboard", help="serve the e-board dashboard (default http://127.0.0.1:8080)")
    p.add_argument("--config", required=True)
    p.add_argument("--data-dir", help="where the embedded historian is (default: agent.data_dir)")
    p.add_argument("--host", default=None, help="address to listen on (default dashboard.host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default dashboard.port, 8080)")
    p.add_argument("--sim-start", type=datetime.fromisoformat, default=None, metavar="ISO_TIME",
                   help="run the boards on a simulated clock starting here (the simulators' --start)")
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second (with --sim-start)")
    add_anchor_argument(p)
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("sync", help="push capacity to the C2M platform without the dashboard")
    p.add_argument("--config", required=True)
    p.add_argument("--data-dir", help="where the historian, the holds and the push outboxes are "
                                      "(default: agent.data_dir)")
    p.add_argument("--port", type=int, default=9109, help="port of /healthz and /metrics (default 9109)")
    p.add_argument("--feed-url", default=None, help="the dashboard URL the platform pulls the feed from")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("browse", help="list an OPC UA server's variables under a node as a collect: section "
                                      "(YAML on stdout)")
    from shopfloor.browse import add_arguments as browse_arguments
    from shopfloor.browse import cmd_browse

    browse_arguments(p)
    p.set_defaults(func=cmd_browse)

    p = sub.add_parser("token", help="make a bearer token for the /v1 feed and print the line for the config")
    p.add_argument("--name", default="platform", help="who holds the token (default platform)")
    p.add_argument("--out", help="write the token to this file (mode 600) instead of printing it")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("simulate", help="run a simulator")
    sims = p.add_subparsers(dest="simulator", required=True, metavar="SIMULATOR")
    from simulators import line, platform
    from simulators import opcua as plc
    from simulators.modbus import server as modbus
    from simulators.s7 import server as s7

    for name, module, text in (("plc", plc, "OPC UA PLC simulator for the configured machines"),
                               ("modbus", modbus, "Modbus TCP simulator for the machines of a Modbus source"),
                               ("s7", s7, "S7 PLC simulator (snap7 server) for the machines of an S7 source"),
                               ("line", line, "MQTT line simulator: badges, andon, material, orders"),
                               ("platform", platform, "C2M platform: receives signed capacity events, pulls the "
                                                      "feed, places holds")):
        sp = sims.add_parser(name, help=text)
        module.add_arguments(sp)
        sp.set_defaults(func=cmd_simulate, simulator_run=module.run)

    p = sub.add_parser("demo", help="run simulators, a broker and the agent on this machine")
    from shopfloor.demo import add_arguments as demo_arguments

    demo_arguments(p)
    p.set_defaults(func=cmd_demo)

    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    logs.add_to_commands(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup_from_args(args)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
