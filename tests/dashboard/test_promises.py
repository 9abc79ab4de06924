"""Capable to promise (/v1/promises) on the known shop floor of tests/dashboard/conftest.py (Monday 10:00 in
Cixi, a cold start at 60 %). Every answer is validated against docs/openapi.yaml."""

import threading

import pytest

from tests.dashboard.test_feed import AUTH, check, line
from tests.dashboard.test_feed import feed_app as feed_app  # noqa: F401 - the fixture


@pytest.fixture
def call(feed_app):  # noqa: F811
    client = feed_app.test_client()

    def call(method, path, json=None, headers=None, status=200):
        resp = client.open(path, method=method, json=json, headers={**AUTH, **(headers or {})})
        check(resp)
        assert resp.status_code == status, resp.get_data(as_text=True)
        return resp
    return call


def day(call, line_id="line-1"):
    return line(call("GET", "/v1/capacity").get_json(), line_id)["buckets"][0]


def test_an_inquiry_answers_the_earliest_completion_and_the_plan(call):
    answer = call("POST", "/v1/promises:inquire", {"sku": "KT-100", "quantity": 1000}).get_json()
    # 25 min setup + 1000 x 6 s = 7,500 s fit in Monday's day shift after PO-1 (13,068 s available). The line's
    # work reaches 4,500 + 7,500 s at 17:25:20: 288 s by 10:20 (operators missing), nothing to 11:00 (resin
    # short), 2,160 s to the lunch, 7,020 s from 12:45 to the tea break, the last 2,532 s from 16:15 at 0.6
    assert answer["line"] == "line-1" and answer["completion"] == "2026-11-23T09:25:20Z"
    assert answer["plan"] == [{"bucket": "2026-11-23/day", "start": "2026-11-23T00:00:00Z",
                               "end": "2026-11-23T12:00:00Z", "seconds": 7500.0, "quantity": 1000}]
    assert answer["meets_due"] is None and answer["earliest_start"] == "2026-11-23T02:00:00Z"
    late = call("POST", "/v1/promises:inquire",
                {"sku": "KT-100", "quantity": 1000, "due": "2026-11-23T08:00:00Z"}).get_json()
    assert late["meets_due"] is False  # due at 16:00 local
    on_time = call("POST", "/v1/promises:inquire", {"sku": "KT-100", "quantity": 1000, "due": "2026-11-23"})
    assert on_time.get_json()["meets_due"] is True  # a date: the end of Monday, local
    # an inquiry books nothing
    assert day(call)["committed_s"] == 4500.0


def test_a_hold_counts_as_committed_until_it_is_released(call):
    placed = call("POST", "/v1/promises", {"sku": "KT-100", "quantity": 1000}, {"Idempotency-Key": "k-1"},
                  status=201)
    hold = placed.get_json()
    assert placed.headers["Location"] == f"/v1/promises/{hold['id']}" and hold["status"] == "active"
    assert hold["completion"] == "2026-11-23T09:25:20Z" and hold["expires"] == "2026-11-23T03:00:00Z"
    assert (day(call)["committed_s"], day(call)["available_s"]) == (12000.0, 5568.0)
    # a second identical inquiry now gets what is left of the day shift (5,568 s: 678 units after the setup)
    # and the rest (1,932 s) at the start of the night shift: 20:00 + 1,932 s / 0.6 = 20:53:40
    again = call("POST", "/v1/promises:inquire", {"sku": "KT-100", "quantity": 1000}).get_json()
    assert again["completion"] == "2026-11-23T12:53:40Z"
    assert [(p["bucket"], p["seconds"], p["quantity"]) for p in again["plan"]] == [
        ("2026-11-23/day", 5568.0, 678), ("2026-11-23/night", 1932.0, 322)]
    assert call("GET", f"/v1/promises/{hold['id']}").get_json()["status"] == "active"
    call("DELETE", f"/v1/promises/{hold['id']}", status=204)
    call("DELETE", f"/v1/promises/{hold['id']}", status=204)  # releasing twice is harmless
    assert call("GET", f"/v1/promises/{hold['id']}").get_json()["status"] == "released"
    assert day(call)["committed_s"] == 4500.0
    call("DELETE", "/v1/promises/H-nothing", status=404)


def test_the_same_idempotency_key_gets_the_same_answer_and_another_body_is_refused(call):
    body = {"sku": "KT-200", "quantity": 200, "ttl_s": 600}
    first = call("POST", "/v1/promises", body, {"Idempotency-Key": "order-77"}, status=201).get_json()
    second = call("POST", "/v1/promises", body, {"Idempotency-Key": "order-77"}, status=200)
    assert second.get_json() == first and second.headers["Idempotent-Replayed"] == "true"
    assert day(call)["committed_s"] == pytest.approx(4500 + 1500 + 200 * 5)  # booked once
    other = call("POST", "/v1/promises", {**body, "quantity": 201}, {"Idempotency-Key": "order-77"}, status=422)
    assert "Idempotency-Key" in other.get_json()["title"]


