"""Shopfloor as a systemd service: the units in deploy/systemd/ verify, and the real agent and sync processes
speak sd_notify to a socket this test binds (as systemd would): READY=1, WATCHDOG=1 only while the agent's
pipeline commits, STOPPING=1 on SIGTERM. The agent's JSON log file parses line by line and rotates at its size."""

from __future__ import annotations

import base64
import configparser
import json
import os
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from shopfloor.cli import build_parser
from simulators.broker import free_port
from tests.conftest import ROOT
from tests.e2e.conftest import Proc, wait_until

UNITS = ROOT / "deploy" / "systemd"
UNIT_NAMES = ("shopfloor-agent.service", "shopfloor-dashboard.service", "shopfloor-sync.service")
WATCHDOG_USEC = 1_000_000  # the agent checks itself and notifies every 0.5 s


class NotifySocket:
    """The datagram socket systemd listens on for sd_notify, read on a thread of its own as systemd reads it
    (a full queue would make the process drop notifications), with what arrived and when."""

    def __init__(self) -> None:
        # a folder of its own under /tmp: a socket path must be short (108 bytes)
        self.dir = Path(tempfile.mkdtemp(prefix="sd-"))
        self.path = self.dir / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            at = time.monotonic()
            self.messages += [(at, line) for line in data.decode().splitlines()]

    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}

    def receive(self, seconds: float) -> list[tuple[float, str]]:
        """What arrives within the next `seconds`."""
        first = len(self.messages)
        time.sleep(seconds)
        return self.messages[first:]

    def wait_for(self, state: str, timeout: float) -> float:
        """Receive until `state` (e.g. "READY=1") arrives; when it did."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for at, line in list(self.messages):
                if line == state:
                    return at
            time.sleep(0.05)
        raise AssertionError(f"no {state} within {timeout} s; got {[m for _, m in self.messages][-10:]}")

    def wait_watchdogs(self, count: int, after: float, timeout: float = 15) -> None:
        """Receive until `count` WATCHDOG=1 have arrived after `after` (generous: the machine may be busy)."""
        end = time.monotonic() + timeout
        while len(watchdogs(self.messages, after)) < count and time.monotonic() < end:
            self.receive(0.1)
        got = len(watchdogs(self.messages, after))
        assert got >= count, f"{got} WATCHDOG=1 of {count} within {timeout} s"

    def wait_silence(self, seconds: float, timeout: float = 15) -> None:
        """Receive until no WATCHDOG=1 has arrived for `seconds`."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            self.receive(0.1)
            last = max(watchdogs(self.messages), default=start)
            if time.monotonic() - max(last, start) >= seconds:
                return
        raise AssertionError(f"WATCHDOG=1 kept arriving for {timeout} s")

    def close(self) -> None:
        self._closed.set()
        self._reader.join(1)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string((UNITS / name).read_text().replace("\\\n", " "))
    return parser


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_unit_runs_a_hardened_notify_service_whose_command_line_parses(name):
    service = unit(name)["Service"]
    assert service["Type"] == "notify" and int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure" and "2" in service["RestartPreventExitStatus"].split()
    assert service["User"] == "shopfloor" and service["EnvironmentFile"].startswith("/etc/shopfloor/")
    assert service["ProtectSystem"] == "strict" and service["NoNewPrivileges"] == "true"
    assert service["PrivateTmp"] == "true" and "/var/lib/shopfloor" in service["ReadWritePaths"].split()
    program, *argv = shlex.split(service["ExecStart"])
    assert program == "/opt/shopfloor/.venv/bin/shopfloor"
    args = build_parser().parse_args(argv)  # the options the unit gives exist, with these values
    assert args.command == name.removeprefix("shopfloor-").removesuffix(".service")
    assert args.config == "/etc/shopfloor/factory.yaml" and args.data_dir == "/var/lib/shopfloor"
    assert args.log_format == "json" and args.log_file.startswith("/var/log/shopfloor/")


