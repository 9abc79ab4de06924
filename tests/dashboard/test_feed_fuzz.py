"""Any input to any /v1 endpoint (query, headers, body) gets an answer the OpenAPI document describes; a refusal
is a problem document, never a traceback, and nothing is booked by a refused hold."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.dashboard.test_feed import AUTH, check
from tests.dashboard.test_feed import feed_app as feed_app  # noqa: F401 - the fixture

text = st.text(st.characters(min_codepoint=1, max_codepoint=0x2FFF, blacklist_categories=("Cs",)), max_size=40)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
                      max_size=40)  # what an HTTP client can send in a header
json_value = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                          max_leaves=8)
request = st.fixed_dictionaries(
    {"sku": st.sampled_from(["KT-100", "FN-300", "KT-200", "XX"]) | text,
     "quantity": st.integers(1, 5000) | st.integers(-5, 20_000_000) | st.floats(allow_nan=False) | text},
    optional={"due": st.integers() | text | st.sampled_from(["2026-11-24", "2026-11-23T13:00:00Z", "2026-13-40"]),
              "ttl_s": st.integers(-10, 10**7) | text, "extra": json_value})
body = st.one_of(request, request, json_value)  # mostly requests that get past the first checks
params = st.dictionaries(st.sampled_from(["line", "sku", "from", "to", "granularity", "x"]),
                         text | st.sampled_from(["line-1", "KT-100", "2026-11-24", "day", "shift"]), max_size=4)


@pytest.fixture
def client(feed_app):  # noqa: F811
    return feed_app.test_client()


def answered(resp):
    assert resp.status_code < 500, resp.get_data(as_text=True)
    if resp.status_code >= 400:
        assert resp.mimetype == "application/problem+json" and resp.get_json()["status"] == resp.status_code
    check(resp)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/v1/capacity", "/v1/orders", "/v1/inventory", "/v1/prices"]), query=params,
       etag=st.none() | header_text)
def test_any_query_gets_a_described_answer(client, path, query, etag):
    headers = {**AUTH, **({"If-None-Match": etag} if etag else {})}
    answered(client.get(path, query_string=query, headers=headers))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/v1/promises:inquire", "/v1/promises"]), payload=body, key=st.none() | header_text)
def test_any_promise_request_gets_a_described_answer(client, path, payload, key):
    headers = {**AUTH, **({"Idempotency-Key": key} if key is not None else {})}
    resp = client.post(path, json=payload, headers=headers)
    answered(resp)
    if resp.status_code != 201 and resp.status_code != 200 or path.endswith("inquire"):
        return
    client.delete(f"/v1/promises/{resp.get_json()['id']}", headers=AUTH)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200), ctype=st.sampled_from(["application/json", "text/plain", ""]))
def test_any_body_bytes_get_a_described_answer(client, raw, ctype):
    answered(client.post("/v1/promises:inquire", data=raw, headers={**AUTH, "Content-Type": ctype}))
