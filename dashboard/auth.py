"""Who may do what: every request is recognised once, before its view (`_recognise`): HTTP Basic (scripts), a
kiosk token (`?kiosk_token=` on a TV's URL, or `Authorization: Bearer` on the API) or the login session that the
form at /login opens. Every way of logging in goes through the login throttle (throttle.py): while an account or
an address is locked, the answer is 429 with Retry-After. The /v1 feed checks its own bearer tokens (feed.py); the
throttle counts its refusals too.

Writes need a role (`api_role_required`): 401 without a user, 403 with a role too low, and a session-authenticated
write also needs the CSRF header. With `dashboard.anonymous_read: false`, reads need a user or a kiosk token too.
"""

from __future__ import annotations

import functools
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from dashboard.pages import page_context
from dashboard.problems import problem
from dashboard.security import audit
from dashboard.throttle import Attempt, LoginThrottle
from dashboard.users import (
    Principal,
    cheap_to_check,
    check_password,
    csrf_token,
    current_principal,
    current_user,
    feed_token_known,
    open_session,
    session_principal,
    verify_kiosk_token,
    verify_password,
)

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__)
__all__ = ["api_login_required", "api_role_required", "bp", "check_password", "csrf_token", "current_user",
           "install", "page_login_required"]
# what anyone may open even when reads need a login: the login page itself, the scripts and styles, and what
# monitoring reads (health, metrics)
OPEN_ENDPOINTS = frozenset({"auth.login", "auth.logout", "static", "api.health", "status.healthz", "status.metrics"})
KIOSK_ARG = "kiosk_token"


def install(app: Flask) -> None:
    """Recognise every request's user before its view, throttled (the limits of dashboard.login_throttle)."""
    limits = app.extensions["shopfloor"]["cfg"].dashboard.login_throttle
    app.extensions["shopfloor"]["throttle"] = LoginThrottle(limits.max_failures, limits.max_failures_per_client,
                                                            limits.lockout_s, limits.max_lockout_s, time.monotonic)
    app.before_request(_recognise)


def _throttle() -> LoginThrottle:
    return current_app.extensions["shopfloor"]["throttle"]  # type: ignore[no-any-return]


def _client() -> str:
    return request.remote_addr or "-"


def locked_problem(wait: float) -> Response:
    resp = problem(429, "Too many failed logins",
                   f"logins from this address or to this account are locked for {wait:.0f} s after too many "
                   "failed attempts (dashboard.login_throttle); try again after that")
    resp.headers["Retry-After"] = str(int(wait + 0.999))
    return resp


def _attempt(account: str | None, way: str, check: Callable[[], Principal | None],
             cheap: bool = True) -> Principal | None | float:
    """`check` run under the throttle: the principal, None when it failed, or the seconds of a lockout.

    A cheap check (a token, a plain password, a hash matched a moment ago) runs first and is then counted; an
    argon2 check takes its attempt first and holds it while it runs, so parallel guesses wait for its outcome.
    Either way no more checks pass than the limit, and a locked account refuses the right password too."""
    throttle = _throttle()
    if cheap:
        found = check()
        ticket = throttle.attempt(_client(), account, way)
        if not isinstance(ticket, Attempt):
            return ticket
        throttle.settle(ticket, found is not None)
    else:
        ticket = throttle.attempt(_client(), account, way)
        if not isinstance(ticket, Attempt):
            return ticket
        found = None
        try:
            found = check()
        finally:
            throttle.settle(ticket, found is not None)
    if found is None:
        log.warning("dashboard: failed %s login%s from %s", way, f" for {account[:64]!r}" if account else "",
                    _client())
    return found


def _recognise() -> Response | None:
    g.principal = None
    cfg = current_app.extensions["shopfloor"]["cfg"]
    if request.path.startswith("/v1/"):
        return _feed_attempt()
    auth = request.authorization
    found: Principal | None | float = None
    if auth is not None and auth.type == "basic" and auth.username and auth.password is not None:
        name, password = auth.username, auth.password
        found = _attempt(name, "basic", lambda: verify_password(name, password), cheap_to_check(name, password))
    elif auth is not None and auth.type == "bearer" and auth.token:
        token = auth.token
        found = _attempt(None, "kiosk-token", lambda: verify_kiosk_token(token))
        if found is None:  # not a kiosk's: the session (if any) still needs its CSRF token for a write
            found = session_principal()
    elif request.args.get(KIOSK_ARG) and request.method == "GET":
        token = request.args[KIOSK_ARG]
        found = _attempt(None, "kiosk-token", lambda: verify_kiosk_token(token))
        if isinstance(found, Principal):
            current = session_principal()
            g.principal = Principal(found.name, found.role, "session")
            if current is None or current.name != found.name:
                open_session(found)
                audit("login", via="kiosk-token")
            return None
        if found is None:
            return _login_page("login.kiosk_failed", 401)
    else:
        found = session_principal()
    if isinstance(found, float):
        if request.path.startswith("/api/"):
            return locked_problem(found)
        return _login_page("login.locked", 429, found)
    g.principal = found
    if found is None and not cfg.dashboard.anonymous_read and request.endpoint not in OPEN_ENDPOINTS:
        if request.path.startswith("/api/"):
            return _unauthorized()
        return _to_login()
    return None


