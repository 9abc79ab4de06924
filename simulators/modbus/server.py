"""Modbus TCP simulator: the machines of one Modbus source of a factory config, as a pymodbus server.

The simulated plant (simulators/plant/, through the protocol-neutral simulators/machines model) decides what
each machine does; this server shows every machine tag at the address the config gives it, the same address the
agent reads: the machine's `node_ids[node]`, else its `node_prefix` + the tag's `node` (agent/sources/modbus/
README.md has the syntax). So the register map is the config's own:

- state: the state code (an integer register); a `bits` state map: one coil, discrete input or register bit per
  `state_bit` tag; PackML state names cannot be shown over Modbus (the simulator refuses such a machine type);
- count: the counter, wrapping at its `rollover` (and at the width of its register type, as a PLC's would);
- alarm: the alarm code (0 = none); product: the product code (a product tag needs `codes` over Modbus);
- process_value: the speed or a drifting measurement, in the register type's number format; with a `scale` or
  `offset` the raw value the agent scales back, e.g. 21.5 degC with scale 0.1 in an int16 register as 215.

Addresses without a unit prefix are on the source's `unit_id`. The simulated clock, seed and origin (`--start`)
work as for `shopfloor simulate plc`, so every simulator of a demo shows the same plant, and a restarted
simulator carries on where the plant is.

Controls, on unit 247 (holding registers; write them with any Modbus client):
  hr:0  exception code every other unit answers to every read (0 = answer normally), e.g. 4 (device failure)
  hr:1  1 = show an undecodable value wherever the tag's type allows one: NaN in float registers, -1 in signed
        counters (0 = normal)
  hr:2  1 = the simulated clock runs, 0 = it stands still
The same on the command line: `--fail ADDRESS=CODE` (reads touching that address answer CODE), `--undecodable`,
`--paused`, and `--strict` (reading a register no tag uses answers exception 2, as some devices do).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pymodbus.constants import ExcCodes

from agent.clock import caught_up
from agent.config import FactoryConfig
from agent.sources.modbus.codec import orders
from agent.sources.modbus.model import TYPES, ModbusAddress, ModbusSourceConfig, parse_address
from simulators.machines import Machine, RawValue
from simulators.machines.served import ServedPlant
from simulators.modbus.device import ModbusDevice, RegisterImage
from simulators.plc_cli import add_plant_arguments, load_config, serve, start_logging

log = logging.getLogger(__name__)

CONTROL_UNIT = 247
CONTROL_FAIL, CONTROL_UNDECODABLE, CONTROL_RUNNING = 0, 1, 2
EXCEPTION_CODES = frozenset(int(code) for code in ExcCodes)


@dataclass(frozen=True)
class ShownTag:
    """A machine tag and where this server shows it."""

    machine: Machine
    node: str  # the tag's node in its machine type (its key in Machine.values)
    signal: str
    unit: int
    address: ModbusAddress
    byte_order: str
    word_order: str
    scale: float = 1.0  # a process value is shown raw: (value - offset) / scale, what the agent scales back
    offset: float = 0.0


def register_value(value: RawValue, address: ModbusAddress) -> int | float | bool:
    """A raw tag value as the address's register type holds it: integers wrap at the type's width."""
    if address.type == "bool":
        return bool(value)
    if isinstance(value, str):
        raise ValueError(f"{address} cannot show the text {value!r}")
    fmt, registers = TYPES[address.type]
    if fmt in "fd":
        return float(value)
    bits = 16 * registers
    number = round(value) % (1 << bits)
    return number - (1 << bits) if fmt.islower() and number >= 1 << (bits - 1) else number


def undecodable_value(tag: ShownTag) -> int | float | None:
    """A value the agent cannot use for this tag, where its register type has one."""
    if tag.address.type in ("float32", "float64"):
        return math.nan
    if tag.signal == "count" and TYPES.get(tag.address.type, ("H", 1))[0].islower():
        return -1
    return None


class ModbusSimulator(ServedPlant):
    """A pymodbus server showing the machines of one Modbus source of a config, driven by the simulated plant."""

    protocol = "Modbus"

    def __init__(self, cfg: FactoryConfig, *, host: str = "127.0.0.1", port: int = 5020, source: str | None = None,
                 speed: float = 1.0, seed: int = 1, paused: bool = False, start_time: datetime | None = None,
                 origin: datetime | None = None, truth_file: Path | None = None, strict: bool = False,
                 failures: Sequence[tuple[int, ModbusAddress, int]] = (), undecodable: bool = False) -> None:
        super().__init__(cfg, "modbus", source=source, speed=speed, seed=seed, paused=paused, start_time=start_time,
                         origin=origin, truth_file=truth_file)
        self.source: ModbusSourceConfig = self.source_config
        self.shown = self._map_tags()
        self.image = RegisterImage(exempt=CONTROL_UNIT)
        for unit, address, code in failures:
            self.image.fail(unit, address.table, address.offset, code)
        self.image.set_raw(CONTROL_UNIT, "hr", 0, [0, int(undecodable), int(not paused)])
        self.device = ModbusDevice(self.image, host, port, strict=strict)

    def _map_tags(self) -> list[ShownTag]:
        shown: list[ShownTag] = []
        used: dict[tuple[int, str, int], str] = {}
        for where, sim, machine, tag in self.source_tags():
            text = machine.node_id(tag)
            try:
                address = parse_address(text)
            except ValueError as exc:
                raise ValueError(f"{where}: {text!r} is not {exc}") from None
            if sim.tags[tag.node].type == "string":
                raise ValueError(f"{where}: a Modbus register cannot carry text (PackML state names, or a "
                                 f"product without `codes`); use a code state map or product codes")
            unit = address.unit if address.unit is not None else self.source.unit_id
            if unit == CONTROL_UNIT:
                raise ValueError(f"{where}: unit {CONTROL_UNIT} is the simulator's control unit")
            for offset in range(address.offset, address.offset + address.count):
                key = (unit, address.table, offset if address.bit is None else offset * 16 + address.bit)
                if key in used and address.bit is None:
                    raise ValueError(f"{where}: {text} overlaps {used[key]}")
                used[key] = f"{where} ({text})"
            byte_order, word_order = orders(address.order, self.source.byte_order, self.source.word_order)
            scaled = tag.signal == "process_value" and tag.scale != 0
            shown.append(ShownTag(sim, tag.node, tag.signal, unit, address, byte_order, word_order,
                                  tag.scale if scaled else 1.0, tag.offset if scaled else 0.0))
        return shown

    # -- life cycle

    @property
    def port(self) -> int:
        return self.device.port

    async def start(self) -> None:
        """Show the plant as of now and start serving and ticking."""
        self.model.start(max(self.model.now_us, self.clock.now_us()))
        self._show()
        await self.device.start()
        self.start_ticking()
        log.info("Modbus simulator serving %d tags of %d machines (source %s) on %s:%s",
                 len(self.shown), len({id(t.machine) for t in self.shown}), self.source.id, self.device.host,
                 self.device.port)

    async def stop(self) -> None:
        """Stop ticking and serving; safe to call twice."""
        await self.stop_ticking()
        await self.device.stop()

    async def __aenter__(self) -> ModbusSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- ticking

    def _control(self, register: int) -> int:
        return self.image.values.get((CONTROL_UNIT, "hr"), {}).get(register, 0)

    def tick(self) -> None:
        """Apply the control registers, run the plant up to the clock and show it."""
        code = self._control(CONTROL_FAIL)
        self.image.fail_all = code if code in EXCEPTION_CODES else 0
        self.clock.set_running(bool(self._control(CONTROL_RUNNING)))
        self.advance()
        self._show()

    def _show(self) -> None:
        """Every tag's current raw value into the registers (or its undecodable value, when asked for)."""
        undecodable = bool(self._control(CONTROL_UNDECODABLE))
        for tag in self.shown:
            raw = tag.machine.values[tag.node]
            if (tag.scale, tag.offset) != (1.0, 0.0) and isinstance(raw, int | float):
                raw = (raw - tag.offset) / tag.scale
            value: int | float | bool = register_value(raw, tag.address)
            if undecodable and (bad := undecodable_value(tag)) is not None:
                value = bad
            self.image.set(tag.unit, tag.address, value, tag.byte_order, tag.word_order)


