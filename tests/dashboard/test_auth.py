"""Access control on the dashboard's app: roles, argon2 passwords, kiosk tokens, server-side sessions that logout
and a password change end, cookie flags, security headers, the request-body limit, throttled logins and the audit
log of writes."""

import base64
import hashlib
import logging

import pytest
from argon2 import PasswordHasher

from agent.config import DashboardSettings, DashboardUser
from agent.config.dashboard import KioskToken, LoginThrottle
from agent.sinks.sqlite_historian import SqliteHistorian
from dashboard import create_app, i18n
from tests.dashboard.conftest import SHOP_FLOOR, t

LEAD_PW, ADMIN_PW, VIEWER_PW, PLAIN_PW = "lead of the early shift", "admin pass 1", "viewer pass 1", "plain pw 123"
# cheap hashes: the machine running the suite is shared (the hashes `shopfloor passwd` makes take ~100 ms each)
HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
HASHES = {pw: HASHER.hash(pw) for pw in (LEAD_PW, ADMIN_PW, VIEWER_PW)}
KIOSK = "tv-token-of-hall-1"
REASON_URL = f"/api/v1/lines/line-1/machines/press-1/stops/{t('09:00')}/reason"


def settings(**change):
    base = {"users": [DashboardUser(name="lead", password_hash=HASHES[LEAD_PW]),
                      DashboardUser(name="boss", role="admin", password_hash=HASHES[ADMIN_PW]),
                      DashboardUser(name="tv", role="viewer", password_hash=HASHES[VIEWER_PW]),
                      DashboardUser(name="old", password="${SHOPFLOOR_TEST_OLD_PASSWORD}")],
            "kiosk_tokens": [KioskToken(name="hall-1", sha256=hashlib.sha256(KIOSK.encode()).hexdigest())],
            "login_throttle": LoginThrottle(max_failures=5, max_failures_per_client=12)}
    return DashboardSettings(**{**base, **change})


@pytest.fixture
def make_app(factory_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPFLOOR_TEST_OLD_PASSWORD", PLAIN_PW)
    historian = SqliteHistorian(tmp_path / "historian.sqlite3", retention_days=3650)
    historian.write(SHOP_FLOOR)
    apps = []

    def make(**change):
        cfg = factory_cfg.model_copy(update={"dashboard": settings(**change)})
        app = create_app(cfg, data_dir=tmp_path, historian=historian, now_ns=lambda: t("10:00"), start_live=False)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["shopfloor"]["sessions"].close()
        app.extensions["shopfloor"]["holds"].close()
    historian.close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def form_login(client, user, password):
    client.get("/login")
    with client.session_transaction() as s:
        token = s["csrf"]
    return client.post("/login", data={"user": user, "password": password, "csrf_token": token, "next": "/"})


def csrf(client):
    client.get("/lines/line-1/stops")
    with client.session_transaction() as s:
        return s["csrf"]


def reason_now(client, headers, reason="tooling"):
    return client.post(REASON_URL, json={"reason": reason}, headers=headers)


# --- roles ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("user,password,status", [("lead", LEAD_PW, 200), ("boss", ADMIN_PW, 200),
                                                  ("old", PLAIN_PW, 200), ("tv", VIEWER_PW, 403),
                                                  ("lead", "wrong", 401), ("nobody", LEAD_PW, 401)])
def test_writes_need_the_lead_role_or_above(client, user, password, status):
    resp = reason_now(client, basic(user, password))
    assert resp.status_code == status
    if status != 200:
        assert resp.mimetype == "application/problem+json"
        assert client.get("/api/v1/lines/line-1/stops").get_json()["stops"][0]["reason"] == ""
    if status == 403:
        assert resp.get_json()["detail"] == "tv has the role viewer; this needs lead or above (dashboard.users[].role)"


def test_a_user_without_a_role_is_a_lead(client):
    assert DashboardUser(name="x", password="${X}").role == "lead"


def test_a_form_login_with_a_hashed_password_then_a_write(client):
    assert form_login(client, "lead", "wrong").status_code == 401
    assert form_login(client, "lead", LEAD_PW).status_code == 302
    assert reason_now(client, {"X-CSRF-Token": csrf(client)}).status_code == 200


# --- kiosk tokens and reads that need a login ------------------------------------------------------------------


def test_a_kiosk_token_in_the_url_logs_a_tv_in_as_viewer(make_app, caplog):
    caplog.set_level(logging.INFO, "shopfloor.audit")
    client = make_app(anonymous_read=False).test_client()
    assert client.get("/kiosk").status_code == 302  # no token, no login: to the login page
    assert client.get("/api/v1/overview").status_code == 401
    page = client.get(f"/kiosk?kiosk_token={KIOSK}")
    assert page.status_code == 200
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert client.get("/api/v1/overview").status_code == 200  # the session the token opened
    assert client.get("/lines/line-2").status_code == 200
    assert client.get(f"/kiosk?kiosk_token={KIOSK}&start=line-2").status_code == 200  # the same session
    logins = [r.getMessage() for r in caplog.records if r.name == "shopfloor.audit"]
    assert logins == ["user=kiosk:hall-1 role=viewer client=127.0.0.1 action=login via=kiosk-token"]
    token = csrf(client)
    assert reason_now(client, {"X-CSRF-Token": token}).status_code == 403  # a viewer


