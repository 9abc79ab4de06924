"""The historian schema: measurements, their tags and fields (docs/data-model.md describes the same set).

Tags are the hierarchy ids plus low-cardinality kinds; ids of orders, lots, calls and operators are fields.
A point's identity is (measurement, tags, time): writing the same identity twice keeps one point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


class Point(NamedTuple):
    """One historian point. `time_ns` is the source timestamp in UTC nanoseconds."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, Any]
    time_ns: int


@dataclass(frozen=True)
class Measurement:
    name: str
    tags: tuple[str, ...]
    fields: dict[str, type]  # field -> python type (int, float, str, bool)
    required_fields: tuple[str, ...]

    @property
    def unit_tags(self) -> tuple[str, ...]:
        """The hierarchy tags a board filters by: the line and its machine, station or material."""
        return tuple(t for t in self.tags if t in ("line", "machine", "station", "material", "source"))[:2]


def _m(name: str, tags: tuple[str, ...], fields: dict[str, type], required: tuple[str, ...]) -> Measurement:
    return Measurement(name, tags, fields, required)


MEASUREMENTS: dict[str, Measurement] = {
    m.name: m
    for m in (
        _m("machine_state", ("site", "line", "machine"),
           {"state": str, "raw": str, "reason": str, "source_time_ns": int}, ("state",)),
        _m("machine_count", ("site", "line", "machine", "counter"),
           {"delta": int, "value": int, "source_time_ns": int}, ("delta", "value")),
        _m("process_value", ("site", "line", "machine", "name"),
           {"value": float, "status": int, "quality": str, "server_time_ns": int}, ("quality",)),
        _m("alarm", ("site", "line", "machine"),
           {"code": int, "active": bool, "text": str, "source_time_ns": int}, ("code", "active")),
        _m("machine_product", ("site", "line", "machine"),
           {"sku": str, "raw": str, "source_time_ns": int}, ("sku",)),
        # the agent was alive and had passed on everything it received from the source by this time
        _m("source_heartbeat", ("site", "source"), {"connected": bool}, ("connected",)),
        _m("operator_event", ("site", "line", "station", "event"),
           {"badge": str, "operator": str}, ("badge",)),
        _m("andon_event", ("site", "line", "station", "event", "kind"),
           {"call_id": str, "badge": str}, ("call_id",)),
        _m("material_level", ("site", "line", "material"),
           {"level": float}, ("level",)),
        _m("material_event", ("site", "line", "station", "material", "event"),
           {"lot": str, "qty": float, "call_id": str}, ()),
        _m("order_event", ("site", "line", "event"),
           {"order_id": str, "sku": str, "target_qty": int}, ("order_id", "sku")),
    )
}

EVENT_VALUES: dict[str, frozenset[str]] = {
    "operator_event": frozenset({"in", "out"}),
    "andon_event": frozenset({"call", "ack", "resolve"}),
    "material_event": frozenset({"lot_loaded", "call", "delivered"}),
    "order_event": frozenset({"start", "stop"}),
}


INT64_MAX = 2**63 - 1
# Timestamps the historian accepts: 2000-01-01 to 2200-01-01 UTC, in nanoseconds. Anything outside is a bad
# source clock or a null/"max" DateTime, never a real reading.
TIME_MIN_NS = 946_684_800 * 10**9
TIME_MAX_NS = 7_258_118_400 * 10**9


class SchemaError(ValueError):
    """A point does not fit its measurement; the message says which part and why."""


def coerce_field(measurement: str, field: str, value: Any) -> Any:
    """The value converted to the field's type, or SchemaError when it cannot be without guessing."""
    kind = MEASUREMENTS[measurement].fields[field]
    if value is None:
        raise SchemaError(f"field {field} is null")
    if kind is str:
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)
        raise SchemaError(f"field {field} should be text, got {type(value).__name__}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise SchemaError(f"field {field} should be true/false, got {type(value).__name__}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SchemaError(f"field {field} should be a number, got {type(value).__name__} {str(value)[:40]!r}")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise SchemaError(f"field {field} should be a whole number, got {value}")
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise SchemaError(f"field {field} is outside the 64-bit range")
        return int(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise SchemaError(f"field {field} is not a finite number")
    return float(value)


def validate(point: Point) -> Point:
    """The point with coerced fields, or SchemaError naming what does not fit."""
    spec = MEASUREMENTS.get(point.measurement)
    if spec is None:
        raise SchemaError(f"unknown measurement {point.measurement}")
    for tag in spec.tags:
        value = point.tags.get(tag)
        if not isinstance(value, str) or not value:
            raise SchemaError(f"tag {tag} is missing or empty")
        if "\n" in value or "\r" in value or value.endswith("\\"):
            # InfluxDB line protocol cannot carry these; refusing them everywhere keeps the backends alike
            raise SchemaError(f"tag {tag} {value[:60]!r} has a line break or ends with a backslash")
    allowed = EVENT_VALUES.get(point.measurement)
    if allowed is not None and point.tags["event"] not in allowed:
        raise SchemaError(f"tag event is {point.tags['event']!r}; expected one of {', '.join(sorted(allowed))}")
    fields = {}
    for name, value in point.fields.items():
        if name not in spec.fields:
            raise SchemaError(f"unknown field {name}")
        if value is None and name not in spec.required_fields:
            continue
        fields[name] = coerce_field(point.measurement, name, value)
    for name in spec.required_fields:
        if name not in fields:
            raise SchemaError(f"required field {name} is missing")
    if not fields:
        raise SchemaError("no field: at least one of " + ", ".join(spec.fields))
    if not TIME_MIN_NS <= point.time_ns < TIME_MAX_NS:
        raise SchemaError(f"timestamp {point.time_ns} ns is outside 2000-2200")
    return Point(point.measurement, {t: point.tags[t] for t in spec.tags}, fields, point.time_ns)
