"""The JSON API behind every board (`/api/v1/...`, documented in docs/api.md) and the live stream (SSE)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, request

from agent.historian import HistorianError
from dashboard import board, queries
from dashboard.auth import api_role_required
from dashboard.problems import problem
from dashboard.security import audit
from dashboard.users import current_user

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__, url_prefix="/api/v1")
_streams_lock = threading.Lock()


def _ext() -> dict[str, Any]:
    return current_app.extensions["shopfloor"]  # type: ignore[no-any-return]


def _json(body: Any, status: int = 200) -> Response:
    resp = Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")), status=status,
                    mimetype="application/json")
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _board(scope: str) -> Response:
    ext = _ext()
    try:
        seq, body = ext["hub"].get(scope)
    except HistorianError as exc:
        return problem(503, "Historian unavailable", str(exc))
    resp = _json({**body, "now_ms": ext["now_ns"]() // board.MS})
    resp.headers["X-Board-Seq"] = str(seq)
    return resp


def _unknown_line(line_id: str) -> Response:
    return problem(404, "No such line", f"line {line_id!r} is not in the config")


@bp.get("/overview")
def overview() -> Response:
    return _board("overview")


@bp.get("/lines")
def lines() -> Response:
    cfg = _ext()["cfg"]
    return _json({"lines": [{"id": ln.id, "name": ln.name,
                             "machines": [{"id": m.id, "name": m.name or m.id, "type": m.type} for m in ln.machines],
                             "stations": [{"id": s.id, "name": s.name} for s in ln.stations]}
                            for ln in cfg.lines]})


@bp.get("/lines/<line_id>")
def line_board(line_id: str) -> Response:
    if board.find_line(_ext()["cfg"], line_id) is None:
        return _unknown_line(line_id)
    return _board(f"line/{line_id}")


@bp.get("/lines/<line_id>/machines/<machine_id>")
def machine_detail(line_id: str, machine_id: str) -> Response:
    ext = _ext()
    line = board.find_line(ext["cfg"], line_id)
    if line is None:
        return _unknown_line(line_id)
    if machine_id not in {m.id for m in line.machines}:
        return problem(404, "No such machine", f"machine {machine_id!r} is not on line {line_id}")
    try:
        # the key figures are the tile's: one computation of the machine's shift KPIs, whichever page shows them
        _seq, line_board = ext["hub"].get(f"line/{line_id}")
        tile_kpi = line_board["machines"].get(machine_id, {}).get("oee")
        return _json(board.machine_detail(ext["cfg"], ext["historian"], line, machine_id, ext["now_ns"](),
                                          kpi=tile_kpi))
    except HistorianError as exc:
        return problem(503, "Historian unavailable", str(exc))


@bp.get("/lines/<line_id>/stops")
def line_stops(line_id: str) -> Response:
    ext = _ext()
    line = board.find_line(ext["cfg"], line_id)
    if line is None:
        return _unknown_line(line_id)
    machine_id = request.args.get("machine") or None
    try:
        return _json(board.stops(ext["cfg"], ext["historian"], line, ext["now_ns"](), machine_id))
    except HistorianError as exc:
        return problem(503, "Historian unavailable", str(exc))


@bp.post("/lines/<line_id>/machines/<machine_id>/stops/<stop_id>/reason")
@api_role_required("lead")
def stop_reason(line_id: str, machine_id: str, stop_id: str) -> Response:
    """Give a reason to a whole stop. Body: {"reason": "<code of dashboard.stop_reasons>"}."""
    ext = _ext()
    cfg = ext["cfg"]
    line = board.find_line(cfg, line_id)
    if line is None:
        return _unknown_line(line_id)
    if machine_id not in {m.id for m in line.machines}:
        return problem(404, "No such machine", f"machine {machine_id!r} is not on line {line_id}")
    body = request.get_json(silent=True)
    codes = [r.code for r in cfg.dashboard.stop_reasons]
    if not isinstance(body, dict) or body.get("reason") not in codes:
        return problem(422, "Unknown stop reason",
                       f"send JSON {{\"reason\": CODE}} with CODE one of {', '.join(codes)}", allowed=codes)
    if not (stop_id.isascii() and stop_id.isdigit()):
        return problem(404, "No such stop", "a stop id is the stop's start time in nanoseconds, as listed by "
                                            f"/api/v1/lines/{line_id}/stops")
    try:
        state, start_ns, end_ns = queries.set_stop_reason(ext["historian"], cfg.site.id, line_id, machine_id,
                                                          int(stop_id), body["reason"], ext["now_ns"](),
                                                          cfg.kpi.microstop_s)
    except queries.StopNotFound as exc:
        return problem(404, "No such stop", str(exc))
    except queries.StopTooShort as exc:
        return problem(409, "A micro-stop so far", str(exc))
    except HistorianError as exc:
        return problem(503, "Historian unavailable", f"the reason was not saved: {exc}")
    audit("stop_reason", line=line_id, machine=machine_id, stop=start_ns, state=state, reason=body["reason"])
    ext["hub"].live_changed(line_id)
    return _json({"line": line_id, "machine": machine_id, "id": stop_id, "state": state, "reason": body["reason"],
                  "start_ms": start_ns // board.MS, "end_ms": end_ns // board.MS})


# The badge field of an acknowledgement made on the board: the dashboard user's name after this prefix (a user name
# has no colon, so it never looks like a station's badge).
BOARD_BADGE_PREFIX = "dashboard:"


@bp.post("/lines/<line_id>/andon/<call_id>/ack")
@api_role_required("lead")
def andon_ack(line_id: str, call_id: str) -> Response:
    """Acknowledge an open andon call of the line from the board, as the station's ack button would."""
    ext = _ext()
    cfg = ext["cfg"]
    if board.find_line(cfg, line_id) is None:
        return _unknown_line(line_id)
    user = current_user() or "-"
    try:
        call = queries.ack_andon_call(ext["historian"], cfg.site.id, line_id, call_id, BOARD_BADGE_PREFIX + user,
                                      ext["now_ns"]())
    except queries.CallNotFound as exc:
        return problem(404, "No such andon call", f"{exc}; the open calls are the line board's people.andon "
                                                  f"(/api/v1/lines/{line_id})")
    except queries.CallClosed as exc:
        return problem(409, "Andon call already answered", str(exc))
    except HistorianError as exc:
        return problem(503, "Historian unavailable", f"the acknowledgement was not saved: {exc}")
    audit("andon_ack", line=line_id, call=call_id, station=call.station, kind=call.kind,
          waited_s=call.time_to_acknowledge_s)
    ext["hub"].live_changed(line_id)
    return _json({"line": line_id, "call_id": call_id, "station": call.station, "kind": call.kind,
                  "called_ms": (call.called_ns or 0) // board.MS, "acked_ms": (call.acked_ns or 0) // board.MS,
                  "time_to_acknowledge_s": call.time_to_acknowledge_s, "by": user})


