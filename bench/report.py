"""The results: a table on the terminal, a JSON file in bench/results/, a section of docs/benchmarks.md."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench.procs import ROOT
from simulators.broker import find_mosquitto
from simulators.browser import CHROMIUM
from simulators.influxdb import find_influxd

RESULTS_DIR = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
START = "<!-- bench:results:start (rewritten by `python -m bench --record`; edit outside this section) -->"
END = "<!-- bench:results:end -->"

INTRO = """# Benchmarks

What is measured: the agent alone, as one process, fed by real parts each in its own process.

- **MQTT QoS 1 into the historian**: the line simulator floods material levels through a private Mosquitto into
  the agent (config derived from `config/factory.yaml`: its MQTT source and routes, no OPC UA, no machines).
  Throughput is rows committed per second in the SQLite historian over the steady middle of the run (first and
  last 10% left out), and every acknowledged message is checked to be in the historian (lost / duplicated).
  Latency is measured at a fixed load: each message carries `ts` = wall clock at publish, and the bench
  records when it first saw the row in the historian.
- **OPC UA value changes into the historian**: 10,000 Double tags (100 per machine) served by three PLC
  simulator processes and changing every 333 ms (about 30,000 changes/s offered) or 667 ms (about 15,000/s);
  rows per second of `process_value`, and latency from the OPC UA source timestamp to the row being visible.
- Agent CPU (% of one core, psutil) and peak resident memory (VmHWM).

InfluxDB historian (`historian: {kind: influxdb}`), each scenario against its own InfluxDB 1.x started on a free
loopback port (`simulators/influxdb.py`):

- **OPC UA into InfluxDB**: the OPC UA scenario's simulators at about 45,000 changes/s, the agent writing into
  InfluxDB; stored/offered, latency until a point can be read back, every committed point counted back (its
  own section says how).

- **Outbox drain into InfluxDB**: a real outbox holding 1,000,000 points shaped like the shop floor (process values
  of 600 series, counts, states), committed in batches of 5,000 as the agent does, drained by the agent's real
  pipeline through `InfluxHistorian`; points per second from start to empty outbox, the median of three runs,
  each into a fresh database, with every point counted back per measurement (target: 50,000/s on 2 cores). The
  pipeline runs inside the bench process, so the bench's CPU is the agent's drain.
- **Catch-up after an outage**: the PLC and line simulators at 60x speed and the agent, each its own process,
  write into InfluxDB, which is stopped for 10 minutes: the points waiting in the outbox at the end of the outage,
  the oldest one's age, and the time from the server's restart until the outbox is empty (/healthz every 0.2 s).
- **Shift OEE queries**: 30 days of synthetic history of the six machines of `config/factory.yaml` (states,
  counts every cycle, a process value every 10 s; seeded), written through `InfluxHistorian.write` (a second
  write-throughput figure), then the latency of one shift's OEE (state intervals + hourly counts of 6 machines,
  40 runs, target p95 below 300 ms), of every shift's OEE over the 30 days from one read, and of one shift's OEE
  in the SQLite historian filled with the same points.

The e-board dashboard (its own section, which also says how it is measured): latency from a machine's state
change at the PLC simulator to the tile's update in headless Chromium (target p95 under 2 s), 50 live streams held
with the dashboard's memory sampled, and the board API's latency under load while they are held.

Timing targets are reported, never asserted. Latencies are upper bounds: a row is seen at the first poll after
its commit, so each figure can overstate the truth by up to the stated polling resolution. On a small machine the
simulators, the broker and the bench's own polling share the CPU with the agent: their CPU is listed too.

