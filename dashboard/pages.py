"""What every e-board page is rendered with: the screen's language, its labels, the site, the lines, the user at
the screen, where the other pages are and the board states (order and colours). The page blueprints (boards.py, and the login page of auth.py) build
their context here.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import current_app, request, url_for

from dashboard import i18n, states
from dashboard.users import current_user

LANG_COOKIE = "shopfloor_lang"


def screen_language() -> str:
    """?lang= (remembered per screen in a cookie), else the cookie, else the site's language."""
    cfg = current_app.extensions["shopfloor"]["cfg"]
    return i18n.normalize(request.args.get("lang") or request.cookies.get(LANG_COOKIE), cfg.site.language)


def page_context(page: str, **extra: Any) -> dict[str, Any]:
    """The template context of `page` (its name: overview, line, machine, stops, login); `extra` adds to it."""
    cfg = current_app.extensions["shopfloor"]["cfg"]
    lang = screen_language()
    args = {k: v for k, v in request.args.items() if k != "lang"}
    lang_urls = {code: f"{request.path}?{urlencode({**args, 'lang': code})}" for code in i18n.LANGUAGES}
    return {
        "page": page, "lang": lang, "t": lambda key: i18n.t(lang, key), "labels": i18n.LABELS[lang],
        "site": {"id": cfg.site.id, "name": cfg.site.name or cfg.site.id, "timezone": cfg.site.timezone,
                 "language": cfg.site.language},
        "lines": [{"id": ln.id, "name": ln.name} for ln in cfg.lines], "kiosk": None, "user": current_user(),
        "lang_urls": lang_urls, "api": {}, "urls": page_urls(), "states": states.for_pages(), **extra,
    }


def page_urls() -> dict[str, str]:
    """Where each page is; the templates fill in `{line}` and `{machine}`."""
    urls = {"overview": url_for("boards.overview"), "line": url_for("boards.line_board", line_id="LINE"),
            "machine": url_for("boards.machine", line_id="LINE", machine_id="MACHINE"),
            "stops": url_for("boards.stops", line_id="LINE"), "kiosk": url_for("boards.kiosk") + "?start=LINE",
            "login": url_for("auth.login"), "logout": url_for("auth.logout")}
    return {name: url.replace("LINE", "{line}").replace("MACHINE", "{machine}") for name, url in urls.items()}
