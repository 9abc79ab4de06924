r"""InfluxDB wire formats, pure: line protocol for writes, InfluxQL quoting for reads, and query responses.

Line protocol escapes commas, spaces and equals signs in measurement names, tag keys and tag values, and
quotes and backslashes in string fields. Two things it cannot carry in a tag value are refused by the schema
for every backend (agent/core/schema.py): line breaks, and a backslash at the end, which the server would
read as escaping the separator after it. (A backslash elsewhere is kept as it is: InfluxDB unescapes only
`\,`, `\ ` and `\=` in tags.)

InfluxQL: identifiers go in double quotes and string literals in single quotes, each with backslash escapes,
so any id (quotes, spaces, backslashes, Chinese) is placed in a query as data, never as query text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from agent.core.schema import MEASUREMENTS, Point

_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ "})
SERIES_CACHE_MAX = 100_000


def escape_tag(text: str) -> str:
    """A tag key or value (or a field key) as line protocol writes it."""
    return text.translate(_KEY_ESCAPES)


def quote_string_field(text: str) -> str:
    """A string field value in double quotes, with backslashes and quotes escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _field_text(value: Any) -> str:
    """A field value as line protocol writes it: 7i, 60.0, true, "text"."""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return quote_string_field(str(value))


class LineEncoder:
    """Turns points into line protocol lines (nanosecond times), in schema order of tags and fields.

    The `measurement,tags` prefix of each series is cached: a shop floor has few series and many points.
    Not thread-safe (the cache); the InfluxDB historian encodes under a lock.
    """

    def __init__(self) -> None:
        self._series: dict[tuple[str, tuple[str, ...]], str] = {}
        self._field_keys = {name: {f: escape_tag(f) for f in m.fields} for name, m in MEASUREMENTS.items()}
        # per measurement: the tag values of a point as a tuple, in schema order, in one C call
        self._tag_values = {name: _tuple_getter(m.tags) for name, m in MEASUREMENTS.items()}

    def line(self, point: Point) -> str:
        """One line; KeyError when the point lacks a tag of its measurement, ValueError when it has no field."""
        lines, _kept, refused = self.lines([point])
        if refused:
            raise refused[0][1]
        return lines[0]

    def lines(self, points: Sequence[Point]) -> tuple[list[str], list[Point], list[tuple[Point, Exception]]]:
        """The lines of the points that can be written, those points (in the same order), and the others
        with why not: KeyError (a tag of its measurement missing) or ValueError (no field)."""
        out: list[str] = []
        kept: list[Point] = []
        refused: list[tuple[Point, Exception]] = []
        series = self._series
        tag_values = self._tag_values
        field_keys = self._field_keys
        for point in points:
            measurement, tags, fields, time_ns = point
            try:
                key = (measurement, tag_values[measurement](tags))
                prefix = series.get(key)
                if prefix is None:
                    prefix = self._prefix(key)
                keys = field_keys[measurement]
                parts = []
                for name, value in fields.items():
                    # the types the mapper writes first, inline: this loop is the drain's hottest code
                    kind = type(value)
                    if kind is float:
                        parts.append(f"{keys[name]}={value!r}")
                    elif kind is int:
                        parts.append(f"{keys[name]}={value}i")
                    elif kind is str:
                        parts.append(f"{keys[name]}={quote_string_field(value)}")
                    elif value is not None:
                        parts.append(f"{keys[name]}={_field_text(value)}")
            except KeyError as exc:
                refused.append((point, exc))
                continue
            if not parts:
                refused.append((point, ValueError("a point without fields cannot be written to InfluxDB")))
                continue
            out.append(f"{prefix} {','.join(parts)} {time_ns}")
            kept.append(point)
        return out, kept, refused

    def _prefix(self, key: tuple[str, tuple[str, ...]]) -> str:
        measurement, values = key
        prefix = measurement.translate(_MEASUREMENT_ESCAPES) + "".join(
            f",{escape_tag(t)}={escape_tag(v)}" for t, v in zip(MEASUREMENTS[measurement].tags, values, strict=True))
        if len(self._series) >= SERIES_CACHE_MAX:
            self._series.clear()
        self._series[key] = prefix
        return prefix