How to reproduce: `make bench` (or `.venv/bin/python -m bench`); `--quick` for a short smoke run,
`--only mqtt|opcua|opcua-influx|influx|dashboard`, `--seconds N`, `--outage-seconds N`, `--profile` for a py-spy profile of the agent under MQTT and OPC UA load,
`--record` to rewrite the results section below. Raw figures of every run go to `bench/results/<UTC time>.json`.
"""


OPCUA_INFLUX_METHOD = (
    "The OPC UA scenario's 10,000 Doubles (three PLC simulator processes, every tag changing every 222 ms: about "
    "45,000 changes/s asked; what the simulators really wrote is counted by themselves) into the agent with the "
    "InfluxDB historian (`historian: {kind: influxdb}`, its defaults: 4 writes in flight, 5,000 gzipped lines a "
    "request) and a real InfluxDB 1.x in a fresh database on loopback. **Stored/s**: points InfluxDB confirmed "
    "over the window (the agent's counter), stored/offered against the simulators' own rate. **Latency**: t00 of "
    "20 machines read back from InfluxDB every 0.25 s (one `SELECT ... WHERE time > cursor GROUP BY machine`); "
    "latency = the poll that first returned a point minus its OPC UA source timestamp. **Lost**: after the window "
    "the simulators stop, the agent empties its outbox, and every point it committed must be in InfluxDB; the "
    "changes of the window are also counted back per simulator. Targets: stored/offered 1.0, p99 under 1 s.")

METHODS = {"opcua-influx": OPCUA_INFLUX_METHOD}


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM and the versions that matter for these figures."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor()
    mosquitto = "not installed"
    binary = find_mosquitto()
    if binary:
        try:
            out = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=5, check=False)
            mosquitto = (out.stdout or out.stderr).splitlines()[0].replace("mosquitto version ", "")
        except (OSError, IndexError, subprocess.TimeoutExpired):
            mosquitto = "unknown"

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    influxdb = "not installed"
    influxd = find_influxd()
    if influxd:
        try:
            out = subprocess.run([influxd, "version"], capture_output=True, text=True, timeout=5, check=False)
            influxdb = out.stdout.split()[1].lstrip("v")  # "InfluxDB v1.6.7~rc0 (git: ...)"
        except (OSError, IndexError, subprocess.TimeoutExpired):
            influxdb = "unknown"

    chromium = "not installed"
    browser = next((b for b in CHROMIUM if Path(b).exists()), None) or shutil.which("chromium")
    if browser:
        try:
            out = subprocess.run([browser, "--version"], capture_output=True, text=True, timeout=10, check=False)
            chromium = out.stdout.split()[1]  # "Chromium 156.0.8078.108 built on Debian ..."
        except (OSError, IndexError, subprocess.TimeoutExpired):
            chromium = "unknown"

    return {"cpu": cpu or "unknown", "cores": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "os": platform.platform(), "python": platform.python_version(), "asyncua": version("asyncua"),
            "paho_mqtt": version("paho-mqtt"), "mosquitto": mosquitto, "influxdb": influxdb,
            "waitress": version("waitress"), "flask": version("flask"), "chromium": chromium}


def _fmt(value: Any, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        text = f"{value:,.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:,.1f}"
        return text + unit
    return str(value)


COLUMNS = ("scenario", "offered/s", "stored/s", "p50 ms", "p99 ms", "max ms", "agent CPU%", "peak RSS MB", "lost",
           "duplicated")


def rows(results: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in results:
        if "error" in r:
            out.append([r.get("label", r.get("scenario", "?")), "error: " + str(r["error"])[:60]] + [""] * 8)
            continue
        lat = r.get("latency", {})
        worst = _fmt(lat.get("max_ms"))
        if r.get("series_unseen_after_grace"):
            # Rows of the window were still not visible: the worst latency is at least how far behind it was.
            worst = ">" + _fmt(1000.0 * max(r.get("behind_s_at_window_end", 0), r.get("grace_s", 0)))
        out.append([r["label"], _fmt(r.get("offered_per_s")), _fmt(r.get("stored_per_s")), _fmt(lat.get("p50_ms")),
                    _fmt(lat.get("p99_ms")), worst, _fmt(r.get("agent_cpu_pct")),
                    _fmt(r.get("agent_peak_rss_mb")), _fmt(r.get("lost")), _fmt(r.get("duplicated"))])
    return out


def _text_table(columns: tuple[str, ...], body: list[list[str]]) -> str:
    widths = [max(len(c), *(len(row[i]) for row in body)) if body else len(c) for i, c in enumerate(columns)]

    def line(cells: tuple[str, ...] | list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(columns), "  ".join("-" * w for w in widths), *(line(row) for row in body)])


def _markdown(columns: tuple[str, ...], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in
                                                              range(len(columns))) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


def agent_results(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results the main table shows: every scenario but the dashboard's, which has tables of its own."""
    return [r for r in results if r.get("scenario") not in ("dashboard", "capacity")]


def table(results: list[dict[str, Any]]) -> str:
    return _text_table(COLUMNS, rows(agent_results(results)))


def markdown_table(results: list[dict[str, Any]]) -> str:
    return _markdown(COLUMNS, rows(agent_results(results)))


QUERY_COLUMNS = ("query", "historian", "runs", "p50 ms", "p95 ms", "max ms", "target p95 ms")


def query_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """One row per timed historian query (the InfluxDB shift-OEE scenario)."""
    return [[q["query"], q["historian"], _fmt(q["runs"]), _fmt(q["p50_ms"]), _fmt(q["p95_ms"]), _fmt(q["max_ms"]),
             _fmt(q.get("target_p95_ms"))]
            for r in results if "error" not in r for q in r.get("queries", [])]


def query_table(results: list[dict[str, Any]]) -> str:
    return _text_table(QUERY_COLUMNS, query_rows(results))


