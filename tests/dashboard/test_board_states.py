"""One set of board states: agent/core/states.py lists them, and every page shows each of them, in that order,
with a colour and a name in both languages, without a list of its own in the page scripts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agent.core.states import BoardState
from dashboard import i18n, states

STATIC = Path(states.__file__).parent / "static"
# The states the page scripts treat apart by name (no data; a stop that is a micro-stop so far, which needs no
# reason); every other state reaches them only through the page's list.
NAMED_IN_SCRIPTS = {"OFFLINE", "STOPPED", "MICROSTOP"}


def page_config(html: str) -> dict:
    found = re.search(r'<script id="sf-config" type="application/json">(.*?)</script>', html, re.S)
    assert found, "the page has its configuration"
    return json.loads(found.group(1))


@pytest.mark.parametrize("state", list(BoardState))
def test_every_board_state_has_a_colour_and_a_text_colour(state):
    fill, text = states.COLOURS[state]
    assert re.fullmatch(r"#[0-9a-f]{6}", fill) and re.fullmatch(r"#[0-9a-f]{6}", text) and fill != text


def test_no_two_states_share_a_colour():
    fills = [states.COLOURS[s][0] for s in BoardState]
    assert len(set(fills)) == len(fills)


def test_the_stops_are_board_states():
    assert states.STOP_STATES.issubset(BoardState)
    assert BoardState.RUNNING not in states.STOP_STATES and BoardState.FAULT in states.STOP_STATES


@pytest.mark.parametrize("path", ["/", "/lines/line-1", "/lines/line-1/machines/press-1", "/kiosk", "/login"])
@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_every_page_gets_every_state_in_order_with_its_colour_and_name(client, path, lang):
    resp = client.get(f"{path}?lang={lang}")
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    cfg = page_config(html)
    assert [s["state"] for s in cfg["states"]] == [s.value for s in BoardState]
    for entry in cfg["states"]:
        state = BoardState(entry["state"])
        assert (entry["colour"], entry["text_colour"]) == states.COLOURS[state]
        assert entry["stop"] == (state in states.STOP_STATES)
        assert cfg["labels"][f"state.{state}"] == i18n.LABELS[lang][f"state.{state}"]
        # drawn by CSS before any script runs: the colour variables and the rule for data-state
        assert f"--st-{state}: {entry['colour']};" in html
        assert f'[data-state="{state}"] {{ --st: var(--st-{state});' in html


def states_named(source: str) -> set[str]:
    """The board states a script's code (comments left out) spells as a string."""
    code = re.sub(r"/\*.*?\*/|(?<![:\\])//[^\n]*", "", source, flags=re.S)
    return {s.value for s in BoardState if re.search(rf"[\"'`]{s.value}[\"'`]", code)}


@pytest.mark.parametrize("script", sorted(p.name for p in STATIC.glob("*.js")))
def test_page_scripts_keep_no_list_of_states(script):
    named = states_named((STATIC / script).read_text(encoding="utf-8"))
    assert named <= NAMED_IN_SCRIPTS, f"{script} names {sorted(named - NAMED_IN_SCRIPTS)}: take them from the page"


def test_the_check_on_scripts_sees_a_list_and_not_a_comment():
    source = '// a stop counts under its state ("FAULT")\nconst STATES = ["OFFLINE", "NO_SHIFT", `RUNNING`];'
    assert states_named(source) == {"OFFLINE", "NO_SHIFT", "RUNNING"}
