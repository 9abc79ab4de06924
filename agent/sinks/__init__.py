"""Where the agent's points go: the historian backends (sqlite_historian.py, influx.py) and the live topics
(live.py).

`open_historian` opens the backend a config names; the agent, the dashboard and `shopfloor sync` all use it,
so each loads only the backend it writes or reads and none of them needs the agent's runtime to do so.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config import FactoryConfig
    from agent.historian import Historian


def open_historian(cfg: FactoryConfig, data_dir: Path) -> Historian:
    """The historian backend `cfg.historian` names: InfluxDB, or the embedded SQLite file (its configured path,
    else historian.sqlite3 in `data_dir`). Only the chosen backend's module is imported."""
    from agent.config import resolve_secret

    h = cfg.historian
    if h.kind == "influxdb":
        from agent.sinks.influx import InfluxHistorian

        assert h.url is not None  # the config check requires it
        return InfluxHistorian(
            h.url, api=h.api, database=h.database, retention_policy=h.retention_policy, username=h.username,
            password=resolve_secret(h.password, h.password_file), org=h.org, bucket=h.bucket,
            token=resolve_secret(h.token, h.token_file), timeout_s=h.timeout_s, batch_lines=h.batch_lines,
            use_gzip=h.gzip, verify_tls=h.verify_tls, ca_file=str(h.ca_file) if h.ca_file else None,
            retention_days=h.retention_days, in_flight=h.in_flight)
    from agent.sinks.sqlite_historian import SqliteHistorian

    return SqliteHistorian(h.path or data_dir / "historian.sqlite3", h.retention_days)
