"""S7 simulator: the machines of one S7 source of a factory config, served by snap7's S7 server (ISO-on-TCP).

The simulated plant (simulators/plant/, through the protocol-neutral simulators/machines model) decides what
each machine does; this server shows every machine tag at the address the config gives it, the same address the
agent reads: the machine's `node_ids[node]`, else `node_prefix` + the tag's `node` (agent/sources/s7/README.md
has the syntax; layout.py the layout `--print-layout` suggests). Each DB, and M, I and Q, is as long as its
addresses need:

- state: the state code (an integer) or the PackML name (a STRING); a `bits` state map: one BOOL per
  `state_bit` tag;
- count: the counter, wrapping at its `rollover` (and at the width of its type, as a PLC's would);
- alarm: the alarm code (0 = none); product: the SKU (a STRING) or the product code (an integer);
- process_value: the speed or a drifting measurement.

The simulated clock, seed and origin (`--start`) work as for `shopfloor simulate plc`, so every simulator of a
demo shows the same plant, and a restarted simulator carries on where the plant is.

Control DB (`--control-db`, default 60000; read and write it with any S7 client):
  DBW0     S7 item return code every read of a machine's area answers (0 = answer normally), e.g. 5 (address out
           of range), 10 (item not available), 3 (access denied)
  DBW2     the DB number DBW0 applies to (0 = every area that shows machine tags)
  DBX4.0   1 = show an undecodable value wherever a tag's type has one: NaN in a REAL, bytes that are not UTF-8
           in a STRING, -1 in a signed counter
  DBX4.1   1 = the simulated clock runs, 0 = it stands still
  DBD16 +  12 bytes per machine of the source, in config order: its true total, good and reject counts (UDINT,
  12 * k   not wrapped by any rollover): the ground truth a test compares the historian with
The same on the command line: `--fail DB=CODE` (repeatable), `--undecodable`, `--paused`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from snap7.datatypes import S7Area
from snap7.server import Server
from snap7.type import SrvArea

from agent.clock import caught_up
from agent.config import FactoryConfig
from agent.sources.s7.model import S7Address, S7SourceConfig, parse_address
from simulators.machines import Machine
from simulators.machines.served import ServedPlant
from simulators.plc_cli import add_plant_arguments, load_config, serve, start_logging
from simulators.s7.layout import area_sizes, encode, print_layout, undecodable

log = logging.getLogger(__name__)

CONTROL_DB = 60000
CONTROL_FAIL, CONTROL_FAIL_DB, CONTROL_FLAGS = 0, 2, 4
FLAG_UNDECODABLE, FLAG_RUNNING = 0x01, 0x02
TRUTH_AT, TRUTH_BYTES = 16, 12
SERVER_AREAS = {"DB": (SrvArea.DB, S7Area.DB), "M": (SrvArea.MK, S7Area.MK), "I": (SrvArea.PE, S7Area.PE),
                "Q": (SrvArea.PA, S7Area.PA)}
S7_AREA_NAMES = {S7Area.DB: "DB", S7Area.MK: "M", S7Area.PE: "I", S7Area.PA: "Q"}


@dataclass(frozen=True)
class ShownTag:
    """A machine tag and where this server shows it."""

    machine: Machine
    node: str  # the tag's node in its machine type (its key in Machine.values)
    signal: str
    address: S7Address


class _FailingServer(Server):
    """snap7's server, answering an item return code for reads of the areas the simulator is told to fail."""

    def __init__(self, failing: dict[tuple[str, int], int]) -> None:
        super().__init__(log=False)
        self.failing = failing

    def _read_from_memory_area(self, area: S7Area, db_number: int, start: int, count: int) -> tuple[int, bytearray]:
        code = self.failing.get((S7_AREA_NAMES.get(area, "?"), db_number if area == S7Area.DB else 0))
        if code:
            return code, bytearray()
        result: tuple[int, bytearray] = super()._read_from_memory_area(area, db_number, start, count)
        return result


