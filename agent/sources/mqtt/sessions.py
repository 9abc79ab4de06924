"""Which broker sessions an MQTT source has used, so that a change of `workers` or `share_group` loses nothing.

A persistent session outlives its connection: the broker keeps its subscriptions and queues messages for it.
When the config changes the client ids (1 -> N workers, N -> M, N -> 1) or the filters, the old sessions would
keep their queued messages (and keep taking new ones) where no one reads them. So the source records, in its
data dir, every session it subscribed with; on start, a recorded session the config no longer uses is
retired: connected once more under its client id, its old subscriptions removed, what it still holds taken in
through an outbox like any message, and then ended at the broker. It leaves the record only when that worked.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Session:
    client_id: str
    filters: tuple[str, ...]  # as subscribed (with the $share/<group>/ prefix where shared)


def session_dir(data_dir: Path, source_id: str, client_id: str) -> Path:
    """The outbox folder of the worker that uses (or retires) `client_id`; kept across restarts."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", client_id)
    return data_dir / "mqtt-workers" / f"{source_id}--{safe}"


class SessionBook:
    """The record of one source's sessions: `<data_dir>/mqtt-workers/<source>.sessions.json`."""

    def __init__(self, data_dir: Path, source_id: str) -> None:
        self.path = data_dir / "mqtt-workers" / f"{source_id}.sessions.json"
        self.data_dir = data_dir
        self._lock = threading.Lock()

    def load(self) -> list[Session] | None:
        """The recorded sessions; None when there is no record (a first start, or an agent from before it)."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return [Session(str(s["client_id"]), tuple(str(f) for f in s["filters"])) for s in raw["sessions"]]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("MQTT session record %s cannot be read (%s); starting a new one", self.path, exc)
            return None

    def save(self, sessions: list[Session]) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            body = {"sessions": [{"client_id": s.client_id, "filters": list(s.filters)} for s in sessions]}
            tmp.write_text(json.dumps(body, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)

    def forget(self, client_id: str) -> None:
        """A retired session leaves the record."""
        with self._lock:
            sessions = self.load() or []
        self.save([s for s in sessions if s.client_id != client_id])

    def plan(self, current: list[Session], legacy: Session | None) -> tuple[list[Session], dict[str, list[str]]]:
        """(sessions to retire, per current client id the filters it no longer wants), and records the union.

        `legacy` is the session an agent from before the record used (its one connection), assumed when there
        is no record but the agent has run in this data dir before."""
        previous = self.load()
        if previous is None:
            previous = [legacy] if legacy is not None else []
        ids = {s.client_id for s in current}
        retire = [s for s in previous if s.client_id not in ids]
        stale: dict[str, list[str]] = {}
        for old in previous:
            now = next((s for s in current if s.client_id == old.client_id), None)
            if now is not None:
                gone = [f for f in old.filters if f not in now.filters]
                if gone:
                    stale[now.client_id] = gone
        self.save(current + retire)
        for s in retire:
            log.info("MQTT session %s: not in the config (any more, or from before sessions were recorded); "
                     "what it holds is taken in, then it is ended", s.client_id)
        return retire, stale
