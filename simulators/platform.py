"""`shopfloor simulate platform`: the C2M platform's side, to try the factory's push and feed against.

- Receives capacity events (`POST /events`): verifies the Standard Webhooks signature and timestamp (a tampered
  body, a wrong secret, or a timestamp more than 5 minutes off is refused with 401), takes each event id once (a
  retried id is answered 200 and not applied again), and keeps per line the event with the highest version.
- Pulls the feed (`/v1/capacity`) with its ETag every `--pull-every` seconds, and from time to time asks for a
  promise, places a hold and releases it.
- Shows what it holds on a small page (`/`) and as JSON (`/state`). With `--state-file` it keeps its state across
  restarts, as a real platform would.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cloudevents.core.bindings import http as cloudevents_http
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

log = logging.getLogger(__name__)
MAX_BODY = 16 * 1024 * 1024
SEEN_KEPT = 10_000  # event ids remembered (a retry of one of them is taken once)


class Platform:
    """What the platform knows: the newest capacity per line, and tallies of what it received and refused."""

    def __init__(self, secrets: list[str], state_file: Path | None = None) -> None:
        self.hooks = [Webhook(s) for s in secrets]
        self.state_file = state_file
        self.lock = threading.Lock()
        self.state: dict[str, Any] = {"lines": {}, "accepted": 0, "duplicates": 0, "rejected": {}, "seen": [],
                                      "stale": 0, "pulls": {"200": 0, "304": 0, "errors": 0, "last": None},
                                      "holds": {"placed": 0, "released": 0, "refused": 0, "last": None},
                                      "received_at": {}}
        if state_file is not None and state_file.exists():
            self.state.update(json.loads(state_file.read_text(encoding="utf-8")))
        self._seen = set(self.state["seen"])

    def _save(self) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, ensure_ascii=False), encoding="utf-8")
        tmp.replace(self.state_file)

    def _reject(self, why: str, status: int = 401) -> tuple[int, dict[str, Any]]:
        """Refuse an event: 401 for a signature or timestamp that does not verify, 400 for a verified body that
        is not a capacity event. Counted, not saved: a flood of refusals costs no disk."""
        with self.lock:
            self.state["rejected"][why] = self.state["rejected"].get(why, 0) + 1
        log.warning("platform: event refused: %s", why)
        return status, {"error": why}

    def receive(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Verify and take one event; (HTTP status, answer)."""
        headers = {k.lower(): v for k, v in headers.items()}
        try:
            timestamp = float(headers.get("webhook-timestamp", ""))
        except ValueError:
            return self._reject("no or bad webhook-timestamp")
        if abs(time.time() - timestamp) > 300:
            return self._reject("timestamp more than 5 minutes off (a replay?)")
        verified = False
        for hook in self.hooks:
            try:
                hook.verify(body, headers, json_parse=False)
                verified = True
                break
            except (WebhookVerificationError, ValueError, TypeError):
                continue
        if not verified:
            return self._reject("no valid signature")
        try:
            event = cloudevents_http.from_http_event(cloudevents_http.HTTPMessage(headers=headers, body=body))
            data: Any = event.get_data()
            line, version = str(data["line"]), int(data["version"])
        except Exception as exc:  # a signed body that is not our event: refuse it, keep serving
            return self._reject(f"not a capacity event ({exc.__class__.__name__})", 400)
        msg_id = headers["webhook-id"]
        with self.lock:
            if msg_id in self._seen:
                self.state["duplicates"] += 1
                self._save()
                return 200, {"duplicate": True}
            self._seen.add(msg_id)
            self.state["seen"].append(msg_id)
            if len(self.state["seen"]) > SEEN_KEPT:  # ids older than this are past the 5-minute window anyway
                for old in self.state["seen"][:-SEEN_KEPT]:
                    self._seen.discard(old)
                self.state["seen"] = self.state["seen"][-SEEN_KEPT:]
            self.state["accepted"] += 1
            held = self.state["lines"].get(line)
            if held is None or version > held["version"]:
                self.state["lines"][line] = {"version": version, "type": event.get_type(), "data": data,
                                             "received": time.time()}
                received = self.state["received_at"]
                received[f"{line}:{version}"] = time.time()
                while len(received) > SEEN_KEPT:
                    del received[next(iter(received))]
            else:
                self.state["stale"] += 1
            self._save()
        return 200, {"accepted": True, "line": line, "version": version}

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return json.loads(json.dumps({k: v for k, v in self.state.items() if k != "seen"}))


