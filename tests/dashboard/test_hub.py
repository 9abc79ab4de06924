"""Board patches: the merge patch the hub sends turns the board a screen holds into the current one."""

import pytest

from dashboard.hub import apply_patch, merge_patch

CASES = {
    "unchanged": ({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 2}}, {}),
    "value": ({"a": 1}, {"a": 2}, {"a": 2}),
    "nested value": ({"m": {"p1": {"state": "RUNNING", "n": 3}}}, {"m": {"p1": {"state": "FAULT", "n": 3}}},
                     {"m": {"p1": {"state": "FAULT"}}}),
    "key gone": ({"a": 1, "alarm": {"code": 101}}, {"a": 1}, {"alarm": None}),
    "key becomes null": ({"alarm": {"code": 101}}, {"alarm": None}, {"alarm": None}),
    "new key": ({}, {"stop": {"since_ms": 5}}, {"stop": {"since_ms": 5}}),
    "list replaced whole": ({"l": [1, 2]}, {"l": [1, 3]}, {"l": [1, 3]}),
    "dict to value": ({"x": {"y": 1}}, {"x": 7}, {"x": 7}),
}


@pytest.mark.parametrize("old,new,patch", CASES.values(), ids=CASES.keys())
def test_merge_patch_is_minimal_and_applies(old, new, patch):
    assert merge_patch(old, new) == patch
    applied = apply_patch(old, merge_patch(old, new))
    # null members are dropped on apply (RFC 7386); a board reads a missing key as null
    assert applied == {k: v for k, v in new.items() if v is not None}
