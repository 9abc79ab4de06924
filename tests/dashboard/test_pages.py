"""What every page is rendered with (dashboard/pages.py): a site without a name goes by its id, on the pages and
in the overview's data."""

from __future__ import annotations

import html
import json
import re

import pytest

from agent.sinks.sqlite_historian import SqliteHistorian
from dashboard import create_app
from tests.dashboard.conftest import NOW


@pytest.fixture
def unnamed_site_client(factory_cfg, tmp_path):
    cfg = factory_cfg.model_copy(update={"site": factory_cfg.site.model_copy(update={"name": ""})})
    historian = SqliteHistorian(tmp_path / "historian.sqlite3", retention_days=3650)
    app = create_app(cfg, data_dir=tmp_path, historian=historian, now_ns=lambda: NOW, start_live=False)
    yield app.test_client()
    historian.close()


def test_a_site_without_a_name_shows_its_id(unnamed_site_client, factory_cfg):
    site_id = factory_cfg.site.id
    page = unnamed_site_client.get("/?lang=en").get_data(as_text=True)
    title = html.unescape(re.search(r"<title>(.*?)</title>", page, re.S).group(1))
    assert title.endswith(f"· {site_id}")
    assert f'<a class="site-name" href="/?lang=en">{site_id}</a>' in page
    config = json.loads(re.search(r'<script id="sf-config" type="application/json">(.*?)</script>', page, re.S)
                        .group(1))
    assert config["site"]["name"] == site_id
    assert unnamed_site_client.get("/api/v1/overview").get_json()["site"] == {"id": site_id, "name": site_id}


def test_a_named_site_shows_its_name(client, factory_cfg):
    assert factory_cfg.site.name and factory_cfg.site.name != factory_cfg.site.id
    assert client.get("/api/v1/overview").get_json()["site"]["name"] == factory_cfg.site.name
