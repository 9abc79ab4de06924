"""`python -m bench`: run the benchmarks, print the table, save the JSON, optionally record docs/benchmarks.md."""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from bench import capacity, dashboard, influx, modbus, report, s7, scenarios
from bench.capacity import CapacityOptions
from bench.dashboard import DashboardOptions
from bench.influx import InfluxOptions
from bench.scenarios import Options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="short runs: a smoke check in about 2 minutes (2 more for the InfluxDB scenarios, "
                             "2-3 more for the dashboard)")
    parser.add_argument("--only", choices=("mqtt", "opcua", "opcua-influx", "s7", "modbus", "influx", "dashboard",
                                           "capacity"),
                        help="run only the MQTT, the OPC UA, the OPC UA into InfluxDB, the InfluxDB, the dashboard "
                             "or the C2M capacity scenarios")
    parser.add_argument("--seconds", type=float, metavar="N",
                        help="length of each measurement (default 25 s; the MQTT latency run 15 s)")
    parser.add_argument("--hold-seconds", type=float, metavar="N",
                        help="how long the dashboard's 50 streams are held (default 180 s; --quick 40 s)")
    parser.add_argument("--record", action="store_true", help="rewrite the results section of docs/benchmarks.md")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the agent: during the 20,000/s MQTT flood and for 15 s after the "
                             "30,000 changes/s OPC UA window")
    parser.add_argument("--publishers", type=int, default=1, metavar="N",
                        help="MQTT flood processes in the throughput run (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs (configs, logs, historians)")
    parser.add_argument("--mqtt-protocol", choices=("3.1.1", "5"), default="3.1.1",
                        help="the agent's MQTT version in the MQTT scenarios (default 3.1.1)")
    parser.add_argument("--outage-seconds", type=float, metavar="N",
                        help="length of the InfluxDB outage (default 600 s; --quick 60 s)")
    return parser


def options(args: argparse.Namespace) -> Options:
    opts = Options(publishers=max(1, args.publishers), keep=args.keep, mqtt_protocol=args.mqtt_protocol)
    if args.quick:
        opts.mqtt_seconds, opts.latency_seconds, opts.opcua_seconds, opts.opcua_warmup_s = 6, 3, 6, 2
    if args.seconds:
        opts.mqtt_seconds = opts.latency_seconds = opts.opcua_seconds = args.seconds
    if args.profile:
        opts.profile_s = 15 if not args.quick else 5
    return opts


def influx_options(args: argparse.Namespace) -> InfluxOptions:
    """Sizes of the InfluxDB scenarios: 1,000,000 points, a 600 s outage, 30 days; --quick shortens each."""
    opts = InfluxOptions(keep=args.keep)
    if args.quick:
        opts.drain_points, opts.outage_s, opts.history_days, opts.query_runs = 200_000, 60, 7, 20
    if args.outage_seconds:
        opts.outage_s = args.outage_seconds
    return opts


def dashboard_options(args: argparse.Namespace) -> DashboardOptions:
    """Sizes of the dashboard scenarios: 30 state changes, 50 streams held 180 s, 8 API clients for 30 s."""
    opts = DashboardOptions(keep=args.keep)
    if args.quick:
        opts.changes, opts.hold_s, opts.sample_every_s, opts.api_s, opts.kiosk_s = 12, 40.0, 2.0, 10.0, 45.0
    if args.hold_seconds:
        opts.hold_s = args.hold_seconds
        opts.sample_every_s = max(opts.sample_every_s, args.hold_seconds / 200)
    return opts


def _dashboard_step(opts: DashboardOptions) -> dict[str, Any]:
    """The dashboard scenarios share one system; a failure to start it is still a dashboard result."""
    try:
        return dashboard.run(opts)
    except Exception as exc:
        traceback.print_exc()
        return {"scenario": "dashboard", "label": "dashboard", "error": f"{type(exc).__name__}: {exc}"}


