"""`shopfloor demo`: the whole system on one machine, on embedded defaults, with simulators.

Starts an MQTT broker (unless --mqtt names one), the PLC simulators (OPC UA, and Modbus TCP and S7 for the
sources of those kinds that read machines), the line simulator and the agent as child processes, prints where
everything is, and stops all of it on Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlparse
from zoneinfo import ZoneInfo

import yaml

from agent.config import ConfigError, FactoryConfig, load
from agent.historian import HistorianError
from agent.sinks import open_historian
from agent.sinks.influx_protocol import quote_ident
from shopfloor.passwd import hash_password
from simulators.harness import die_with_parent

DEMO_USER = "lead"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "factory.yaml"
# The broker the demo starts takes the documented ACL (docs/mqtt-security.md) and these users, each with a password
# made for the demo: the agent, the dashboard's live view, and the line simulator as a gateway for every line.
BROKER_ACL = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto" / "acl"
AGENT_USER, DASHBOARD_USER, LINE_USER = "shopfloor-agent", "shopfloor-dashboard", "line-gateway"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="factory config (default: the example)")
    parser.add_argument("--data-dir", default="data/demo", help="where the demo keeps its data (default data/demo)")
    parser.add_argument("--port", type=int, default=8080,
                        help="dashboard port (default 8080; a free one when 8080 is taken)")
    parser.add_argument("--agent-port", type=int, default=9108, help="agent /healthz and /metrics port")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    parser.add_argument("--mqtt", help="use this broker (mqtt://host:port) instead of starting one")
    parser.add_argument("--opcua-port", type=int, default=4840, help="PLC simulator port (default 4840)")
    parser.add_argument("--platform-port", type=int, default=8090,
                        help="simulated C2M platform port (default 8090; a free one when it is taken)")
    parser.add_argument("--historian", metavar="URL",
                        help="write to this InfluxDB instead of the embedded SQLite historian: "
                             "influxdb://[user@]host:port/database[?rp=POLICY] (1.x; password from "
                             "INFLUX_PASSWORD) or influxdb2://host:port/bucket?org=ORG (2.x, 3.x, Cloud; token from "
                             "INFLUX_TOKEN); influxdbs:// and influxdb2s:// for HTTPS")
    parser.add_argument("--sim-start", default="auto",
                        help="simulated clock start (ISO time); 'auto' = a few seconds (of real time) before the "
                             "start of the shift in force, or of the latest one, so the demo shows a shift with "
                             "production and every figure covered from its start")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def historian_from_url(url: str) -> dict[str, Any]:
    """The `historian:` config section for an InfluxDB URL given on the command line (see --historian).

    Secrets never go into the URL or the written config: they are `${INFLUX_PASSWORD}` / `${INFLUX_TOKEN}`
    references resolved from the environment.
    """
    parsed = urlparse(url)
    schemes = {"influxdb": ("http", "v1"), "influxdbs": ("https", "v1"),
               "influxdb2": ("http", "v2"), "influxdb2s": ("https", "v2")}
    if parsed.password:  # before anything echoes the URL
        raise ValueError(f"{parsed.scheme}://{parsed.hostname}: put the password in INFLUX_PASSWORD, not in the URL")
    if parsed.scheme not in schemes or not parsed.hostname or not parsed.path.strip("/"):
        raise ValueError(f"{url!r}: expected influxdb://[user@]host:port/database or "
                         "influxdb2://host:port/bucket?org=ORG")
    http, api = schemes[parsed.scheme]
    query = dict(parse_qsl(parsed.query))
    section: dict[str, Any] = {"kind": "influxdb", "api": api,
                               "url": f"{http}://{parsed.hostname}:{parsed.port or 8086}"}
    name = parsed.path.strip("/")
    if api == "v1":
        section["database"] = name
        if "rp" in query:
            section["retention_policy"] = query["rp"]
        if parsed.username:
            section["username"] = parsed.username
            section["password"] = "${INFLUX_PASSWORD}"
    else:
        if "org" not in query:
            raise ValueError(f"{url!r}: add ?org=ORG (the InfluxDB organisation of the bucket)")
        section.update(bucket=name, org=query["org"], token="${INFLUX_TOKEN}")
    return section


def _kept_secret(path: Path, make: Callable[[], str]) -> Path:
    """A secret made for this demo, kept in its data dir (readable by its owner only) so restarts reuse it."""
    if not path.exists():
        path.write_text(make(), encoding="utf-8")
        path.chmod(0o600)
    return path


def demo_password_hash(data_dir: Path, password_file: Path) -> str:
    """The argon2 hash of the password in `password_file`, kept beside it: the same hash on every start, so a
    restart of the demo does not end the sessions opened with it (a new hash is a password change); made again
    when the password file was edited."""
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError

    password = password_file.read_text(encoding="utf-8").strip()
    kept = data_dir / "dashboard-password.argon2"
    if kept.exists():
        hashed = kept.read_text(encoding="utf-8").strip()
        try:
            PasswordHasher().verify(hashed, password)
            return hashed
        except (VerificationError, InvalidHashError):
            pass
    hashed = hash_password(password)
    kept.write_text(hashed, encoding="utf-8")
    kept.chmod(0o600)
    return hashed


def broker_passwords(data_dir: Path) -> dict[str, Path]:
    """The demo broker's users and the files with their passwords (made once, kept in the data dir)."""
    return {user: _kept_secret(data_dir / f"mqtt-{user}.password", lambda: secrets.token_urlsafe(16))
            for user in (AGENT_USER, DASHBOARD_USER, LINE_USER)}


