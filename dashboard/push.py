"""The capacity push: every line's capacity, sent to the platform as signed CloudEvents.

An APScheduler job computes every line's capacity every `capacity.push.interval_min` minutes, and at once when
something significant changes (a machine of a line goes down or comes back, an order starts or finishes). Each
line's snapshot becomes one CloudEvents 1.0 event (structured JSON, type `com.shopfloor.capacity.v1`) with a
version that only grows. The event is committed to a durable outbox per endpoint (the agent's outbox; the version
is stored with it, in the same transaction) before anything is sent. A delivery thread per endpoint POSTs the
events oldest first, signed per Standard Webhooks with every configured secret (key rotation), retries with
backoff and jitter, honours Retry-After, and keeps a refused event as a dead letter. An endpoint that answers
410 Gone is disabled until its URL changes. An event larger than `max_event_kb` goes as a thin
`com.shopfloor.capacity.changed.v1` event that names the feed URL to pull.

It runs inside the dashboard process or alone (`shopfloor sync`), and imports no Flask.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3
from apscheduler.schedulers.background import BackgroundScheduler
from cloudevents.core.bindings import http as cloudevents_http
from cloudevents.core.v1.event import CloudEvent
from prometheus_client import CollectorRegistry, Counter, Gauge
from standardwebhooks.webhooks import Webhook

from agent.config import FactoryConfig, PushEndpoint, resolve_secret
from agent.core.mapping import DeadLetter
from agent.core.schema import Point
from agent.outbox import Outbox
from dashboard import c2m, queries

log = logging.getLogger(__name__)

EVENT_TYPE = "com.shopfloor.capacity.v1"
CHANGED_TYPE = "com.shopfloor.capacity.changed.v1"
MEASUREMENT = "c2m_event"
MAX_BACKOFF_S = 60.0
AUTH_RETRY_S = 30.0  # how often a 401, 403 or redirect is tried again
MAX_RETRY_AFTER_S = 600.0  # a Retry-After further away than this is waited for this long, then asked again


def secrets_of(endpoint: PushEndpoint) -> list[str]:
    out = [s for s in (resolve_secret(ref, None) for ref in endpoint.secrets) if s]
    out += [path.read_text(encoding="utf-8").strip() for path in endpoint.secret_files]
    return out


def sign(secrets: list[str], msg_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The Standard Webhooks headers of a message: one v1 signature per secret, space separated."""
    at = datetime.fromtimestamp(timestamp, tz=UTC)
    signatures = " ".join(Webhook(secret).sign(msg_id, at, body) for secret in secrets)
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signatures}


def retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        seconds = float(value)
        return min(MAX_RETRY_AFTER_S, max(0.0, seconds)) if seconds == seconds else None  # NaN: not a time
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, when.timestamp() - time.time()))


class PushMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.events = Counter("shopfloor_push_events", "Capacity events committed to the push outbox",
                              ["endpoint"], registry=r)
        self.delivered = Counter("shopfloor_push_delivered", "Events the platform accepted", ["endpoint"],
                                 registry=r)
        self.failures = Counter("shopfloor_push_failures", "Failed deliveries (retried)", ["endpoint"], registry=r)
        self.refused = Counter("shopfloor_push_refused", "Events the platform refused for good (dead letters)",
                               ["endpoint"], registry=r)
        self.queue = Gauge("shopfloor_push_queue_events", "Events waiting to be delivered", ["endpoint"],
                           registry=r)
        self.last_delivery = Gauge("shopfloor_push_last_delivery_timestamp_seconds",
                                   "When the platform last accepted an event", ["endpoint"], registry=r)
        self.disabled = Gauge("shopfloor_push_disabled", "1 while the endpoint is disabled (it answered 410)",
                              ["endpoint"], registry=r)


@dataclass
class EndpointState:
    """What /healthz says of an endpoint."""

    name: str
    url: str
    delivered: int = 0
    failures: int = 0
    refused: int = 0
    last_delivery: float | None = None
    last_version: dict[str, int] | None = None
    last_error: str = ""
    disabled: str = ""


class PushBusy(Exception):
    """Another process pushes to this endpoint from the same data dir."""


