"""The OPC UA PLC simulator shows the machine tags (simulators/machines) as they are: every raw tag and truth
tag, with its type, read by a real asyncua client, on an injected clock; state bits for older PLCs too."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import yaml
from asyncua import Client, ua

from agent.config import load
from simulators.clock import SimClock
from simulators.opcua.server import NAMESPACE_URI, VARIANT_TYPES, PlcSimulator
from simulators.plant import US

FACTORY_YAML = Path(__file__).resolve().parents[2] / "config" / "factory.yaml"
START = datetime.fromisoformat("2026-11-23T09:00:00+08:00")


async def read_every_tag(sim: PlcSimulator) -> list[tuple[str, object, ua.VariantType, object, ua.VariantType]]:
    """(node, value read, its type, the model's value, the type the model's tag says) for every tag."""
    out = []
    async with Client(sim.endpoint, timeout=30) as client:
        ns = await client.get_namespace_index(NAMESPACE_URI)
        for m in sim.model.machines:
            for name, tag in m.tags.items():
                dv = await client.get_node(f"ns={ns};s={m.key}.{name}").read_data_value()
                assert dv.Value is not None
                out.append((f"{m.key}.{name}", dv.Value.Value, dv.Value.VariantType, m.values[name],
                            VARIANT_TYPES[tag.type]))
    return out


async def show_and_read(cfg, minutes: float) -> tuple[list, list]:
    fake_ns = [0]
    clock = SimClock(int(START.timestamp() * US), speed=60, monotonic_ns=lambda: fake_ns[0])
    async with PlcSimulator(cfg, endpoint="opc.tcp://127.0.0.1:0/shopfloor/plc", clock=clock, origin=START,
                            sim_timestamps=True) as sim:
        first = await read_every_tag(sim)
        fake_ns[0] += int(minutes * 60 / 60 * 1e9)  # `minutes` of simulated time at speed 60
        target = clock.now_us()
        for _ in range(600):
            if sim.model.now_us >= target:
                break
            await asyncio.sleep(0.05)
        assert sim.model.now_us == target
        later = await read_every_tag(sim)
    return first, later


def test_every_tag_shows_the_models_value_and_type(factory_cfg):
    first, later = asyncio.run(show_and_read(factory_cfg, minutes=45))
    for rows in (first, later):
        assert rows and all((read, vtype) == (want, want_type) for _, read, vtype, want, want_type in rows), rows
    moved = {node for (node, a, *_), (_, b, *_) in zip(first, later, strict=True) if a != b}
    assert any(node.endswith(".Truth.Total") for node in moved)  # the plant ran on with the clock


def test_an_older_plc_shows_its_state_as_bits(tmp_path):
    data = yaml.safe_load(FACTORY_YAML.read_text(encoding="utf-8"))
    data["state_maps"]["press-bits"] = {"kind": "bits", "default": "STOPPED", "rules": [
        {"bit": "Fault", "state": "FAULT"}, {"bit": "Setup", "state": "SETUP"}, {"bit": "Run", "state": "RUNNING"}]}
    old = dict(data["machine_types"]["press"], state_map="press-bits")
    old["tags"] = [{"node": f"Bit{b}", "signal": "state_bit", "bit": b} for b in ("Run", "Fault", "Setup")] + \
        [t for t in old["tags"] if t["signal"] != "state"]
    data["machine_types"]["old-press"] = old
    for line in data["lines"]:
        for machine in line["machines"]:
            if machine["type"] == "press":
                machine["type"] = "old-press"
    path = tmp_path / "factory.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    cfg = load(path, resolve_secrets=False)
    first, later = asyncio.run(show_and_read(cfg, minutes=20))
    bits = [row for row in first + later if ".Bit" in row[0]]
    assert bits and all(vtype == ua.VariantType.Boolean and read == want for _, read, vtype, want, _ in bits)
    assert all(read == want for _, read, _, want, _ in first + later)