def _influx_note(r: dict[str, Any]) -> str:
    """What the table leaves out of an InfluxDB scenario."""
    if r["scenario"] == "influx_drain":
        runs, cost = r["runs"], r["cost"]
        mid = sorted(runs, key=lambda run: run["points_per_s"])[len(runs) // 2]
        mix = ", ".join(f"{n:,} {m}" for m, n in sorted(r["mix"].items(), key=lambda kv: -kv[1]))
        met = "met" if r["stored_per_s"] >= r["target_per_s"] else "missed"
        encode_s = mid["in_write_s"] - mid["in_post_s"]
        gzip_s = cost["join_gzip_us_per_point"] * r["points"] / 1e6
        rates = ", ".join(f"{run['points_per_s']:,}" for run in runs)
        in_flight = r.get("settings", {}).get("writes_in_flight", 1)
        if in_flight > 1:  # with writes in flight, time in writes is summed over the writer threads
            where = (f"Writes ran {in_flight} at a time: over the median run's {mid['seconds']} s, the writer "
                     f"threads spent {mid['in_post_s']} s in {mid['requests']} requests and {encode_s:.2f} s "
                     f"encoding lines, summed over the threads (about {gzip_s:.2f} s of it join + gzip).")
        else:
            where = (f"Where the median run's {mid['seconds']} s went: {mid['in_post_s']} s in {mid['requests']} "
                     f"requests (about {gzip_s:.2f} s of it join + gzip, the rest the HTTP round trip: InfluxDB "
                     f"parsing and storing), {encode_s:.2f} s encoding lines, "
                     f"{mid['seconds'] - mid['in_write_s']:.2f} s in the outbox (claim, decoding batches past the "
                     f"500,000-point in-memory handoff, settle).")
        return (f"{r['points']:,} points ({mix}) committed to a real outbox in batches of 5,000, drained by the "
                f"agent's pipeline (claims of 20,000 points, requests of 5,000 gzipped lines) into a fresh "
                f"database per run: {rates} points/s, median "
                f"{r['stored_per_s']:,}/s (target {r['target_per_s']:,}/s: {met}); bench process (the pipeline) "
                f"{mid['bench_cpu_pct']:.0f}% CPU, influxd {mid['influxd_cpu_pct']:.0f}%. {where} Alone, line encoding "
                f"costs {cost['encode_us_per_point']} us/point and join + gzip {cost['join_gzip_us_per_point']} "
                f"us/point ({cost['bytes_per_line']} bytes a line, gzip {cost['gzip_ratio']}x). Every point was "
                f"counted back per measurement; dead letters {sum(run['dead_letters'] for run in runs)}.")
    if r["scenario"] == "influx_outage":
        speed = r["settings"]["speed"]
        caught = (f"the outbox was empty {r['catch_up_s']} s after the restart" if r["caught_up"]
                  else f"the outbox was still not empty {r['catch_up_s']} s after the restart")
        first = "never" if r["first_write_s"] is None else f"{r['first_write_s']} s after the restart"
        return (f"PLC and line simulators at --speed {speed:g} (`make demo` runs at speed 1: {speed:g}x fewer "
                f"points) made {r['offered_per_s']:,} points/s; InfluxDB was stopped for {r['outage_s']} s: "
                f"{r['waiting_points']:,} points waited in the outbox at the end, the oldest "
                f"{r['oldest_age_s']:,} s old. InfluxDB answered again {r['restart_s']} s after being started; "
                f"the agent's first write came {first} (its retry backoff: full jitter, at most 10 s), and "
                f"{caught} (the catch-up time), {r['written_during_catch_up']:,} points written meanwhile; "
                f"stored/s above is those over the {r['drain_s']} s from the first write to the empty outbox "
                f"(polling every 0.2 s). Loss is not counted here: tests/e2e/test_influx_outage.py checks the "
                f"same outage against the simulators' ground truth.")
    mix = ", ".join(f"{n:,} {m}" for m, n in sorted(r["mix"].items(), key=lambda kv: -kv[1]))
    sample = r["sample_shift"]
    return (f"{r['points']:,} points ({mix}; about {r['states_per_machine_day']} state changes per machine and "
            f"day, the three counters every cycle of ~24-32 s while RUNNING, a process value every 10 s; "
            f"breaks and days without a shift are PLANNED_STOP) written through `InfluxHistorian.write` in calls "
            f"of 50,000 points: {r['write_s']} s, {r['stored_per_s']:,} points/s (bench "
            f"{r['agent_cpu_pct']:.0f}% CPU, influxd {r['cpu_pct']['influxd']:.0f}%); the same points into "
            f"SQLite: {r['sqlite_write_s']} s ({r['sqlite_per_s']:,}/s). Queries: one shift's OEE = "
            f"`state_intervals` + `count_sums(3600 s)` of the shift for all 6 machines, then the OEE per machine, "
            f"cycling over the {r['shifts']} shifts of `config/factory.yaml` in the period; every shift's OEE = one "
            f"`state_intervals` and one `count_sums` over the whole period, split per shift in Python. The OEE is "
            f"the bench's simple one (availability = RUNNING / (shift - PLANNED_STOP), performance = ideal cycle "
            f"x total / RUNNING, quality = good / total); the reads timed are the same ones the ISO 22400 engine (`dashboard/kpi/`) takes as input. "
            f"Mean OEE of the {sample['shift']} shift of {sample['start'][:10]}: {sample['mean_oee']:.3f}, of "
            f"the period {r['period_mean_oee']:.3f}; InfluxDB and SQLite give the same figures: "
            f"{_fmt(r['backends_agree'])}.")


def _opcua_note(r: dict[str, Any]) -> str:
    """The figures of an OPC UA run the table leaves out, whatever the historian."""
    lat = r.get("latency", {})
    sample = r.get("settings", {}).get("latency_sample", "t00 of every machine")
    ratio = r.get("stored_vs_offered")
    return (f"asked {r['asked_per_s']:,}/s, the simulators wrote {r['offered_per_s']:,}/s "
            f"({r['sim_late_rounds']} late rounds), stored/offered {'-' if ratio is None else f'{ratio:.3f}'}; "
            f"{r['simulators']} simulators; agent connected in {r['connect_s']} s; "
            f"{lat.get('samples', 0):,} latencies ({sample}), p95 "
            f"{_fmt(lat.get('p95_ms'))} ms, polling resolution {lat.get('resolution_ms')} ms "
            f"(median gap {lat.get('median_poll_gap_ms')} ms); at the end of the window the historian "
            f"was {r['behind_s_at_window_end']} s behind the source and "
            f"{r['outbox_points_at_end']:,} points waited in the outbox.")


def _opcua_influx_note(r: dict[str, Any]) -> str:
    """How the InfluxDB run counted back what it stored, and what its latency polling cost."""
    c, poll = r["agent_counters"], r["latency_poll"]
    replay = poll.get("replayed", {})
    return (f"Stored/s is the agent's `shopfloor_points_out_total{{sink=\"historian\"}}` (points InfluxDB "
            f"confirmed) over the window; points stamped in the window and found in InfluxDB afterwards: "
            f"{r['stamped_in_window_per_s']:,}/s; the agent received {r['received_per_s']:,} changes/s, its OPC UA "
            f"sources reconnected {r.get('source_reconnects_in_window', 0)} times in the window. Then the "
            f"simulators stopped and the outbox was empty {r['drain_after_stop_s']} s later: of the "
            f"{r['offered_in_window']:,} changes the simulators wrote in the window (their own counters), InfluxDB "
            f"held {r['influx_in_window']:,} ({r['not_stored_in_window']:,} never stored: replaced at the OPC UA "
            f"server before the subscription took them, queue size 1, or dropped); the agent had committed "
            f"{c['points_in']:,} points to its outbox and counted {c['confirmed']:,} confirmed (with its source "
            f"heartbeats), InfluxDB held {r['influx_points_total']:,} "
            f"({', '.join(f'{n:,} {m}' for m, n in r.get('influx_points', {}).items())}; lost = committed but not "
            f"in InfluxDB: {r['lost']:,}, confirmed but not in InfluxDB: {r.get('confirmed_not_in_influx', 0):,}); "
            f"dead letters {c['dead_letters']}, write errors {c['write_errors']}, dropped at the outbox quota {c['dropped']}. "
            f"Latency polling: {poll['queries']} queries ({poll['points_read']:,} points read), "
            f"{poll['query_ms_mean']} ms each; replayed after the simulators stopped, a poll took "
            f"{replay.get('ms_per_query', '-')} ms and {replay.get('influxd_cpu_ms_per_query', '-')} ms of "
            f"influxd CPU ({replay.get('influxd_cpu_pct_at_poll_rate', '-')}% of one core at the poll rate).")


def notes(results: list[dict[str, Any]]) -> list[str]:
    """One line per scenario with what the table leaves out (settings, other processes' CPU, resolution)."""
    out = []
    for r in agent_results(results):
        if "error" in r:
            continue
        cpu = ", ".join(f"{k} {v:.0f}%" for k, v in r.get("cpu_pct", {}).items() if k != "agent")
        lat = r.get("latency", {})
        parts = [f"**{r['label']}**:"]
        if r["scenario"].startswith("influx_"):
            parts.append(_influx_note(r))
        elif r["scenario"].startswith("mqtt_throughput"):
            parts.append(f"{r['acked']:,} messages acknowledged by the broker, {r['rows']:,} rows stored, "
                         f"{r['redelivered']:,} redelivered; ingest took {r['ingest_s']} s; publisher(s) "
                         f"{r['publishers']} at {r['offered_per_s']:,}/s, backlog in the broker when they stopped "
                         f"{r['backlog_at_publisher_stop']:,} (agent saturated: {_fmt(r['saturated'])}).")
        elif r["scenario"].startswith("mqtt_latency"):
            parts.append(f"asked {r['asked_per_s']:,.0f}/s, the publisher achieved {r['offered_per_s']:,}/s; "
                         f"{lat.get('samples', 0):,} latencies, p95 {_fmt(lat.get('p95_ms'))} ms, polling "
                         f"resolution {lat.get('resolution_ms')} ms (median gap {lat.get('median_poll_gap_ms')} ms); "
                         f"{r['acked']:,} acknowledged, {r['rows']:,} stored, {r['redelivered']:,} redelivered.")
        else:
            parts.append(_opcua_note(r))
            if r["scenario"].startswith("opcua_influx"):
                parts.append(_opcua_influx_note(r))
        parts.append(f"Settings: {', '.join(f'{k} {v}' for k, v in r.get('settings', {}).items())}.")
        if cpu:
            parts.append(f"CPU (% of one core): {cpu}.")
        out.append(" ".join(parts))
    return out


def profile_text(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in results:
        prof = r.get("profile")
        if not prof:
            continue
        out.append(f"Agent profile, **{r['label']}** (py-spy, {prof.get('seconds')} s at "
                   f"{prof.get('rate_hz')} Hz, {prof.get('when', '')}):")
        if "error" in prof:
            out.append(f"  {prof['error']}")
            continue
        out.append("")
        out.append(f"The GIL was held {prof.get('gil_held_pct')}% of the time; shares below are of GIL-holding samples.")
        out.append("")
        for title, key in (("threads holding the GIL", "threads"), ("self time", "self"),
                           ("inclusive time, the agent's own functions", "inclusive")):
            out.append(f"{title}:")
            out.append("")
            out += [f"- {row['pct']:5.1f}%  ({row['cpu_ms_per_s']:.0f} ms/s)  `{row['function']}`"
                    for row in prof[key][:12]]
            out.append("")
    return out


# --- the dashboard ------------------------------------------------------------------------------------------

DASHBOARD_METHOD = (
    "One system at `make demo` speed 1 on a simulated Monday 09:00 (day shift): Mosquitto, the PLC simulator, the "
    "line simulator, the agent (SQLite historian) and the dashboard (waitress), each its own process on free "
    "loopback ports. **PLC -> DOM**: the line page in headless Chromium with a MutationObserver stamping every "
    "change of a tile's `data-state` (`performance.timeOrigin + performance.now()`, the bench's and the browser's "
    "wall clocks compared before and after); the bench forces FAULT and RUNNING in turn on the line's machines at "
    "the PLC simulator (its `Force` node, one OPC UA session held open, the time taken just before each write) and "
    "matches each write with the tile's first change to that state. The path: the simulator's 100 ms tick, the "
    "OPC UA subscription (100 ms publishing), the agent's outbox and historian commit, its live publisher (200 ms "
    "coalescing), Mosquitto, the dashboard's hub (250 ms coalescing), the SSE stream, board.js. The same changes "
    "are also timed at the agent's live MQTT topic and at a bench SSE client on the line, to split the latency. "
    "**Streams**: plain http.client clients, a thread each, hold `/api/v1/stream` (most on the line, some on the "
    "overview) while the dashboard's RSS is sampled (psutil); the slope is a least-squares fit. **Board API**: "
    "with the streams still held, keep-alive clients in the bench process request `/api/v1/lines/line-1` and "
    "`/api/v1/overview` in turn, as fast as answers come. Timing targets are reported, never asserted.")

LATENCY_COLUMNS = ("PLC change -> DOM", "changes", "matched", "missed", "p50 ms", "p95 ms", "max ms",
                   "target p95 ms", "live topic ms", "SSE ms", "DOM ms")
STREAM_COLUMNS = ("streams held", "clients", "held s", "RSS start MB", "RSS end MB", "slope MB/h",
                  "2nd half MB/h", "dashboard CPU%",
                  "line: events/client min / median", "overview: min / median", "longest silence s",
                  "streams (health)")
API_COLUMNS = ("board API under load", "clients", "seconds", "requests/s", "p50 ms", "p99 ms", "max ms", "errors",
               "streams held")


def dashboard_results(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in results if r.get("scenario") == "dashboard"]


def _dashboard_rows(r: dict[str, Any]) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    errors = r.get("errors", {})
    if "error" in r:
        errors = {"latency": r["error"], "streams": r["error"]}
    lat, st, api = r.get("latency"), r.get("streams"), r.get("api")
    if lat:
        stage = lat["median_stage_ms"]
        a = [["line-1 machines", _fmt(lat["changes"]), _fmt(lat["matched"]), _fmt(lat["missed"]), _fmt(lat["p50_ms"]),
              _fmt(lat["p95_ms"]), _fmt(lat["max_ms"]), _fmt(lat["target_p95_ms"]),
              _fmt(stage["live_topic_ms"]), _fmt(stage["sse_ms"]), _fmt(stage["dom_ms"])]]
    else:
        a = [["line-1 machines", "error: " + str(errors.get("latency", "not run"))[:80], *[""] * (len(LATENCY_COLUMNS) - 2)]]
    if st:
        ev = st["events"]

        def spread(kind: str) -> str:
            e = ev.get(kind)
            return f"{_fmt(e['events_min'])} / {_fmt(e['events_median'])}" if e else "-"

        b = [[f"{st['scopes']['line']} line + {st['scopes']['overview']} overview", _fmt(st["clients"]),
              _fmt(st["held_s"]), _fmt(st["rss_start_mb"]), _fmt(st["rss_end_mb"]), _fmt(st["rss_slope_mb_per_h"]),
              _fmt(st.get("rss_slope_second_half_mb_per_h")), _fmt(st["dashboard_cpu_pct"]), spread("line"), spread("overview"), _fmt(ev["max_silence_s"]),
              _fmt(st["health_streams_held"])]]
    else:
        b = [["-", "error: " + str(errors.get("streams", "not run"))[:80], *[""] * (len(STREAM_COLUMNS) - 2)]]
    if api:
        c = [["line board + overview", _fmt(api["clients"]), _fmt(api["seconds"]), _fmt(api["requests_per_s"]),
              _fmt(api["p50_ms"]), _fmt(api["p99_ms"]), _fmt(api["max_ms"]), _fmt(api["errors"]),
              _fmt(api["streams_held"])]]
    else:
        c = [["line board + overview", "error: " + str(errors.get("streams", "not run"))[:80], *[""] * (len(API_COLUMNS) - 2)]]
    return a, b, c


def dashboard_tables(results: list[dict[str, Any]], markdown: bool = False) -> list[str]:
    """The dashboard's three tables, one per part, as text (or Markdown)."""
    out = []
    render = _markdown if markdown else _text_table
    for r in dashboard_results(results):
        for columns, body in zip((LATENCY_COLUMNS, STREAM_COLUMNS, API_COLUMNS), _dashboard_rows(r), strict=True):
            out += [render(columns, body), ""]
    return out[:-1]


def _cpu(cpu: dict[str, float]) -> str:
    named = ", ".join(f"{k} {v:.0f}%" for k, v in cpu.items() if k != "machine_total_pct_of_all_cores")
    return f"{named}; the whole machine {cpu.get('machine_total_pct_of_all_cores', 0):.0f}% of all cores"


def dashboard_notes(results: list[dict[str, Any]]) -> list[str]:
    """What the dashboard tables leave out, one line per part."""
    out = []
    for r in dashboard_results(results):
        s = r.get("settings", {})
        if "error" in r:
            out.append(f"**Dashboard**: did not run: {r['error']}")
            continue
        lat, st, api = r.get("latency"), r.get("streams"), r.get("api")
        if lat:
            met = "met" if lat["p95_ms"] <= lat["target_p95_ms"] and not lat["missed"] else "missed"
            clock = lat["clock_offset_ms"]
            out.append(
                f"**PLC change -> DOM**: {lat['changes']} forced changes (FAULT and RUNNING in turn on "
                f"{', '.join(sorted(lat['first_states']))}, one every {s.get('gap_s')} s, seeded), "
                f"{lat['matched']} seen on the page, {lat['missed']} missed: p50 {_fmt(lat['p50_ms'])} ms, p95 "
                f"{_fmt(lat['p95_ms'])} ms, max {_fmt(lat['max_ms'])} ms (target p95 under "
                f"{lat['target_p95_ms']:,.0f} ms: {met}). Medians along the path: the agent's live MQTT topic "
                f"{_fmt(lat['median_stage_ms']['live_topic_ms'])} ms after the write, the line's SSE patch "
                f"{_fmt(lat['median_stage_ms']['sse_ms'])} ms, the tile {_fmt(lat['median_stage_ms']['dom_ms'])} ms "
                f"(missed at the topic {lat['live_topic_missed']}, at the SSE client {lat['sse_missed']}). Browser "
                f"clock minus bench clock {clock['before']} ms before, {clock['after']} ms after (+-"
                f"{clock['uncertainty']} ms); the page showed every machine live {lat['page_ready_s']} s after "
                f"loading. CPU (% of one core) meanwhile: {_cpu(lat['cpu_pct'])}.")
        if st:
            ev = st["events"]
            scopes = ", ".join(f"{kind} clients {ev[kind]['patches_min']}-{_fmt(ev[kind]['patches_median'])} patches"
                               for kind in ("line", "overview") if kind in ev)
            out.append(
                f"**Streams held**: {st['clients']} clients ({st['scopes']['line']} on line-1, "
                f"{st['scopes']['overview']} on the overview) had their first snapshot within "
                f"{st['all_connected_s']} s (median {_fmt(st['connect_p50_ms'])} ms). Dashboard RSS "
                f"{st['rss_before_mb']} MB before them, {st['rss_start_mb']} MB once all were held "
                f"(about {st['per_stream_kb']} KB a stream), {st['rss_end_mb']} MB after {st['held_s']} s (max "
                f"{st['rss_max_mb']} MB, {len(st['rss_samples'])} samples every {s.get('sample_every_s')} s, least-squares "
                f"slope {_fmt(st['rss_slope_mb_per_h'])} MB/h over the hold, "
                f"{_fmt(st.get('rss_slope_second_half_mb_per_h'))} MB/h over its second half); {api['rss_end_mb'] if api else '-'} MB after the API load, "
                f"{st['rss_after_close_mb']} MB after the streams closed; peak (VmHWM) "
                f"{r.get('dashboard_peak_rss_mb')} MB. Per client over the hold (min-median): {scopes}; heartbeats "
                f"{ev['heartbeats_min']}-{_fmt(ev['heartbeats_median'])} (sent only when 3 s pass without a patch); "
                f"longest silence of any client {ev['max_silence_s']} s, {ev['silent_clients']} silent clients, "
                f"{ev['snapshots_after_first']} snapshots re-sent; {st['closed_by_server']} closed by the server, "
                f"errors: {', '.join(st['errors']) or 'none'}. /api/v1/health: {st['health_streams_held']} streams "
                f"held, {st['health_streams_end']} at the end of the hold, {st['health_streams_after_close']} after "
                f"the clients closed; {st['rebuilds']:,} board rebuilds and {st['history_reads']:,} historian reads "
                f"by then. CPU over the hold: {_cpu(st['cpu_pct'])}.")
        if api:
            paths = "; ".join(f"`{p}` {v['requests']:,} requests, p50 {_fmt(v['p50_ms'])} ms, p99 "
                              f"{_fmt(v['p99_ms'])} ms" for p, v in api["per_path"].items())
            during = api["stream_events_during"]
            out.append(
                f"**Board API under load**: {api['clients']} keep-alive clients for {api['seconds']} s while "
                f"{api['streams_held']} streams were held: {api['requests']:,} requests ({paths}), "
                f"{api['kb_per_request']} KB an answer, {api['errors']} errors"
                f"{' (' + '; '.join(api['error_examples']) + ')' if api['error_examples'] else ''}. The streams "
                f"meanwhile: at least {during['events_min']} events per client, longest silence "
                f"{during['max_silence_s']} s. The load generator runs in the bench process on the same 2 cores; "
                f"CPU: {_cpu(api['cpu_pct'])}.")
        kiosk = r.get("kiosk")
        if kiosk:
            out.append(
                f"**Kiosk (a TV left on)**: `/kiosk` in headless Chromium rotating through the lines every "
                f"{kiosk['rotate_s']} s for {kiosk['seconds']} s ({kiosk['rotations']} rotations, live updates "
                f"throughout), sampled {kiosk['samples']} times after a forced GC, from 30 s on: JS heap "
                f"{kiosk['heap_mb_first']} MB -> {kiosk['heap_mb_last']} MB (max {kiosk['heap_mb_max']} MB, slope "
                f"{_fmt(kiosk['heap_slope_mb_per_h'])} MB/h), DOM nodes {kiosk['nodes_min']}-{kiosk['nodes_max']}, "
                f"event listeners at most {kiosk['listeners_max']}, documents at most {kiosk['documents_max']}. "
                "The page also reloads itself every dashboard.kiosk.reload_h hours (6).")
        errors = r.get("errors")
        if errors:
            out.append("**Failed parts**: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
        warnings = r.get("log_warnings") or []
        out.append(f"Dashboard log: {len(warnings)} warning/error lines" + (": " + " | ".join(
            f"`{w}`" for w in warnings[:3]) if warnings else "") + f". System up in {r.get('startup_s')} s; load average (1, 5, 15 min) "
                   f"{', '.join(map(str, r.get('load_average_before', [])))} before the run, "
                   f"{', '.join(map(str, r.get('load_average_after', [])))} after it. "
                   f"Settings: {', '.join(f'{k} {v}' for k, v in s.items())}.")
    return out


def _dashboard_section(results: list[dict[str, Any]], info: dict[str, Any], argv: list[str],
                       when: datetime) -> list[str]:
    return [_start("dashboard"), "", f"## Dashboard results ({when.strftime('%Y-%m-%d %H:%M')} UTC)", "",
            DASHBOARD_METHOD, "",
            f"Command: `python -m bench{''.join(' ' + a for a in argv)}`", "",
            f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB RAM; {info['os']}; "
            f"Python {info['python']}, waitress {info.get('waitress')}, Flask {info.get('flask')}, Chromium "
            f"{info.get('chromium')}, asyncua {info['asyncua']}, paho-mqtt {info['paho_mqtt']}, Mosquitto "
            f"{info['mosquitto']}.", "",
            *dashboard_tables(results, markdown=True), "",
            *(f"- {line}" for line in dashboard_notes(results)), "", _end("dashboard")]


def save_json(results: list[dict[str, Any]], info: dict[str, Any], argv: list[str], when: datetime) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{when.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps({"time": when.isoformat(), "argv": argv, "machine": info, "results": results},
                               indent=2, default=str) + "\n", encoding="utf-8")
    return path


def _section(marker: str, title: str, results: list[dict[str, Any]], info: dict[str, Any], argv: list[str],
             when: datetime, method: str | None = None) -> list[str]:
    section = [_start(marker), "", f"## {title} ({when.strftime('%Y-%m-%d %H:%M')} UTC)", "",
               *([method, ""] if method else []),
               f"Command: `python -m bench{''.join(' ' + a for a in argv)}`", "",
               f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB RAM; {info['os']}; "
               f"Python {info['python']}, asyncua {info['asyncua']}, paho-mqtt {info['paho_mqtt']}, "
               f"Mosquitto {info['mosquitto']}, InfluxDB {info.get('influxdb', 'not recorded')}.", "",
               markdown_table(results), ""]
    if query_rows(results):
        section += [_markdown(QUERY_COLUMNS, query_rows(results)), ""]
    section += [f"- {line}" for line in notes(results)]
    prof = profile_text(results)
    if prof:
        section += ["", *prof]
    return section + ["", _end(marker)]


def _start(marker: str) -> str:
    return START if marker == "results" else f"<!-- bench:{marker}:start (rewritten by `python -m bench --record`) -->"


def _end(marker: str) -> str:
    return END if marker == "results" else f"<!-- bench:{marker}:end -->"


def capacity_lines(results: list[dict[str, Any]]) -> list[str]:
    from bench.capacity import summary

    return [line for r in results if r.get("scenario") == "capacity" for line in summary(r)]


def _capacity_section(results: list[dict[str, Any]], info: dict[str, Any], argv: list[str],
                      when: datetime) -> list[str]:
    from bench.capacity import __doc__ as method

    return [_start("capacity"), "", f"## C2M results ({when.strftime('%Y-%m-%d %H:%M')} UTC)", "",
            (method or "").split("\n\n", 1)[1].strip(), "",
            f"Command: `python -m bench{''.join(' ' + a for a in argv)}`", "",
            f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB RAM; {info['os']}; "
            f"Python {info['python']}.", "",
            *(f"- {line}" for line in capacity_lines(results)), "", _end("capacity")]


def record(results: list[dict[str, Any]], info: dict[str, Any], argv: list[str], when: datetime) -> Path:
    """Rewrite the results sections of docs/benchmarks.md that this run has figures for (the agent's MQTT and
    OPC UA scenarios; the InfluxDB ones; the dashboard's), creating the file with its intro if missing. A run
    with `--only` leaves the other sections as they were."""
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else INTRO + "\n"
    agent = agent_results(results)
    groups = [("results", "Results", [r for r in agent if not r.get("scenario", "").startswith(("influx",
                                                                                               "opcua_influx"))]),
              ("opcua-influx", "OPC UA into InfluxDB results",
               [r for r in agent if r.get("scenario", "").startswith("opcua_influx")]),
              ("influx", "InfluxDB results", [r for r in agent if r.get("scenario", "").startswith("influx")]),
              ("dashboard", "Dashboard results", dashboard_results(results)),
              ("capacity", "C2M results", [r for r in results if r.get("scenario") == "capacity"])]
    for marker, title, group in groups:
        if not group:
            continue
        lines = (_dashboard_section(group, info, argv, when) if marker == "dashboard"
                 else _capacity_section(group, info, argv, when) if marker == "capacity"
                 else _section(marker, title, group, info, argv, when, METHODS.get(marker)))
        section = "\n".join(lines)
        head_marker = _start(marker).split(" (")[0]  # "<!-- bench:<marker>:start", without the note after it
        if head_marker in text and _end(marker) in text:
            head = text[:text.index(head_marker)]
            tail = text[text.index(_end(marker)) + len(_end(marker)):]
            text = head + section + tail
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text, encoding="utf-8")
    return DOC


def now_utc() -> datetime:
    return datetime.now(UTC)
