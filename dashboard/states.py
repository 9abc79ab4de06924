"""What the dashboard makes of the board states (agent/core/states.py is their one list): which are stops, and
the colours every page draws them in. The pages get the states from here, in BoardState's order (the order their
rules are tried: also the order of every legend and state mix), with these colours and their labels from i18n.py.
"""

from __future__ import annotations

from typing import Any

from agent.core.states import BoardState

S = BoardState

# Stops of a machine: listed on the stop-reason form and given a reason (MICROSTOP excepted: it needs none).
STOP_STATES = frozenset({S.SETUP, S.FAULT, S.STARVED, S.BLOCKED, S.STOPPED, S.MICROSTOP})

# (fill, text on the fill): green runs, yellow to red stops by how much attention they need, greys are planned
# time and missing data. OFFLINE is also striped (board.css), so it never reads as a colour of its own.
COLOURS: dict[BoardState, tuple[str, str]] = {
    S.RUNNING: ("#1f9d4f", "#ffffff"),
    S.SLOW: ("#a6cf3f", "#132005"),
    S.MICROSTOP: ("#ffd43b", "#2b2100"),
    S.STOPPED: ("#f59f00", "#241600"),
    S.STARVED: ("#e8590c", "#ffffff"),
    S.BLOCKED: ("#9c36b5", "#ffffff"),
    S.FAULT: ("#e03131", "#ffffff"),
    S.SETUP: ("#1c7ed6", "#ffffff"),
    S.PLANNED_STOP: ("#6c7683", "#ffffff"),
    S.NO_SHIFT: ("#3b4350", "#cfd6df"),
    S.OFFLINE: ("#252a32", "#aab3bf"),
}


def for_pages() -> list[dict[str, Any]]:
    """Every board state in order, as the pages take it: {"state", "colour", "text_colour", "stop"}. The
    state's name on screen is the label `state.<STATE>` of i18n.py."""
    return [{"state": s.value, "colour": COLOURS[s][0], "text_colour": COLOURS[s][1], "stop": s in STOP_STATES}
            for s in BoardState]
