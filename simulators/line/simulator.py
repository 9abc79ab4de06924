"""The line simulator: publishes the floor messages of the simulated plant from a background thread."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.config import FactoryConfig
from simulators.clock import SimClock
from simulators.line.payloads import MalformedMaker, TopicStamps
from simulators.line.publisher import Publisher, shown
from simulators.line.raw_publisher import RawPublisher
from simulators.plant import US, FloorMessage, Plant

log = logging.getLogger(__name__)

PACE_EVERY = 20               # a paced flood (--flood-rate) checks the clock once per this many messages


class LineSimulator:
    """Publishes the shop floor of `cfg` to an MQTT broker from a background thread.

    Stops by itself after `count` valid messages, `duration_s` real seconds, or, in flood mode, after `flood`
    material levels sent as fast as possible; otherwise runs until `stop()`. `truth()` is always available;
    with `truth_file` it is also written there every second and on stop (temp file + rename).
    """

    def __init__(self, cfg: FactoryConfig, url: str, speed: float = 1.0, seed: int = 1, *, qos: int = 1,
                 malformed_every: int = 0, count: int | None = None, duration_s: float | None = None,
                 flood: int | None = None, truth_file: str | Path | None = None, client_id: str | None = None,
                 protocol: str = "5", max_inflight: int = 1000, flood_client: str = "raw",
                 flood_rate: float | None = None, flood_lane: tuple[int, int] = (0, 1),
                 announce: bool = False, start: datetime | None = None, origin: datetime | None = None,
                 clock: SimClock | None = None) -> None:
        self.cfg, self.url = cfg, shown(url)
        # every `ts` comes from this clock (a given one, a test's, replaces the one `start` and `speed` would make)
        self.clock = clock or SimClock(int(start.timestamp() * US) if start is not None else None, speed)
        # The plant starts at the demo's shared clock start (`origin`), like the PLC simulator's: both run the
        # same world, the PLC simulator showing its machines and this one publishing its floor's messages.
        origin_us = int(origin.timestamp() * US) if origin is not None else self.clock.start_us
        self.floor = Plant(cfg, seed, min(origin_us, self.clock.start_us))
        self.malformed = MalformedMaker(cfg)
        self.stamps = TopicStamps()
        self.malformed_every, self.count, self.duration_s, self.flood = malformed_every, count, duration_s, flood
        if flood_rate is not None and flood_rate <= 0:
            raise ValueError("flood rate must be positive")
        lane, lanes = flood_lane
        if lanes < 1 or not 0 <= lane < lanes:
            raise ValueError(f"flood lane {lane}/{lanes}: expected K/N with 0 <= K < N")
        self.flood_rate, self.flood_lane = flood_rate, (lane, lanes)
        self.truth_file = Path(truth_file) if truth_file else None
        client_id = client_id or f"shopfloor-line-sim-{os.getpid()}"
        on_connected = self._announce if announce else None
        self.publisher: Publisher | RawPublisher
        if flood and flood_client == "raw":
            self.publisher = RawPublisher(url, client_id, qos, max_inflight, on_connected)
        else:
            self.publisher = Publisher(url, client_id, qos, protocol, max_inflight, on_connected)
        self.done = threading.Event()
        self.flood_figures: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="line-simulator", daemon=True)
        self._valid_sent = 0
        self._since_malformed = 0
        self._truth_lock = threading.Lock()
        self._started_at = 0.0

    def _announce(self) -> None:
        print(f"line simulator publishing to {self.url}", flush=True)

    def start(self) -> LineSimulator:
        """Connect (in the background) and start simulating."""
        self.publisher.connect()
        self._started_at = time.monotonic()
        self._thread.start()
        return self

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the simulation finished by itself (count, duration, flood); False on timeout."""
        return self.done.wait(timeout_s)

    def stop(self, ack_timeout_s: float = 60.0) -> bool:
        """Stop simulating, wait for the broker to acknowledge everything, disconnect, write the final truth.

        Returns True when every message was acknowledged within the timeout.
        """
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        all_acked = self.publisher.wait_acked(ack_timeout_s)
        if not all_acked:
            log.warning("line simulator: %s messages still unacknowledged by %s after %s s",
                        self.publisher.outstanding(), self.url, ack_timeout_s)
        self.publisher.close()
        self.write_truth()
        return all_acked

    def truth(self) -> dict[str, Any]:
        """What the broker acknowledged so far: valid messages per signal, malformed per kind, totals, last ts."""
        return self.publisher.truth()

    def write_truth(self) -> None:
        """Write the truth file atomically (temp file + rename), if one was asked for."""
        if self.truth_file is None:
            return
        with self._truth_lock:
            tmp = self.truth_file.with_name(f"{self.truth_file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.truth(), indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, self.truth_file)

    # --- the thread ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if self.flood:
                self._run_flood(self.flood)
            else:
                self._run_floor()
        except Exception:
            log.exception("line simulator stopped on an error")
        finally:
            self.done.set()

    def _finished(self) -> bool:
        if self._stop.is_set():
            return True
        if self.count is not None and self._valid_sent >= self.count:
            return True
        return self.duration_s is not None and time.monotonic() - self._started_at >= self.duration_s

    def _run_floor(self) -> None:
        next_truth = time.monotonic() + 1
        while not self._finished():
            for event in self.floor.advance(self.clock.now_us())[1]:
                self._send(event)
                if self._finished():
                    return
            if self.truth_file is not None and time.monotonic() >= next_truth:
                self.write_truth()
                next_truth = time.monotonic() + 1
            due = self.floor.next_due()
            wait_s = 0.2 if due is None else (due - self.clock.now_us()) / US / self.clock.speed
            self._stop.wait(min(max(wait_s, 0.0), 0.2))

    def _send(self, event: FloorMessage) -> None:
        body = dict(event.body)
        body["ts"] = ts = self.stamps.stamp(event.topic, event.due_us)
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        if self.publisher.publish(event.topic, payload, "valid", event.signal, ts):
            self._valid_sent += 1
            self._after_valid()

    def _after_valid(self) -> None:
        if not self.malformed_every:
            return
        self._since_malformed += 1
        if self._since_malformed >= self.malformed_every:
            self._since_malformed = 0
            kind, topic, payload = self.malformed.next(self.stamps, self.clock.now_us())
            self.publisher.publish(topic, payload, "malformed", kind, "")

    def _run_flood(self, total: int) -> None:
        if isinstance(self.publisher, RawPublisher):
            try:
                self.publisher.open()
            except OSError as exc:
                log.error("line simulator: cannot connect to %s: %s; flood not started", self.url, exc)
                return
        elif not self.publisher.connected.wait(30):
            log.error("line simulator: no connection to %s within 30 s; flood not started", self.url)
            return
        topics = [f"line/{ls.line.id}/material/{m.id}/level" for ls in self.floor.lines.values() for m in ls.materials]
        # Several flood processes share the topics out by lane, so no two of them ever stamp the same series:
        # two messages of one series with the same `ts` are one point in the historian (idempotent writes),
        # which a loss count would then report as lost.
        lane, lanes = self.flood_lane
        topics = topics[lane::lanes]
        if not topics:
            log.error("line simulator: the config has no line materials to flood (lane %s/%s)", lane, lanes)
            return
        publish, stamp, now_us = self.publisher.publish, self.stamps.stamp, self.clock.now_us
        flush = self.publisher.flush
        rate = self.flood_rate
        next_truth = time.monotonic() + 1
        started = time.perf_counter()
        try:
            for i in range(total):
                if rate is not None and i % PACE_EVERY == 0:
                    # Paced flood: hold each small group of messages until it is due, and send what is buffered
                    # before sleeping, so `ts` (taken just below) is close to the time the message leaves.
                    due = started + i / rate
                    if due > time.perf_counter():
                        flush()
                        self._stop.wait(max(0.0, due - time.perf_counter()))
                topic = topics[i % len(topics)]
                ts = stamp(topic, now_us())
                # Formatted by hand: json.dumps would cost more than the rest of the message here.
                payload = f'{{"level":{100 + (i % 997) * 0.5:.2f},"ts":"{ts}"}}'.encode()
                if publish(topic, payload, "valid", "material_level", ts):
                    self._valid_sent += 1
                    self._after_valid()
                if i & 1023 == 0 and (self._finished() or (
                        self.truth_file is not None and time.monotonic() >= next_truth)):
                    if self._finished():
                        break
                    self.write_truth()
                    next_truth = time.monotonic() + 1
        except OSError as exc:
            log.error("line simulator: flood connection to %s failed: %s", self.url, exc)
            return
        published_s = time.perf_counter() - started
        self.publisher.wait_acked(120)
        acked_s = time.perf_counter() - started
        self.flood_figures = {"messages": float(self._valid_sent), "publish_s": published_s, "acked_s": acked_s,
                              "per_s": self._valid_sent / acked_s if acked_s > 0 else 0.0}