def with_broker_user(cfg_path: Path, out: Path, user: str, password_file: Path) -> Path:
    """A copy of a demo config whose MQTT sources log in as `user` (the dashboard's own copy: it reads the live
    topics as the dashboard's user, which may not write them)."""
    data: dict[str, Any] = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    for source in data.get("sources", {}).get("mqtt", []):
        source.pop("password", None)
        source.update(username=user, password_file=str(password_file))
    out.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return out


def demo_config(config: Path, data_dir: Path, mqtt_url: str, opcua_port: int, agent_port: int,
                historian_url: str | None = None, platform_url: str | None = None,
                mqtt_password: Path | None = None) -> Path:
    """A copy of the factory config pointed at the demo's broker, simulator, data dir and historian; with
    `mqtt_password`, its MQTT sources log in to the demo's broker as the agent's user."""
    data: dict[str, Any] = yaml.safe_load(config.read_text(encoding="utf-8"))
    if historian_url:
        data["historian"] = historian_from_url(historian_url)
    for source in data.get("sources", {}).get("opcua", []):
        parsed = urlparse(source["endpoint"])
        source["endpoint"] = f"opc.tcp://127.0.0.1:{opcua_port}{parsed.path}"
    for source in data.get("sources", {}).get("mqtt", []):
        source["url"] = mqtt_url
        if mqtt_password is not None:
            source.pop("password", None)
            source.update(username=AGENT_USER, password_file=str(mqtt_password))
    for source in data.get("sources", {}).get("modbus", []):
        # the demo's Modbus simulator serves it on this machine: on its port when free (502 needs root), else another
        port = int(source.get("port", 502))
        source.update(host="127.0.0.1", port=port if port >= 1024 and _port_free(port) else _free_port())
    for source in data.get("sources", {}).get("s7", []):
        # the demo's S7 simulator serves it on this machine: on its port when free (102 needs root), else another
        port = int(source.get("port", 102))
        source.update(host="127.0.0.1", port=port if port >= 1024 and _port_free(port) else _free_port())
    data.setdefault("agent", {}).update({"data_dir": str(data_dir / "agent"), "http_port": agent_port})
    dashboard = data.setdefault("dashboard", {})
    if not dashboard.get("users"):
        # a line lead who may give stop reasons, with a password made for this demo and kept in its data dir for
        # the person trying it; the config holds only its argon2 hash, as a plant's config would
        secret = _kept_secret(data_dir / "dashboard-password", lambda: secrets.token_urlsafe(12))
        dashboard["users"] = [{"name": DEMO_USER, "password_hash": demo_password_hash(data_dir, secret)}]
    capacity = data.setdefault("capacity", {})
    if not capacity.get("tokens"):
        # a feed token for the platform, made for this demo and kept in its data dir; the config holds its hash
        token_file = _kept_secret(data_dir / "feed-token", lambda: secrets.token_urlsafe(32))
        digest = hashlib.sha256(token_file.read_text(encoding="utf-8").strip().encode("utf-8")).hexdigest()
        capacity["tokens"] = [{"name": "demo-platform", "sha256": digest}]
    push = capacity.setdefault("push", {})
    if platform_url and not push.get("endpoints"):
        # the simulated platform verifies the pushed events with a key made for this demo
        secret_file = _kept_secret(data_dir / "platform-secret",
                                   lambda: "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii"))
        push["endpoints"] = [{"name": "demo-platform", "url": f"{platform_url}/events",
                              "secret_files": [str(secret_file)]}]
        push.setdefault("interval_min", 1)
    out = data_dir / "demo-config.yaml"
    out.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    load(out, resolve_secrets=False)  # the derived file must be as valid as the original
    return out