def _feed_attempt() -> Response | None:
    """A /v1 request with a bearer token is counted by the throttle (a wrong token as a failed login); the feed
    itself answers 401 for a wrong one."""
    auth = request.authorization
    if auth is None or auth.type != "bearer" or not auth.token:
        return None
    token = auth.token.strip()
    found = _attempt(None, "feed-token", lambda: Principal("feed", "platform", "feed-token")
                     if feed_token_known(token) else None)
    return locked_problem(found) if isinstance(found, float) else None


def _unauthorized() -> Response:
    resp = problem(401, "Login required", "log in on the dashboard, or send HTTP Basic credentials of a user "
                                          "listed in dashboard.users")
    resp.headers["WWW-Authenticate"] = 'Basic realm="shopfloor"'
    return resp


def api_role_required(role: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """401 problem+json without a user, 403 with a role below `role`; a session-authenticated write also needs
    the CSRF header."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            found = current_principal()
            if found is None:
                return _unauthorized()
            if not found.may(role):
                return problem(403, f"The {role} role is needed",
                               f"{found.name} has the role {found.role}; this needs {role} or above "
                               "(dashboard.users[].role)")
            if found.via == "session":  # a session rides along with any request the browser makes
                sent = request.headers.get("X-CSRF-Token", "")
                if not sent or not hmac.compare_digest(sent.encode(), str(session.get("csrf", "")).encode()):
                    return problem(403, "CSRF token missing or wrong",
                                   "reload the page and try again (the X-CSRF-Token header must match the session)")
            return view(*args, **kwargs)

        return wrapped

    return decorate


api_login_required = api_role_required("lead")


def _to_login() -> Any:
    # the login page speaks the language of the page that sent the user there
    values: dict[str, Any] = {"next": request.full_path.rstrip("?")}
    if request.args.get("lang"):
        values["lang"] = request.args["lang"]
    return redirect(url_for("auth.login", **values))


def page_login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_user() is None:
            return _to_login()
        return view(*args, **kwargs)

    return wrapped


def _safe_next(target: str | None) -> str:
    # only same-site paths: a login link must not send the user elsewhere
    if not target or urlparse(target).netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("boards.overview")
    return target


def _login_page(error: str | None, status: int, wait: float | None = None) -> Response:
    ctx = page_context("login")
    next_url = _safe_next(request.values.get("next") if request.endpoint == "auth.login" else request.path)
    text = ctx["t"](error) if error else None
    if wait is not None and text:
        text = f"{text} ({wait:.0f} s)"
    resp = Response(render_template("login.html", **ctx, error=text, next=next_url, csrf_token=csrf_token()),
                    status=status)
    resp.headers["Cache-Control"] = "no-store"
    if wait is not None:
        resp.headers["Retry-After"] = str(int(wait + 0.999))
    return resp


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method != "POST":
        return _login_page(None, 200)
    sent = request.form.get("csrf_token", "")
    name = request.form.get("user", "").strip()
    if not sent or not hmac.compare_digest(sent.encode(), str(session.get("csrf", "")).encode()):
        return _login_page("login.expired", 401)
    password = request.form.get("password", "")
    found = _attempt(name, "form", lambda: verify_password(name, password), cheap_to_check(name, password))
    if isinstance(found, float):
        return _login_page("login.locked", 429, found)
    if found is None:
        return _login_page("login.failed", 401)
    open_session(found)
    g.principal = Principal(found.name, found.role, "session")
    log.info("dashboard: %s (%s) logged in from %s", found.name, found.role, _client())
    audit("login", via="form")
    return redirect(_safe_next(request.values.get("next")))


@bp.post("/logout")
def logout() -> Response:
    if current_user() is not None:
        audit("logout")
    session.clear()  # the record goes with it (sessions.py): a copy of the cookie opens nothing after
    return redirect(url_for("boards.overview"))  # type: ignore[return-value]
