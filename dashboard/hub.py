"""The board hub: one current board per scope ("overview", "line/<id>"), rebuilt by one background thread and
handed to every stream as numbered JSON merge patches (RFC 7386).

Live changes mark a line dirty; the thread rebuilds dirty boards at most once per `interval_s` (that is the
coalescing: a burst of a hundred changes is one patch), re-reads the historian half of a board every
`kpi_refresh_s` (sooner, at most once a second, after a people, material, order or state change), and
rebuilds every second anyway so that staleness (an agent gone, the broker lost) shows without a message.
Work does not grow with the number of viewers: each board is built once, whoever watches it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from agent.config import FactoryConfig
from agent.historian import Historian, HistorianError
from dashboard import board
from dashboard.live import LiveView

log = logging.getLogger(__name__)

# A scope nobody has asked for or watched for this long is no longer rebuilt.
WATCH_S = 120.0
# Live signals that change only the live half of a board.
FAST_SIGNALS = ("pv/", "count/")
# Patches kept per scope: a stream further behind than this gets a new snapshot instead.
PATCHES_KEPT = 256


def merge_patch(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`; {} when they are equal."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value) if isinstance(value, dict) and isinstance(old[key], dict) \
                else value
    return patch


def apply_patch(target: Any, patch: Any) -> Any:
    """`target` with the merge patch applied (RFC 7386), as the browser does it; used by tests and the bench."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = apply_patch(out.get(key), value)
    return out


class _Scope:
    def __init__(self) -> None:
        self.seq = 0
        self.board: dict[str, Any] | None = None
        self.patches: deque[tuple[int, dict[str, Any]]] = deque(maxlen=PATCHES_KEPT)
        self.watched = time.monotonic()
        self.built = 0.0