def test_a_hold_that_does_not_fit_is_refused_with_the_promise(call):
    too_big = call("POST", "/v1/promises", {"sku": "FN-300", "quantity": 9_000_000}, {"Idempotency-Key": "big"},
                   status=409).get_json()
    assert too_big["promise"]["completion"] is None and "horizon" in too_big["detail"]
    late = call("POST", "/v1/promises", {"sku": "KT-100", "quantity": 1000, "due": "2026-11-23T08:00:00Z"},
                {"Idempotency-Key": "late"}, status=409).get_json()
    assert late["promise"]["meets_due"] is False and "2026-11-23T09:25:20Z" in late["detail"]
    # a refusal is not kept: the same key may be used again
    call("POST", "/v1/promises", {"sku": "KT-100", "quantity": 1000}, {"Idempotency-Key": "late"}, status=201)


@pytest.mark.parametrize("body, headers, status, field", [
    ({"sku": "KT-100", "quantity": 10}, {}, 400, None),  # no Idempotency-Key
    ({"sku": "KT-100", "quantity": 0}, {"Idempotency-Key": "a"}, 400, "quantity"),
    ({"sku": "KT-100", "quantity": 1.5}, {"Idempotency-Key": "a"}, 400, "quantity"),
    ({"sku": "KT-100", "quantity": True}, {"Idempotency-Key": "a"}, 400, "quantity"),
    ({"sku": "XX", "quantity": 10}, {"Idempotency-Key": "a"}, 404, "sku"),
    ({"sku": 7, "quantity": 10}, {"Idempotency-Key": "a"}, 400, "sku"),
    ({"sku": "KT-100", "quantity": 10, "due": "soon"}, {"Idempotency-Key": "a"}, 400, "due"),
    ({"sku": "KT-100", "quantity": 10, "ttl_s": 5}, {"Idempotency-Key": "a"}, 400, "ttl_s"),
    ({"sku": "KT-100", "quantity": 10, "colour": "red"}, {"Idempotency-Key": "a"}, 400, "colour"),
    (["KT-100"], {"Idempotency-Key": "a"}, 400, None),
])
def test_bad_hold_requests_get_a_problem(call, body, headers, status, field):
    problem = call("POST", "/v1/promises", body, headers, status=status).get_json()
    if field:
        assert field in [p["name"] for p in problem["invalid_params"]]
    assert line(call("GET", "/v1/capacity").get_json(), "line-1")["committed"][-1]["kind"] == "order"


def test_a_body_that_is_not_json_is_refused(feed_app):  # noqa: F811
    resp = feed_app.test_client().post("/v1/promises:inquire", data="sku=KT-100", headers=AUTH,
                                       content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 415 and resp.mimetype == "application/problem+json"


def test_concurrent_holds_never_book_more_than_is_available(feed_app, call):  # noqa: F811
    # line 2 makes FN-300 at 8 s a unit with a 40 min setup: each hold of 2700 units takes 2400 + 21600 s
    two = line(call("GET", "/v1/capacity?line=line-2").get_json(), "line-2")
    free = sum(b["available_s"] for b in two["buckets"])
    fits = int(free // 24000)
    assert 10 < fits < 100
    statuses = []

    def place(i):
        resp = feed_app.test_client().post("/v1/promises", json={"sku": "FN-300", "quantity": 2700},
                                           headers={**AUTH, "Idempotency-Key": f"c-{i}"})
        statuses.append(resp.status_code)

    threads = [threading.Thread(target=place, args=(i,)) for i in range(100)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert statuses.count(201) == fits and statuses.count(409) == 100 - fits
    after = line(call("GET", "/v1/capacity?line=line-2").get_json(), "line-2")
    assert after["overbooked_s"] == 0
    for b in after["buckets"]:
        assert b["total_s"] == pytest.approx(b["committed_s"] + b["available_s"] + sum(b["unattainable_s"].values()))
    assert sum(b["committed_s"] for b in after["buckets"]) == pytest.approx(fits * 24000, abs=1)


def test_a_platform_sees_and_releases_only_its_own_holds(feed_app, call):  # noqa: F811
    import hashlib

    from agent.config import FeedToken

    ext = feed_app.extensions["shopfloor"]
    other = FeedToken(name="other-platform", sha256=hashlib.sha256(b"other-token").hexdigest())
    ext["cfg"] = ext["cfg"].model_copy(update={"capacity": ext["cfg"].capacity.model_copy(
        update={"tokens": [*ext["cfg"].capacity.tokens, other]})})
    body = {"sku": "KT-200", "quantity": 100}
    mine = call("POST", "/v1/promises", body, {"Idempotency-Key": "order-1"}, status=201).get_json()
    theirs_headers = {"Authorization": "Bearer other-token", "Idempotency-Key": "order-1"}
    theirs = call("POST", "/v1/promises", body, theirs_headers, status=201).get_json()  # their own key space
    assert theirs["id"] != mine["id"]
    call("GET", f"/v1/promises/{mine['id']}", headers={"Authorization": "Bearer other-token"}, status=404)
    call("DELETE", f"/v1/promises/{mine['id']}", headers={"Authorization": "Bearer other-token"}, status=404)
    assert call("GET", f"/v1/promises/{mine['id']}").get_json()["status"] == "active"