class ModbusBenchDevice:
    """Benchmark units instead of the plant: units `first_unit`.. each with a state code 1 in hr:0 and `tags`
    uint32 values at hr:2, hr:4, ... that all change every `period_ms` to the wall-clock time of the change in ms
    (modulo 2^32), so a reader of the historian can tell how long each value took to arrive."""

    def __init__(self, host: str, port: int, units: int, tags: int, period_ms: float, first_unit: int = 1) -> None:
        if units < 1 or tags < 1 or first_unit < 0 or first_unit + units > CONTROL_UNIT:
            raise ValueError(f"bench units must lie in 0..{CONTROL_UNIT - 1} and have at least one tag")
        if period_ms <= 0:
            raise ValueError("the bench period must be positive")
        self.units = range(first_unit, first_unit + units)
        self.tags = tags
        self.period_s = period_ms / 1000
        self.image = RegisterImage(exempt=CONTROL_UNIT)
        for unit in self.units:
            self.image.set_raw(unit, "hr", 0, [1] + [0] * (2 * tags + 1))
        self.device = ModbusDevice(self.image, host, port)
        self.changes = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self.device.port

    async def start(self) -> None:
        await self.device.start()
        self._task = asyncio.create_task(self._loop(), name="modbus-bench")
        log.info("Modbus bench device: units %s-%s, %s changing values each, every %.0f ms", self.units[0],
                 self.units[-1], self.tags, self.period_s * 1000)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.device.stop()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            now_ms = time.time_ns() // 1_000_000 % (1 << 32)
            words = [now_ms >> 16, now_ms & 0xFFFF] * self.tags
            for unit in self.units:
                self.image.set_raw(unit, "hr", 2, words)
            self.changes += len(self.units) * self.tags
            next_at = max(next_at + self.period_s, loop.time())
            await asyncio.sleep(next_at - loop.time())


