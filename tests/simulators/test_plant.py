"""The simulated plant (pure): one world whatever steps it is run in, orders that decide what machines make,
planned idle between orders, micro-stops by the config's threshold, and crews badged in at every shift change."""

from __future__ import annotations

import json
import random
from datetime import datetime

import pytest

from agent.core.states import BoardState
from simulators.plant import US, Plant

SH = "+08:00"


def at(text: str) -> int:
    return int(datetime.fromisoformat(text + SH).timestamp() * US)


ORIGIN = at("2026-11-23T07:40:00")


def run(factory_cfg, until: int, steps: list[int] | None = None):
    plant = Plant(factory_cfg, seed=3, origin_us=ORIGIN)
    snaps, msgs = [], []
    for t in steps or [until]:
        s, m = plant.advance(t)
        snaps += s
        msgs += m
    return plant, snaps, msgs


@pytest.fixture(scope="module")
def day(factory_cfg):
    """The plant from 07:40 to midnight: the day shift and the start of the night shift."""
    return run(factory_cfg, at("2026-11-24T00:00:00"))


def test_two_plants_advanced_in_different_steps_are_one_world(factory_cfg):
    until = at("2026-11-23T11:00:00")
    rng = random.Random(5)
    steps, t = [], ORIGIN
    while t < until:
        t = min(until, t + int(rng.uniform(0.05, 400) * US))
        steps.append(t)
    one, snaps_one, msgs_one = run(factory_cfg, until)
    other, snaps_other, msgs_other = run(factory_cfg, until, steps)
    assert msgs_one == msgs_other  # what the line simulator publishes
    assert snaps_one == snaps_other  # what the PLC simulator shows
    assert {k: (m.total, m.good, m.sku) for k, m in one.machines.items()} == \
        {k: (m.total, m.good, m.sku) for k, m in other.machines.items()}


def test_orders_decide_what_every_machine_makes_with_setups_and_planned_idle_between(day):
    plant, snaps, msgs = day
    orders = [m.body for m in msgs if m.signal == "order_event" and m.topic == "line/line-1/order"]
    assert len(orders) >= 6 and orders[0]["event"] == "start"
    running: dict[str, str] = {}
    for snap in snaps:
        if snap.line == "line-1" and snap.state == BoardState.RUNNING:
            running.setdefault(snap.machine, snap.sku)
    # every unit of line 1 counted in the truth is of an SKU that an order of line 1 asked for
    truth = plant.truth.as_dict()
    asked = {o["sku"] for o in orders}
    for machine in ("press-1", "press-2", "packer-1"):
        made = truth["machines"][f"line-1/{machine}"]["shifts"]["2026-11-23/day"]
        assert set(made["units"]) <= asked and made["state_s"]["SETUP"] > 0
        # between orders the line is idle by plan (no order): PLANNED_STOP beyond the breaks' 60 minutes
        assert made["state_s"]["PLANNED_STOP"] > 3600
    # an order is done when the line's last machine made its quantity good
    stop = next(o for o in orders if o["event"] == "stop")
    assert stop["target_qty"] > 0


def test_short_stops_are_micro_stops_by_the_configured_threshold(factory_cfg, day):
    plant, _, _ = day
    shifts = [m["shifts"]["2026-11-23/day"]["state_s"] for m in plant.truth.as_dict()["machines"].values()]
    assert all(s.get("MICROSTOP", 0) > 0 and s.get("STOPPED", 0) > 0 for s in shifts)
    strict = Plant(factory_cfg.model_copy(update={"kpi": factory_cfg.kpi.model_copy(update={"microstop_s": 0})}),
                   seed=3, origin_us=ORIGIN)
    strict.advance(at("2026-11-23T12:00:00"))
    assert not any(m["shifts"]["2026-11-23/day"]["state_s"].get("MICROSTOP")
                   for m in strict.truth.as_dict()["machines"].values())


def test_back_to_back_shifts_badge_the_next_crew_in(day):
    plant, _, msgs = day
    badges = [(m.due_us, m.body["action"]) for m in msgs if m.signal == "operator_event"]
    out_at_20 = [t for t, a in badges if a == "out" and at("2026-11-23T20:00:00") <= t < at("2026-11-23T20:05:00")]
    in_after = [t for t, a in badges if a == "in" and at("2026-11-23T20:00:00") <= t < at("2026-11-23T20:15:00")]
    assert len(out_at_20) >= 5 and len(in_after) >= 5  # the day crew leaves and the night crew comes in
    present = [s for s in plant.truth.samples if s["t_ms"] == at("2026-11-23T21:00:00") // 1000][0]
    assert sum(v["headcount"] for v in present["lines"].values()) >= 5


def test_the_truth_is_json_and_its_kpis_follow_iso_22400(factory_cfg):
    plant, _, _ = run(factory_cfg, at("2026-11-23T12:00:00"))
    truth = json.loads(json.dumps(plant.truth.as_dict()))
    shift = truth["machines"]["line-1/press-1"]["shifts"]["2026-11-23/day"]
    s = shift["state_s"]
    pbt = sum(s.values()) - s.get("PLANNED_STOP", 0) - s.get("NO_SHIFT", 0)
    assert shift["kpi"]["availability"] == pytest.approx(s["RUNNING"] / pbt)
    assert shift["kpi"]["effectiveness"] == pytest.approx(shift["ideal_s"] / s["RUNNING"])
    assert sum(s.values()) == pytest.approx(4 * 3600)  # 08:00-12:00, every second in one state
