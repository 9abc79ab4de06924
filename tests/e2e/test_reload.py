"""SIGHUP makes the running agent read its config again: a valid config is taken up by new sources and a new
pipeline while the outbox stays, so every message the line simulator sent is stored exactly once across the
reloads; an invalid one, or one that changes what only a restart can, is logged and the agent goes on."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.conftest import wait_until
from tests.e2e.test_mqtt_flow import MEASUREMENTS, historian_events

# The agent starts without the route of material levels (they are kept as dead letters, "no route matches");
# the reload adds it, and the levels sent from then on are stored.
ADDED = "line/{line}/material/{material}/level"
LEVEL_TOPICS = "line/%/material/%/level"


def without_added_route(path: Path) -> dict[str, Any]:
    """The test's config as it is; the file is written back without ADDED (the agent starts without it)."""
    full = yaml.safe_load(path.read_text(encoding="utf-8"))
    reduced = yaml.safe_load(path.read_text(encoding="utf-8"))
    bus = reduced["sources"]["mqtt"][0]
    bus["routes"] = [r for r in bus["routes"] if r["pattern"] != ADDED]
    write(path, reduced)
    return full


def write(path: Path, data: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def variant(data: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(yaml.safe_dump(data))


def hangup_and_wait(agent, text: str, count: int) -> None:
    """SIGHUP, then wait for the `count`-th line of the agent's log holding `text`."""
    agent.popen.send_signal(signal.SIGHUP)
    wait_until(lambda: agent.log().count(text) >= count, 20, f"{text!r} in the agent's log")


def unrouted_levels(system) -> int:
    return system.outbox_sql("SELECT COUNT(*) FROM dead_letter WHERE topic LIKE ? AND reason LIKE ?",
                             LEVEL_TOPICS, "%no route matches%")[0][0]


def test_reload_takes_a_new_route_keeps_every_message_and_refuses_a_bad_config(make_system):
    system = make_system()
    full = without_added_route(system.config)
    agent = system.agent()
    line = system.line("--speed", "300", "--duration", "60", "--seed", "11")  # until SIGTERM below
    wait_until(lambda: unrouted_levels(system) > 0 and historian_events(system)["operator_event"] > 0, 30,
               "first messages: badges stored, levels without a route")
    assert historian_events(system)["material_level"] == 0

    # invalid: the agent logs where and goes on with the config it has
    broken = variant(full)
    broken["outbox"]["quota_mb"] = "lots"
    write(system.config, broken)
    hangup_and_wait(agent, "config reload refused", 1)
    assert "outbox.quota_mb" in agent.log() and f"{system.config}:" in agent.log()
    # what only a restart can change: refused as a whole, naming the setting
    moved = variant(full)
    moved["agent"]["http_port"] += 1
    write(system.config, moved)
    hangup_and_wait(agent, "config reload refused", 2)
    assert "agent.http_port changed" in agent.log()
    assert agent.running and system.health()["agent"] == "edge-1" and "config reloaded" not in agent.log()
    assert historian_events(system)["material_level"] == 0

    # valid, with the route: taken up while the line simulator keeps sending
    write(system.config, full)
    hangup_and_wait(agent, "config reloaded", 1)
    wait_until(lambda: historian_events(system)["material_level"] > 0, 20, "material levels, routed since the reload")
    time.sleep(0.5)
    hangup_and_wait(agent, "config reloaded", 2)  # the same config again, under load
    assert line.running, "the line simulator ended before the reloads: nothing was in flight"
    line.stop(signal.SIGTERM)  # it writes down what the broker acknowledged
    assert line.popen.returncode == 0, line.log()[-2000:]

    truth = system.line_truth()["valid"]
    expected = {m: truth.get(m, 0) for m in MEASUREMENTS}

    def stored() -> dict[str, int]:  # levels: stored since the reload, or kept as dead letters before it
        counts = historian_events(system)
        counts["material_level"] += unrouted_levels(system)
        return counts
    try:
        wait_until(lambda: system.outbox_empty() and stored() == expected, 30, "every message stored once")
    except AssertionError:
        raise AssertionError(f"stored {stored()} != sent {expected}") from None
    assert sum(expected.values()) > 300
    assert system.health()["outbox"]["dropped_points"] == 0
    assert agent.running and agent.log().count("signal 1: reloading the config") == 4