# --- command line -----------------------------------------------------------------------------------------


def _failure(text: str) -> tuple[int | None, ModbusAddress, int]:
    address, _, code = text.rpartition("=")
    try:
        parsed = parse_address(address)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"ADDRESS=CODE with a Modbus address, e.g. 1/hr:100=2; {exc}") from None
    if not code.isdigit() or int(code) not in EXCEPTION_CODES:
        raise argparse.ArgumentTypeError(f"an exception code ({', '.join(map(str, sorted(EXCEPTION_CODES)))}) "
                                         f"after '=', e.g. hr:100=2")
    return parsed.unit, parsed, int(code)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the Modbus simulator's options to a (sub)command parser."""
    add_plant_arguments(parser, "Modbus")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=5020, help="TCP port (default %(default)s; 502 needs root)")
    parser.add_argument("--paused", action="store_true", help="start with the simulated clock stopped")
    parser.add_argument("--strict", action="store_true",
                        help="answer exception 2 (illegal data address) to reads of registers no tag uses")
    parser.add_argument("--fail", type=_failure, action="append", default=[], metavar="ADDRESS=CODE",
                        help="reads touching ADDRESS answer exception CODE, e.g. 2/hr:100=2 (repeatable)")
    parser.add_argument("--undecodable", action="store_true",
                        help="show NaN in float registers and -1 in signed counters (control hr:1 of unit 247)")
    parser.add_argument("--bench-units", type=int, default=0, metavar="N",
                        help="serve N benchmark units instead of the plant (see ModbusBenchDevice)")
    parser.add_argument("--bench-tags", type=int, default=50, metavar="T",
                        help="changing uint32 values per benchmark unit, at hr:2, hr:4, ... (default %(default)s)")
    parser.add_argument("--bench-period-ms", type=float, default=100.0, metavar="P",
                        help="the benchmark values change every P ms (default %(default)s)")
    parser.add_argument("--bench-first-unit", type=int, default=1, metavar="K",
                        help="number the benchmark units from K (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; 0 on a clean stop, 2 on a configuration problem."""
    start_logging("pymodbus", logging.ERROR)  # it warns of its own deprecations on every start
    cfg = load_config(args.config)
    if cfg is None:
        return 2
    if args.bench_units:
        try:
            bench = ModbusBenchDevice(args.host, args.port, args.bench_units, args.bench_tags, args.bench_period_ms,
                                      args.bench_first_unit)
        except ValueError as exc:
            print(f"modbus simulator: {exc}", file=sys.stderr)
            return 2
        return asyncio.run(_serve(bench))
    try:
        sources = {s.id: s for s in cfg.sources.modbus}
        unit_of = sources[args.source].unit_id if args.source in sources else (
            next(iter(sources.values())).unit_id if sources else 1)
        failures = [(unit if unit is not None else unit_of, address, code) for unit, address, code in args.fail]
        simulator = ModbusSimulator(cfg, host=args.host, port=args.port, source=args.source, speed=args.speed,
                                    seed=args.seed, paused=args.paused,
                                    start_time=caught_up(args.start, args.speed, args.sim_anchor),
                                    origin=args.start, truth_file=args.truth, strict=args.strict,
                                    failures=failures, undecodable=args.undecodable)
    except ValueError as exc:
        print(f"modbus simulator: {args.config}: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(simulator))


async def _serve(simulator: ModbusSimulator | ModbusBenchDevice) -> int:
    return await serve("Modbus", lambda: f"{simulator.device.host}:{simulator.port}", simulator.start,
                       simulator.stop, refused=(OSError, RuntimeError))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator standalone: `python -m simulators.modbus --config config/factory.yaml`."""
    parser = argparse.ArgumentParser(prog="shopfloor simulate modbus", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