def _tuple_getter(keys: tuple[str, ...]) -> Any:
    """A function giving the values of `keys` of a dict as a tuple (KeyError for a missing one)."""
    if len(keys) == 1:
        (only,) = keys
        return lambda d: (d[only],)
    return itemgetter(*keys)


# --- InfluxQL ---------------------------------------------------------------------------------------------


def quote_ident(name: str) -> str:
    """An identifier (measurement, tag or field key, database) for InfluxQL."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def quote_literal(value: str) -> str:
    """A string literal for InfluxQL; ValueError for a carriage return, which InfluxQL cannot escape (and
    which no stored tag holds)."""
    if "\r" in value:
        raise ValueError(f"{value[:60]!r}: InfluxQL cannot hold a carriage return")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def tag_filter(measurement: str, tags: dict[str, str | None]) -> list[str]:
    """`"tag" = 'value'` conditions for the given tags (None values are skipped); ValueError on an unknown tag."""
    allowed = MEASUREMENTS[measurement].tags
    out = []
    for tag, value in tags.items():
        if value is None:
            continue
        if tag not in allowed:
            raise ValueError(f"{measurement} has no tag {tag}")
        out.append(f"{quote_ident(tag)} = {quote_literal(value)}")
    return out


def time_range(start_ns: int, end_ns: int) -> list[str]:
    """`time >= start AND time < end` conditions; the bounds are made integers, so no text gets in."""
    return [f"time >= {int(start_ns)}", f"time < {int(end_ns)}"]


def where(conditions: Iterable[str]) -> str:
    parts = list(conditions)
    return " WHERE " + " AND ".join(parts) if parts else ""


@dataclass
class Series:
    """One series of a query result: its tags (from GROUP BY), columns and rows."""

    name: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]] = field(default_factory=list)

    def rows(self) -> Iterable[dict[str, Any]]:
        for row in self.values:
            yield dict(zip(self.columns, row, strict=False))


class QueryError(Exception):
    """The server answered a query with an error (bad statement, missing database, no rights)."""


def parse_query_response(body: bytes, statements: int) -> list[list[Series]]:
    """The series of each statement, in statement order, from a `/query` answer (chunked or not).

    A chunked answer is one JSON document per line; a statement or a series split over several chunks is
    merged back together.
    """
    out: list[dict[tuple[str, tuple[tuple[str, str], ...]], Series]] = [{} for _ in range(statements)]
    for chunk in body.splitlines():
        if not chunk.strip():
            continue
        doc = json.loads(chunk)
        if not isinstance(doc, dict) or "error" not in doc and "results" not in doc:
            raise QueryError(f"not an InfluxDB query answer: {chunk[:120]!r}")
        if doc.get("error"):
            raise QueryError(str(doc["error"]))
        for result in doc.get("results", []):
            if result.get("error"):
                raise QueryError(str(result["error"]))
            index = int(result.get("statement_id", 0))
            if index >= statements:
                continue
            for s in result.get("series", []):
                tags = s.get("tags") or {}
                key = (s.get("name", ""), tuple(sorted(tags.items())))
                held = out[index].get(key)
                if held is None:
                    out[index][key] = Series(s.get("name", ""), tags, s["columns"], list(s.get("values", [])))
                else:
                    held.values.extend(s.get("values", []))
    return [list(d.values()) for d in out]


def point_from_row(measurement: str, tags: dict[str, str], row: dict[str, Any]) -> Point:
    """A historian point from a result row: schema types restored (JSON gives 60 for the float 60.0)."""
    m = MEASUREMENTS[measurement]
    all_tags = {t: tags[t] if t in tags else row.get(t) for t in m.tags}
    fields: dict[str, Any] = {}
    for name, kind in m.fields.items():
        value = row.get(name)
        if value is None:
            continue
        fields[name] = field_value(kind, value)
    return Point(measurement, {t: str(v) for t, v in all_tags.items() if v is not None}, fields, int(row["time"]))


def field_value(kind: type, value: Any) -> Any:
    """A field value from JSON in its schema type."""
    if kind is float:
        return float(value)
    if kind is int:
        return int(value)
    if kind is bool:
        return bool(value)
    return value


def batches(lines: Sequence[str], size: int) -> Iterable[tuple[int, int]]:
    """(start, end) index ranges of at most `size` lines."""
    for start in range(0, len(lines), size):
        yield start, min(len(lines), start + size)