class BoardHub:
    """Current boards and their patches; `start()` runs the rebuild thread."""

    def __init__(self, cfg: FactoryConfig, historian: Historian, live: LiveView, now_ns: Callable[[], int],
                 interval_s: float = 0.25, kpi_refresh_s: float = 10.0, clock_speed: float = 1.0) -> None:
        self.cfg = cfg
        self.historian = historian
        self.live = live
        self.now_ns = now_ns
        self.clock_speed = clock_speed
        self.interval_s = interval_s
        self.kpi_refresh_s = kpi_refresh_s
        self._cond = threading.Condition()
        self._scopes: dict[str, _Scope] = {}
        self._history: dict[str, tuple[float, dict[str, Any]]] = {}  # line -> (monotonic, history half)
        self._dirty: set[str] = set()  # lines whose live values changed
        self._history_dirty: set[str] = set()  # lines whose historian half is worth re-reading soon
        self._build_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shopfloor-boards", daemon=True)
        self.rebuilds = 0
        self.history_reads = 0
        self.failing: str | None = None  # why the last rebuild failed, while it fails
        # what the overview says of the capacity push (its last delivery to the platform); None: no push
        self.platform: Callable[[], dict[str, Any] | None] = lambda: None
        live.on_change = self.live_changed

    @staticmethod
    def scopes_of(cfg: FactoryConfig) -> list[str]:
        return ["overview", *(f"line/{ln.id}" for ln in cfg.lines)]

    def start(self) -> None:
        self._thread.start()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5)

    # --- inputs ---------------------------------------------------------------------------------------------

    def live_changed(self, line: str | None, signal: str = "") -> None:
        """Called by the live view from its MQTT thread: cheap, never blocks on a rebuild."""
        with self._cond:
            lines = [ln.id for ln in self.cfg.lines] if line is None else [line]
            self._dirty.update(lines)
            if not signal.startswith(FAST_SIGNALS):
                # people, material, order, state and alarm changes show in the historian half too (andon calls,
                # stock, stops); process values and counts wait for the periodic refresh
                self._history_dirty.update(lines)
            self._cond.notify_all()

    # --- reads by the blueprints and streams ----------------------------------------------------------------

    def get(self, scope: str) -> tuple[int, dict[str, Any]]:
        """(seq, board) of a scope, built now if nobody asked for it recently. KeyError for an unknown scope."""
        if scope not in self.scopes_of(self.cfg):
            raise KeyError(scope)
        with self._cond:
            sc = self._scopes.setdefault(scope, _Scope())
            now = time.monotonic()
            # a board the thread kept current (someone watched it lately) is served as it is; an old one is not
            current = sc.board is not None and now - sc.watched < WATCH_S
            sc.watched = now
            if current:
                return sc.seq, sc.board  # type: ignore[return-value]
        self._rebuild({scope}, force_history=False)
        with self._cond:
            assert sc.board is not None
            return sc.seq, sc.board

    def wait(self, scope: str, after_seq: int, timeout: float) -> list[tuple[int, dict[str, Any]]] | None:
        """Patches after `after_seq`, waiting up to `timeout` for one; [] on timeout; None when the stream fell
        too far behind (it needs a new snapshot)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            sc = self._scopes.setdefault(scope, _Scope())
            while sc.seq <= after_seq and not self.stopped:
                sc.watched = time.monotonic()
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)
            sc.watched = time.monotonic()
            if sc.seq <= after_seq:
                return []
            if not sc.patches or sc.patches[0][0] > after_seq + 1:
                return None
            return [(s, p) for s, p in sc.patches if s > after_seq]

    # --- the rebuild thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        last_full = 0.0
        while not self._stop.is_set():
            with self._cond:
                if not self._dirty:
                    self._cond.wait(timeout=1.0)
                if self._stop.is_set():
                    return
            now = time.monotonic()
            with self._cond:
                watched = {name for name, sc in self._scopes.items() if now - sc.watched < WATCH_S}
                if not watched:
                    self._dirty.clear()  # nobody looks: the next get() builds afresh
                    continue
            with self._cond:
                dirty = bool(self._dirty)
            if dirty or now - last_full >= 1.0:
                try:
                    self._rebuild(watched, force_history=False)
                except Exception as exc:  # a board bug must not end the thread that serves every screen
                    if self.failing is None:  # logged once, and its recovery once: not every second
                        if isinstance(exc, HistorianError):
                            log.warning("boards: the historian did not answer: %s; boards keep their last "
                                        "figures", exc)
                        else:
                            log.exception("boards: rebuild failed")
                    self.failing = str(exc)
                last_full = now
            self._stop.wait(self.interval_s)  # the coalescing window

    def _lines_for(self, scopes: set[str]) -> list[str]:
        if "overview" in scopes:
            return [ln.id for ln in self.cfg.lines]
        return [s.split("/", 1)[1] for s in scopes if s.startswith("line/")]

    def _history_of(self, line_id: str, now_ns: int, force: bool) -> dict[str, Any]:
        now = time.monotonic()
        with self._cond:
            cached = self._history.get(line_id)
            soon = line_id in self._history_dirty
        age = now - cached[0] if cached else float("inf")
        if cached is not None and not force and age < self.kpi_refresh_s and not (soon and age >= 1.0):
            return cached[1]
        with self._cond:
            self._history_dirty.discard(line_id)
        try:
            history = board.line_history(self.cfg, self.historian, line_id, now_ns, self.clock_speed)
        except HistorianError as exc:
            if cached is None:
                raise
            # the live half goes on (states, alarms, OFFLINE); the shift figures say how old they are
            if self.failing is None:
                log.warning("boards: the historian did not answer: %s; line %s keeps its figures of %s",
                            exc, line_id, cached[1]["computed_ms"])
            self.failing = str(exc)
            return {**cached[1], "history_error": str(exc)}
        self.history_reads += 1
        with self._cond:
            self._history[line_id] = (now, history)
        return history

    def _rebuild(self, scopes: set[str], force_history: bool) -> None:
        with self._build_lock:
            now_ns = self.now_ns()
            lines = self._lines_for(scopes)
            with self._cond:
                self._dirty.difference_update(lines)
            boards = {}
            for line_id in lines:
                line = board.find_line(self.cfg, line_id)
                assert line is not None
                history = self._history_of(line_id, now_ns, force_history)
                boards[line_id] = board.with_live(self.cfg, line, history, self.live, now_ns)
            built = {f"line/{k}": v for k, v in boards.items()}
            if "overview" in scopes:
                built["overview"] = {**board.overview(self.cfg, [boards[ln.id] for ln in self.cfg.lines], now_ns),
                                     "platform": self.platform()}
            self.rebuilds += 1
            if self.failing is not None and all("history_error" not in b for b in boards.values()):
                log.info("boards: the historian answers again")
                self.failing = None
            with self._cond:
                for name, new in built.items():
                    sc = self._scopes.setdefault(name, _Scope())
                    if sc.board is None:
                        sc.seq, sc.board = 1, new
                        continue
                    # now_ms moves on every build; streams carry the clock in their heartbeats instead
                    patch = merge_patch({**sc.board, "now_ms": None}, {**new, "now_ms": None})
                    if patch:
                        sc.seq += 1
                        sc.board = new
                        sc.patches.append((sc.seq, patch))
                self._cond.notify_all()