def simulated_start(cfg: FactoryConfig, now: float | None = None, lead_s: float = 10.0) -> str:
    """An ISO time `lead_s` before the start of the shift in force now, or of the latest worked shift: the demo's
    processes are up and reading before that shift starts, so its boards have the whole shift's data."""
    from dashboard.kpi.shifts import NS, shift_at, shift_windows

    now = time.time() if now is None else now
    zone = ZoneInfo(cfg.site.timezone)
    window = shift_at(cfg.shifts, cfg.site.timezone, int(now * NS))
    if window is None:
        today = datetime.fromtimestamp(now, zone).date()
        past = [w for w in shift_windows(cfg.shifts, cfg.site.timezone, today - timedelta(days=8), today)
                if w.start_ns <= now * NS]
        window = past[-1] if past else None
    start = window.start_ns / NS if window is not None else now
    return datetime.fromtimestamp(start - lead_s, zone).isoformat()


def _prepare_influxdb(cfg: FactoryConfig) -> None:
    """Say what is wrong with the demo's InfluxDB before starting; create a missing 1.x database."""
    from agent.sinks.influx import InfluxHistorian

    historian = open_historian(cfg, Path("."))
    assert isinstance(historian, InfluxHistorian)
    try:
        problems = historian.check_connection()
        if cfg.historian.api == "v1" and any("no such database" in p for p in problems):
            historian.query([f"CREATE DATABASE {quote_ident(historian.database)}"])
            print(f"shopfloor demo: created InfluxDB database {historian.database}", flush=True)
            problems = historian.check_connection()
    except HistorianError as exc:
        problems = [str(exc)]
    finally:
        historian.close()
    for problem in problems:
        print(f"shopfloor demo: InfluxDB: {problem}\n  (the agent keeps the points in its outbox until this is "
              "fixed)", file=sys.stderr, flush=True)


def _wait_for_mqtt_sources(agent_port: int, sources: list[str], agent: subprocess.Popen[bytes],
                           timeout_s: float = 30.0) -> None:
    """Until the agent's health says every MQTT source is connected (subscribed), so that nothing the line
    simulator publishes first is lost; gives up after `timeout_s` with a warning."""
    import json
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and agent.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{agent_port}/healthz", timeout=2) as resp:
                health = json.loads(resp.read())
            if all(health["sources"].get(s, {}).get("connected") for s in sources):
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    print("shopfloor demo: the agent's MQTT sources are not connected yet; starting the line simulator anyway",
          file=sys.stderr, flush=True)