class S7Simulator(ServedPlant):
    """snap7's S7 server showing the machines of one S7 source of a config, driven by the simulated plant."""

    protocol = "S7"

    def __init__(self, cfg: FactoryConfig, *, host: str = "127.0.0.1", port: int = 10102, source: str | None = None,
                 speed: float = 1.0, seed: int = 1, paused: bool = False, start_time: datetime | None = None,
                 origin: datetime | None = None, truth_file: Path | None = None, control_db: int = CONTROL_DB,
                 failures: Sequence[tuple[int, int]] = (), undecodable: bool = False) -> None:
        super().__init__(cfg, "s7", source=source, speed=speed, seed=seed, paused=paused, start_time=start_time,
                         origin=origin, truth_file=truth_file)
        self.source: S7SourceConfig = self.source_config
        self.host = host
        self.port = port
        self.control_db = control_db
        self.shown = self._map_tags()
        sizes = area_sizes(t.address for t in self.shown)
        if ("DB", control_db) in sizes:
            raise ValueError(f"DB{control_db} is the simulator's control DB; give --control-db another number")
        self.areas = {key: bytearray(max(size, 2)) for key, size in sizes.items()}
        self.control = bytearray(TRUTH_AT + TRUTH_BYTES * len(self.model.machines))
        for db, code in failures:
            if not 0 < code < 0xFF:
                raise ValueError(f"--fail {db}={code}: an item return code is 1..254, e.g. 5 or 10")
        self.cli_failures = {("DB", db): code for db, code in failures}
        struct.pack_into(">B", self.control, CONTROL_FLAGS, (FLAG_UNDECODABLE if undecodable else 0)
                         | (0 if paused else FLAG_RUNNING))
        self.failing: dict[tuple[str, int], int] = dict(self.cli_failures)
        self._server: _FailingServer | None = None
        self._started = False

    def _map_tags(self) -> list[ShownTag]:
        shown: list[ShownTag] = []
        used: dict[tuple[str, int, int, int], str] = {}
        for where, sim, machine, tag in self.source_tags():
            text = machine.node_id(tag)
            try:
                address = parse_address(text)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}; `shopfloor simulate s7 --print-layout` suggests "
                                 "addresses") from None
            is_text = sim.tags[tag.node].type == "string"
            if is_text != (address.type == "STRING"):
                shows = "text (a PackML name or a SKU): use a STRING address" if is_text else "a number"
                raise ValueError(f"{where}: {address} is a {address.type}, the tag shows {shows}")
            bits = [address.bit] if address.type == "BOOL" else range(8)
            for offset in range(address.start, address.start + address.size):
                for bit in bits:
                    key = (address.area, address.db, offset, bit)
                    if key in used:
                        raise ValueError(f"{where}: {text} overlaps {used[key]}")
                    used[key] = f"{where} ({text})"
            shown.append(ShownTag(sim, tag.node, tag.signal, address))
        return shown

    # -- life cycle

    async def start(self) -> None:
        """Show the plant as of now and start serving and ticking (again, after `stop`)."""
        if not self._started:
            self.model.start(max(self.model.now_us, self.clock.now_us()))
            self._started = True
        server = _FailingServer(self.failing)
        for (area, db), data in self.areas.items():
            server.register_area(SERVER_AREAS[area][0], db, data)
        server.register_area(SrvArea.DB, self.control_db, self.control)
        self._server = server
        self._show()
        server.start_to(self.host, self.port)
        if self.port == 0 and server.server_socket is not None:
            self.port = server.server_socket.getsockname()[1]
        self.start_ticking()
        log.info("S7 simulator serving %d tags of %d machines (source %s) in %s on %s:%s", len(self.shown),
                 len(self.model.machines), self.source.id,
                 ", ".join(f"DB{db}" if area == "DB" else area for area, db in sorted(self.areas)),
                 self.host, self.port)

    async def stop(self) -> None:
        """Stop ticking and serving; safe to call twice."""
        await self.stop_ticking()
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.stop)

    async def __aenter__(self) -> S7Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- ticking

    def tick(self) -> None:
        """Apply the control DB, run the plant up to the clock and show it."""
        with self._locked("DB", self.control_db):
            code, fail_db, flags = struct.unpack_from(">hhB", self.control, 0)
        failing = dict(self.cli_failures)
        if 0 < code < 0xFF:
            targets = [("DB", fail_db)] if fail_db else list(self.areas)
            failing.update(dict.fromkeys(targets, code))
        self.failing = failing
        if self._server is not None:
            self._server.failing = failing  # one assignment: a client thread sees the old or the new set
        self.clock.set_running(bool(flags & FLAG_RUNNING))
        self.advance()
        self._show()

    def _show(self) -> None:
        """Every tag's current raw value into its area (or an undecodable value, when asked for), and the truth."""
        with self._locked("DB", self.control_db):
            bad = bool(self.control[CONTROL_FLAGS] & FLAG_UNDECODABLE)
            for k, machine in enumerate(self.model.machines):
                truth = [machine.values[f"Truth.{name}"] for name in ("Total", "Good", "Reject")]
                struct.pack_into(">III", self.control, TRUTH_AT + TRUTH_BYTES * k,
                                 *(int(v) % 2**32 for v in truth))  # type: ignore[call-overload]
        for key, data in self.areas.items():
            with self._locked(*key):
                for tag in self.shown:
                    if (tag.address.area, tag.address.db) != key:
                        continue
                    if bad and undecodable(tag.address, tag.signal, data):
                        continue
                    encode(tag.address, tag.machine.values[tag.node], data)

    @contextlib.contextmanager
    def _locked(self, area: str, db: int) -> Any:
        """The server's own lock of an area, so that a client never reads half a tick."""
        server = self._server
        if server is None:
            yield
            return
        srv_area = SERVER_AREAS[area][0]
        server.lock_area(srv_area, db)
        try:
            yield
        finally:
            server.unlock_area(srv_area, db)


