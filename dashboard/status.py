"""`/healthz` and `/metrics` of the dashboard process: what the capacity push is doing (its queue per endpoint,
its last delivery and its failures)."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

bp = Blueprint("status", __name__)


def _push() -> Any:
    return current_app.extensions["shopfloor"].get("push")


@bp.get("/healthz")
def healthz() -> Response:
    push = _push()
    health = push.health() if push is not None else None
    body: dict[str, Any] = {"status": health["status"] if health else "ok", "push": health}
    return Response(json.dumps(body, indent=1), mimetype="application/json",
                    headers={"Cache-Control": "no-store"})


@bp.get("/metrics")
def metrics() -> Response:
    push = _push()
    if push is None:
        return Response("", mimetype=CONTENT_TYPE_LATEST)
    push.health()  # refreshes the queue gauges
    return Response(generate_latest(push.metrics.registry), mimetype=CONTENT_TYPE_LATEST)
