"""Property-based fuzzing (hypothesis) of what reaches Shopfloor from outside: MQTT payloads, config files and
OPC UA values. See README.md here for the short form `make test` runs and the long form."""

import os

from hypothesis import HealthCheck, settings

# HYPOTHESIS_PROFILE=fuzz: the long form, LONG_FACTOR times the examples of the short form.
LONG = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
LONG_FACTOR = 50


def fuzz(examples: int) -> settings:
    """Settings of one fuzz test: `examples` in the short form (sized so tests/fuzz stays within its time in
    `make test`), LONG_FACTOR times as many in the long form; no per-example deadline (a loaded machine)."""
    return settings(max_examples=examples * LONG_FACTOR if LONG else examples, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])
