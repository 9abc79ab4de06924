"""The one place that formats errors for API clients: RFC 9457 problem details (application/problem+json)."""

from __future__ import annotations

import json
from typing import Any

from flask import Response


def problem(status: int, title: str, detail: str, **extra: Any) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return Response(json.dumps(body, ensure_ascii=False), status=status, mimetype="application/problem+json")
