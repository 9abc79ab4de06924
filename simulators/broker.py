"""A private MQTT broker for the demo and the tests.

`Broker` runs Mosquitto as a subprocess when the binary is found (on PATH, in /usr/sbin or in the usual Windows
install folder), with a config written into its data directory: a loopback listener, persistence in the data
directory, a raised in-flight window and a deep per-client queue, so that a QoS 1 subscriber that falls behind
gets messages late rather than never. When no Mosquitto exists (a Windows edge PC without it installed), it falls
back to an in-process amqtt broker on the same port.

Access is anonymous unless `users` (name -> password, hashed into a password file in the data directory) or a
`password_file` is given; `acl_file` limits who may read and write which topics (deploy/mosquitto/acl, the one the
demo uses); `tls` makes the listener speak TLS only, and with `require_certificate` every client must present a
certificate signed by the CA, whose common name is then its user name for the ACL (mutual TLS).

    with Broker() as broker:
        run_something_against(broker.url)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

from simulators.harness import die_with_parent

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
_MOSQUITTO_PLACES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto",
                     r"C:\Program Files\mosquitto\mosquitto.exe")


class BrokerError(RuntimeError):
    """The broker could not be started (the message quotes the end of its log)."""


def free_port() -> int:
    """A TCP port on the loopback interface that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary, or None when it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for place in _MOSQUITTO_PLACES:
        if os.path.isfile(place) and os.access(place, os.X_OK):
            return place
    return None


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


