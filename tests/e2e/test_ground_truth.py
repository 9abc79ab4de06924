"""The whole chain against the simulated plant's own ground truth: PLC and line simulators -> agent -> SQLite
historian -> the dashboard's API, over a whole day shift (08:00-20:00 with lunch and tea breaks, several orders
and changeovers per line) at `--speed 240`.

The plant records what really happened (simulators/plant/, `Truth`); the boards must agree with it: A, E, Q
and OEE of every machine within 1 percentage point, the line's good output exactly, and at several moments of
the shift minutes to shortage within 5 % and the headcount exactly. Nothing is shortened but the real time.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from agent.config import load
from dashboard import create_app
from simulators.harness import wait_until

SPEED = 240
# a Monday; the agent has read every counter's baseline well before the shift starts at 08:00 (an hour of
# simulated time is 15 real seconds)
START = "2026-11-23T07:00:00+08:00"
END_MS = int(datetime.fromisoformat("2026-11-23T20:03:00+08:00").timestamp() * 1000)
SHIFT = "2026-11-23/day"
POINTS = 0.01  # KPIs within 1 percentage point
SHORTAGE = 0.05  # minutes to shortage within 5 %


def day_shift_only(data):
    """No night shift after the day shift, so that after 20:00 the boards show the day shift, ended and whole.
    At x240 a counter changes a few times per publishing interval: the server keeps up to 100 changes of a tag
    between two publishes (instead of 10) so that a busy machine (the suite runs beside this test) still gets
    every unit at its own time."""
    data["shifts"] = [s for s in data["shifts"] if s["id"] == "day"]
    for machine_type in data["machine_types"].values():
        for tag in machine_type["tags"]:
            if tag["signal"] in ("count", "state"):
                tag["queue_size"] = 100


@pytest.mark.slow
def test_boards_agree_with_the_plants_truth_over_a_whole_shift(make_system):
    system = make_system(day_shift_only)
    cfg = load(system.config)
    truth_path = system.tmp / "plant-truth.json"
    anchor = ["--sim-anchor", f"{time.time():.3f}"]  # one simulated clock for every process
    plc = system.plc("--start", START, *anchor, "--sim-timestamps", "--truth", str(truth_path), speed=SPEED)
    # the agent subscribes before the line simulator publishes its first order (as in `shopfloor demo`)
    system.agent("--sim-start", START, *anchor, "--speed", str(SPEED))
    line = system.line("--start", START, *anchor, "--speed", str(SPEED))

    def truth():
        return json.loads(truth_path.read_text()) if truth_path.exists() else {"until_ms": 0}

    wait_until(lambda: truth()["until_ms"] >= END_MS, 12.5 * 3600 / SPEED + 120, "the simulated day shift to end")
    line.stop()
    plc.stop()
    wait_until(system.outbox_empty, 60, "the agent's outbox to drain")
    time.sleep(2)  # the last readings the agent took in before the simulators stopped
    wait_until(system.outbox_empty, 60, "the agent's outbox to drain")
    real = truth()
    assert real["until_ms"] >= END_MS

    def api_at(t_ms):
        """The dashboard's API on a clock standing at `t_ms` (a new app: no figures kept from another time)."""
        app = create_app(cfg, data_dir=system.data_dir, now_ns=lambda: t_ms * 10**6, start_live=False)
        return app.test_client()

    client = api_at(real["until_ms"])

    # --- every machine's shift KPIs, the whole shift
    misses = []
    for ln in cfg.lines:
        board = client.get(f"/api/v1/lines/{ln.id}").get_json()
        assert board["shift"]["id"] == "day" and board["shift"]["on"] is False
        for machine in ln.machines:
            shown = board["machines"][machine.id]["oee"]
            true_shift = real["machines"][f"{ln.id}/{machine.id}"]["shifts"][SHIFT]
            want = true_shift["kpi"]
            assert shown["coverage"] >= 0.999, (machine.id, shown["coverage"])
            assert (shown["produced"], shown["good"]) == (want["produced"], want["good"]), machine.id
            for name in ("availability", "effectiveness", "quality", "oee"):
                if abs(shown[name] - want[name]) > POINTS:
                    misses.append((machine.id, name, shown[name], round(want[name], 4)))
        last = ln.machines[-1].id
        assert board["output"]["good"] == real["machines"][f"{ln.id}/{last}"]["shifts"][SHIFT]["kpi"]["good"]
        assert board["output"]["no_order"] == 0 and board["output"]["other_sku"] == 0
    assert not misses, misses

    # --- materials and people at moments of the shift when both lines are producing
    producing = [s for s in real["samples"]
                 if all(v["sku"] and v["rate_per_min"] > 0 for v in s["lines"].values())
                 and s["t_ms"] % (30 * 60_000) == 0]
    moments = producing[::max(1, len(producing) // 6)]  # about six, spread over the shift
    assert len(moments) >= 3, "the plant produced too little to compare minutes to shortage"
    for sample in moments:
        client = api_at(sample["t_ms"])
        for line_id, want in sample["lines"].items():
            board = client.get(f"/api/v1/lines/{line_id}").get_json()
            assert board["order"]["sku"] == want["sku"], (sample["t_ms"], line_id)
            assert board["people"]["headcount"]["present"] == want["headcount"], (sample["t_ms"], line_id)
            items = {i["id"]: i for i in board["materials"]["items"]}
            assert abs(board["materials"]["rate_per_min"] - want["rate_per_min"]) <= 0.05 * want["rate_per_min"]
            for material, minutes in want["minutes_to_shortage"].items():
                shown = items[material]["minutes_to_shortage"]
                assert shown == pytest.approx(minutes, rel=SHORTAGE), (sample["t_ms"], line_id, material)
