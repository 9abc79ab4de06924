"""The protocol-neutral machine tags (pure): what every simulator of a source shows, whatever its protocol."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import yaml

from agent.config import load
from agent.core.states import BoardState
from simulators.machines import COUNTER_WRAP, MachineTags, SimClock
from simulators.plant import US

FACTORY_YAML = Path(__file__).resolve().parents[2] / "config" / "factory.yaml"
ORIGIN = int(datetime.fromisoformat("2026-11-23T07:40:00+08:00").timestamp() * US)
UNTIL = ORIGIN + 4 * 3600 * US


def model_of(cfg, source="plc-1"):
    return MachineTags(cfg, source, seed=3, origin_us=ORIGIN, now_us=ORIGIN)


def run(model, until=UNTIL, step_s=37):
    batches = model.start(ORIGIN)
    t = ORIGIN
    while t < until:
        t = min(until, t + step_s * US)
        batches += model.advance(t)
    return batches


def config_with(tmp_path, change):
    data = yaml.safe_load(FACTORY_YAML.read_text(encoding="utf-8"))
    change(data)
    path = tmp_path / "factory.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return load(path, resolve_secrets=False)


def older_press(data):
    """press-1 becomes an older press that shows its state as bits (one state_bit tag per bit)."""
    data["state_maps"]["press-bits"] = {"kind": "bits", "default": "STOPPED", "rules": [
        {"bit": "Fault", "state": "FAULT"}, {"bit": "Setup", "state": "SETUP"}, {"bit": "Run", "state": "RUNNING"}]}
    old = dict(data["machine_types"]["press"], state_map="press-bits")
    old["tags"] = [{"node": f"Bit{b}", "signal": "state_bit", "bit": b} for b in ("Run", "Fault", "Setup")] + \
        [t for t in old["tags"] if t["signal"] != "state"]
    data["machine_types"]["old-press"] = old
    for line in data["lines"]:
        for machine in line["machines"]:
            if machine["id"] == "press-1":
                machine["type"] = "old-press"


def test_every_tag_of_the_machine_type_then_the_truth(factory_cfg):
    model = model_of(factory_cfg)
    press = model.machine("line-1", "press-1")
    assert list(press.tags) == ["StateCode", "TotalCount", "GoodCount", "RejectCount", "Speed", "Temperature",
                                "Pressure", "AlarmCode", "Truth.Total", "Truth.Good", "Truth.Reject", "Truth.State"]
    assert {n: t.type for n, t in press.tags.items()} == {
        "StateCode": "int32", "TotalCount": "uint32", "GoodCount": "uint32", "RejectCount": "uint32",
        "Speed": "double", "Temperature": "double", "Pressure": "double", "AlarmCode": "int32",
        "Truth.Total": "uint64", "Truth.Good": "uint64", "Truth.Reject": "uint64", "Truth.State": "string"}
    assert [n for n, t in press.tags.items() if t.truth] == ["Truth.Total", "Truth.Good", "Truth.Reject",
                                                             "Truth.State"]
    assert set(press.values) == set(press.tags)
    served = {(m.line_id, m.machine_id) for m in model.machines}
    assert served == {(ln.id, m.id) for ln, m in factory_cfg.machines() if m.source == "plc-1"}
    assert model_of(factory_cfg, source=None).machines == []


def test_raw_values_follow_the_plant_and_map_back_to_its_state(factory_cfg):
    model = model_of(factory_cfg)
    batches = run(model)
    assert [b.at_us for b in batches] == sorted(b.at_us for b in batches)
    for m in model.machines:
        pm = model.plant_machine(m.line_id, m.machine_id)
        assert m.values["Truth.Total"] == pm.total > 0
        assert m.values["Truth.Good"] == pm.good
        for name, tag in m.tags.items():
            if tag.signal == "count":
                unwrapped = {"total": pm.total, "good": pm.good, "reject": pm.reject}[tag.spec.counter]
                assert m.values[name] == unwrapped % (tag.spec.rollover or COUNTER_WRAP)
            if tag.signal == "state":
                spec = factory_cfg.state_maps[factory_cfg.machine_types[
                    next(mc.type for ln, mc in factory_cfg.machines() if mc.id == m.machine_id)].state_map]
                shown = spec.mapper().map(m.values[name])
                assert shown is not None and m.values["Truth.State"] in (shown.value, BoardState.NO_SHIFT.value)


def test_a_counter_with_a_rollover_wraps(tmp_path):
    def small_rollover(data):
        data["machine_types"]["press"]["tags"][1]["rollover"] = 500

    model = model_of(config_with(tmp_path, small_rollover))
    run(model)
    press = model.machine("line-1", "press-1")
    assert press.tags["TotalCount"].spec.rollover == 500
    assert press.values["Truth.Total"] >= 500  # the counter wrapped at least once
    assert press.values["TotalCount"] == press.values["Truth.Total"] % 500


def test_changes_carry_the_current_values_and_nothing_unchanged(factory_cfg):
    model = model_of(factory_cfg)
    first = model.start(ORIGIN)
    assert sum(len(b.changes) for b in first) == sum(len(m.tags) for m in model.machines)
    seen: dict[tuple[str, str], object] = {(c.machine.key, c.tag.name): c.value for b in first for c in b.changes}
    t = ORIGIN
    while t < ORIGIN + 3600 * US:
        t += 11 * US
        for batch in model.advance(t):
            for c in batch.changes:
                assert seen[(c.machine.key, c.tag.name)] != c.value
                seen[(c.machine.key, c.tag.name)] = c.value
    assert seen == {(m.key, n): v for m in model.machines for n, v in m.values.items()}
    assert model.advance(t) == []  # the clock did not move


def test_force_shows_the_state_at_once_and_a_wrong_name_changes_nothing(factory_cfg):
    model = model_of(factory_cfg)
    run(model, until=ORIGIN + 3600 * US)
    assert model.force("line-1", "press-1", " fault ")
    batches = model.take_forced()
    assert [c.value for b in batches for c in b.changes if c.tag.name == "StateCode"] == [3]
    assert model.machine("line-1", "press-1").values["Truth.State"] == "FAULT"
    assert not model.force("line-1", "press-1", "BROKEN")
    assert model.take_forced() == []
    assert model.machine("line-1", "press-1").values["StateCode"] == 3


@pytest.fixture
def bits_cfg(tmp_path):
    return config_with(tmp_path, older_press)


def test_a_bits_machine_shows_one_bool_per_state_bit_tag(bits_cfg):
    model = model_of(bits_cfg)
    press = model.machine("line-1", "press-1")
    assert {n: t.type for n, t in press.tags.items() if t.signal == "state_bit"} == \
        {"BitRun": "bool", "BitFault": "bool", "BitSetup": "bool"}
    mapper = bits_cfg.state_maps["press-bits"].mapper()
    states = set()
    bits: dict[str, object] = {}
    for batch in run(model):
        for c in batch.changes:
            if c.machine is press and c.tag.signal == "state_bit":
                bits[c.tag.spec.bit] = c.value
        if len(bits) == 3:
            states.add(mapper.map(bits))
    assert BoardState.RUNNING in states and len(states) >= 2
    model.force("line-1", "press-1", "FAULT")
    model.take_forced()
    assert (press.values["BitFault"], press.values["Truth.State"]) == (True, "FAULT")


def test_the_clock_runs_speed_times_faster_and_stands_still_when_paused():
    now = [0]
    clock = SimClock(1_000 * US, speed=60, monotonic_ns=lambda: now[0])
    now[0] = 2 * 10**9
    assert clock.now_us() == 1_120 * US
    clock.set_running(False)
    now[0] = 5 * 10**9
    assert clock.now_us() == 1_120 * US and not clock.running
    clock.set_running(True)
    now[0] = 6 * 10**9
    assert clock.now_us() == 1_180 * US
    with pytest.raises(ValueError, match="speed must be positive"):
        SimClock(0, speed=0)
