"""Board state -> the raw value a machine's PLC shows for it: a state code, a PackML state name or a set of bits.

The codec inverts the machine type's configured state map, so that whatever a simulator shows maps back to the
board state the plant meant (or, where the map has no value for it, to the nearest one it has).
"""

from __future__ import annotations

from agent.config import StateMapSpec
from agent.core.states import BoardState, StateMapper

# PackML state names as PLCs spell them, most typical first: the first that maps to a board state is shown.
PACKML_NAMES = (
    "Execute", "Held", "Aborted", "Idle", "Suspended", "Starting", "Stopped", "Complete", "Resetting", "Holding",
    "Suspending", "Stopping", "Aborting", "Clearing", "Completing", "Unholding", "Unsuspending",
)
# When a state map has no raw value for a board state, the machine shows the nearest one it has.
_FALLBACKS: dict[BoardState, tuple[BoardState, ...]] = {
    BoardState.NO_SHIFT: (BoardState.PLANNED_STOP, BoardState.STOPPED),
    BoardState.PLANNED_STOP: (BoardState.STOPPED,),
    BoardState.SETUP: (BoardState.PLANNED_STOP, BoardState.STOPPED),
    BoardState.FAULT: (BoardState.STOPPED,),
    BoardState.STARVED: (BoardState.BLOCKED, BoardState.STOPPED),
    BoardState.BLOCKED: (BoardState.STARVED, BoardState.STOPPED),
    BoardState.MICROSTOP: (BoardState.STOPPED,),
    BoardState.SLOW: (BoardState.RUNNING,),
    BoardState.OFFLINE: (BoardState.STOPPED,),
}

RawState = int | str | dict[str, bool]


class RawStateCodec:
    """Board state -> the raw value a machine type's PLC shows for it, by inverting the configured state map."""

    def __init__(self, spec: StateMapSpec, mapper: StateMapper) -> None:
        self.kind = spec.kind
        self._spec = spec
        self._mapper = mapper
        self.bits: list[str] = list(dict.fromkeys(rule.bit for rule in spec.rules))
        self._cache: dict[BoardState, tuple[BoardState, RawState]] = {}

    def encode(self, state: BoardState) -> tuple[BoardState, RawState]:
        """(the board state the raw value really maps to, the raw value) for a wanted board state."""
        if state not in self._cache:
            self._cache[state] = self._encode(state)
        return self._cache[state]

    def _encode(self, state: BoardState) -> tuple[BoardState, RawState]:
        for candidate in (state, *_FALLBACKS.get(state, ())):
            raw = self._raw_for(candidate)
            if raw is not None:
                return candidate, raw
        raw = self._any_raw()
        return self._mapper.map(raw) or BoardState.STOPPED, raw

    def _raw_for(self, state: BoardState) -> RawState | None:
        if self.kind == "code":
            for code, mapped in self._spec.codes.items():
                if mapped == state:
                    return code
            if self._spec.default == state:
                return max(self._spec.codes, default=-1) + 1  # any code outside the table maps to the default
            return None
        if self.kind == "packml":
            for name in (*self._spec.names, *PACKML_NAMES):
                if self._mapper.map(name) == state:
                    return name
            return None
        rules = self._spec.rules
        firing_index = [i for i, rule in enumerate(rules) if rule.state == state]
        options: list[int | None] = [*firing_index, None] if self._spec.default == state else list(firing_index)
        for k in options:
            # Rules before k must not fire; rule k fires; later rules do not matter but are kept quiet.
            bits: dict[str, bool] = {}
            if k is not None:
                bits[rules[k].bit] = rules[k].value
            for rule in rules:
                bits.setdefault(rule.bit, not rule.value)
            if self._mapper.map(bits) == state:
                return bits
        return None

    def _any_raw(self) -> RawState:
        if self.kind == "code":
            return next(iter(self._spec.codes), 0)
        if self.kind == "packml":
            return "Stopped"
        return dict.fromkeys(self.bits, False)
