"""InfluxDB wire formats as pure code: line protocol, InfluxQL quoting, query answers, Retry-After."""

import json

import pytest

from agent.core.schema import Point, SchemaError, validate
from agent.sinks.influx import retry_after_seconds
from agent.sinks.influx_protocol import (
    LineEncoder,
    parse_query_response,
    quote_ident,
    quote_literal,
    tag_filter,
)

T0 = 1_795_219_200 * 10**9


@pytest.mark.parametrize(("point", "line"), [
    (Point("machine_count", {"site": "s", "line": "l", "machine": "m", "counter": "total"},
           {"delta": 3, "value": 2**40}, T0),
     f"machine_count,site=s,line=l,machine=m,counter=total delta=3i,value=1099511627776i {T0}"),
    (Point("process_value", {"site": "s", "line": "l", "machine": "m", "name": "t"},
           {"value": 60.0, "quality": "Good", "status": 0}, T0 + 1),
     f'process_value,site=s,line=l,machine=m,name=t value=60.0,quality="Good",status=0i {T0 + 1}'),
    (Point("alarm", {"site": "s", "line": "l", "machine": "m"}, {"code": 7, "active": False, "text": ""}, T0),
     f'alarm,site=s,line=l,machine=m code=7i,active=false,text="" {T0}'),
    # commas, spaces and equals signs in tags are escaped; quotes and backslashes in string fields
    (Point("operator_event", {"site": "s", "line": "一号线 A", "station": "a,b=c", "event": "in"},
           {"badge": 'B"1\\x'}, T0),
     f'operator_event,site=s,line=一号线\\ A,station=a\\,b\\=c,event=in badge="B\\"1\\\\x" {T0}'),
    (Point("material_level", {"site": "s", "line": "l", "material": "m"}, {"level": 1e-7}, T0),
     f"material_level,site=s,line=l,material=m level=1e-07 {T0}"),
])
def test_line_protocol(point, line):
    assert LineEncoder().line(point) == line


def test_a_point_without_fields_is_refused_by_the_encoder_and_the_schema():
    point = Point("material_event", {"site": "s", "line": "l", "station": "st", "material": "m", "event": "call"},
                  {}, T0)
    with pytest.raises(ValueError, match="without fields"):
        LineEncoder().line(point)
    with pytest.raises(SchemaError, match="no field"):
        validate(point)


@pytest.mark.parametrize("station", ["a\\", "a\nb", "a\rb"])
def test_tag_values_line_protocol_cannot_carry_are_refused_for_every_backend(station):
    point = Point("operator_event", {"site": "s", "line": "l", "station": station, "event": "in"}, {"badge": "b"}, T0)
    with pytest.raises(SchemaError, match="line break or ends with a backslash"):
        validate(point)


def test_influxql_quoting():
    assert quote_ident('we"ird\\') == '"we\\"ird\\\\"'
    assert quote_literal("O'Brien\\x\ny") == "'O\\'Brien\\\\x\\ny'"
    assert tag_filter("machine_state", {"line": "一号线 'A'", "machine": None}) == ['"line" = \'一号线 \\\'A\\\'\'']
    with pytest.raises(ValueError, match="has no tag"):
        tag_filter("machine_state", {"station": "x"})
    with pytest.raises(ValueError, match="carriage return"):
        quote_literal("a\rb")


def test_chunked_answers_are_merged_per_statement_and_series():
    def chunk(statement, values, partial):
        return json.dumps({"results": [{"statement_id": statement, "series": [
            {"name": "m", "tags": {"machine": "p1"}, "columns": ["time", "sum"], "values": values}],
            **({"partial": True} if partial else {})}]})
    body = "\n".join([chunk(0, [[1, 5]], True), chunk(0, [[2, 6]], False), chunk(1, [[3, 7]], False)]).encode()
    first, second = parse_query_response(body, 2)
    assert [(s.tags, s.values) for s in first] == [({"machine": "p1"}, [[1, 5], [2, 6]])]
    assert [s.values for s in second] == [[[3, 7]]]


@pytest.mark.parametrize(("header", "seconds"), [
    ("7", 7.0), ("0", 0.0), ("100000", 300.0), (None, None), ("soon", None),
    ("Sun, 22 Nov 2026 00:00:30 GMT", 30.0),
])
def test_retry_after(header, seconds):
    now = 1_795_305_600.0  # 2026-11-22 00:00:00 UTC
    assert retry_after_seconds(header, now=now) == seconds