def test_a_kiosk_token_in_a_header_reads_the_api(make_app):
    client = make_app(anonymous_read=False).test_client()
    assert client.get("/api/v1/overview", headers={"Authorization": f"Bearer {KIOSK}"}).status_code == 200
    assert client.get("/api/v1/overview", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert reason_now(client, {"Authorization": f"Bearer {KIOSK}"}).status_code == 403


def test_a_wrong_kiosk_token_says_so(make_app):
    client = make_app(anonymous_read=False).test_client()
    page = client.get("/kiosk?kiosk_token=guess")
    assert page.status_code == 401
    assert i18n.t("zh-CN", "login.kiosk_failed") in page.get_data(as_text=True)


def test_with_anonymous_read_off_the_login_page_scripts_health_and_metrics_stay_open(make_app):
    client = make_app(anonymous_read=False).test_client()
    assert client.get("/login").status_code == 200
    assert client.get("/static/board.js").status_code == 200
    for url in ("/api/v1/health", "/healthz", "/metrics"):
        assert client.get(url).status_code == 200, url
    assert client.get("/").headers["Location"].startswith("/login?next=")


def test_boards_stay_readable_without_login_by_default(client):
    assert client.get("/").status_code == 200 and client.get("/api/v1/overview").status_code == 200


# --- sessions ---------------------------------------------------------------------------------------------------


def session_cookie(client):
    return client.get_cookie("session").value


def test_a_cookie_copied_before_logout_is_refused_after_it(app):
    client = app.test_client()
    form_login(client, "lead", LEAD_PW)
    token = csrf(client)
    copied = session_cookie(client)
    assert len(copied) >= 40 and "lead" not in copied  # a random id: nothing of the session is in it
    client.post("/logout")
    thief = app.test_client()
    thief.set_cookie("session", copied)
    assert thief.get("/lines/line-1/stops").status_code == 302  # to the login page
    assert reason_now(thief, {"X-CSRF-Token": token}).status_code == 401
    assert app.extensions["shopfloor"]["sessions"].users() == {}


def test_a_login_gets_a_new_session_id(client):
    client.get("/login")
    before = session_cookie(client)
    form_login(client, "lead", LEAD_PW)
    assert session_cookie(client) != before


def test_a_password_change_ends_the_users_sessions(make_app, monkeypatch):
    app = make_app()
    lead, old = app.test_client(), app.test_client()
    form_login(lead, "lead", LEAD_PW)
    form_login(old, "old", PLAIN_PW)
    lead_cookie, lead_csrf = session_cookie(lead), csrf(lead)
    # a plain password changed where it is kept (here the environment): the session ends on its next request
    monkeypatch.setenv("SHOPFLOOR_TEST_OLD_PASSWORD", "a new one 456")
    assert old.get("/lines/line-1/stops").status_code == 302
    # the hash in the config changed and the dashboard restarted: the old session is gone
    new_hash = HASHER.hash("new lead password")
    again = make_app(users=[DashboardUser(name="lead", password_hash=new_hash)])
    assert again.extensions["shopfloor"]["sessions"].users() == {}
    thief = again.test_client()
    thief.set_cookie("session", lead_cookie)
    assert reason_now(thief, {"X-CSRF-Token": lead_csrf}).status_code == 401


def test_sessions_survive_a_restart_when_nothing_changed(make_app):
    client = make_app().test_client()
    form_login(client, "lead", LEAD_PW)
    cookie, token = session_cookie(client), csrf(client)
    again = make_app().test_client()
    again.set_cookie("session", cookie)
    assert reason_now(again, {"X-CSRF-Token": token}).status_code == 200


@pytest.mark.parametrize("setting,base_url,secure", [("auto", "https://localhost", True),
                                                     ("auto", "http://localhost", False),
                                                     (True, "http://localhost", True),
                                                     (False, "https://localhost", False)])
def test_cookies_are_secure_over_https(make_app, setting, base_url, secure):
    client = make_app(secure_cookies=setting).test_client()
    cookie = client.get("/login", base_url=base_url).headers["Set-Cookie"]
    assert ("; Secure" in cookie) == secure and "HttpOnly" in cookie and "SameSite=Lax" in cookie


# --- headers and bodies -----------------------------------------------------------------------------------------


def test_every_response_has_the_security_headers(client):
    for url in ["/", "/login", "/lines/line-1", "/static/board.js", "/api/v1/overview", "/api/v1/lines/nope",
                "/v1/capacity", "/no-such-page"]:
        headers = client.get(url).headers
        assert "script-src 'self'" in headers["Content-Security-Policy"], url
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], url
        assert headers["X-Content-Type-Options"] == "nosniff", url
        assert headers["X-Frame-Options"] == "DENY", url
        assert headers["Referrer-Policy"] == "same-origin", url


