"""Cumulative PLC counters to deltas, surviving counter reset and rollover (pure logic)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_WRAP = 2**32


@dataclass(frozen=True)
class CounterStep:
    """What one new cumulative reading means: `delta` units produced since the last reading."""

    delta: int
    kind: str  # "first" | "step" | "rollover" | "reset" | "same"


def counter_step(last: int | None, value: int, rollover: int | None) -> CounterStep:
    """The delta between two cumulative readings.

    - No earlier reading: the counter is taken as a baseline (delta 0); counts made before the agent first saw
      the counter are not attributed to any interval.
    - value >= last: a plain step.
    - value < last with a rollover R configured (or the 32-bit wrap) and last in the upper half of the range:
      the counter wrapped; delta = R - last + value.
    - value < last otherwise: the PLC reset the counter (shift change, power cycle); the counts since the reset
      are `value`.
    """
    if last is None:
        return CounterStep(0, "first")
    if value == last:
        return CounterStep(0, "same")
    if value > last:
        return CounterStep(value - last, "step")
    wrap = rollover or DEFAULT_WRAP
    if last >= wrap // 2 and last < wrap:
        return CounterStep(wrap - last + value, "rollover")
    return CounterStep(value, "reset")