class FeedClient:
    """Pulls the factory's feed with its ETag, and places and releases holds now and then."""

    def __init__(self, platform: Platform, feed_url: str, token: str, every_s: float) -> None:
        self.platform = platform
        self.feed_url = feed_url.rstrip("/")
        self.token = token
        self.every_s = every_s
        self.etag: str | None = None
        self.capacity: dict[str, Any] | None = None
        self.stop = threading.Event()

    def _call(self, method: str, path: str, body: Any = None,
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.feed_url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", **({"Content-Type": "application/json"} if data else {}),
            **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def pull(self) -> int:
        status, headers, body = self._call("GET", "/v1/capacity",
                                           headers={"If-None-Match": self.etag} if self.etag else None)
        pulls = self.platform.state["pulls"]
        with self.platform.lock:
            if status == 200:
                self.etag = headers.get("ETag")
                self.capacity = json.loads(body)
                pulls["200"] += 1
            elif status == 304:
                pulls["304"] += 1
            else:
                pulls["errors"] += 1
            pulls["last"] = {"status": status, "at": time.time()}
        return status

    def hold_round(self, sku: str) -> None:
        """Ask for a promise of 100 units, hold it for a minute, release it."""
        status, _, body = self._call("POST", "/v1/promises", {"sku": sku, "quantity": 100, "ttl_s": 60},
                                     {"Idempotency-Key": str(uuid.uuid4())})
        holds = self.platform.state["holds"]
        with self.platform.lock:
            holds["last"] = {"status": status, "answer": json.loads(body or b"{}"), "at": time.time()}
            holds["placed" if status == 201 else "refused"] += 1
        if status == 201:
            hold_id = json.loads(body)["id"]
            if self._call("DELETE", f"/v1/promises/{hold_id}")[0] == 204:
                with self.platform.lock:
                    holds["released"] += 1

    def run(self) -> None:
        rounds = 0
        while not self.stop.is_set():
            try:
                self.pull()
                if self.capacity and rounds % 5 == 0:
                    skus = sorted({s for line in self.capacity["lines"] for b in line["buckets"][:1]
                                   for s in b["available_qty"]})
                    if skus:
                        self.hold_round(skus[rounds // 5 % len(skus)])
            except (OSError, ValueError) as exc:
                with self.platform.lock:
                    self.platform.state["pulls"]["errors"] += 1
                log.warning("platform: feed %s: %s", self.feed_url, exc)
            rounds += 1
            self.stop.wait(self.every_s)


def _page(state: dict[str, Any]) -> bytes:
    rows = "".join(
        f"<tr><td>{html.escape(line)}</td><td>{held['version']}</td><td>{html.escape(held['type'])}</td>"
        f"<td>{html.escape(str(held['data'].get('as_of', '')))}</td>"
        f"<td>{sum(b['available_s'] for ln in held['data'].get('lines', []) for b in ln['buckets']) / 3600:.1f}</td>"
        f"<td>{time.strftime('%H:%M:%S', time.localtime(held['received']))}</td></tr>"
        for line, held in sorted(state["lines"].items()))
    rejected = ", ".join(f"{html.escape(k)}: {v}" for k, v in state["rejected"].items()) or "none"
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>C2M platform (simulated)</title>
<meta http-equiv="refresh" content="5"><style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 10px;
border-bottom:1px solid #ccc;text-align:left}}</style></head><body><h1>C2M platform (simulated)</h1>
<p>Events accepted {state['accepted']}, duplicates {state['duplicates']}, older versions {state['stale']};
refused: {rejected}.</p>
<table><tr><th>line</th><th>version</th><th>type</th><th>as of</th><th>available h (horizon)</th>
<th>received</th></tr>{rows}</table>
<p>Feed pulls: {state['pulls']['200']} new, {state['pulls']['304']} unchanged (304), {state['pulls']['errors']}
errors. Holds: {state['holds']['placed']} placed, {state['holds']['released']} released,
{state['holds']['refused']} refused.</p></body></html>"""
    return body.encode("utf-8")


def make_server(platform: Platform, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            if self.path.split("?", 1)[0] != "/events":
                return self._send(404, {"error": "POST capacity events to /events"})
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                return self._send(413, {"error": "body too large"})
            status, answer = platform.receive(self.rfile.read(length), dict(self.headers.items()))
            self._send(status, answer)

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            if path == "/state":
                self._send(200, platform.snapshot())
            elif path == "/":
                self._send(200, _page(platform.snapshot()), "text/html; charset=utf-8")
            else:
                self._send(404, {"error": "try / or /state"})

        def _send(self, status: int, body: Any, ctype: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("platform http %s", format % args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090, help="port of /events, / and /state (default 8090)")
    parser.add_argument("--secret-file", action="append", default=[], metavar="FILE",
                        help="a Standard Webhooks secret (whsec_...) the events must be signed with (repeatable)")
    parser.add_argument("--feed", default=None, metavar="URL", help="the factory's dashboard, to pull /v1 from")
    parser.add_argument("--token-file", default=None, metavar="FILE", help="the feed's bearer token")
    parser.add_argument("--pull-every", type=float, default=30.0, metavar="S", help="seconds between pulls")
    parser.add_argument("--state-file", default=None, metavar="FILE", help="keep what the platform holds here")


def run(args: argparse.Namespace) -> int:
    try:
        secrets = [Path(f).read_text(encoding="utf-8").strip() for f in args.secret_file]
        token = Path(args.token_file).read_text(encoding="utf-8").strip() if args.token_file else None
        platform = Platform(secrets, Path(args.state_file) if args.state_file else None)
    except (OSError, ValueError) as exc:  # a file missing or unreadable, a secret that is not base64
        print(f"shopfloor simulate platform: {exc}", file=sys.stderr)
        return 2
    if not secrets:
        print("shopfloor simulate platform: give at least one --secret-file", file=sys.stderr)
        return 2
    server = make_server(platform, args.host, args.port)
    threading.Thread(target=server.serve_forever, name="platform-http", daemon=True).start()
    client = None
    if args.feed and token:
        client = FeedClient(platform, args.feed, token, args.pull_every)
        threading.Thread(target=client.run, name="platform-pull", daemon=True).start()
    print(f"platform simulator listening on http://{args.host}:{server.server_address[1]} (events: POST /events)",
          flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    if client is not None:
        client.stop.set()
    server.shutdown()
    return 0