# --- command line -----------------------------------------------------------------------------------------


def _failure(text: str) -> tuple[int, int]:
    db, _, code = text.partition("=")
    db = db.strip().upper().removeprefix("DB")
    if not db.isdigit() or not code.strip().isdigit():
        raise argparse.ArgumentTypeError("DB=CODE, e.g. 1=5 (reads of DB1 answer 0x05, address out of range)")
    return int(db), int(code)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the S7 simulator's options to a (sub)command parser."""
    add_plant_arguments(parser, "S7")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=10102,
                        help="TCP port (default %(default)s; 102, the S7 port, needs root; 0 = any free port)")
    parser.add_argument("--paused", action="store_true", help="start with the simulated clock stopped")
    parser.add_argument("--control-db", type=int, default=CONTROL_DB, metavar="N",
                        help="the control DB's number (default %(default)s)")
    parser.add_argument("--fail", type=_failure, action="append", default=[], metavar="DB=CODE",
                        help="reads of that DB answer S7 item return CODE, e.g. 1=5 (repeatable)")
    parser.add_argument("--undecodable", action="store_true",
                        help="show NaN in REALs, non-UTF-8 STRINGs and -1 in signed counters (control DBX4.0)")
    parser.add_argument("--print-layout", action="store_true",
                        help="print a DB layout (node_ids) for every machine of the source and exit")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; 0 on a clean stop, 2 on a configuration problem."""
    start_logging("snap7", logging.ERROR)  # snap7 logs every client and every refused read
    cfg = load_config(args.config)
    if cfg is None:
        return 2
    if args.print_layout:
        print(print_layout(cfg, args.source or next((s.id for s in cfg.sources.s7), None)), end="")
        return 0
    try:
        simulator = S7Simulator(cfg, host=args.host, port=args.port, source=args.source, speed=args.speed,
                                seed=args.seed, paused=args.paused,
                                start_time=caught_up(args.start, args.speed, args.sim_anchor),
                                origin=args.start, truth_file=args.truth, control_db=args.control_db,
                                failures=args.fail, undecodable=args.undecodable)
    except ValueError as exc:
        print(f"s7 simulator: {args.config}: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(simulator))


async def _serve(simulator: S7Simulator) -> int:
    # snap7 wraps the socket's error (port in use, no permission) in its own
    return await serve("S7", lambda: f"{simulator.host}:{simulator.port}", simulator.start, simulator.stop,
                       refused=(Exception,))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator standalone: `python -m simulators.s7 --config config/factory.yaml`."""
    parser = argparse.ArgumentParser(prog="shopfloor simulate s7", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
