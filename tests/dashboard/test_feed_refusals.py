"""The feed's refusals that come before its own checks are documented in docs/openapi.yaml as they are sent: 413
for a body over dashboard.max_body_bytes, and 429 with Retry-After while the client's address is locked after
too many wrong tokens (the login throttle), on every operation."""

from __future__ import annotations

import hashlib
import time

import pytest

from agent.config import CapacitySettings, FeedToken
from dashboard.throttle import LoginThrottle
from tests.dashboard.test_feed import AUTH, TOKEN, check

OPERATIONS = [("GET", "/v1/capacity"), ("GET", "/v1/inventory"), ("GET", "/v1/prices"), ("GET", "/v1/orders"),
              ("POST", "/v1/promises:inquire"), ("POST", "/v1/promises"), ("GET", "/v1/promises/h-1"),
              ("DELETE", "/v1/promises/h-1")]


@pytest.fixture
def client(app):
    ext = app.extensions["shopfloor"]
    ext["cfg"] = cfg = ext["cfg"].model_copy(update={"capacity": CapacitySettings(
        tokens=[FeedToken(name="platform", sha256=hashlib.sha256(TOKEN.encode()).hexdigest())])})
    ext["capacity"].cfg = cfg
    ext["capacity"].history.cfg = cfg
    # 3 failed logins from one address lock it (50 by default), for 60 s
    ext["throttle"] = LoginThrottle(10, 3, 60, 3600, time.monotonic)
    return app.test_client()


def test_every_operation_answers_429_with_retry_after_while_the_address_is_locked(client):
    body = {"sku": "KT-100", "quantity": 10}
    for n in range(3):
        resp = client.get("/v1/inventory", headers={"Authorization": f"Bearer wrong-token-{n}"})
        check(resp)
        assert resp.status_code == 401
    for method, path in OPERATIONS:
        headers = dict(AUTH, **({"Idempotency-Key": "k-1"} if path == "/v1/promises" else {}))
        resp = client.open(path, method=method, headers=headers, json=body if method == "POST" else None)
        check(resp)  # documented: status, problem+json body, Retry-After header
        assert resp.status_code == 429, (method, path, resp.get_data(as_text=True))
        assert resp.mimetype == "application/problem+json" and resp.get_json()["status"] == 429
        assert 1 <= int(resp.headers["Retry-After"]) <= 60


def test_a_body_over_the_limit_is_413_on_every_operation(client, app):
    limit = app.extensions["shopfloor"]["cfg"].dashboard.max_body_bytes
    headers = dict(AUTH, **{"Content-Type": "application/json", "Idempotency-Key": "k-2"})
    for method, path in OPERATIONS:
        resp = client.open(path, method=method, headers=headers, data=b" " * (limit + 1))
        check(resp)
        assert resp.status_code == 413 and resp.mimetype == "application/problem+json", (method, path)
        assert str(limit) in resp.get_json()["detail"]
