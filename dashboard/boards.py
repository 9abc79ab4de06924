"""The e-board pages: factory overview, line board, machine detail, stop reasons, and the kiosk for TVs.

Pages are shells: labels rendered in the screen's language, data fetched by the browser from the JSON API and
kept current by the live stream (static/board.js and the sf-*.js modules it imports, served as JavaScript).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from flask import Blueprint, Response, abort, current_app, make_response, render_template, request, url_for

from dashboard.auth import page_login_required
from dashboard.board import find_line
from dashboard.pages import LANG_COOKIE, page_context
from dashboard.users import csrf_token, current_principal

bp = Blueprint("boards", __name__)

# The pages' scripts are ES modules, which a browser runs only when served as JavaScript, and a stylesheet served
# as anything but CSS is ignored. The type is set here rather than taken from the mimetypes table, which on
# Windows comes from the registry, where another program may have made .js text/plain.
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@bp.after_app_request
def static_types(resp: Response) -> Response:
    """The right Content-Type on the dashboard's scripts and stylesheet, whatever the OS's mimetypes say."""
    if request.endpoint == "static" and resp.status_code < 400:
        kind = STATIC_TYPES.get(PurePosixPath(request.path).suffix.lower())
        if kind is not None:
            resp.headers["Content-Type"] = kind
    return resp


def render(template: str, ctx: dict[str, Any]) -> Any:
    resp = make_response(render_template(template, **ctx))
    if request.args.get("lang"):
        resp.set_cookie(LANG_COOKIE, ctx["lang"], max_age=365 * 86400, samesite="Lax")
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _line_or_404(line_id: str) -> Any:
    line = find_line(current_app.extensions["shopfloor"]["cfg"], line_id)
    if line is None:
        abort(404)
    return line


@bp.route("/")
def overview() -> Any:
    ctx = page_context("overview", api={"board": url_for("api.overview"),
                                        "stream": url_for("api.stream", scope="overview")})
    return render("overview.html", ctx)


def _line_context(line_id: str, kiosk: dict[str, Any] | None = None) -> dict[str, Any]:
    line = _line_or_404(line_id)
    api = {"board": url_for("api.line_board", line_id=line.id),
           "stream": url_for("api.stream", scope=f"line/{line.id}")}
    extra: dict[str, Any] = {}
    who = current_principal()
    if kiosk is None and who is not None and who.may("lead"):  # a lead acknowledges andon calls on the board
        api["ack"] = url_for("api.andon_ack", line_id="LINE", call_id="CALL").replace("LINE", "{line}").replace(
            "CALL", "{call_id}")
        extra["csrf_token"] = csrf_token()
    return page_context("line", line={"id": line.id, "name": line.name}, kiosk=kiosk, api=api, **extra)


@bp.route("/lines/<line_id>")
def line_board(line_id: str) -> Any:
    return render("line.html", _line_context(line_id))


@bp.route("/lines/<line_id>/machines/<machine_id>")
def machine(line_id: str, machine_id: str) -> Any:
    line = _line_or_404(line_id)
    m = next((m for m in line.machines if m.id == machine_id), None)
    if m is None:
        abort(404)
    ctx = page_context("machine", line={"id": line.id, "name": line.name},
                       machine={"id": m.id, "name": m.name or m.id},
                       api={"board": url_for("api.line_board", line_id=line.id),
                            "stream": url_for("api.stream", scope=f"line/{line.id}"),
                            "detail": url_for("api.machine_detail", line_id=line.id, machine_id=m.id)})
    return render("machine.html", ctx)


@bp.route("/lines/<line_id>/stops")
@page_login_required
def stops(line_id: str) -> Any:
    line = _line_or_404(line_id)
    cfg = current_app.extensions["shopfloor"]["cfg"]
    reason_url = url_for("api.stop_reason", line_id=line.id, machine_id="MACHINE", stop_id="STOP")
    ctx = page_context("stops", line={"id": line.id, "name": line.name}, csrf_token=csrf_token(),
                       reasons=[{"code": r.code, "name": dict(r.name)} for r in cfg.dashboard.stop_reasons],
                       api={"stops": url_for("api.line_stops", line_id=line.id),
                            "board": url_for("api.line_board", line_id=line.id),
                            "reason": reason_url.replace("MACHINE", "{machine}").replace("STOP", "{stop_id}")})
    return render("stops.html", ctx)


@bp.route("/kiosk")
def kiosk() -> Any:
    """A TV board: rotates through the lines (`?lines=a,b`, default dashboard.kiosk.lines or every line) every
    `?rotate=` seconds, starting at `?start=<line>` or `?i=<index>`, and reloads itself every
    dashboard.kiosk.reload_h hours."""
    cfg = current_app.extensions["shopfloor"]["cfg"]
    # a typo in a TV's URL must not leave the TV blank: unknown lines and bad numbers fall back to the defaults
    every = [ln.id for ln in cfg.lines]
    wanted = [x for x in request.args.get("lines", "").split(",") if x in every]
    lines = wanted or [x for x in cfg.dashboard.kiosk.lines if x in every] or every
    if not lines:
        abort(404)
    start = request.args.get("start", "")
    index = lines.index(start) if start in lines else _int_arg("i", 0) % len(lines)
    rotate_s = max(5, _int_arg("rotate", cfg.dashboard.kiosk.rotate_s))
    kiosk_ctx = {"lines": lines, "rotate_s": rotate_s, "reload_h": cfg.dashboard.kiosk.reload_h, "index": index}
    return render("line.html", _line_context(lines[index], kiosk_ctx))


def _int_arg(name: str, default: int) -> int:
    try:
        return int(request.args.get(name, default))
    except ValueError:
        return default