def run_demo(args: argparse.Namespace) -> int:
    from simulators.broker import Broker, find_mosquitto

    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        print(f"shopfloor demo: the config has {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    broker = None
    passwords: dict[str, Path] = {}
    if args.mqtt:
        mqtt_url = args.mqtt
    else:
        port = _free_port() if not _port_free(1883) else 1883
        if find_mosquitto():
            # users with passwords and the ACL: only the agent writes the live topics (the amqtt fallback, on
            # a PC without Mosquitto, has neither)
            passwords = broker_passwords(data_dir)
            broker = Broker(port=port, data_dir=data_dir / "broker",
                            users={u: p.read_text(encoding="utf-8").strip() for u, p in passwords.items()},
                            acl_file=BROKER_ACL if BROKER_ACL.is_file() else None, tied=True)
        else:
            broker = Broker(port=port, data_dir=data_dir / "broker")
        broker.start()
        mqtt_url = broker.url
    opcua_port = args.opcua_port if _port_free(args.opcua_port) else _free_port()
    agent_port = args.agent_port if _port_free(args.agent_port) else _free_port()
    dashboard_port = args.port if _port_free(args.port) else _free_port()
    platform_port = args.platform_port if _port_free(args.platform_port) else _free_port()
    platform_url = f"http://127.0.0.1:{platform_port}"
    try:
        cfg_path = demo_config(Path(args.config), data_dir, mqtt_url, opcua_port, agent_port, args.historian,
                               platform_url, passwords.get(AGENT_USER))
        cfg = load(cfg_path)
        dashboard_cfg = cfg_path
        if passwords:
            dashboard_cfg = with_broker_user(cfg_path, data_dir / "demo-dashboard-config.yaml", DASHBOARD_USER,
                                             passwords[DASHBOARD_USER])
    except (ValueError, ConfigError) as exc:
        if broker is not None:
            broker.stop()
        problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
        print("shopfloor demo: " + "\n".join(str(p) for p in problems), file=sys.stderr)
        return 2
    if cfg.historian.kind == "influxdb":
        _prepare_influxdb(cfg)
        where = (f"{cfg.historian.url}, database {cfg.historian.database} (InfluxDB 1.x)" if cfg.historian.api == "v1"
                 else f"{cfg.historian.url}, bucket {cfg.historian.bucket}, org {cfg.historian.org} (InfluxDB)")
    else:
        where = f"{data_dir / 'agent' / 'historian.sqlite3'} (SQLite)"
    endpoint = f"opc.tcp://127.0.0.1:{opcua_port}/shopfloor/plc"
    cli = [sys.executable, "-m", "shopfloor", "--log-level", args.log_level]
    children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(name: str, argv: list[str]) -> None:
        kwargs: dict[str, Any] = {}
        # own process groups: Ctrl-C reaches only the demo, which then stops the children in order
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        else:
            kwargs["start_new_session"] = True
            kwargs["preexec_fn"] = die_with_parent  # killed outright, the demo leaves no process holding a port
        children.append((name, subprocess.Popen(cli + argv, **kwargs)))

    stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        # the processes start within a few real seconds: that many seconds of the simulated clock before the
        # shift starts, so the boards have the whole shift's data
        sim_start = simulated_start(cfg, lead_s=10 * args.speed) if args.sim_start == "auto" else args.sim_start
        # every process reads one clock: it showed sim_start at `anchor`, whenever each process starts; the
        # simulators' plant starts at sim_start too, so the PLC and the line simulator run one world
        anchor = ["--sim-anchor", f"{time.time():.3f}"]
        start = ["--start", sim_start, *anchor, "--speed", str(args.speed)]
        sim_clock = ["--sim-start", sim_start, *anchor, "--speed", str(args.speed)]
        spawn("plc simulator", ["simulate", "plc", "--config", str(cfg_path), "--endpoint", endpoint, *start,
                                "--sim-timestamps", "--truth", str(data_dir / "plant-truth.json"),
                                "--cert-dir", str(data_dir / "plc-pki")])
        modbus_devices = [d for d in cfg.sources.modbus if any(m.source == d.id for _, m in cfg.machines())]
        for device in modbus_devices:
            spawn(f"Modbus simulator {device.id}", ["simulate", "modbus", "--config", str(cfg_path), "--source",
                                                     device.id, "--port", str(device.port), *start])
        s7_plcs = [src for src in cfg.sources.s7 if any(m.source == src.id for _, m in cfg.machines())]
        for src in s7_plcs:
            spawn(f"S7 simulator {src.id}", ["simulate", "s7", "--config", str(cfg_path), "--source", src.id,
                                              "--port", str(src.port), *start])
        # the agent first: its MQTT session must exist before the line simulator publishes the first order
        spawn("agent", ["agent", "--config", str(cfg_path), *sim_clock])
        _wait_for_mqtt_sources(agent_port, [m.id for m in cfg.sources.mqtt], children[-1][1])
        line_login = (["--username", LINE_USER, "--password-file", str(passwords[LINE_USER])] if passwords else [])
        spawn("line simulator", ["simulate", "line", "--config", str(cfg_path), "--mqtt", mqtt_url, *line_login,
                                 *start, "--truth-file", str(data_dir / "line-truth.json")])
        spawn("dashboard", ["dashboard", "--config", str(dashboard_cfg), "--port", str(dashboard_port), *sim_clock])
        platform = any(e.name == "demo-platform" for e in cfg.capacity.push.endpoints)
        if platform:
            spawn("platform simulator", [
                "simulate", "platform", "--port", str(platform_port),
                "--secret-file", str(data_dir / "platform-secret"), "--feed", f"http://127.0.0.1:{dashboard_port}",
                "--token-file", str(data_dir / "feed-token"), "--pull-every", "10",
                "--state-file", str(data_dir / "platform-state.json")])
        print(
            "\nShopfloor demo is running:\n"
            f"  MQTT broker      {mqtt_url}{' (started by the demo)' if broker else ''}\n"
            + (f"  broker users     {', '.join(passwords)}: passwords in {data_dir}/mqtt-<user>.password; "
               f"ACL {BROKER_ACL if broker and broker.acl_file else 'none'} (docs/mqtt-security.md)\n"
               if passwords else "") +
            f"  PLC simulator    {endpoint}\n"
            + "".join(f"  Modbus simulator 127.0.0.1:{d.port} (Modbus source {d.id}, control unit 247)\n"
                      for d in modbus_devices)
            + "".join(f"  S7 simulator     127.0.0.1:{src.port} (S7 source {src.id}, control DB60000)\n"
                      for src in s7_plcs) +
            f"  plant truth      {data_dir / 'plant-truth.json'} (what really happened, to check the boards by)\n"
            f"  agent health     http://127.0.0.1:{agent_port}/healthz\n"
            f"  agent metrics    http://127.0.0.1:{agent_port}/metrics\n"
            f"  historian        {where}\n"
            f"  live topics      shopfloor/v1/# on {mqtt_url}\n"
            f"  config used      {cfg_path}\n"
            f"  simulated clock  {sim_start} (x{args.speed:g})\n"
            f"  dashboard        http://127.0.0.1:{dashboard_port}  (TV kiosk: /kiosk; English: ?lang=en)\n"
            f"  stop reasons     log in as {DEMO_USER} with the password in {data_dir / 'dashboard-password'}\n"
            + (f"  C2M feed token   in {data_dir / 'feed-token'}: curl -H \"Authorization: Bearer $(cat "
               f"{data_dir / 'feed-token'})\" http://127.0.0.1:{dashboard_port}/v1/capacity\n"
               if any(t.name == "demo-platform" for t in cfg.capacity.tokens) else "")
            + (f"  C2M platform     {platform_url}  (simulated: receives the signed capacity events, pulls the "
               "feed, places holds)\n" if platform else "") +
            "Press Ctrl-C to stop everything.\n", flush=True)
        while not stop:
            for name, child in children:
                if child.poll() is not None:
                    print(f"shopfloor demo: the {name} exited with code {child.returncode}; stopping",
                          file=sys.stderr)
                    stop = True
            time.sleep(0.2)
    finally:
        # one at a time, readers before what they read: the dashboard, the agent (it closes its OPC UA
        # session while the PLC simulator still answers), then the simulators
        for _name, child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.CTRL_BREAK_EVENT if os.name == "nt" else signal.SIGTERM)  # type: ignore[attr-defined]
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=15)
            if child.poll() is None:
                child.kill()
        if broker is not None:
            broker.stop()
        print("Shopfloor demo stopped.", flush=True)
    return 0
