"""`shopfloor simulate line`: the MQTT line simulator's command line."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, urlsplit

from agent.clock import add_anchor_argument, caught_up
from simulators.line.simulator import LineSimulator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `shopfloor simulate line`."""
    parser.add_argument("--config", required=True, metavar="FILE", help="factory config (YAML)")
    parser.add_argument("--mqtt", default="mqtt://127.0.0.1:1883", metavar="URL", help="broker URL")
    parser.add_argument("--username", default=None, help="broker user name (a broker with passwords and an ACL)")
    parser.add_argument("--password-file", default=None, metavar="FILE",
                        help="file holding the broker password of --username (kept out of the command line)")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    parser.add_argument("--seed", type=int, default=1, help="random seed (same seed, same shop floor)")
    add_anchor_argument(parser)
    parser.add_argument("--start", type=datetime.fromisoformat, default=None, metavar="ISO_TIME",
                        help="simulated clock start (default: now); the PLC simulator's --start")
    parser.add_argument("--count", type=int, default=None, metavar="N", help="stop after N valid messages")
    parser.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S real seconds")
    parser.add_argument("--malformed-every", type=int, default=0, metavar="N",
                        help="after every N valid messages publish one malformed one (0: never)")
    parser.add_argument("--truth-file", default=None, metavar="PATH",
                        help="write the acknowledged counts there every second and on exit")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1)
    parser.add_argument("--flood", type=int, default=None, metavar="N",
                        help="benchmark: publish N material levels as fast as possible, then stop")
    parser.add_argument("--client-id", default=None)
    parser.add_argument("--protocol", choices=("3.1.1", "5"), default="5",
                        help="MQTT version (the amqtt fallback broker speaks 3.1.1 only)")
    parser.add_argument("--flood-client", choices=("raw", "paho"), default="raw",
                        help="flood with the built-in pipelining MQTT 3.1.1 publisher (fast) or with paho")
    parser.add_argument("--max-inflight", type=int, default=1000, metavar="N",
                        help="unacknowledged QoS 1 messages on the wire (the broker may cap it lower)")
    parser.add_argument("--flood-rate", type=float, default=None, metavar="R",
                        help="benchmark: pace the flood at R messages/s (default: as fast as possible)")
    parser.add_argument("--flood-lane", type=_lane, default=(0, 1), metavar="K/N",
                        help="benchmark: flood only every N-th material topic starting at K, so N flood "
                             "processes never publish to the same topic (default 0/1: all topics)")


def _lane(text: str) -> tuple[int, int]:
    """Parse `K/N` for --flood-lane."""
    try:
        lane, lanes = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"K/N expected, e.g. 0/2, not {text!r}") from None
    if lanes < 1 or not 0 <= lane < lanes:
        raise argparse.ArgumentTypeError(f"K/N with 0 <= K < N expected, not {text!r}")
    return lane, lanes


def _with_credentials(url: str, username: str | None, password_file: str | None) -> str:
    """The broker URL with the user name and the password read from its file (the URL stays in this process;
    what the simulator prints or logs shows *** for the password)."""
    if username is None:
        if password_file is not None:
            raise ValueError("--password-file needs --username")
        return url
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    try:
        password = Path(password_file).read_text(encoding="utf-8").strip() if password_file else None
    except OSError as exc:
        raise ValueError(f"--password-file {password_file}: {exc.strerror or exc}") from None
    userinfo = quote(username, safe="") + (f":{quote(password, safe='')}" if password is not None else "")
    return parts._replace(netloc=f"{userinfo}@{host}").geturl()


def run(args: argparse.Namespace) -> int:
    """Run the simulator until it is done or SIGINT/SIGTERM; 0 when every message was acknowledged, 2 on a
    configuration problem (told in one line)."""
    from agent.config import ConfigError, load

    try:
        cfg = load(args.config, resolve_secrets=False)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        url = _with_credentials(args.mqtt, args.username, args.password_file)
        sim = LineSimulator(cfg, url, args.speed, args.seed, qos=args.qos,
                            malformed_every=args.malformed_every, count=args.count, duration_s=args.duration,
                            flood=args.flood, truth_file=args.truth_file, client_id=args.client_id,
                            protocol=args.protocol, max_inflight=args.max_inflight, flood_client=args.flood_client,
                            flood_rate=args.flood_rate, flood_lane=args.flood_lane, announce=True,
                            start=caught_up(args.start, args.speed, args.sim_anchor), origin=args.start)
    except ValueError as exc:
        print(f"line simulator: {exc}", file=sys.stderr)
        return 2
    interrupted = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: interrupted.set())
    try:
        sim.start()
        while not sim.done.wait(0.2) and not interrupted.is_set():
            pass
        all_acked = sim.stop()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    truth = sim.truth()
    if sim.flood_figures:
        f = sim.flood_figures
        print(f"flood: {int(f['messages'])} messages, published in {f['publish_s']:.2f} s, all acknowledged after "
              f"{f['acked_s']:.2f} s: {f['per_s']:.0f} messages/s", flush=True)
    print(f"line simulator: {truth['acked']} of {truth['published']} messages acknowledged", flush=True)
    return 0 if all_acked else 1
