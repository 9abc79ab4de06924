"""The C2M pull feed under `/v1/` (docs/c2m.md, docs/openapi.yaml): capacity, finished-goods stock, prices and
orders with progress and genealogy, for the platform.

Every request carries a bearer token; the config keeps only the tokens' SHA-256 (`capacity.tokens`). Answers have
a strong ETag and a matching `If-None-Match` gets `304`. Every error is an RFC 9457 problem document.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from agent.config import FactoryConfig
from agent.core.schema import TIME_MAX_NS, TIME_MIN_NS
from agent.historian import HistorianError
from dashboard import c2m
from dashboard.holds import Hold, KeyReused
from dashboard.kpi.capacity import Promise, promise
from dashboard.kpi.shifts import NS
from dashboard.problems import problem

log = logging.getLogger(__name__)
bp = Blueprint("feed", __name__, url_prefix="/v1")
PREFIX = "/v1/"
# The longest span of orders one request may ask for.
MAX_ORDER_DAYS = 92


class BadRequest(Exception):
    """A request the feed refuses: `status`, a title and what was wrong (`invalid` names the parameters)."""

    def __init__(self, status: int, title: str, detail: str, invalid: list[dict[str, str]] | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.invalid = status, title, detail, invalid


def _ext() -> dict[str, Any]:
    return current_app.extensions["shopfloor"]  # type: ignore[no-any-return]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _authorized(cfg: FactoryConfig) -> str:
    """The name of the token this request carries; BadRequest(401) without a known one."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise BadRequest(401, "Unauthorized", "send the feed token as 'Authorization: Bearer <token>'")
    digest = token_hash(token.strip())
    name = None
    for known in cfg.capacity.tokens:  # every entry is compared, so timing does not tell how many match
        if hmac.compare_digest(known.sha256, digest):
            name = known.name
    if name is None:
        raise BadRequest(401, "Unauthorized", "the token is not one of capacity.tokens")
    return name


def _encoded(body: dict[str, Any]) -> tuple[bytes, str]:
    """`body` as compact JSON, and its strong ETag."""
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return data, hashlib.sha256(data).hexdigest()[:32]


def _answer(body: dict[str, Any]) -> Response:
    """`body` as JSON with a strong ETag; 304 when the client already has it."""
    return _answer_encoded(*_encoded(body))


def _answer_encoded(data: bytes, etag: str) -> Response:
    wanted = request.if_none_match
    if wanted and (wanted.contains(etag) or wanted.star_tag):
        resp = Response(status=304)
    else:
        resp = Response(data, mimetype="application/json")
    resp.set_etag(etag)
    resp.headers["Cache-Control"] = "no-cache"
    return resp


def _params(allowed: set[str]) -> dict[str, str]:
    unknown = sorted(set(request.args) - allowed)
    if unknown:
        raise BadRequest(400, "Unknown parameter", f"not a parameter of {request.path}: {', '.join(unknown)}",
                         [{"name": n, "reason": "expected one of " + ", ".join(sorted(allowed))} for n in unknown])
    repeated = sorted(n for n in request.args if len(request.args.getlist(n)) > 1)
    if repeated:
        raise BadRequest(400, "Repeated parameter", f"give each parameter once: {', '.join(repeated)}",
                         [{"name": n, "reason": "given more than once"} for n in repeated])
    return {k: request.args[k] for k in request.args}


def _time(cfg: FactoryConfig, name: str, text: str, end: bool = False) -> int:
    """An RFC 3339 time, or a date (its local start; as the end of a span, the start of the next day)."""
    zone = ZoneInfo(cfg.site.timezone)
    try:
        if len(text) == 10:
            day = datetime.strptime(text, "%Y-%m-%d").date()
            # the end of a day is the next day's start (23 or 25 hours later on a daylight-saving change)
            moment = datetime.combine(day + timedelta(days=1) if end else day, time(0), zone)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=zone)
        t_ns = int(moment.timestamp() * NS)
    except (ValueError, OverflowError):
        raise BadRequest(400, "Invalid parameter", f"{name}={text!r} is not a date or an RFC 3339 time",
                         [{"name": name, "reason": "a date (2026-12-01) or a time (2026-12-01T08:00:00+08:00)"}]) \
            from None
    if not TIME_MIN_NS <= t_ns <= TIME_MAX_NS:
        raise BadRequest(400, "Invalid parameter", f"{name}={text!r} is outside 2000-2200",
                         [{"name": name, "reason": "a time between 2000 and 2200"}])
    return t_ns