def plan(args: argparse.Namespace, opts: Options,
         results: list[dict[str, Any]]) -> list[tuple[str, Callable[[], dict[str, Any] | None]]]:
    """The scenarios to run, in order; a step returning None is skipped (it did not apply)."""
    steps: list[tuple[str, Callable[[], dict[str, Any] | None]]] = []

    def sustainable_latency() -> dict[str, Any] | None:
        # The 20,000/s latency means little when the agent cannot take 20,000/s (the broker queue just grows):
        # then latency is also measured at half the throughput the agent showed, a load it does sustain.
        measured = next((r.get("stored_per_s", 0) for r in results if r.get("scenario") == "mqtt_throughput"), 0)
        if not measured or measured >= opts.latency_rate:
            return None
        return scenarios.mqtt_latency(opts, float(round(measured / 2, -2) or 100))

    if args.only in (None, "mqtt"):
        steps += [("MQTT throughput", lambda: scenarios.mqtt_throughput(opts)),
                  (f"MQTT latency at {opts.latency_rate:,.0f}/s",
                   lambda: scenarios.mqtt_latency(opts, opts.latency_rate, opts.profile_s))]
        if not args.quick:
            steps.append(("MQTT latency at half the measured throughput", sustainable_latency))
        steps += scenarios.mqtt_steps(opts, args.quick)  # the same with 2 and 4 receiver processes
    if args.only in (None, "opcua"):
        steps.append(("OPC UA ~33,000 changes/s", lambda: scenarios.opcua(opts, 300, opts.profile_s)))
        if not args.quick:
            steps.append(("OPC UA ~15,000 changes/s", lambda: scenarios.opcua(opts, 667)))
    if args.only in (None, "opcua-influx"):
        steps.append(("OPC UA ~45,000 changes/s into InfluxDB", lambda: influx.opcua_influx(opts, 222)))
    if args.only in (None, "s7"):
        s7opts = s7.S7Options(keep=args.keep, seconds=args.seconds or (6 if args.quick else 25.0),
                              warmup_s=2 if args.quick else 5.0)
        steps.append(("S7 3,000 tags polled every 100 ms", lambda: s7.run(s7opts)))
    if args.only in (None, "modbus"):
        mopts = modbus.ModbusOptions(keep=args.keep)
        if args.quick:
            mopts.seconds, mopts.warmup_s = 6, 2
        if args.seconds:
            mopts.seconds = args.seconds
        steps.append((f"Modbus TCP {mopts.devices * mopts.units_per_device * mopts.tags:,} values polled every "
                      f"{mopts.poll_ms} ms", lambda: modbus.run(mopts)))
    if args.only in (None, "influx"):
        iopts = influx_options(args)
        steps += [(f"outbox drain of {iopts.drain_points:,} points into InfluxDB", lambda: influx.drain(iopts)),
                  (f"InfluxDB outage of {iopts.outage_s:.0f} s and the catch-up", lambda: influx.outage(iopts)),
                  (f"shift OEE queries over {iopts.history_days} days in InfluxDB", lambda: influx.queries(iopts))]
    if args.only in (None, "dashboard"):
        dopts = dashboard_options(args)
        steps.append((f"dashboard: PLC change -> DOM latency, {dopts.streams} streams held {dopts.hold_s:.0f} s, "
                      f"board API under load", lambda: _dashboard_step(dopts)))
    if args.only in (None, "capacity"):
        copts = CapacityOptions(keep=args.keep)
        if args.quick:
            copts.truth_days, copts.truth_warmup_days, copts.changes, copts.feed_s = 5, 2, 4, 5.0
        steps.append((f"C2M: capacity model, line down -> verified event, feed under {copts.feed_clients} clients, "
                      f"capacity truth over {copts.truth_days} simulated days", lambda: capacity.run(copts)))
    return steps


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so every scenario's finally stops its processes and removes its temp dir.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    opts = options(args)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    when = report.now_utc()
    info = report.machine_info()
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB; Python {info['python']}, "
          f"asyncua {info['asyncua']}, paho-mqtt {info['paho_mqtt']}, Mosquitto {info['mosquitto']}, "
          f"InfluxDB {info['influxdb']}", flush=True)
    results: list[dict[str, Any]] = []
    interrupted = False
    for title, step in plan(args, opts, results):
        print(f"running: {title} ...", flush=True)
        started = time.monotonic()
        try:
            result = step()
            if result is None:
                print("  not needed", flush=True)
                continue
        except KeyboardInterrupt:
            print("interrupted: processes stopped, temp dirs removed", flush=True)
            interrupted = True
            break
        except Exception as exc:  # one failed scenario must not lose the others' figures
            traceback.print_exc()
            result = {"scenario": title, "label": title, "error": f"{type(exc).__name__}: {exc}"}
        results.append(result)
        stored = result.get("stored_per_s")
        print(f"  done in {time.monotonic() - started:.0f} s: "
              + (result.get("error") or (f"stored {stored:,}/s" if stored is not None else "done")), flush=True)
    if not results:
        return 130 if interrupted else 1
    print()
    if report.agent_results(results):
        print(report.table(results))
    for line in report.dashboard_tables(results):
        print(line)
    for line in report.capacity_lines(results):
        print(f"- {line}")
    if report.query_rows(results):
        print()
        print(report.query_table(results))
    for line in report.notes(results) + report.dashboard_notes(results):
        print(f"- {line.replace('**', '')}")
    for line in report.profile_text(results):
        print(line.replace("`", ""))
    path = report.save_json(results, info, argv, when)
    print(f"\nresults saved to {path.relative_to(report.ROOT)}")
    if args.record and not interrupted:
        # alone, the Modbus or S7 figures get a section of their own rather than replacing the agent's main table
        recorder = {"modbus": modbus.record, "s7": s7.record}.get(args.only or "", report.record)
        print(f"recorded in {recorder(results, info, argv, when).relative_to(report.ROOT)}")
    if interrupted:
        return 130
    return 1 if any("error" in r or r.get("errors") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
