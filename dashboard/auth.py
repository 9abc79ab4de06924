"""Who may give stop reasons: the users of `dashboard.users`, logged in with a form (a signed session cookie)
or, for scripts, with HTTP Basic. Pages that change data also check a per-session CSRF token.

The login and logout routes and the guards of views live here; who the user is comes from users.py.
"""

from __future__ import annotations

import functools
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from flask import Blueprint, Response, redirect, render_template, request, session, url_for

from dashboard.pages import page_context
from dashboard.problems import problem
from dashboard.users import check_password, csrf_token, current_user

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__)
__all__ = ["api_login_required", "bp", "check_password", "csrf_token", "current_user", "page_login_required"]


def api_login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """401 problem+json without a user; a session-authenticated write also needs the CSRF header."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        user = current_user()
        if user is None:
            resp = problem(401, "Login required", "log in on the dashboard, or send HTTP Basic credentials of a "
                                                  "user listed in dashboard.users")
            resp.headers["WWW-Authenticate"] = 'Basic realm="shopfloor"'
            return resp
        basic = request.authorization is not None and request.authorization.type == "basic"
        if not basic:  # a session rides along with any request the browser makes: it needs the token too
            sent = request.headers.get("X-CSRF-Token", "")
            if not hmac.compare_digest(sent.encode(), str(session.get("csrf", "")).encode()) or not sent:
                return problem(403, "CSRF token missing or wrong",
                               "reload the page and try again (the X-CSRF-Token header must match the session)")
        return view(*args, **kwargs)

    return wrapped


def page_login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_user() is None:
            # the login page speaks the language of the page that sent the user there
            values: dict[str, Any] = {"next": request.full_path.rstrip("?")}
            if request.args.get("lang"):
                values["lang"] = request.args["lang"]
            return redirect(url_for("auth.login", **values))
        return view(*args, **kwargs)

    return wrapped


def _safe_next(target: str | None) -> str:
    # only same-site paths: a login link must not send the user elsewhere
    if not target or urlparse(target).netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("boards.overview")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    next_url = _safe_next(request.values.get("next"))
    if request.method == "POST":
        sent = request.form.get("csrf_token", "")
        name = request.form.get("user", "").strip()
        if not sent or not hmac.compare_digest(sent.encode(), str(session.get("csrf", "")).encode()):
            error = "login.expired"
        elif check_password(name, request.form.get("password", "")):
            session.clear()
            session["user"] = name
            log.info("dashboard: %s logged in from %s", name, request.remote_addr)
            return redirect(next_url)
        else:
            time.sleep(0.5)  # slows guessing
            log.warning("dashboard: failed login for %r from %s", name[:64], request.remote_addr)
            error = "login.failed"
    ctx = page_context("login")
    return render_template("login.html", **ctx, error=ctx["t"](error) if error else None, next=next_url,
                           csrf_token=csrf_token()), (401 if error else 200)


@bp.post("/logout")
def logout() -> Response:
    session.pop("user", None)
    return redirect(url_for("boards.overview"))  # type: ignore[return-value]