def _lines(cfg: FactoryConfig, params: dict[str, str]) -> list[str]:
    ids = [ln.id for ln in cfg.lines]
    if "line" not in params:
        return ids
    if params["line"] not in ids:
        raise BadRequest(404, "No such line", f"line {params['line']!r} is not in the config",
                         [{"name": "line", "reason": "one of " + ", ".join(ids)}])
    return [params["line"]]


@bp.before_request
def _auth() -> None:
    g.feed_token = _authorized(_ext()["cfg"])


@bp.get("/capacity")
def capacity() -> Response:
    ext = _ext()
    cfg = ext["cfg"]
    params = _params({"line", "sku", "from", "to", "granularity"})
    by = params.get("granularity", cfg.capacity.bucket)
    if by not in ("shift", "day"):
        raise BadRequest(400, "Invalid parameter", f"granularity={by!r}: expected shift or day",
                         [{"name": "granularity", "reason": "shift or day"}])
    lines = _lines(cfg, params)
    sku = params.get("sku")
    if sku is not None and sku not in {p.sku for p in cfg.products}:
        raise BadRequest(404, "No such SKU", f"SKU {sku!r} is not one of the products",
                         [{"name": "sku", "reason": "a SKU of the products"}])
    start = _time(cfg, "from", params["from"]) if "from" in params else None
    end = _time(cfg, "to", params["to"], end=True) if "to" in params else None
    if start is not None and end is not None and end <= start:
        raise BadRequest(400, "Invalid parameter", "to must be after from",
                         [{"name": "to", "reason": "after from"}])
    service = ext["capacity"]
    at, bases = service.bases(by)
    holds = service.hold_demands(max(at, ext["now_ns"]()))
    # the same figures (minute, holds) and the same question: the same answer, built once
    key = (by, at, tuple((h.ref, h.qty, h.not_before_ns) for h in holds), tuple(lines), sku, start, end)
    kept = service.answers.get(key)
    if kept is None:
        body = c2m.capacity_document(cfg, [c2m.line_snapshot(b, holds, at) for b in bases], at, by)
        chosen = []
        for line in body["lines"]:
            if line["line"] not in lines:
                continue
            buckets = []
            for b in line["buckets"]:
                b_start = _time(cfg, "start", b["start"])
                b_end = _time(cfg, "end", b["end"])
                if (start is not None and b_end <= start) or (end is not None and b_start >= end):
                    continue
                if sku is not None:
                    b = {**b, "available_qty": {k: v for k, v in b["available_qty"].items() if k == sku}}
                buckets.append(b)
            chosen.append({**line, "buckets": buckets})
        kept = service.answers.put(key, _encoded({**body, "lines": chosen}))
    return _answer_encoded(*kept)


@bp.get("/inventory")
def inventory() -> Response:
    _params(set())
    ext = _ext()
    return _answer(c2m.inventory_document(ext["cfg"], ext["now_ns"]()))


@bp.get("/prices")
def prices() -> Response:
    _params(set())
    return _answer(c2m.prices_document(_ext()["cfg"]))


@bp.get("/orders")
def orders() -> Response:
    ext = _ext()
    cfg = ext["cfg"]
    params = _params({"line", "from", "to"})
    lines = _lines(cfg, params)
    now = c2m.as_of(ext["now_ns"]())
    end = _time(cfg, "to", params["to"], end=True) if "to" in params else now + c2m.AS_OF_STEP_NS
    start = _time(cfg, "from", params["from"]) if "from" in params else end - 7 * 86400 * NS
    if end <= start or end - start > MAX_ORDER_DAYS * 86400 * NS:
        raise BadRequest(400, "Invalid parameter", f"from and to must make a span of at most {MAX_ORDER_DAYS} days",
                         [{"name": "from", "reason": f"before to, at most {MAX_ORDER_DAYS} days before it"}])
    _, snapshots = ext["capacity"].snapshots(cfg.capacity.bucket)
    return _answer(c2m.orders_document(cfg, ext["historian"], snapshots, start, min(end, now + c2m.AS_OF_STEP_NS),
                                       lines))


# --- capable to promise -----------------------------------------------------------------------------------