class Broker:
    """An MQTT broker on 127.0.0.1 that lives as long as this object is started.

    `port=0` picks a free port on first start; `restart()` keeps that port and (with Mosquitto) the persisted
    sessions and queued messages. `implementation` forces "mosquitto" or "amqtt"; "auto" prefers Mosquitto.

    The amqtt fallback speaks MQTT 3.1.1 only (clients asking for MQTT 5 are refused), keeps nothing across a
    restart (no persistence) and has no in-flight or queue settings; it is meant for a demo on a PC without
    Mosquitto, not for measuring.
    """

    def __init__(
        self,
        port: int = 0,
        data_dir: str | Path | None = None,
        max_inflight: int = 1000,
        persistence: bool = True,
        implementation: Literal["auto", "mosquitto", "amqtt"] = "auto",
        start_timeout_s: float = 10.0,
        tls: tuple[Path, Path, Path] | None = None,
        password_file: Path | None = None,
        users: dict[str, str] | None = None,
        acl_file: Path | None = None,
        require_certificate: bool = False,
        tied: bool = False,
    ) -> None:
        self._port = port
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="shopfloor-broker-"))
        self.max_inflight = max_inflight
        self.persistence = persistence
        self.start_timeout_s = start_timeout_s
        # (CA certificate, server certificate, server key), all PEM: the listener then speaks only TLS
        self.tls = tls
        # a mosquitto_passwd file: anonymous clients are then refused
        self.password_file = password_file
        # user name -> password, written (hashed) to a password file of the data directory on start
        self.users = dict(users or {})
        if self.users and password_file is not None:
            raise BrokerError("give users or a password_file, not both")
        self.acl_file = acl_file
        # mutual TLS: a client without a certificate signed by the CA is refused; its certificate's common name
        # is its user name (for the ACL)
        self.require_certificate = require_certificate
        # Mosquitto ends when this process dies, even by SIGKILL (Linux; see simulators.harness.die_with_parent):
        # the demo's broker; a test's broker outlives nothing anyway
        self.tied = tied
        if require_certificate and not tls:
            raise BrokerError("require_certificate needs tls (the CA that signs the clients' certificates)")
        if (tls or password_file or users or acl_file) and implementation == "amqtt":
            raise BrokerError("TLS, passwords and ACLs are offered with Mosquitto only")
        binary = find_mosquitto() if implementation != "amqtt" else None
        if implementation == "mosquitto" and binary is None:
            raise BrokerError("mosquitto was asked for but is not installed (not on PATH nor in /usr/sbin)")
        self.binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._amqtt: _AmqttThread | None = None

    # --- public -------------------------------------------------------------------------------------------

    @property
    def implementation(self) -> str:
        """"mosquitto" or "amqtt"."""
        return "mosquitto" if self.binary else "amqtt"

    @property
    def port(self) -> int:
        """The TCP port; 0 until the first start when a free port is to be picked."""
        return self._port

    @property
    def url(self) -> str:
        """mqtt://127.0.0.1:<port> (mqtts:// with TLS), as the agent config and the simulators take it."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{HOST}:{self._port}"

    @property
    def log_file(self) -> Path:
        """Where Mosquitto writes its log (connections, errors)."""
        return self.data_dir / "mosquitto.log"

    @property
    def running(self) -> bool:
        """True while the broker process (or thread) is alive."""
        if self._process is not None:
            return self._process.poll() is None
        return self._amqtt is not None

    def start(self) -> Broker:
        """Start the broker and return once its port accepts connections; raise BrokerError if it does not."""
        if self.running:
            return self
        if self._port == 0:
            self._port = free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.binary:
            self._start_mosquitto(self.binary)
        else:
            self._amqtt = _AmqttThread(self._port)
            self._amqtt.start(self.start_timeout_s)
        log.info("MQTT broker (%s) listening on %s", self.implementation, self.url)
        return self

    def stop(self) -> None:
        """Stop the broker; Mosquitto saves its persistence database on the way out (SIGTERM)."""
        if self._process is not None:
            process, self._process = self._process, None
            if process.poll() is None:
                # On POSIX terminate() is SIGTERM, which Mosquitto handles by saving and exiting cleanly.
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    log.warning("mosquitto on port %s did not stop within 10 s; killing it", self._port)
                    process.kill()
                    process.wait(timeout=10)
            if self._stderr is not None:
                self._stderr.close()
                self._stderr = None
        if self._amqtt is not None:
            amqtt_thread, self._amqtt = self._amqtt, None
            amqtt_thread.stop()

    def kill(self) -> None:
        """Stop Mosquitto the hard way (SIGKILL), as a crash or power cut would; nothing is saved on the way."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self.stop()

    def restart(self) -> None:
        """Stop and start again on the same port, keeping the persisted state (Mosquitto only)."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the broker and remove the data directory if this object created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- mosquitto ----------------------------------------------------------------------------------------

    def _config_text(self) -> str:
        data = self.data_dir.resolve()
        lines = [
            "# written by shopfloor simulators/broker.py; rewritten on every start",
            f"listener {self._port} {HOST}",
            f"allow_anonymous {'false' if self._authenticated else 'true'}",
            # In-flight window per client: the publisher and the agent's subscription both need more than
            # the default 20 to get past a few thousand QoS 1 messages a second.
            f"max_inflight_messages {self.max_inflight}",
            # Queue deep rather than drop: the default 1000 would silently discard a slow subscriber's backlog.
            "max_queued_messages 1000000",
            "max_queued_bytes 0",
            f"persistence {'true' if self.persistence else 'false'}",
            # Mosquitto 1.x joined location and file name without a separator, hence the trailing slash.
            f"persistence_location {data.as_posix()}/",
            "persistence_file mosquitto.db",
            # Saved on a clean stop in any case; the autosave bounds what a kill() loses.
            "autosave_interval 10",
            f"log_dest file {(data / 'mosquitto.log').as_posix()}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if self.tls:
            ca, cert, key = (Path(p).resolve().as_posix() for p in self.tls)
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}", "tls_version tlsv1.2"]
        if self.require_certificate:
            lines += ["require_certificate true", "use_identity_as_username true"]
        if self.password_file or self.users:
            lines.append(f"password_file {Path(self._password_path).resolve().as_posix()}")
        if self.acl_file:
            lines.append(f"acl_file {Path(self.acl_file).resolve().as_posix()}")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # As root Mosquitto would switch to the mosquitto user, who cannot write our data directory.
            lines.append("user root")
        return "\n".join(lines) + "\n"

    @property
    def _authenticated(self) -> bool:
        return bool(self.password_file or self.users or self.require_certificate)

    @property
    def _password_path(self) -> Path:
        return self.password_file or self.data_dir / "passwd"

    def _write_password_file(self) -> None:
        """The users' passwords as Mosquitto 2 keeps them (`$7$`: PBKDF2-SHA512, 101 rounds, as mosquitto_passwd
        writes), readable by the owner only."""
        lines = []
        for name, password in self.users.items():
            if not name or ":" in name or "\n" in name:
                raise BrokerError(f"user name {name!r}: no ':' or line break, not empty")
            salt = os.urandom(12)
            digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, 101)
            lines.append(f"{name}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}")
        path = self._password_path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")

    def _start_mosquitto(self, binary: str) -> None:
        if self.users:
            self._write_password_file()
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text(self._config_text(), encoding="utf-8")
        self._stderr = open(self.data_dir / "mosquitto.stderr", "ab")  # noqa: SIM115 - lives as long as the process
        creationflags = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) if sys.platform == "win32" else 0
        self._process = subprocess.Popen(
            [binary, "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
            creationflags=creationflags, preexec_fn=die_with_parent if self.tied and sys.platform != "win32" else None,
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if _port_open(self._port):
                return
            time.sleep(0.05)
        tail = self._log_tail()
        self.stop()
        raise BrokerError(f"mosquitto did not start on {HOST}:{self._port} within {self.start_timeout_s} s:\n{tail}")

    def _log_tail(self, lines: int = 15) -> str:
        out: list[str] = []
        for path in (self.data_dir / "mosquitto.stderr", self.log_file):
            with contextlib.suppress(OSError):
                out += path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        return "\n".join(out) or "(no log output)"


class _AmqttThread:
    """An amqtt broker on its own asyncio loop in a daemon thread, so callers stay synchronous."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"amqtt-{port}", daemon=True)
        self._broker: Any = None

    def start(self, timeout_s: float) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        try:
            future.result(timeout=timeout_s)
        except Exception as exc:
            self.stop()
            raise BrokerError(f"amqtt did not start on {HOST}:{self.port}: {exc}") from exc

    async def _start(self) -> None:
        from amqtt.broker import Broker as AmqttBroker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        # amqtt takes its loop from the running one, hence constructing it inside the loop's thread.
        self._broker = AmqttBroker(config)
        await self._broker.start()

    def stop(self) -> None:
        if self._broker is not None:
            future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
            try:
                future.result(timeout=10)
            except Exception as exc:  # a broker that fails to shut down cleanly is still going away
                log.warning("amqtt broker on port %s did not shut down cleanly: %s", self.port, exc)
            self._broker = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._loop.close()
