import pytest

from tests.fuzz import LONG


def pytest_collection_modifyitems(config, items):
    # The long form runs for many minutes per test: the suite's per-test timeout does not apply to it.
    if LONG:
        for item in items:
            if item.nodeid.startswith("tests/fuzz/"):
                item.add_marker(pytest.mark.timeout(0))