MAX_QTY = 10_000_000
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def _body(allowed: set[str]) -> dict[str, Any]:
    if not request.is_json:
        raise BadRequest(415, "Unsupported media type", "send the request body as application/json")
    if (request.content_length or 0) > 16384:
        raise BadRequest(413, "Body too large", "a promise request is at most 16 KiB")
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # JSON nested thousands deep
        body = None
    if not isinstance(body, dict):
        raise BadRequest(400, "Invalid body", "the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(400, "Unknown field", f"not a field of this request: {', '.join(unknown)}",
                         [{"name": n, "reason": "expected one of " + ", ".join(sorted(allowed))} for n in unknown])
    return body


def _inquiry(cfg: FactoryConfig, body: dict[str, Any]) -> tuple[str, int, int | None]:
    """(sku, quantity, due) of a promise request."""
    sku, qty, due = body.get("sku"), body.get("quantity"), body.get("due")
    if not isinstance(sku, str) or sku not in {p.sku for p in cfg.products}:
        raise BadRequest(400 if not isinstance(sku, str) else 404, "No such SKU" if isinstance(sku, str)
                         else "Invalid field", f"sku {sku!r}: expected a SKU of the products",
                         [{"name": "sku", "reason": "a SKU of the products"}])
    if isinstance(qty, float) and qty.is_integer():
        qty = int(qty)  # 132.0 is the integer 132 in JSON (what a client that has only floats sends)
    if isinstance(qty, bool) or not isinstance(qty, int) or not 1 <= qty <= MAX_QTY:
        raise BadRequest(400, "Invalid field", f"quantity {qty!r}: expected a whole number from 1 to {MAX_QTY}",
                         [{"name": "quantity", "reason": f"an integer from 1 to {MAX_QTY}"}])
    if due is not None and not isinstance(due, str):
        raise BadRequest(400, "Invalid field", "due: expected a date or an RFC 3339 time",
                         [{"name": "due", "reason": "a date or an RFC 3339 time"}])
    return sku, qty, _time(cfg, "due", due, end=True) if due is not None else None


def _promise(sku: str, qty: int, due: int | None) -> tuple[Promise, dict[str, Any], int]:
    """The earliest completion of the request over the lines, from the capacity with every active hold:
    (promise, its document, the earliest start it was planned from)."""
    ext = _ext()
    cfg = ext["cfg"]
    service = ext["capacity"]
    now = ext["now_ns"]()
    earliest = now + int(max(cfg.capacity.frozen_hours, cfg.capacity.material_lead_time_h) * 3600 * NS)
    _, snapshots = service.snapshots(cfg.capacity.bucket)
    found = promise([s.capacity for s in snapshots], {ln.id: c2m.skus_of(cfg, ln.id) for ln in cfg.lines}, sku, qty,
                    earliest)
    doc = {"sku": sku, "quantity": qty, "line": found.line, "earliest_start": c2m.iso(earliest),
           "completion": c2m.iso(found.completion_ns) if found.completion_ns is not None else None,
           "due": c2m.iso(due) if due is not None else None,
           "meets_due": None if due is None else (found.completion_ns is not None and found.completion_ns <= due),
           "plan": [{"bucket": p.key, "start": c2m.iso(p.start_ns), "end": c2m.iso(p.end_ns),
                     "seconds": round(p.seconds, 1), "quantity": p.qty} for p in found.plan]}
    return found, doc, earliest


@bp.post("/promises:inquire")
def inquire() -> Response:
    _params(set())
    sku, qty, due = _inquiry(_ext()["cfg"], _body({"sku", "quantity", "due"}))
    return _json(_promise(sku, qty, due)[1])


