"""Agent configs for the benchmarks, derived from config/factory.yaml so they stay in step with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bench.procs import ROOT

FACTORY_YAML = ROOT / "config" / "factory.yaml"
SIM_NS = "urn:shopfloor:plc-sim"
BENCH_LINE = "bench"
BENCH_TYPE = "bench"
BENCH_STATE_MAP = "bench-codes"
TAGS_PER_MACHINE = 100  # simulators/opcua/server.py BENCH_TAGS_PER_MACHINE


def _factory() -> dict[str, Any]:
    data = yaml.safe_load(FACTORY_YAML.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def mqtt_config(path: Path, broker_url: str, data_dir: Path, http_port: int, receive_maximum: int,
                protocol: str = "5") -> Path:
    """factory.yaml with its MQTT source (and routes) on `broker_url`, no OPC UA source and no machines.

    The live publisher stays as configured: it is part of what an agent does with MQTT data.
    """
    data = _factory()
    data["sources"]["opcua"] = []
    for line in data["lines"]:
        line["machines"] = []
    for source in data["sources"]["mqtt"]:
        source["url"] = broker_url
        source["receive_maximum"] = receive_maximum
        source["protocol"] = protocol
    data["agent"].update({"data_dir": str(data_dir), "http_port": http_port})
    return _write(path, data)


def opcua_config(path: Path, ports: list[int], machines_per_sim: list[int], data_dir: Path, http_port: int,
                 publishing_interval_ms: float = 100, sampling_ms: float = 0,
                 historian: dict[str, Any] | None = None) -> Path:
    """factory.yaml reduced to one line `bench` of bench machines m000.., one OPC UA source per simulator.

    Simulator i serves machines [sum(machines_per_sim[:i]), ...) on `ports[i]` (see `plc --bench-offset`).
    No MQTT source, live publisher off; products and the example's machine types are dropped (cycle times and
    product codes name what was removed). `historian` replaces the config's historian section (e.g.
    `{"kind": "influxdb", ...}`); by default the agent keeps its embedded SQLite historian.
    """
    data = _factory()
    data["sources"] = {"opcua": [
        {"id": f"plc-{i + 1}", "endpoint": f"opc.tcp://127.0.0.1:{port}/shopfloor/plc",
         "publishing_interval_ms": publishing_interval_ms, "watchdog_s": 5}
        for i, port in enumerate(ports)]}
    data["live"] = {"enabled": False}
    data["products"] = []
    # only the bench machine type: the example's types name products (codes) that are dropped here
    data["state_maps"] = {BENCH_STATE_MAP: {"kind": "code", "codes": {1: "RUNNING"}}}
    data["machine_types"] = {}
    tags: list[dict[str, Any]] = [{"node": "State", "signal": "state"}]
    tags += [{"node": f"t{j:02d}", "signal": "process_value", "name": f"t{j:02d}", "sampling_ms": sampling_ms,
              "queue_size": 1} for j in range(TAGS_PER_MACHINE)]
    data["machine_types"][BENCH_TYPE] = {"description": "benchmark machine: 100 changing Doubles",
                                         "state_map": BENCH_STATE_MAP, "tags": tags}
    machines = []
    k = 0
    for i, count in enumerate(machines_per_sim):
        for _ in range(count):
            machines.append({"id": f"m{k:03d}", "type": BENCH_TYPE, "source": f"plc-{i + 1}",
                             "node_prefix": f"nsu={SIM_NS};s=bench.m{k:03d}."})
            k += 1
    data["lines"] = [{"id": BENCH_LINE, "name": "Benchmark line", "stations": [], "machines": machines}]
    data["agent"].update({"data_dir": str(data_dir), "http_port": http_port})
    if historian is not None:
        data["historian"] = historian
    return _write(path, data)
