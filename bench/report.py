"""The results: a table on the terminal, a JSON file in bench/results/, a section of docs/benchmarks.md."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench.procs import ROOT
from simulators.broker import find_mosquitto

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

Timing targets are reported, never asserted. Latencies are upper bounds: a row is seen at the first poll after
its commit, so each figure can overstate the truth by up to the stated polling resolution. On a small machine the
simulators, the broker and the bench's own polling share the CPU with the agent: their CPU is listed too.

How to reproduce: `make bench` (or `.venv/bin/python -m bench`); `--quick` for a short smoke run,
`--only mqtt|opcua`, `--seconds N`, `--profile` for a py-spy profile of the agent under MQTT and OPC UA load,
`--record` to rewrite the results section below. Raw figures of every run go to `bench/results/<UTC time>.json`.
"""


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

    return {"cpu": cpu or "unknown", "cores": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "os": platform.platform(), "python": platform.python_version(), "asyncua": version("asyncua"),
            "paho_mqtt": version("paho-mqtt"), "mosquitto": mosquitto}


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


def table(results: list[dict[str, Any]]) -> str:
    body = rows(results)
    widths = [max(len(c), *(len(row[i]) for row in body)) if body else len(c) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(COLUMNS, widths,
                                                                                          strict=True)))]
    lines.append("  ".join("-" * w for w in widths))
    for row in body:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                                  strict=True))))
    return "\n".join(lines)


def markdown_table(results: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in
                                                              range(len(COLUMNS))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results)]
    return "\n".join(lines)


def notes(results: list[dict[str, Any]]) -> list[str]:
    """One line per scenario with what the table leaves out (settings, other processes' CPU, resolution)."""
    out = []
    for r in results:
        if "error" in r:
            continue
        cpu = ", ".join(f"{k} {v:.0f}%" for k, v in r.get("cpu_pct", {}).items() if k != "agent")
        lat = r.get("latency", {})
        parts = [f"**{r['label']}**:"]
        if r["scenario"] == "mqtt_throughput":
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
            ratio = r.get("stored_vs_offered")
            parts.append(f"asked {r['asked_per_s']:,}/s, the simulators wrote {r['offered_per_s']:,}/s "
                         f"({r['sim_late_rounds']} late rounds), stored/offered {_fmt(ratio)}; "
                         f"{r['simulators']} simulators; agent connected in {r['connect_s']} s; "
                         f"{lat.get('samples', 0):,} latencies (t00 of every machine), p95 "
                         f"{_fmt(lat.get('p95_ms'))} ms, polling resolution {lat.get('resolution_ms')} ms "
                         f"(median gap {lat.get('median_poll_gap_ms')} ms); at the end of the window the historian "
                         f"was {r['behind_s_at_window_end']} s behind the source and "
                         f"{r['outbox_points_at_end']:,} points waited in the outbox.")
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


def save_json(results: list[dict[str, Any]], info: dict[str, Any], argv: list[str], when: datetime) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{when.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps({"time": when.isoformat(), "argv": argv, "machine": info, "results": results},
                               indent=2, default=str) + "\n", encoding="utf-8")
    return path


def record(results: list[dict[str, Any]], info: dict[str, Any], argv: list[str], when: datetime) -> Path:
    """Rewrite the results section of docs/benchmarks.md (creating the file with its intro if missing)."""
    section = [START, "", f"## Results ({when.strftime('%Y-%m-%d %H:%M')} UTC)", "",
               f"Command: `python -m bench{''.join(' ' + a for a in argv)}`", "",
               f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB RAM; {info['os']}; "
               f"Python {info['python']}, asyncua {info['asyncua']}, paho-mqtt {info['paho_mqtt']}, "
               f"Mosquitto {info['mosquitto']}.", "",
               markdown_table(results), ""]
    section += [f"- {line}" for line in notes(results)]
    prof = profile_text(results)
    if prof:
        section += ["", *prof]
    section += ["", END]
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else INTRO + "\n"
    if START.split(" ")[0] in text and END in text:
        head = text[:text.index(START.split(" ")[0])]
        tail = text[text.index(END) + len(END):]
        text = head + "\n".join(section) + tail
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(section) + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text, encoding="utf-8")
    return DOC


def now_utc() -> datetime:
    return datetime.now(UTC)
