"""`shopfloor check-config --connect`: can this edge PC reach what the config names, with its credentials?

The historian is checked fully (reachable, credentials, write and read rights, database); OPC UA servers,
Modbus devices, S7 PLCs and MQTT brokers are checked for reachability (a TCP connection), since their sessions
are checked by the agent itself at start-up, with reconnects.
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from agent.config import FactoryConfig
from agent.historian import HistorianError
from agent.sinks import open_historian

CONNECT_TIMEOUT_S = 5.0


def _tcp_problem(what: str, host: str | None, port: int) -> str | None:
    try:
        with socket.create_connection((host or "127.0.0.1", port), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"{what} {host}:{port} is not reachable: {exc.strerror or exc}"


def check_connections(cfg: FactoryConfig) -> list[str]:
    """One line per problem found; empty when everything answered."""
    problems: list[str] = []
    h = cfg.historian
    if h.kind == "influxdb":
        historian = open_historian(cfg, Path(tempfile.gettempdir()))
        try:
            problems += [f"historian: {p}" for p in historian.check_connection()]  # type: ignore[attr-defined]
        except HistorianError as exc:
            problems.append(f"historian: {exc}")
        finally:
            historian.close()
    else:
        folder = (h.path.parent if h.path else Path(cfg.agent.data_dir))
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            with tempfile.TemporaryFile(dir=probe):
                pass
        except OSError as exc:
            problems.append(f"historian: cannot write in {probe} ({exc.strerror or exc})")
    for source in cfg.sources.opcua:
        url = urlparse(source.endpoint)
        problem = _tcp_problem(f"OPC UA source {source.id}:", url.hostname, url.port or 4840)
        if problem:
            problems.append(problem)
    plcs = [("Modbus", s.id, s.host, s.port) for s in cfg.sources.modbus]
    plcs += [("S7", s.id, s.host, s.port) for s in cfg.sources.s7]
    for kind, source_id, host, port in plcs:
        problem = _tcp_problem(f"{kind} source {source_id}:", host, port)
        if problem:
            problems.append(problem)
    for mqtt in cfg.sources.mqtt:
        url = urlparse(mqtt.url)
        default = 8883 if url.scheme in ("mqtts", "ssl") else 1883
        problem = _tcp_problem(f"MQTT source {mqtt.id}:", url.hostname, url.port or default)
        if problem:
            problems.append(problem)
    return problems