def _event(name: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


@bp.get("/stream")
def stream() -> Response:
    """Server-sent events for one scope (`overview` or `line/<id>`): a snapshot on every (re)connect, then merge
    patches numbered by seq, and a heartbeat every dashboard.heartbeat_s."""
    ext = _ext()
    cfg = ext["cfg"]
    scope = request.args.get("scope", "overview")
    hub = ext["hub"]
    if scope not in hub.scopes_of(cfg):
        return problem(404, "No such board", f"scope {scope!r}: expected overview or line/<line id>")
    with _streams_lock:
        if ext["streams"] >= cfg.dashboard.max_streams:
            resp = problem(503, "Too many live streams",
                           f"this dashboard holds {cfg.dashboard.max_streams} streams (dashboard.max_streams); "
                           "the board polls instead")
            resp.headers["Retry-After"] = "30"
            return resp
        ext["streams"] += 1
    heartbeat_s = cfg.dashboard.heartbeat_s
    now_ns = ext["now_ns"]
    held = [True]

    def release() -> None:
        # on the generator's end and on the response's close, whichever comes first (a HEAD request or a
        # client gone before the first byte never runs the generator): the slot is given back exactly once
        with _streams_lock:
            if held[0]:
                held[0] = False
                ext["streams"] -= 1

    def events() -> Iterator[str]:
        try:
            seq, body = hub.get(scope)
            yield "retry: 2000\n\n"
            yield _event("snapshot", {"seq": seq, "board": {**body, "now_ms": now_ns() // board.MS}}, seq)
            while not hub.stopped:
                patches = hub.wait(scope, seq, heartbeat_s)
                if patches is None:
                    seq, body = hub.get(scope)
                    yield _event("snapshot", {"seq": seq, "board": {**body, "now_ms": now_ns() // board.MS}}, seq)
                elif patches:
                    for s, patch in patches:
                        yield _event("patch", {"seq": s, "patch": patch}, s)
                    seq = patches[-1][0]
                else:
                    yield _event("heartbeat", {"now_ms": now_ns() // board.MS, "seq": seq})
        finally:
            release()

    resp = Response(events(), mimetype="text/event-stream")  # needs no request context: all is bound above
    resp.call_on_close(release)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Accel-Buffering"] = "no"
    return resp


@bp.get("/health")
def health() -> Response:
    ext = _ext()
    live = ext["live"]
    return _json({"live_broker": live.connected, "streams": ext["streams"], "rebuilds": ext["hub"].rebuilds,
                  "boards_failing": ext["hub"].failing,
                  "history_reads": ext["hub"].history_reads, "live_messages": live.messages,
                  "live_malformed": live.malformed, "live_failed": live.failed, "live_error": live.error})