@bp.post("/promises")
def place_hold() -> Response:
    _params(set())
    ext = _ext()
    cfg = ext["cfg"]
    key = request.headers.get("Idempotency-Key", "")
    if not IDEMPOTENCY_KEY.match(key):
        raise BadRequest(400, "Idempotency-Key needed", "send a unique Idempotency-Key header (1-255 visible "
                         "ASCII characters) with every hold, and the same one when you retry it")
    body = _body({"sku", "quantity", "due", "ttl_s"})
    sku, qty, due = _inquiry(cfg, body)
    ttl = body.get("ttl_s", cfg.capacity.hold_ttl_s)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 60 <= ttl <= 7 * 86400:
        raise BadRequest(400, "Invalid field", f"ttl_s {ttl!r}: expected whole seconds from 60 to 604800",
                         [{"name": "ttl_s", "reason": "an integer from 60 to 604800"}])
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()

    def decide() -> tuple[Hold | None, dict[str, Any]]:
        found, doc, earliest = _promise(sku, qty, due)
        if found.line is None or found.completion_ns is None or doc["meets_due"] is False:
            return None, doc
        now = ext["now_ns"]()
        hold_id, expires = f"H-{secrets.token_hex(8)}", now + ttl * NS
        answer = {"id": hold_id, "status": "active", **doc, "created": c2m.iso(now), "expires": c2m.iso(expires)}
        return Hold(id=hold_id, line=found.line, sku=sku, qty=qty, pru_s=found.pru_s, setup_s=found.setup_s,
                    not_before_ns=earliest, created_ns=now, expires_ns=expires,
                    released_ns=None, answer=answer), answer

    ext["capacity"].bases(cfg.capacity.bucket)  # read the historian now, not under the holds' write lock
    try:
        replayed, hold, doc = ext["holds"].place(g.feed_token, key, digest, decide)
    except KeyReused:
        raise BadRequest(422, "Idempotency-Key reused", "this Idempotency-Key was used for another request; use a "
                         "new key for a new hold") from None
    if hold is None:
        why = ("no line can make it within the horizon" if doc["completion"] is None
               else f"the earliest completion is {doc['completion']}, after the due time {doc['due']}")
        resp = problem(409, "Not enough capacity", f"{qty} x {sku}: {why}", promise=doc)
        return resp
    resp = _json(_hold_doc(hold, ext["now_ns"]()), 200 if replayed else 201)
    resp.headers["Location"] = f"/v1/promises/{hold.id}"
    if replayed:
        resp.headers["Idempotent-Replayed"] = "true"
    return resp


def _hold_doc(hold: Hold, now_ns: int) -> dict[str, Any]:
    return {**hold.answer, "status": hold.status(now_ns),
            "released": c2m.iso(hold.released_ns) if hold.released_ns is not None else None}


@bp.get("/promises/<hold_id>")
def get_hold(hold_id: str) -> Response:
    _params(set())
    ext = _ext()
    hold = ext["holds"].get(hold_id, g.feed_token)
    if hold is None:
        raise BadRequest(404, "No such hold", f"no hold {hold_id!r}")
    return _json(_hold_doc(hold, ext["now_ns"]()))


@bp.delete("/promises/<hold_id>")
def release_hold(hold_id: str) -> Response:
    _params(set())
    ext = _ext()
    if not ext["holds"].release(hold_id, g.feed_token, ext["now_ns"]()):
        raise BadRequest(404, "No such hold", f"no hold {hold_id!r}")
    return Response(status=204)


def _json(body: dict[str, Any], status: int = 200) -> Response:
    resp = Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")), status=status,
                    mimetype="application/json")
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.errorhandler(BadRequest)
def _bad_request(exc: BadRequest) -> Response:
    extra: dict[str, Any] = {"invalid_params": exc.invalid} if exc.invalid else {}
    resp = problem(exc.status, exc.title, exc.detail, **extra)
    if exc.status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="shopfloor"'
    return resp


@bp.errorhandler(HistorianError)
def _historian_down(exc: HistorianError) -> Response:
    log.warning("feed %s: historian unavailable: %s", request.path, exc)
    resp = problem(503, "Historian unavailable", "the figures cannot be read now; try again shortly")
    resp.headers["Retry-After"] = "30"
    return resp


@bp.app_errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response | HTTPException:
    """Errors Flask raises itself (no such path, wrong method) are problem documents under /v1/."""
    if not request.path.startswith(PREFIX) or (exc.code or 500) < 400:  # a redirect stays a redirect
        return exc
    resp = problem(exc.code or 500, exc.name, exc.description or exc.name)
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        resp.headers["Allow"] = ", ".join(exc.valid_methods)  # what a 405 must say (RFC 9110)
    return resp


@bp.app_errorhandler(Exception)
def _crash(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return _http_error(exc)  # type: ignore[return-value]
    if not request.path.startswith(PREFIX):
        raise exc  # the rest of the dashboard keeps Flask's own handling
    log.exception("%s %s failed", request.method, request.path)
    return problem(500, "Internal error", "the request failed; the dashboard's log says why")
