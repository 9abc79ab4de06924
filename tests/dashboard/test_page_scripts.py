"""The pages' scripts are ES modules: each is served as JavaScript (a browser refuses a module served as anything
else), even where the OS's mimetypes table says otherwise, every module they import is in the dashboard's static
folder, and every file the pages need is shipped in the package."""

from __future__ import annotations

import mimetypes
import re
import tomllib
from pathlib import Path, PurePosixPath

import pytest

import dashboard
from tests.conftest import ROOT
from tests.dashboard.test_import_cycles import cycles

PACKAGE = Path(dashboard.__file__).parent
STATIC = PACKAGE / "static"
SCRIPTS = sorted(p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*.js"))
MODULES = sorted(p.name for p in STATIC.glob("*.js"))


def imports_of(source: str) -> list[str]:
    return re.findall(r'^\s*import\s+(?:[^"\']*?\s+from\s+)?["\']([^"\']+)["\']', source, re.M)


@pytest.fixture
def js_as_text(monkeypatch):
    """The mimetypes table of a Windows PC where another program registered .js and .css as text/plain."""
    mimetypes.guess_type("board.js")  # the table is read on first use
    monkeypatch.setitem(mimetypes.types_map, ".js", "text/plain")
    monkeypatch.setitem(mimetypes.types_map, ".css", "text/plain")
    assert mimetypes.guess_type("board.js")[0] == "text/plain"


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_is_served_as_javascript(client, script):
    resp = client.get(f"/static/{script}")
    assert resp.status_code == 200
    assert resp.mimetype == "text/javascript"


@pytest.mark.parametrize("name", ["board.js", "machine.js", "sf-page.js", "board.css"])
def test_scripts_and_the_stylesheet_keep_their_type_when_the_os_says_text_plain(client, js_as_text, name):
    resp = client.get(f"/static/{name}")
    assert resp.status_code == 200
    assert resp.mimetype == ("text/css" if name.endswith(".css") else "text/javascript")
    assert resp.mimetype_params.get("charset") == "utf-8"


def test_a_missing_script_is_a_plain_404(client):
    resp = client.get("/static/no-such-module.js")
    assert resp.status_code == 404 and resp.mimetype != "text/javascript"


@pytest.mark.parametrize("module", MODULES)
def test_every_import_is_a_module_beside_it(module):
    # flat in static/, so the package's `static/*.js` ships them all
    for target in imports_of((STATIC / module).read_text(encoding="utf-8")):
        assert re.fullmatch(r"\./[\w.-]+\.js", target), f"{module} imports {target}"
        assert (STATIC / target[2:]).is_file(), f"{module} imports {target}, which is not there"


def test_the_modules_do_not_import_each_other_in_a_circle():
    # a circle would run a module before the one it needs is ready
    edges = {m: {t[2:] for t in imports_of((STATIC / m).read_text(encoding="utf-8"))} for m in MODULES}
    assert cycles(edges) == []


def test_the_import_finder_finds_imports():
    source = 'import { a, b } from "./sf-page.js";\nimport "./side.js";\nconst x = "import y from z";\n'
    assert imports_of(source) == ["./sf-page.js", "./side.js"]


@pytest.mark.parametrize("path", ["/", "/lines/line-1", "/lines/line-1/machines/press-1", "/kiosk"])
def test_pages_load_their_scripts_as_modules(client, path):
    html = client.get(path).get_data(as_text=True)
    modules = re.findall(r'<script type="module" src="([^"]+)"', html)
    assert "/static/board.js" in modules
    classic = re.findall(r'<script src="([^"]+)"', html)
    assert all("/vendor/" in src for src in classic), classic  # only the vendored ECharts is a classic script
    for src in modules + classic:
        assert client.get(src).status_code == 200


def shipped(path: str, patterns: list[str]) -> bool:
    """Whether a package-data pattern takes `path` (setuptools' glob: `*` stays within one folder)."""
    return any(len(PurePosixPath(pattern).parts) == len(PurePosixPath(path).parts) and PurePosixPath(path).match(pattern)
               for pattern in patterns)


def test_every_static_file_and_template_is_shipped_in_the_package():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "package-data"]["dashboard"]
    files = [p.relative_to(PACKAGE).as_posix() for folder in ("static", "templates")
             for p in (PACKAGE / folder).rglob("*") if p.is_file()]
    assert "static/sf-page.js" in files
    assert [f for f in files if not shipped(f, patterns)] == []


def test_a_module_in_a_subfolder_would_not_be_shipped():
    assert shipped("static/sf-page.js", ["static/*.js"])
    assert not shipped("static/modules/sf-page.js", ["static/*.js"])
