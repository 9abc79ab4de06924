"""Who is at the screen: the users of `dashboard.users`, recognised by their password (a signed session cookie
or HTTP Basic), and the per-session CSRF token that pages changing data send back.

No routes here: the login blueprint (auth.py) and every page (pages.py) ask this module, so neither imports the
other.
"""

from __future__ import annotations

import hmac
import secrets

from flask import current_app, request, session

from agent.config import resolve_secret


def _passwords() -> dict[str, str]:
    cfg = current_app.extensions["shopfloor"]["cfg"]
    out = {}
    for user in cfg.dashboard.users:
        secret = resolve_secret(user.password, user.password_file)
        if secret:
            out[user.name] = secret
    return out


def check_password(name: str, password: str) -> bool:
    """True when `name` is a user of dashboard.users and `password` is theirs."""
    known = _passwords()
    # compare against something even for unknown names, so timing does not tell which names exist
    expected = known.get(name, secrets.token_hex(16))
    return hmac.compare_digest(expected.encode(), password.encode()) and name in known


def current_user() -> str | None:
    """The logged-in user of this request (session or HTTP Basic), or None."""
    auth = request.authorization
    if auth is not None and auth.type == "basic" and auth.username and auth.password is not None:
        return auth.username if check_password(auth.username, auth.password) else None
    name = session.get("user")
    return name if isinstance(name, str) and name in _passwords() else None


def csrf_token() -> str:
    """This session's CSRF token, made on first use."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(24)
    return token
