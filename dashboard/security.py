"""What every dashboard response and request goes through: security headers, the request-body limit and the audit
log of writes.

Headers: a Content-Security-Policy that lets the pages run only their own scripts (ES modules under /static; the
page's configuration is a JSON block, which is data, not script), `nosniff`, no framing, and no Referer beyond
the dashboard (a kiosk URL may carry its token).

Bodies: a request whose Content-Length is over `dashboard.max_body_bytes` gets 413 before its body is read. Under
waitress, `problem_413(server)` makes waitress's own refusal (it reads a body before the app sees the request, so it
must refuse first: `max_request_body_size`) a problem document too.

Audit: every write (POST, PUT, PATCH, DELETE) is logged on the logger `shopfloor.audit` with who made it, their
role, the client's address, what it was and its outcome; views that know more (the stop reason given) log their
own line with `audit()`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, Response, g, request

from dashboard.problems import problem
from dashboard.users import current_principal

audit_log = logging.getLogger("shopfloor.audit")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
           "Referrer-Policy": "same-origin", "Cross-Origin-Opener-Policy": "same-origin"}
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def install(app: Flask) -> None:
    """Add the body limit, the headers and the audit of writes to `app`."""
    app.before_request(_limit_body)
    app.after_request(_headers)
    app.after_request(_audit_writes)


def _limit_body() -> Response | None:
    limit = app_limit()
    if request.content_length is not None and request.content_length > limit:
        return too_large(limit)
    return None


def app_limit() -> int:
    from flask import current_app

    return int(current_app.extensions["shopfloor"]["cfg"].dashboard.max_body_bytes)


def too_large(limit: int) -> Response:
    resp = problem(413, "Request body too large", f"this dashboard takes request bodies up to {limit} bytes "
                                                  "(dashboard.max_body_bytes); nothing was read or changed")
    resp.headers["Connection"] = "close"  # the unread body must not be taken for the next request
    return resp


def _headers(resp: Response) -> Response:
    for name, value in HEADERS.items():
        resp.headers.setdefault(name, value)
    return resp


def who() -> dict[str, str]:
    found = current_principal()
    feed = g.get("feed_token")
    if found is not None:
        return {"user": found.name, "role": found.role}
    if isinstance(feed, str):
        return {"user": f"feed:{feed}", "role": "platform"}
    return {"user": "-", "role": "anonymous"}


def audit(action: str, **details: Any) -> None:
    """One audit line for this request's write: `action` and what changed."""
    g.audited = True
    fields = {**who(), "client": request.remote_addr or "-", "action": action, **details}
    audit_log.info("%s", " ".join(f"{k}={_value(v)}" for k, v in fields.items()))


def _value(v: Any) -> str:
    text = str(v)
    return text if text and all(c.isprintable() and c not in ' "=' for c in text) else json.dumps(text,
                                                                                                   ensure_ascii=False)


def _audit_writes(resp: Response) -> Response:
    if request.method in WRITES and not g.get("audited"):
        audit(f"{request.method} {request.path}", status=resp.status_code,
              **({"location": resp.headers["Location"]} if "Location" in resp.headers else {}))
    return resp


# --- waitress: its own 413 as a problem document ----------------------------------------------------------------


def problem_413(server: Any) -> None:
    """Make `server` (from waitress.create_server with max_request_body_size) answer a body over that size with
    an application/problem+json 413 after reading only the headers."""
    from waitress.channel import HTTPChannel
    from waitress.parser import HTTPRequestParser
    from waitress.utilities import RequestEntityTooLarge

    class BodyTooLarge(RequestEntityTooLarge):
        limit = 0

        def to_response(self, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
            body = {"type": "about:blank", "title": "Request body too large", "status": 413,
                    "detail": f"this dashboard takes request bodies up to {self.limit} bytes "
                              "(dashboard.max_body_bytes); nothing was read or changed"}
            return "413 Request Entity Too Large", [("Content-Type", "application/problem+json")], \
                json.dumps(body).encode()

    class Parser(HTTPRequestParser):  # type: ignore[misc]
        def received(self, data: bytes) -> int:
            n: int = super().received(data)
            found: Any = getattr(self, "error", None)
            if type(found) is RequestEntityTooLarge:
                refusal = BodyTooLarge(found.body)
                refusal.limit = self.adj.max_request_body_size - 1  # waitress refuses this size and more
                self.error = refusal
            return n

    for each in [server, *getattr(server, "map", {}).values()]:
        base: Any = getattr(each, "channel_class", None)
        if isinstance(base, type) and issubclass(base, HTTPChannel) \
                and getattr(base, "parser_class", None) is HTTPRequestParser:
            # the server's own channel class (it may guard connections), with this parser
            each.channel_class = type(f"Problem413{base.__name__}", (base,), {"parser_class": Parser})
