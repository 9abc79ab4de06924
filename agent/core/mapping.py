"""Raw source readings to historian points (pure logic: no I/O, no clock reads).

The `Mapper` keeps a small state per series (last counter reading, last board state, active alarm, last
timestamp) that must be persisted in the same transaction as the points it produced, so that a restart
continues exactly where the last commit left off: nothing lost, nothing counted twice.

Outages: when a PLC source goes down its machines go OFFLINE at the time the agent noticed. When it comes
back, the server re-sends unchanged values with their old source timestamps, older than that OFFLINE point.
Stamped at their source time they would end the outage before it began, so the first state, count, alarm or
product reading of each tag after the reconnect, when its source timestamp is before the reconnect, is stamped
at the reconnect instead, and its own timestamp is kept in the `source_time_ns` field. Later readings keep
their own time (a PLC clock behind the agent's must not pile every change onto the reconnect).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.core.counters import counter_step
from agent.core.plan import MappingPlan, RoutePlan, TagBinding
from agent.core.schema import INT64_MAX, TIME_MAX_NS, TIME_MIN_NS, Point, SchemaError, validate
from agent.core.states import BoardState


@dataclass(frozen=True)
class DeadLetter:
    """An input that could not become a point, kept for inspection with where it came from and why."""

    source: str
    topic: str
    reason: str
    payload: bytes
    time_ns: int
    unknown: str = ""  # the kind of id the config does not know (badge, line, station, ...), when that is why


@dataclass
class MappingResult:
    points: list[Point] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


# --- JSON paths and timestamps --------------------------------------------------------------------------------

ROUTE_CACHE_SIZE = 20_000
_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_\-]*)|\[(\d+)\]|\['([^']*)'\]")
_MISSING = object()


def compile_json_path(path: str) -> tuple[str | int, ...]:
    """Parse the supported JSON path subset: `$`, `.key`, `['key']`, `[index]`."""
    if not path.startswith("$"):
        raise ValueError(f"JSON path {path!r} must start with $")
    parts: list[str | int] = []
    pos = 1
    while pos < len(path):
        m = _PATH_PART.match(path, pos)
        if not m:
            raise ValueError(f"JSON path {path!r}: cannot read from position {pos}")
        if m.group(1) is not None:
            parts.append(m.group(1))
        elif m.group(2) is not None:
            parts.append(int(m.group(2)))
        else:
            parts.append(m.group(3))
        pos = m.end()
    return tuple(parts)


def json_path_get(doc: Any, parts: tuple[str | int, ...]) -> Any:
    for part in parts:
        if isinstance(part, int):
            if not isinstance(doc, list) or part >= len(doc):
                return _MISSING
        elif not isinstance(doc, dict) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


_DAY_SECONDS: dict[str, int] = {}


def _utc_text_ns(text: str) -> int | None:
    """The common form `YYYY-MM-DDTHH:MM:SS.ffffffZ` without building a datetime; None for any other form."""
    if len(text) != 27 or text[10] != "T" or text[19] != "." or text[26] != "Z":
        return None
    day = _DAY_SECONDS.get(text[:10])
    if day is None:
        try:
            d = datetime.strptime(text[:10], "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            return None
        day = int((d - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())
        if len(_DAY_SECONDS) > 4096:
            _DAY_SECONDS.clear()
        _DAY_SECONDS[text[:10]] = day
    clock, fraction = text[11:19], text[20:26]
    if clock[2] != ":" or clock[5] != ":" or not (clock[:2] + clock[3:5] + clock[6:] + fraction).isdigit():
        return None
    hours, minutes, seconds = int(clock[:2]), int(clock[3:5]), int(clock[6:])
    if hours > 23 or minutes > 59 or seconds > 59:
        return None
    return (day + hours * 3600 + minutes * 60 + seconds) * 1_000_000_000 + int(fraction) * 1000


def parse_timestamp_ns(value: Any) -> int:
    """UTC nanoseconds from ISO 8601 text (with zone) or epoch seconds/ms/us/ns (told apart by magnitude)."""
    if isinstance(value, bool):
        raise ValueError("timestamp is true/false")
    if isinstance(value, int):
        # integers stay integers: a float would lose the last digits of a nanosecond timestamp
        magnitude = abs(value)
        int_scale = 10**9 if magnitude < 10**11 else 10**6 if magnitude < 10**14 else 10**3 if magnitude < 10**17 else 1
        return value * int_scale
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("timestamp is not a finite number")
        fmagnitude = abs(value)
        scale = 1e9 if fmagnitude < 1e11 else 1e6 if fmagnitude < 1e14 else 1e3 if fmagnitude < 1e17 else 1.0
        return int(round(value * scale))
    if isinstance(value, str):
        fast = _utc_text_ns(value)
        if fast is not None:
            return fast
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"timestamp {value[:40]!r} is not ISO 8601") from None
        if parsed.tzinfo is None:
            raise ValueError(f"timestamp {value[:40]!r} has no time zone")
        delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    raise ValueError(f"timestamp has type {type(value).__name__}")


# --- MQTT routes ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledRoute:
    route: RoutePlan
    regex: re.Pattern[str]
    tag_templates: tuple[tuple[str, str, Any], ...]  # (tag, kind "capture"|"path"|"const", arg)
    field_paths: tuple[tuple[str, tuple[str | int, ...]], ...]
    time_path: tuple[str | int, ...] | None


def compile_route(route: RoutePlan) -> CompiledRoute:
    pieces = []
    captures: list[str] = []
    levels = route.pattern.split("/")
    for i, level in enumerate(levels):
        if level == "#":
            if i != len(levels) - 1:
                raise ValueError(f"pattern {route.pattern!r}: '#' must be last")
            pieces.append("#")
        elif level == "+":
            pieces.append("[^/]+")
        elif level.startswith("{") and level.endswith("}"):
            name = level[1:-1]
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name in captures:
                raise ValueError(f"pattern {route.pattern!r}: capture {level} must be a unique name of letters, "
                                 "digits and '_'")
            captures.append(name)
            pieces.append(f"(?P<{name}>[^/]+)")
        elif "+" in level or "#" in level or "{" in level or "}" in level:
            raise ValueError(f"pattern {route.pattern!r}: level {level!r} mixes a wildcard with text")
        else:
            pieces.append(re.escape(level))
    text = "/".join(pieces)
    # MQTT's rule: 'a/#' also matches the parent 'a'
    text = text[:-2] + "(?:/.*)?" if text.endswith("/#") else text.replace("#", ".*")
    regex = re.compile(text + r"\Z")
    tags: list[tuple[str, str, Any]] = []
    for tag, template in route.tags.items():
        if tag == "site":
            raise ValueError("tag site is set by the agent from site.id; remove it from the route")
        if template.startswith("{") and template.endswith("}"):
            if template[1:-1] not in captures:
                raise ValueError(f"tag {tag}: {template} is not a capture of pattern {route.pattern!r}")
            tags.append((tag, "capture", template[1:-1]))
        elif template.startswith("$"):
            tags.append((tag, "path", compile_json_path(template)))
        else:
            tags.append((tag, "const", template))
    fields = tuple((name, compile_json_path(path)) for name, path in route.fields.items())
    time_path = compile_json_path(route.time) if route.time else None
    return CompiledRoute(route, regex, tuple(tags), fields, time_path)


class InputError(ValueError):
    """An input that cannot become a point; its message is the dead-letter reason."""


class UnknownIdError(InputError):
    """An input naming a badge, line, station, machine or material the config does not have: anyone on the
    broker can make such ids up, so they are counted by `kind` and kept as dead letters, never as points."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# --- the mapper ----------------------------------------------------------------------------------------------