def _lock(path: Path) -> Any:
    """An exclusive lock on `path` held while the returned file is open; PushBusy when another process has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+b")  # noqa: SIM115 - lives as long as the endpoint
    try:
        if os.name == "nt":
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise PushBusy(f"{path.with_suffix('.sqlite3')} is pushed by another process (a dashboard or "
                       "shopfloor sync on the same data dir); one of them pushes, set capacity.push.in_dashboard: "
                       "false to leave it to shopfloor sync") from None
    return handle


class Endpoint:
    """One platform endpoint: its outbox and its delivery thread."""

    def __init__(self, conf: PushEndpoint, data_dir: Path, quota_bytes: int, metrics: PushMetrics,
                 http: urllib3.PoolManager) -> None:
        self.conf = conf
        self.lock = _lock(data_dir / f"c2m-push-{conf.name}.lock")
        self.outbox = Outbox(data_dir / f"c2m-push-{conf.name}.sqlite3", quota_bytes)
        self.metrics = metrics
        self.http = http
        self.state = EndpointState(conf.name, conf.url)
        kept = self.outbox.load_state()
        self.versions: dict[str, int] = dict(kept.get("versions", {}))
        disabled = kept.get("disabled") or {}
        if disabled.get("url") == conf.url:
            self.state.disabled = disabled.get("why", "answered 410 Gone")
            metrics.disabled.labels(conf.name).set(1)
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._alerted = 0  # the status last logged as needing a person

    def commit(self, events: list[tuple[str, int, Point]]) -> None:
        """Commit each event as a batch of its own (one delivery each), with the version it carries in the
        same transaction."""
        for _, version, point in events:
            with self._lock:
                self.versions[point.tags["line"]] = version
                self.outbox.enqueue([point], state={"versions": self.versions})
            self.metrics.events.labels(self.conf.name).inc()
        self.wake.set()

    def next_version(self, line: str) -> int:
        """One more than the line's last version, and never below the wall clock in milliseconds: versions keep
        growing even when this outbox is lost (a reinstalled edge PC) and start again from nothing."""
        with self._lock:
            return max(self.versions.get(line, 0) + 1, time.time_ns() // 1_000_000)

    def depth(self) -> int:
        return self.outbox.depth()[1]

    # --- delivery -----------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        backoff = 1.0
        while not stop.is_set():
            if self.state.disabled:
                stop.wait(1.0)
                continue
            try:
                batches = self.outbox.claim(1)
                if not batches:
                    self.wake.wait(1.0)
                    self.wake.clear()
                    continue
                wait = self.deliver(batches)
            except Exception as exc:  # a secret file being replaced, a disk hiccup: try again, never die
                log.exception("push endpoint %s: delivery failed", self.conf.name)
                wait = self._failed(f"{exc.__class__.__name__}: {exc}")
            if wait is None:
                backoff = 1.0
                continue
            self.outbox.release()
            stop.wait(min(MAX_RETRY_AFTER_S, wait) if wait > 0 else random.uniform(0, backoff))
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def deliver(self, batches: list[Any]) -> float | None:
        """Send the first event of `batches`; None when it is settled (accepted or refused for good), else the
        seconds to wait (0: the caller's backoff)."""
        point: Point = batches[0].points[0]
        body = str(point.fields["body"])
        msg_id = str(point.fields["id"])
        headers = {"Content-Type": "application/cloudevents+json",
                   **sign(secrets_of(self.conf), msg_id, int(time.time()), body)}
        name = self.conf.name
        try:
            resp = self.http.request("POST", self.conf.url, body=body.encode("utf-8"), headers=headers,
                                     timeout=self.conf.timeout_s, retries=False, redirect=False)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            return self._failed(f"no answer ({exc.__class__.__name__})")
        status = resp.status
        if 200 <= status < 300:
            self._alerted = 0
            self.outbox.settle(batches)
            self.state.delivered += 1
            self.state.last_delivery = time.time()
            self.state.last_error = ""
            line = point.tags.get("line", "")
            self.state.last_version = {**(self.state.last_version or {}), line: int(point.fields["version"])}
            self.metrics.delivered.labels(name).inc()
            self.metrics.last_delivery.labels(name).set(self.state.last_delivery)
            return None
        if status == 410:
            why = f"{self.conf.url} answered 410 Gone at {datetime.now(UTC):%Y-%m-%d %H:%M:%S}Z"
            log.error("push endpoint %s disabled: %s; events wait in its outbox until its URL changes in the config",
                      name, why)
            self.state.disabled = why
            self.metrics.disabled.labels(name).set(1)
            with self._lock:
                self.outbox.enqueue([], state={"versions": self.versions, "disabled": {"url": self.conf.url,
                                                                                         "why": why}})
            return 0.0
        if status in (401, 403) or status < 200 or 300 <= status < 400:
            # a key the platform does not (yet) take, a redirect: a person has to act; the events wait
            if status != self._alerted:
                log.error("push endpoint %s answered %s: check the URL and the signing secrets; events wait in "
                          "the outbox", name, status)
                self._alerted = status
            return self._failed(f"answered {status}", AUTH_RETRY_S)
        if status in (408, 425, 429) or status >= 500:
            return self._failed(f"answered {status}", retry_after_s(resp.headers.get("Retry-After")))
        # any other answer refuses this event for good: keep it, go on with the next
        reason = f"{self.conf.url} answered {status}: {resp.data[:200].decode('utf-8', 'replace')}"
        log.error("push endpoint %s refused event %s (%s); kept as a dead letter", name, msg_id, reason)
        self.outbox.settle(batches, [DeadLetter(f"push:{name}", MEASUREMENT, reason, body.encode("utf-8"),
                                                time.time_ns())])
        self.state.refused += 1
        self.metrics.refused.labels(name).inc()
        return None

    def _failed(self, why: str, wait: float | None = None) -> float:
        if not self.state.last_error:
            log.warning("push endpoint %s: %s; events wait in the outbox", self.conf.name, why)
        self.state.last_error = why
        self.state.failures += 1
        self.metrics.failures.labels(self.conf.name).inc()
        return wait or 0.0


class PushJob:
    """Produces capacity events on a schedule and on significant changes, and delivers them."""

    def __init__(self, cfg: FactoryConfig, service: c2m.CapacityService, data_dir: Path,
                 feed_url: str | None = None, now_ns: Callable[[], int] = time.time_ns) -> None:
        self.cfg = cfg
        self.service = service
        self.now_ns = now_ns
        settings = cfg.capacity.push
        self.feed_url = (settings.feed_url or feed_url or
                         f"http://{cfg.dashboard.host}:{cfg.dashboard.port}").rstrip("/")
        self.metrics = PushMetrics()
        self.http = urllib3.PoolManager(num_pools=4, maxsize=2)
        self.endpoints: list[Endpoint] = []
        try:
            for e in settings.endpoints:
                self.endpoints.append(Endpoint(e, data_dir, int(settings.quota_mb * 1024 * 1024), self.metrics,
                                               self.http))
        except PushBusy:
            self.close()
            raise
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._produce_lock = threading.Lock()
        self._fingerprint: dict[str, Any] | None = None
        self.scheduler: BackgroundScheduler | None = None

    # --- producing ----------------------------------------------------------------------------------------

    def fingerprint(self) -> dict[str, Any]:
        """What counts as a significant change, per line: the machines in FAULT and the running order."""
        out: dict[str, Any] = {}
        historian = self.service.historian
        now = self.now_ns()
        for line in self.cfg.lines:
            down = sorted(p.tags["machine"] for p in historian.last_values("machine_state", line=line.id)
                          if p.fields.get("state") == "FAULT" and p.time_ns <= now)
            order = queries.running_order(historian, line.id, now)
            out[line.id] = {"down": down, "order": order["order_id"] if order else None}
        return out

    def check(self) -> bool:
        """Push at once when a line's fingerprint changed since the last look; True when it did."""
        seen = self.fingerprint()
        before = self._fingerprint
        if before is None:
            self._fingerprint = seen
            return False
        changed = [line for line in seen if seen[line] != before.get(line)]
        if changed:
            log.info("capacity push: significant change on %s; pushing now", ", ".join(changed))
            self.produce()
        self._fingerprint = seen  # only once pushed: a failed push is tried again at the next look
        return bool(changed)

    def produce(self) -> int:
        """Compute every line's capacity as of now and commit one event per line and endpoint; the number of
        events committed. Always as of now, never the feed's figures of the minute: a later version must never
        carry older figures than the one before it."""
        by = self.cfg.capacity.bucket
        with self._produce_lock:
            at, snapshots = self.service.snapshots(by, exact=True)
            doc = c2m.capacity_document(self.cfg, snapshots, at, by)
            committed = 0
            for endpoint in self.endpoints:
                events = [self.event(line_doc["line"], endpoint.next_version(line_doc["line"]), at,
                                     {**doc, "lines": [line_doc]}) for line_doc in doc["lines"]]
                endpoint.commit(events)
                committed += len(events)
            return committed

    def event(self, line: str, version: int, at_ns: int, doc: dict[str, Any]) -> tuple[str, int, Point]:
        site = self.cfg.site.id
        msg_id = f"{site}.{line}.{version}"
        attributes = {"id": msg_id, "source": f"urn:shopfloor:{site}", "type": EVENT_TYPE, "subject": line,
                      "time": datetime.fromtimestamp(time.time(), tz=UTC), "datacontenttype": "application/json"}
        data = {"version": version, "line": line, **doc}
        body = cloudevents_http.to_structured_event(CloudEvent(attributes=attributes, data=data)).body
        if len(body) > self.cfg.capacity.push.max_event_kb * 1024:
            attributes["type"] = CHANGED_TYPE
            data = {"version": version, "line": line, "as_of": doc["as_of"],
                    "pull": f"{self.feed_url}/v1/capacity?line={line}"}
            body = cloudevents_http.to_structured_event(CloudEvent(attributes=attributes, data=data)).body
        point = Point(MEASUREMENT, {"line": line}, {"id": msg_id, "version": version, "body": body.decode("utf-8")},
                      at_ns)
        return msg_id, version, point

    # --- running ------------------------------------------------------------------------------------------

    def start(self) -> None:
        for endpoint in self.endpoints:
            t = threading.Thread(target=endpoint.run, args=(self._stop,), name=f"shopfloor-push-{endpoint.conf.name}",
                                 daemon=True)
            t.start()
            self._threads.append(t)
        settings = self.cfg.capacity.push
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.scheduler.add_job(self._guarded(self.produce), "interval", minutes=settings.interval_min,
                               next_run_time=datetime.now(UTC), id="capacity-push", max_instances=1,
                               coalesce=True)
        self.scheduler.add_job(self._guarded(self.check), "interval", seconds=settings.check_s,
                               id="capacity-change-check", max_instances=1, coalesce=True)
        self.scheduler.start()
        log.info("capacity push to %s: every %g min and on a significant change",
                 ", ".join(e.conf.url for e in self.endpoints) or "(no endpoint)", settings.interval_min)

    def _guarded(self, job: Callable[..., Any]) -> Callable[[], None]:
        def run() -> None:
            try:
                job()
            except Exception:  # the next run tries again; nothing committed is lost
                log.exception("capacity push job %s failed", job.__name__)
        return run

    def stop(self) -> None:
        """Stop the schedule, wait for a job under way and the delivery threads, then close the outboxes: a job
        must never write to an outbox that is being closed."""
        self._stop.set()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)
        for endpoint in self.endpoints:
            endpoint.wake.set()
        for t in self._threads:
            t.join(timeout=15)
        self.close()

    def close(self) -> None:
        """Close the outboxes and let go of their locks."""
        for endpoint in self.endpoints:
            endpoint.outbox.close()
            endpoint.lock.close()
        self.endpoints = []
        self.http.clear()

    def summary(self) -> dict[str, Any]:
        """What the overview board shows: per endpoint, the last delivery, what waits and whether it fails."""
        out = []
        for e in self.endpoints:
            s = e.state
            out.append({"name": s.name, "queue": e.depth(), "failing": bool(s.last_error), "disabled": bool(s.disabled),
                        "last_delivery_ms": None if s.last_delivery is None else int(s.last_delivery * 1000)})
        return {"endpoints": out}

    def health(self) -> dict[str, Any]:
        out = []
        for i, e in enumerate(self.endpoints):
            depth = e.depth()
            self.metrics.queue.labels(e.conf.name).set(depth)
            s = e.state
            thread = self._threads[i] if i < len(self._threads) else None
            out.append({"name": s.name, "url": s.url, "queue": depth, "delivered": s.delivered,
                        "failures": s.failures, "refused": s.refused, "last_error": s.last_error or None,
                        "disabled": s.disabled or None, "dropped": e.outbox.dropped_points,
                        "delivering": thread is not None and thread.is_alive(),
                        "last_delivery": None if s.last_delivery is None else
                        datetime.fromtimestamp(s.last_delivery, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "versions": dict(e.versions), "delivered_versions": s.last_version or {}})
        started = bool(self._threads)
        bad = any(x["disabled"] or (started and not x["delivering"]) for x in out)
        return {"status": "degraded" if bad else "ok", "endpoints": out}
