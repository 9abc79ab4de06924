"""SIGHUP makes the running agent read its config again: a valid config is taken up by new sources and a new
pipeline while the outbox stays (every message the line simulator sent is stored exactly once, across the
reloads); an invalid one, or one that changes what only a restart can, is logged and the agent goes on."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import yaml

from tests.e2e.conftest import wait_until
from tests.e2e.test_mqtt_flow import wait_for_truth

ADDED = "packer-2"


def without_added_machine(path: Path) -> dict:
    """The test's config as it is, and written back without ADDED (the agent starts without it)."""
    full = yaml.safe_load(path.read_text(encoding="utf-8"))
    reduced = yaml.safe_load(path.read_text(encoding="utf-8"))
    for line in reduced["lines"]:
        line["machines"] = [m for m in line["machines"] if m["id"] != ADDED]
    write(path, reduced)
    return full


def write(path: Path, data: dict) -> None:
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def hangup_and_wait(agent, text: str, count: int) -> None:
    """SIGHUP, then wait for the `count`-th line of the agent's log holding `text`."""
    agent.popen.send_signal(signal.SIGHUP)
    wait_until(lambda: agent.log().count(text) >= count, 20, f"{text!r} in the agent's log")


def test_reload_takes_a_new_machine_keeps_every_message_and_refuses_a_bad_config(make_system):
    system = make_system()
    system.plc(speed=60)  # serves every machine of the full config
    full = without_added_machine(system.config)
    agent = system.agent()
    line = system.line("--speed", "300", "--duration", "60", "--seed", "11")  # until SIGTERM below
    wait_until(lambda: system.sql("SELECT COUNT(*) FROM material_level")[0][0] > 0, 20, "first messages")
    assert system.sql("SELECT COUNT(*) FROM machine_state WHERE machine=?", ADDED)[0][0] == 0

    # invalid: the agent logs where and goes on with the config it has
    broken = yaml.safe_load(yaml.safe_dump(full))
    broken["outbox"]["quota_mb"] = "lots"
    write(system.config, broken)
    hangup_and_wait(agent, "config reload refused", 1)
    assert "outbox.quota_mb" in agent.log() and f"{system.config}:" in agent.log()
    # what only a restart can change: refused as a whole, naming the setting
    moved = yaml.safe_load(yaml.safe_dump(full))
    moved["agent"]["http_port"] += 1
    write(system.config, moved)
    hangup_and_wait(agent, "config reload refused", 2)
    assert "agent.http_port changed" in agent.log()
    assert agent.running and system.health()["agent"] == "edge-1"
    assert "config reloaded" not in agent.log()

    # valid, with a machine more: taken up while the line simulator keeps sending
    write(system.config, full)
    hangup_and_wait(agent, "config reloaded", 1)
    wait_until(lambda: system.sql("SELECT COUNT(*) FROM machine_state WHERE machine=?", ADDED)[0][0] > 0, 20,
               f"states of {ADDED}, read since the reload")
    time.sleep(0.5)
    hangup_and_wait(agent, "config reloaded", 2)  # the same config again, still under load
    assert line.running, "the line simulator ended before the reloads: nothing was in flight"
    line.stop(signal.SIGTERM)  # it writes down what the broker acknowledged

    truth = wait_for_truth(system, line)  # every valid message stored exactly once
    assert sum(truth["valid"].values()) > 500
    assert system.health()["outbox"]["dropped_points"] == 0
    assert agent.running and agent.log().count("signal 1: reloading the config") == 4
