"""C2M benchmarks: the capacity model's speed, the feed under 50 concurrent clients, a line going down at the PLC
to the signed event the platform verified, and the capacity truth (bench/capacity_truth.py).

1. Model: capacity of 20 lines x 30 SKUs over 14 days of shifts, with 10 open orders and a machine down per line
   (pure code, no historian): median and worst of 7 runs.
2. Push latency: the whole system as in `make demo` (Mosquitto, PLC simulator, line simulator, agent, dashboard
   with the capacity push, platform simulator), on free loopback ports. A machine of line 1 is forced to RUNNING
   at the PLC simulator and left so for a while, then forced to FAULT; the time from that write at the PLC until
   the platform simulator holds a verified event of the line that shows it (a `machine_down` constraint).
3. Feed: 50 client threads on keep-alive connections request `/v1/capacity`: each once a second, as platform
   pollers do (revalidating with its last ETag, then without), and then as fast as they can (the throughput; the
   latency is then the queue of 50 requests). The clients run in the bench's own process on the same 2 cores.

Nothing is asserted: figures are reported against the targets (model under 1 s; feed p99 under 50 ms; PLC to
verified event p95 under 60 s, aim under 10 s; MAPE at most 10 %; 95 % of promised dates met).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import random
import secrets
import statistics
import threading
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from bench import capacity_truth, configs
from bench.dashboard import LINE, PlcForces, _start, _System
from bench.historian import percentiles
from bench.procs import BenchError, http_get, wait_until
from bench.scenarios import Workspace
from simulators.broker import free_port


@dataclass
class CapacityOptions:
    truth_days: int = 17
    truth_warmup_days: int = 3
    changes: int = 10
    gap_s: float = 15.0
    feed_clients: int = 50
    feed_s: float = 15.0
    keep: bool = False


def model_speed(runs: int = 7) -> dict[str, Any]:
    from agent.config import load
    from dashboard.kpi.capacity import Constraint, Demand, OeeBasis, line_capacity, plan_buckets
    from dashboard.kpi.shifts import NS

    cfg = load(configs.FACTORY_YAML)
    lines = [f"line-{i}" for i in range(20)]
    skus = {f"SKU-{j}": (5.0 + j * 0.1, 1500.0) for j in range(30)}
    times = []
    buckets: list[Any] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        buckets = plan_buckets(cfg.shifts, cfg.site.timezone, lines, date(2026, 12, 1), 14, [date(2026, 12, 5)],
                               [("line-3", 0, 1)], "shift")
        now = buckets[0].start_ns + 3600 * NS
        for line in lines:
            demands = [Demand(line, f"PO-{k}", "order", f"SKU-{k}", 500, 6.0, 1500) for k in range(10)]
            found = [Constraint(line, "machine_down", now, now + 1800 * NS)]
            line_capacity(line, [b for b in buckets if b.line == line], OeeBasis(0.7, "trailing_median", 40),
                          demands, found, skus, now)
        times.append(time.perf_counter() - t0)
    return {"lines": 20, "skus": 30, "days": 14, "buckets": len(buckets), "median_s": statistics.median(times),
            "max_s": max(times)}


def _with_c2m(config: Path, platform_url: str, secret_file: Path, token: str) -> None:
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data["capacity"] = {"tokens": [{"name": "bench", "sha256": hashlib.sha256(token.encode()).hexdigest()}],
                        "push": {"endpoints": [{"name": "platform", "url": f"{platform_url}/events",
                                                "secret_files": [str(secret_file)]}]}}
    config.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def _platform_state(port: int) -> dict[str, Any]:
    status, body = http_get(port, "/state")
    if status != 200:
        raise BenchError(f"platform /state answered {status}")
    return json.loads(body)  # type: ignore[no-any-return]


def _shows(state: dict[str, Any], after: float, down: bool) -> float | None:
    held = state["lines"].get(LINE)
    if not held or held["received"] < after:
        return None
    constraints = held["data"]["lines"][0]["constraints"]
    if any(c["reason"] == "machine_down" for c in constraints) != down:
        return None
    return float(held["received"])


def push_latency(system: _System, platform_port: int, opts: CapacityOptions) -> dict[str, Any]:
    forces = PlcForces(system.endpoint)
    machine = system.machines[0]
    latencies: list[float] = []
    misses = 0
    try:
        for _ in range(opts.changes):
            forces.force(LINE, machine, "RUNNING")  # a known state to go down from
            time.sleep(opts.gap_s)
            t0 = forces.force(LINE, machine, "FAULT")

            def arrived(t0: float = t0) -> float | None:
                return _shows(_platform_state(platform_port), t0, True)

            try:
                seen = wait_until(arrived, 90, "the platform to hold the change", every=0.1)
                latencies.append(seen - t0)
            except BenchError:
                misses += 1
            time.sleep(opts.gap_s)
    finally:
        with contextlib.suppress(Exception):
            forces.force(LINE, machine, "")
        forces.close()
    p = percentiles(latencies) if latencies else {}  # the same nearest-rank percentiles, here in seconds
    return {"changes": opts.changes, "seen": len(latencies), "missed": misses,
            "p50_s": p.get("p50_ms"), "p95_s": p.get("p95_ms"), "max_s": max(latencies) if latencies else None}


def feed_load(port: int, token: str, opts: CapacityOptions, revalidate: bool,
              every_s: float | None = None) -> dict[str, Any]:
    """`opts.feed_clients` clients on keep-alive connections, each asking once every `every_s` seconds (with a
    random phase), or as fast as it can (None)."""
    stop = threading.Event()
    lat: list[list[float]] = [[] for _ in range(opts.feed_clients)]
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        etag = None
        due = time.monotonic() + (random.uniform(0, every_s) if every_s else 0.0)
        while not stop.is_set():
            if every_s:
                if stop.wait(max(0.0, due - time.monotonic())):
                    break
                due += every_s
            headers = {"Authorization": f"Bearer {token}"}
            if revalidate and etag:
                headers["If-None-Match"] = etag
            t0 = time.perf_counter()
            try:
                conn.request("GET", "/v1/capacity", headers=headers)
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                with lock:
                    statuses[0] = statuses.get(0, 0) + 1
                continue
            lat[i].append((time.perf_counter() - t0) * 1000)
            etag = resp.getheader("ETag") or etag
            with lock:
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(opts.feed_clients)]
    t0 = time.monotonic()
    for th in threads:
        th.start()
    time.sleep(opts.feed_s)
    stop.set()
    for th in threads:
        th.join(35)
    elapsed = time.monotonic() - t0
    flat = [x for per in lat for x in per]
    p = percentiles(flat) if flat else {}
    return {"clients": opts.feed_clients, "revalidate": revalidate, "every_s": every_s, "requests": len(flat),
            "per_s": len(flat) / elapsed, "p50_ms": p.get("p50_ms"), "p95_ms": p.get("p95_ms"),
            "p99_ms": p.get("p99_ms"),
            "statuses": {str(k): v for k, v in sorted(statuses.items())}}


def run(opts: CapacityOptions) -> dict[str, Any]:
    out: dict[str, Any] = {"scenario": "capacity", "label": "C2M capacity, feed and push"}
    errors: dict[str, str] = {}
    try:
        out["model"] = model_speed()
    except Exception as exc:  # one part failing keeps the others' figures
        errors["model"] = f"{type(exc).__name__}: {exc}"
    with Workspace("capacity", keep=opts.keep) as ws:
        try:
            token = secrets.token_urlsafe(24)
            secret_file = ws.dir / "platform-secret"
            secret_file.write_text("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
            platform_port = free_port()
            ws.proc("platform", ["simulate", "platform", "--port", str(platform_port), "--secret-file",
                                 str(secret_file)], ready="platform simulator listening", timeout=30)
            system = _start(ws, prepare=lambda config: _with_c2m(config, f"http://127.0.0.1:{platform_port}",
                                                                secret_file, token))
            wait_until(lambda: _platform_state(platform_port)["lines"].get(LINE), 60, "the first push")
            out["push"] = push_latency(system, platform_port, opts)
            out["feed_polling"] = feed_load(system.port, token, opts, revalidate=True, every_s=1.0)
            out["feed_polling_full"] = feed_load(system.port, token, opts, revalidate=False, every_s=1.0)
            out["feed_full"] = feed_load(system.port, token, opts, revalidate=False)
            out["feed_revalidate"] = feed_load(system.port, token, opts, revalidate=True)
            system.check()
        except Exception as exc:
            errors["system"] = f"{type(exc).__name__}: {exc}"
    try:
        out["truth"] = capacity_truth.measure(days=opts.truth_days, warmup_days=opts.truth_warmup_days)
    except Exception as exc:
        errors["truth"] = f"{type(exc).__name__}: {exc}"
    if errors:
        out["errors"] = errors
    return out


def summary(r: dict[str, Any]) -> list[str]:
    """The figures, one line each, against their targets."""
    lines = []
    m = r.get("model")
    if m:
        lines.append(f"capacity model, {m['lines']} lines x {m['skus']} SKUs x {m['days']} days ({m['buckets']} "
                     f"buckets): median {m['median_s'] * 1000:.0f} ms, worst {m['max_s'] * 1000:.0f} ms "
                     "(target under 1 s)")
    p = r.get("push")
    if p and p.get("p95_s") is not None:
        lines.append(f"line down at the PLC -> signed event verified by the platform: p50 {p['p50_s']:.1f} s, "
                     f"p95 {p['p95_s']:.1f} s, worst {p['max_s']:.1f} s over {p['seen']} changes, "
                     f"{p['missed']} missed (target p95 under 60 s, aim under 10 s)")
    for key, what in (("feed_polling", "each polling once a second with its ETag"),
                      ("feed_polling_full", "each asking once a second without ETag"),
                      ("feed_full", "as fast as they can, full answers"),
                      ("feed_revalidate", "as fast as they can, revalidating with ETags")):
        f = r.get(key)
        if f and f.get("p99_ms") is not None:
            lines.append(f"/v1/capacity, {f['clients']} clients, {what}: {f['per_s']:.0f} requests/s, p50 "
                         f"{f['p50_ms']:.1f} ms, p95 {f['p95_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms; statuses "
                         f"{f['statuses']} (target p99 under 50 ms)")
    t = r.get("truth")
    if t:
        per = ", ".join(f"{line} MAPE {v['mape'] * 100:.1f} % (bias {v['bias'] * 100:+.1f} %, {v['shifts']} shifts)"
                        for line, v in t["lines"].items() if v["mape"] is not None)
        lines.append(f"capacity truth over {t['days'] - t['warmup_days']} scored days ({t['days']} simulated, "
                     f"{t['warmup_days']} of warm-up): {per} (target MAPE at most 10 %); promised completion "
                     f"dates met {t['dates_met'] * 100:.1f} %, times met {t['times_met'] * 100:.1f} % of "
                     f"{t['orders_with_promise']} orders (target 95 % of dates); orders finished a median "
                     f"{t['margin_min']['median']:.0f} min before their promised time (quartiles "
                     f"{t['margin_min']['q1']:.0f}-{t['margin_min']['q3']:.0f} min, worst {t['margin_min']['min']:.0f}"
                     f" min) and took a median {t['duration_min']['median']:.0f} min")
    for part, error in (r.get("errors") or {}).items():
        lines.append(f"{part}: failed: {error}")
    return lines