class Unreadable:
    """A request body of 1 GB that must not be read."""

    read_bytes = 0
    pos = 0

    def tell(self):
        return self.pos

    def seek(self, offset, whence=0):
        self.pos = 10**9 if whence == 2 else offset

    def read(self, *args):
        Unreadable.read_bytes += 1
        raise AssertionError("the body was read")

    readline = read


def test_a_body_over_the_limit_is_refused_unread(make_app):
    client = make_app(max_body_bytes=4096).test_client()
    for url in ["/login", REASON_URL, "/api/v1/overview", "/v1/promises"]:
        resp = client.post(url, input_stream=Unreadable(), content_type="application/json")
        assert resp.status_code == 413 and resp.mimetype == "application/problem+json", url
        assert "4096 bytes" in resp.get_json()["detail"]
    assert Unreadable.read_bytes == 0


def test_a_body_within_the_limit_is_taken(make_app):
    client = make_app(max_body_bytes=4096).test_client()
    resp = reason_now(client, basic("lead", LEAD_PW), reason="x" * 3000)
    assert resp.status_code == 422  # read and judged: not a reason


# --- throttled logins -------------------------------------------------------------------------------------------


def test_form_guesses_lock_the_account_with_a_log_line_and_other_accounts_still_log_in(client, caplog):
    caplog.set_level(logging.WARNING)
    statuses = [form_login(client, "lead", f"guess {i}").status_code for i in range(8)]
    assert statuses == [401] * 5 + [429] * 3
    locked = form_login(client, "lead", LEAD_PW)  # the right password too, while locked
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) == 60
    assert i18n.t("zh-CN", "login.locked") in locked.get_data(as_text=True)
    assert "dashboard: account lead locked for 60 s after 5 failed logins from 127.0.0.1 (form)" in caplog.messages
    assert form_login(client, "boss", ADMIN_PW).status_code == 302


def test_basic_guesses_are_throttled_per_client_across_accounts(client):
    statuses = [reason_now(client, basic(f"user{i}", "guess")).status_code for i in range(14)]
    assert statuses == [401] * 12 + [429] * 2
    locked = reason_now(client, basic("lead", LEAD_PW))
    assert locked.status_code == 429 and locked.mimetype == "application/problem+json"
    assert int(locked.headers["Retry-After"]) == 60
    assert client.get("/api/v1/lines/line-1/stops").get_json()["stops"][0]["reason"] == ""


def test_feed_and_kiosk_token_guesses_count_against_the_client(client):
    statuses = [client.get("/v1/capacity", headers={"Authorization": f"Bearer guess{i}"}).status_code
                for i in range(6)]
    statuses += [client.get(f"/kiosk?kiosk_token=guess{i}").status_code for i in range(6)]
    assert statuses == [401] * 12
    refused = client.get("/v1/capacity", headers={"Authorization": "Bearer guess"})
    assert refused.status_code == 429 and refused.mimetype == "application/problem+json"
    assert client.get(f"/kiosk?kiosk_token={KIOSK}").status_code == 429


# --- audit ------------------------------------------------------------------------------------------------------


def test_every_write_is_logged_with_who_made_it(client, caplog):
    caplog.set_level(logging.INFO, "shopfloor.audit")
    form_login(client, "lead", LEAD_PW)
    reason_now(client, {"X-CSRF-Token": csrf(client)})
    reason_now(client, basic("tv", VIEWER_PW))
    client.post("/logout")
    lines = [r.getMessage() for r in caplog.records if r.name == "shopfloor.audit"]
    assert lines[0] == "user=lead role=lead client=127.0.0.1 action=login via=form"
    assert lines[1] == (f"user=lead role=lead client=127.0.0.1 action=stop_reason line=line-1 machine=press-1 "
                        f"stop={t('09:00')} state=FAULT reason=tooling")
    assert lines[2] == f"user=tv role=viewer client=127.0.0.1 action=\"POST {REASON_URL}\" status=403"
    assert lines[3] == "user=lead role=lead client=127.0.0.1 action=logout"


def test_a_plain_password_is_warned_about_at_load(tmp_path, caplog, monkeypatch):
    from agent.config import load
    from tests.conftest import FACTORY_YAML

    monkeypatch.setenv("SHOPFLOOR_TEST_OLD_PASSWORD", PLAIN_PW)
    text = FACTORY_YAML.read_text(encoding="utf-8")
    path = tmp_path / "factory.yaml"
    path.write_text(text + "\ndashboard:\n  users:\n    - {name: old, password: '${SHOPFLOOR_TEST_OLD_PASSWORD}'}\n"
                    f"    - {{name: lead, password_hash: '{HASHES[LEAD_PW]}'}}\n", encoding="utf-8")
    caplog.set_level(logging.WARNING)
    cfg = load(path)
    assert [u.role for u in cfg.dashboard.users] == ["lead", "lead"]
    assert caplog.messages == ["dashboard.users: old has a plain-text password; run `shopfloor passwd` and put the "
                               "hash it prints under password_hash instead"]