def test_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    for name in UNIT_NAMES:  # verify checks that ExecStart exists: point it at this checkout's command
        text = (UNITS / name).read_text().replace("/opt/shopfloor/.venv/bin/shopfloor",
                                                  str(ROOT / ".venv" / "bin" / "shopfloor"))
        (tmp_path / name).write_text(text)
    done = subprocess.run([analyze, "verify", "--man=no", *(str(tmp_path / n) for n in UNIT_NAMES)],
                          capture_output=True, text=True, timeout=60)
    # an unknown key or a value systemd cannot parse is only a warning on stderr, with exit status 0
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def publish_level(port: int, level: float) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="service-test")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish("line/line-1/material/resin-pp/level",
                       json.dumps({"level": level, "ts": int(time.time() * 1000)}), qos=1).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()


def watchdogs(messages: list[tuple[float, str]], after: float = 0.0) -> list[float]:
    return [at for at, line in messages if line == "WATCHDOG=1" and at > after]


def test_agent_notifies_ready_watchdog_while_its_pipeline_commits_and_stopping(make_system, notify_socket, tmp_path):
    system = make_system()
    log_file = tmp_path / "agent-json.log"
    agent = Proc("agent", ["--log-format", "json", "--log-file", str(log_file), "--log-level", "DEBUG",
                           "--log-max-bytes", "2500", "--log-backups", "2", "agent", "--config", str(system.config)],
                 tmp_path, env=notify_socket.env()).start()
    system.procs.append(agent)
    ready = notify_socket.wait_for("READY=1", 30)
    assert not [at for at in watchdogs(notify_socket.messages) if at < ready]  # nothing before READY=1
    assert system.http("/healthz")[0] in (200, 503)  # READY=1 comes once it serves
    notify_socket.wait_watchdogs(3, ready)

    # The pipeline stuck: another program holds the outbox's write lock (a backup tool, a hung disk), so the
    # ingest thread cannot commit the message that arrives. The agent withholds WATCHDOG=1 (systemd would
    # restart it after WatchdogSec); once the lock is gone, the message is stored and notifications resume.
    wait_until(lambda: system.health()["sources"]["line-bus"]["connected"], 20, "line-bus connected")
    lock = sqlite3.connect(system.data_dir / "outbox.sqlite3", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        publish_level(system.broker.port, 182.5)
        notify_socket.wait_silence(1.5)  # the message waits for the lock, and the agent stops notifying
        quiet = time.monotonic()
        notify_socket.receive(1.0)
        assert not watchdogs(notify_socket.messages, quiet), "WATCHDOG=1 while the pipeline could not commit"
        assert system.sql("SELECT COUNT(*) FROM material_level") == [(0,)]
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    unlocked = time.monotonic()
    notify_socket.wait_watchdogs(2, unlocked)
    wait_until(lambda: system.sql("SELECT COUNT(*) FROM material_level") == [(1,)], 10, "the level stored")

    def logged(text: str) -> bool:
        return any(text in f.read_text(encoding="utf-8") for f in tmp_path.glob("agent-json.log*"))
    wait_until(lambda: logged("watchdog notifications held back") and logged("works again"), 10,
               "the agent to log that it held the watchdog back, and when it resumed")

    assert agent.stop(signal.SIGTERM) == 0
    notify_socket.receive(0.2)
    assert "STOPPING=1" in [line for _, line in notify_socket.messages]

    files = sorted(tmp_path.glob("agent-json.log*"))
    assert [f.name for f in files] == ["agent-json.log", "agent-json.log.1", "agent-json.log.2"], files
    for f in files:
        lines = f.read_text(encoding="utf-8").splitlines()
        assert f.stat().st_size <= 2500 or len(lines) == 1, f  # rotated before the next line passed the size
        for line in lines:
            entry = json.loads(line)
            assert {"ts", "level", "logger", "message"} <= set(entry), line
    entries = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
    assert any(e["message"].startswith("agent edge-1 stopped") for e in entries)


def test_dashboard_and_sync_notify_ready_watchdog_and_stopping(make_system, tmp_path):
    secret = tmp_path / "platform-secret"
    secret.write_text("whsec_" + base64.b64encode(b"a-key-for-the-sync-test-000001").decode())

    def push_nowhere(data):  # a platform that is down: delivery fails and is retried, the process is healthy
        data["capacity"] = {"push": {"in_dashboard": False, "endpoints": [{
            "name": "platform", "url": f"http://127.0.0.1:{free_port()}/events", "secret_files": [str(secret)]}]}}

    system = make_system(push_nowhere)
    sockets = {"dashboard": NotifySocket(), "sync": NotifySocket()}
    try:
        procs = {"dashboard": Proc("dashboard", ["dashboard", "--config", str(system.config), "--port",
                                                 str(free_port())], tmp_path, env=sockets["dashboard"].env()),
                 "sync": Proc("sync", ["sync", "--config", str(system.config), "--port", str(free_port())], tmp_path,
                              env=sockets["sync"].env())}
        for proc in procs.values():  # both at once: each spends its first seconds importing
            system.procs.append(proc)
            proc.start()
        for sock in sockets.values():
            ready = sock.wait_for("READY=1", 40)
            # the dashboard's after a GET of its own /healthz answered, sync's while its push threads run
            sock.wait_watchdogs(2, ready)
        for name, proc in procs.items():
            # a clean stop waits for a capacity computation under way, which takes long on a busy machine
            assert proc.stop(signal.SIGTERM, timeout=60) == 0, name
            sockets[name].receive(0.2)
            assert "STOPPING=1" in [line for _, line in sockets[name].messages], name
    finally:
        for sock in sockets.values():
            sock.close()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_http_watchdog_notifies_only_while_the_server_answers(scheme, notify_socket, monkeypatch, tmp_path):
    """The dashboard's hook (`notify.serving`) against a real HTTP server, plain or TLS with a self-signed
    certificate: WATCHDOG=1 while its GET is answered (a 401 too), none once the server stops answering,
    STOPPING=1 when the server is done."""
    import ssl
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from agent import notify
    from simulators.pki import ensure_self_signed

    class LoginFirst(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format, *args):  # noqa: A002
            pass

    for key, value in notify_socket.env().items():
        monkeypatch.setenv(key, value)
    server = ThreadingHTTPServer(("127.0.0.1", 0), LoginFirst)
    if scheme == "https":
        pair = ensure_self_signed(tmp_path / "pki", "urn:shopfloor:test", "dashboard.plant.example")
        pem = tmp_path / "cert.pem"
        pem.write_text(ssl.DER_cert_to_PEM_cert(pair.certificate.read_bytes()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pem, pair.private_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    done = notify.serving("0.0.0.0", server.server_address[1], "test server", scheme=scheme)  # on the loopback
    try:
        ready = notify_socket.wait_for("READY=1", 5)
        notify_socket.wait_watchdogs(2, ready)
        server.shutdown()
        server.server_close()
        gone = time.monotonic()
        assert not watchdogs(notify_socket.receive(1.6), gone + 0.6)
    finally:
        done()
    notify_socket.receive(0.2)
    assert notify_socket.messages[-1][1] == "STOPPING=1"


def test_a_notify_socket_nobody_reads_never_blocks_the_process(monkeypatch):
    """systemd swamped (its queue of notifications full): notify drops what cannot go now instead of waiting,
    which would stall the agent's event loop."""
    from agent import notify

    path = Path(tempfile.mkdtemp(prefix="sd-")) / "notify"
    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    deaf.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        start = time.monotonic()
        sent = [notify.notify("WATCHDOG=1") for _ in range(100)]  # the kernel queues a few (net.unix.max_dgram_qlen)
        assert time.monotonic() - start < 5
        assert sent[0] and not sent[-1]
    finally:
        deaf.close()
        shutil.rmtree(path.parent, ignore_errors=True)


def test_outside_systemd_notify_does_nothing(monkeypatch):
    from agent import notify

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert notify.notify("READY=1") is False and notify.watchdog_period() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # systemd watches another process (the parent)
    assert notify.watchdog_period() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert notify.watchdog_period() == 15.0
