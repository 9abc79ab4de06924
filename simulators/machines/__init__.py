"""The simulated plant's machines, protocol-neutral: their raw tags and values, the clock, the state codec.

A protocol simulator (OPC UA, Modbus TCP, S7) builds `MachineTags` for its source and shows the values.
"""

from simulators.clock import SimClock
from simulators.machines.codec import PACKML_NAMES, RawState, RawStateCodec
from simulators.machines.model import (
    COUNTER_WRAP,
    TRUTH_TAGS,
    Machine,
    MachineTags,
    RawValue,
    Tag,
    TagBatch,
    TagChange,
    TagType,
    save_truth,
)

__all__ = [
    "COUNTER_WRAP", "PACKML_NAMES", "TRUTH_TAGS", "Machine", "MachineTags", "RawState", "RawStateCodec", "RawValue",
    "SimClock", "Tag", "TagBatch", "TagChange", "TagType", "save_truth",
]
