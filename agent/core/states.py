"""Board states and the mapping of raw PLC state values to them (pure logic)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class BoardState(StrEnum):
    """The states a machine tile shows, in the order their rules are tried (DESIGN.md)."""

    OFFLINE = "OFFLINE"
    NO_SHIFT = "NO_SHIFT"
    PLANNED_STOP = "PLANNED_STOP"
    SETUP = "SETUP"
    FAULT = "FAULT"
    STARVED = "STARVED"
    BLOCKED = "BLOCKED"
    STOPPED = "STOPPED"
    MICROSTOP = "MICROSTOP"
    RUNNING = "RUNNING"
    SLOW = "SLOW"


# PackML (ISA-TR88.00.02) state names mapped by name, never by number: PLC vendors number them differently.
PACKML_DEFAULT: dict[str, BoardState] = {
    "execute": BoardState.RUNNING,
    "starting": BoardState.SETUP,
    "resetting": BoardState.SETUP,
    "idle": BoardState.PLANNED_STOP,
    "complete": BoardState.PLANNED_STOP,
    "completing": BoardState.PLANNED_STOP,
    "suspending": BoardState.STARVED,
    "suspended": BoardState.STARVED,
    "unsuspending": BoardState.STARVED,
    "holding": BoardState.STOPPED,
    "held": BoardState.STOPPED,
    "unholding": BoardState.STOPPED,
    "stopping": BoardState.STOPPED,
    "stopped": BoardState.STOPPED,
    "aborting": BoardState.FAULT,
    "aborted": BoardState.FAULT,
    "clearing": BoardState.FAULT,
}


def _norm_name(name: str) -> str:
    return name.strip().lower().replace(" ", "").replace("_", "").replace("-", "")


@dataclass(frozen=True)
class BitRule:
    """When tag `bit` equals `value`, the machine is in `state`. Rules are tried in order."""

    bit: str
    value: bool
    state: BoardState


@dataclass(frozen=True)
class StateMapper:
    """Turns a raw state value (a code, a PackML name, or a dict of bits) into a board state.

    Returns None for a value the table does not know; the caller dead-letters it.
    """

    kind: str  # "code" | "packml" | "bits"
    codes: Mapping[int, BoardState]
    names: Mapping[str, BoardState]
    bits: Sequence[BitRule]
    default: BoardState | None

    @classmethod
    def for_codes(cls, codes: Mapping[int, BoardState], default: BoardState | None = None) -> StateMapper:
        return cls("code", dict(codes), {}, (), default)

    @classmethod
    def for_packml(cls, overrides: Mapping[str, BoardState] | None = None) -> StateMapper:
        names = dict(PACKML_DEFAULT)
        names.update({_norm_name(k): v for k, v in (overrides or {}).items()})
        return cls("packml", {}, names, (), None)

    @classmethod
    def for_bits(cls, rules: Sequence[BitRule], default: BoardState) -> StateMapper:
        return cls("bits", {}, {}, tuple(rules), default)

    def map(self, raw: Any) -> BoardState | None:
        """Board state for a raw value, or None when the value is not in the table."""
        if self.kind == "code":
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                return None
            if isinstance(raw, float) and not raw.is_integer():
                return None
            return self.codes.get(int(raw), self.default)
        if self.kind == "packml":
            if not isinstance(raw, str):
                return None
            return self.names.get(_norm_name(raw))
        if not isinstance(raw, Mapping):
            return None
        for rule in self.bits:
            if rule.bit in raw and bool(raw[rule.bit]) == rule.value:
                return rule.state
        return self.default