class Mapper:
    """Turns source readings into points, keeping the per-series state that makes deltas and dedup right."""

    def __init__(self, plan: MappingPlan, state: dict[str, Any] | None = None) -> None:
        self.plan = plan
        self.site = plan.site
        self.state: dict[str, Any] = dict(state or {})
        self.dirty: set[str] = set()
        self.lines = plan.stations
        self.stations = {(line, station) for line, stations in plan.stations.items() for station in stations}
        self.machines = plan.machines
        self.materials = plan.materials
        self.skus = plan.skus
        # per machine: the last product tag reading, so a polled unknown SKU is dead-lettered once, not per poll
        self._product_readings: dict[str, str] = {}
        self.badges = plan.badges
        self.routes: dict[str, list[CompiledRoute]] = {
            source: [compile_route(r) for r in routes] for source, routes in plan.routes.items()
        }
        self.max_payload = plan.max_payload
        self._route_cache: dict[tuple[str, str], tuple[CompiledRoute, dict[str, str]]] = {}
        self.bindings = plan.bindings
        self.microstop_ns = int(plan.microstop_s * 1e9)
        # per source: when it came back after an outage; earlier source timestamps are stamped at this time
        self._reconnected: dict[str, int] = {k[3:]: v for k, v in self.state.items()
                                             if k.startswith("up/") and v is not None}
        # per source: the tags that gave their first reading since the reconnect (only that one is re-stamped)
        self._read_since_up: dict[str, set[str]] = {}

    # -- state helpers --

    def _set(self, key: str, value: Any) -> None:
        self.state[key] = value
        self.dirty.add(key)

    def take_dirty(self) -> dict[str, Any]:
        """The state entries changed since the last call, to persist with the points they belong to."""
        out = {k: self.state[k] for k in self.dirty}
        self.dirty.clear()
        return out

    def _unique_time(self, series: str, time_ns: int) -> int:
        """A timestamp later than the series' last one, so two readings never share one point identity."""
        key = "t/" + series
        last = self.state.get(key)
        if last is not None and time_ns <= last:
            time_ns = last + 1
        self._set(key, time_ns)
        return time_ns

    # -- PLC tags (OPC UA, Modbus, S7) --

    def reading(self, b: TagBinding, value: Any, quality: int, status: int, status_name: str,
                source_ns: int, server_ns: int | None, out: MappingResult) -> None:
        """Map one value change (or polled read) of a PLC tag. `quality` is 0 Good, 1 Uncertain, 2 Bad (the
        source's judgement of its protocol's status); `status` is the protocol's own code, kept with process
        values."""
        if not TIME_MIN_NS <= source_ns < TIME_MAX_NS:
            out.dead_letters.append(self._tag_dead(b, f"source timestamp {source_ns} ns is outside 2000-2200",
                                                     value, TIME_MIN_NS))
            return
        if server_ns is not None and not TIME_MIN_NS <= server_ns < TIME_MAX_NS:
            server_ns = None
        severity = quality
        spec = b.spec
        if spec.signal == "process_value":
            fields: dict[str, Any] = {"status": status, "quality": _quality(severity)}
            if server_ns is not None:
                fields["server_time_ns"] = server_ns
            if severity < 2:
                if isinstance(value, bool):
                    value = float(value)
                if not isinstance(value, int | float):
                    out.dead_letters.append(self._tag_dead(b, f"process value has type {type(value).__name__}",
                                                             value, source_ns))
                    return
                number = float(value) * spec.scale + spec.offset if spec.scale != 1.0 or spec.offset else float(value)
                if not math.isfinite(number):
                    out.dead_letters.append(self._tag_dead(b, f"process value {number} is not a finite number",
                                                           value, source_ns))
                    return
                fields["value"] = number
            # No timestamp bump here: a re-read of the same sample (same source time) is the same point.
            out.points.append(Point("process_value", b.pv_tags, fields, source_ns))
            return
        tags = {"site": self.site, "line": b.line, "machine": b.machine}
        reconnected = self._reconnected.get(b.source)
        time_ns = source_ns
        if reconnected is not None and b.node_id not in self._read_since_up.setdefault(b.source, set()):
            self._read_since_up[b.source].add(b.node_id)
            if source_ns < reconnected:
                time_ns = reconnected
        if spec.signal == "state_bit":
            if severity >= 2:
                self._machine_state(b.machine, tags, BoardState.OFFLINE, f"status {status_name}", time_ns, out,
                                    source_ns)
                return
            if not isinstance(value, bool | int):
                out.dead_letters.append(self._tag_dead(b, f"state bit value {value!r} is not true/false",
                                                         value, source_ns))
                return
            key = f"bits/{b.machine}"
            bits = dict(self.state.get(key) or {})
            bits[spec.bit or spec.node] = bool(value)
            self._set(key, bits)
            state = b.mapper.map(bits)
            if state is not None:
                raw = ",".join(f"{k}={int(v)}" for k, v in sorted(bits.items()))
                self._machine_state(b.machine, tags, state, raw, time_ns, out, source_ns)
            return
        if spec.signal == "state":
            if severity >= 2:
                self._machine_state(b.machine, tags, BoardState.OFFLINE, f"status {status_name}", time_ns, out,
                                    source_ns)
                return
            state = b.mapper.map(value)
            if state is None:
                out.dead_letters.append(self._tag_dead(b, f"state value {value!r} is not in the state map",
                                                         value, source_ns))
                return
            self._machine_state(b.machine, tags, state, str(value), time_ns, out, source_ns)
            return
        if severity >= 2:
            out.dead_letters.append(self._tag_dead(b, f"bad status {status_name}", value, source_ns))
            return
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if spec.signal == "product":
            self._product(b, tags, value, time_ns, source_ns, out)
            return
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT64_MAX:
            out.dead_letters.append(self._tag_dead(b, f"{spec.signal} value {value!r} is not a whole number >= 0",
                                                     value, source_ns))
            return
        if spec.signal == "count":
            self._count(b, tags, value, time_ns, source_ns, out)
        else:
            self._alarm(b, tags, value, time_ns, source_ns, out)

    def _count(self, b: TagBinding, tags: dict[str, str], value: int, time_ns: int, source_ns: int,
               out: MappingResult) -> None:
        counter = b.spec.counter or "total"
        key = f"c/{b.machine}/{counter}"
        step = counter_step(self.state.get(key), value, b.spec.rollover)
        if step.kind == "same":
            return
        self._set(key, value)
        tags = dict(tags, counter=counter)
        t = self._unique_time(f"count/{b.machine}/{counter}", time_ns)
        out.points.append(Point("machine_count", tags,
                                _audited({"delta": step.delta, "value": value}, t, source_ns), t))

    def _alarm(self, b: TagBinding, tags: dict[str, str], code: int, time_ns: int, source_ns: int,
               out: MappingResult) -> None:
        key = f"a/{b.machine}"
        active = self.state.get(key, 0)
        if code == active:
            return
        self._set(key, code)
        if active:
            t = self._unique_time(f"alarm/{b.machine}", time_ns)
            out.points.append(Point("alarm", tags, _audited({"code": active, "active": False,
                                                             "text": b.alarm_texts.get(active, "")}, t, source_ns), t))
        if code:
            t = self._unique_time(f"alarm/{b.machine}", time_ns)
            out.points.append(Point("alarm", tags, _audited({"code": code, "active": True,
                                                             "text": b.alarm_texts.get(code, "")}, t, source_ns), t))

    def _product(self, b: TagBinding, tags: dict[str, str], value: Any, time_ns: int, source_ns: int,
                 out: MappingResult) -> None:
        """The SKU the machine makes: text, or a code mapped through the tag's codes; a point when it changes."""
        raw = value.strip(" \x00") if isinstance(value, str) else str(value)
        if self._product_readings.get(b.machine) == raw:
            return
        self._product_readings[b.machine] = raw
        if isinstance(value, str):
            sku = raw
        elif isinstance(value, int) and not isinstance(value, bool):
            if b.spec.codes is None:
                out.dead_letters.append(self._tag_dead(
                    b, f"product code {value}: the tag has no codes that map it to a SKU", value, source_ns))
                return
            if value not in b.spec.codes:
                out.dead_letters.append(self._tag_dead(
                    b, f"product code {value} is not in the tag's codes ({', '.join(map(str, b.spec.codes))})",
                    value, source_ns))
                return
            sku = b.spec.codes[value]
        else:
            out.dead_letters.append(self._tag_dead(
                b, f"product value of type {type(value).__name__} is neither a SKU (text) nor a code (whole number)",
                value, source_ns))
            return
        if sku not in self.skus:
            out.dead_letters.append(self._tag_dead(b, f"SKU {sku[:64]!r} is not in products", value, source_ns))
            return
        key = f"p/{b.machine}"
        if self.state.get(key) == sku:
            return
        self._set(key, sku)
        t = self._unique_time(f"product/{b.machine}", time_ns)
        out.points.append(Point("machine_product", tags, _audited({"sku": sku, "raw": raw}, t, source_ns), t))

    def _machine_state(self, machine: str, tags: dict[str, str], state: BoardState, raw: str, time_ns: int,
                       out: MappingResult, source_ns: int | None = None) -> None:
        key = f"s/{machine}"
        if self.state.get(key) == state.value:
            return
        self._set(key, state.value)
        t = self._unique_time(f"state/{machine}", time_ns)
        fields = _audited({"state": state.value, "raw": raw}, t, source_ns)
        stop = self.state.get(f"stop/{machine}")
        if stop is not None:
            self._set(f"stop/{machine}", None)
            # A stop that ended before the micro-stop threshold was a MICROSTOP (a PLC cannot tell while it lasts):
            # its point is written again as one (same identity). Not when the data ended it: it may go on.
            if state != BoardState.OFFLINE and t - stop["time"] < self.microstop_ns:
                out.points.append(Point("machine_state", tags, {**stop["fields"], "state": BoardState.MICROSTOP.value},
                                        stop["time"]))
        # a stop re-stamped at a reconnect began before the outage: its length is unknown, never a micro-stop
        if state == BoardState.STOPPED and (source_ns is None or source_ns >= time_ns):
            self._set(f"stop/{machine}", {"time": t, "fields": fields})
        out.points.append(Point("machine_state", tags, fields, t))

    def source_down(self, source: str, time_ns: int, reason: str) -> MappingResult:
        """Every machine read through `source` goes OFFLINE: the board must not show frozen values."""
        out = MappingResult()
        if self.state.get("down/" + source) is None:
            self._set("down/" + source, time_ns)
        for machine_id, (line_id, machine_source) in self.machines.items():
            if machine_source == source:
                tags = {"site": self.site, "line": line_id, "machine": machine_id}
                self._machine_state(machine_id, tags, BoardState.OFFLINE, reason, time_ns, out)
        return out

    def source_up(self, source: str, time_ns: int) -> None:
        """`source` is connected again at `time_ns`. After an outage, its readings with older source timestamps
        (unchanged values the server re-sends) are stamped at `time_ns`: the OFFLINE interval lasts until the
        source answered again, never less."""
        if self.state.get("down/" + source) is None:
            return
        self._set("down/" + source, None)
        self._set("up/" + source, time_ns)
        self._reconnected[source] = time_ns
        self._read_since_up[source] = set()

    def _tag_dead(self, b: TagBinding, reason: str, value: Any, time_ns: int) -> DeadLetter:
        return DeadLetter(b.source, b.node_id, reason, repr(value).encode()[:1024], time_ns)

    # -- MQTT --

    def mqtt_message(self, source: str, topic: str, payload: bytes, received_ns: int, out: MappingResult) -> None:
        """Map one MQTT message; anything that does not fit becomes a dead letter with the reason."""
        try:
            out.points.append(self._mqtt_point(source, topic, payload, received_ns))
        except UnknownIdError as exc:
            out.dead_letters.append(DeadLetter(source, topic, str(exc), payload, received_ns, exc.kind))
        except InputError as exc:
            out.dead_letters.append(DeadLetter(source, topic, str(exc), payload, received_ns))
        except (RecursionError, MemoryError, ValueError, TypeError) as exc:
            # e.g. JSON nested thousands deep: a message must never stop the agent (it would come back after
            # every restart, being unacknowledged)
            out.dead_letters.append(DeadLetter(source, topic, f"payload cannot be read: {type(exc).__name__}",
                                               payload, received_ns))

    def _mqtt_point(self, source: str, topic: str, payload: bytes, received_ns: int) -> Point:
        limit = self.max_payload.get(source, 262144)
        if len(payload) > limit:
            raise InputError(f"payload of {len(payload)} bytes is larger than max_payload_bytes ({limit})")
        route, captures = self._route(source, topic)
        try:
            doc = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"payload is not JSON: {exc}") from None
        tags = {"site": self.site}
        for tag, kind, arg in route.tag_templates:
            if kind == "capture":
                value = captures[arg]
            elif kind == "path":
                value = json_path_get(doc, arg)
                if value is _MISSING or not isinstance(value, str):
                    raise InputError(f"tag {tag}: payload has no text at its path")
            else:
                value = arg
            tags[tag] = value
        self._check_ids(tags)
        fields: dict[str, Any] = {}
        for name, path in route.field_paths:
            value = json_path_get(doc, path)
            if value is not _MISSING:
                fields[name] = value
        measurement = route.route.signal
        time_ns = received_ns
        if route.time_path is not None:
            raw_time = json_path_get(doc, route.time_path)
            if raw_time is not _MISSING:
                try:
                    time_ns = parse_timestamp_ns(raw_time)
                except (ValueError, OverflowError) as exc:
                    raise InputError(str(exc)) from None
        if measurement == "operator_event" and isinstance(fields.get("badge"), str):
            # a badge at a station is a person on the line's headcount: only the operators' badges are
            operator = self.badges.get(fields["badge"])
            if operator is None:
                raise UnknownIdError("badge", f"unknown badge {fields['badge'][:64]!r} (not in operators)")
            fields["operator"] = operator
        try:
            return validate(Point(measurement, tags, fields, time_ns))
        except SchemaError as exc:
            raise InputError(str(exc)) from None

    def _route(self, source: str, topic: str) -> tuple[CompiledRoute, dict[str, str]]:
        """The first route matching the topic and its captures; a line's topics repeat, so answers are cached."""
        key = (source, topic)
        hit = self._route_cache.get(key)
        if hit is not None:
            return hit
        for route in self.routes.get(source, ()):
            m = route.regex.match(topic)
            if m is not None:
                if len(self._route_cache) >= ROUTE_CACHE_SIZE:
                    self._route_cache.clear()
                self._route_cache[key] = (route, m.groupdict())
                return route, self._route_cache[key][1]
        raise InputError("no route matches this topic")

    def _check_ids(self, tags: dict[str, str]) -> None:
        line = tags.get("line")
        if line is not None and line not in self.lines:
            raise UnknownIdError("line", f"unknown line {line!r}")
        station = tags.get("station")
        if station is not None and (line, station) not in self.stations:
            raise UnknownIdError("station", f"unknown station {station!r} on line {line}")
        material = tags.get("material")
        if material is not None and material not in self.materials:
            raise UnknownIdError("material", f"unknown material {material!r}")
        machine = tags.get("machine")
        if machine is not None and (machine not in self.machines or self.machines[machine][0] != line):
            raise UnknownIdError("machine", f"unknown machine {machine!r} on line {line}")


def _audited(fields: dict[str, Any], time_ns: int, source_ns: int | None) -> dict[str, Any]:
    """The fields, with the source timestamp kept in `source_time_ns` when the point is stamped at another time."""
    if source_ns is not None and source_ns != time_ns:
        fields["source_time_ns"] = source_ns
    return fields


def _quality(severity: int) -> str:
    return ("Good", "Uncertain", "Bad")[severity]
