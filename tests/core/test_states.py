import pytest

from agent.core.states import BitRule, BoardState, StateMapper

CODES = StateMapper.for_codes({0: BoardState.STOPPED, 1: BoardState.RUNNING, 3: BoardState.FAULT})


@pytest.mark.parametrize(
    ("raw", "state"),
    [(1, BoardState.RUNNING), (3, BoardState.FAULT), (1.0, BoardState.RUNNING), (7, None), ("1", None),
     (True, None), (1.5, None)],
)
def test_code_table(raw, state):
    assert CODES.map(raw) is state


def test_code_table_default_for_unknown_codes():
    mapper = StateMapper.for_codes({1: BoardState.RUNNING}, default=BoardState.STOPPED)
    assert mapper.map(42) is BoardState.STOPPED


@pytest.mark.parametrize(
    ("raw", "state"),
    [("Execute", BoardState.RUNNING), ("EXECUTE", BoardState.RUNNING), ("Held", BoardState.STOPPED),
     ("Aborted", BoardState.FAULT), ("Suspended", BoardState.STARVED), ("Idle", BoardState.PLANNED_STOP),
     ("Starting", BoardState.SETUP), ("Teleporting", None), (6, None)],
)
def test_packml_by_name(raw, state):
    assert StateMapper.for_packml().map(raw) is state


def test_packml_override_by_name():
    mapper = StateMapper.for_packml({"Idle": BoardState.STOPPED})
    assert mapper.map("idle") is BoardState.STOPPED


BITS = StateMapper.for_bits(
    [BitRule("Fault", True, BoardState.FAULT), BitRule("Running", True, BoardState.RUNNING)],
    default=BoardState.STOPPED,
)


@pytest.mark.parametrize(
    ("bits", "state"),
    [({"Fault": True, "Running": True}, BoardState.FAULT),  # first rule wins
     ({"Fault": False, "Running": True}, BoardState.RUNNING),
     ({"Fault": False, "Running": False}, BoardState.STOPPED),
     ("not bits", None)],
)
def test_bit_rules(bits, state):
    assert BITS.map(bits) is state
