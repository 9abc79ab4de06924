"""A Modbus TCP device for tests and the demo: a pymodbus server over a register image that can be set freely.

Every unit id the image names answers; each table of a unit is readable from 0 to its highest address set
(gaps read as 0, as on most PLCs), unless `strict` is on, when reading an address never set answers exception 2
(illegal data address), as some devices do (registers only). `fail(...)` makes reads touching an address
answer a chosen exception code (for bits: reads touching its group of 16); `silence(unit)` makes a unit not answer at all. The server can be stopped and started again on
the same port.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from agent.sources.modbus.codec import encode, orders
from agent.sources.modbus.model import BIT_TABLES, ModbusAddress

log = logging.getLogger(__name__)

# pymodbus function code -> table
TABLE_OF_FUNCTION = {1: "co", 5: "co", 15: "co", 2: "di", 3: "hr", 6: "hr", 16: "hr", 22: "hr", 23: "hr", 4: "ir"}
TABLES = ("co", "di", "hr", "ir")  # the order of SimDevice's four blocks
SILENT_S = 3600.0


@dataclass
class RegisterImage:
    """What every unit shows: registers and bits by table and offset, and the exceptions it answers."""

    values: dict[tuple[int, str], dict[int, int]] = field(default_factory=dict)  # (unit, table) -> offset -> value
    failures: dict[tuple[int, str, int], int] = field(default_factory=dict)  # (unit, table, offset) -> code
    silent: set[int] = field(default_factory=set)
    fail_all: int = 0  # every read of every unit but `exempt` answers this exception code (0: none)
    exempt: int | None = None  # a unit that always answers (the simulator's control unit)

    def set_raw(self, unit: int, table: str, offset: int, words: list[int]) -> None:
        cells = self.values.setdefault((unit, table), {})
        for i, word in enumerate(words):
            cells[offset + i] = word

    def set(self, unit: int, address: ModbusAddress, value: int | float | bool, byte_order: str = "big",
            word_order: str = "big") -> None:
        """Show `value` at `address` (its own order, else the given one); a register bit changes only that bit."""
        if address.is_bits:
            self.set_raw(unit, address.table, address.offset, [int(bool(value))])
        elif address.bit is not None:
            cells = self.values.setdefault((unit, address.table), {})
            mask = 1 << address.bit
            old = cells.get(address.offset, 0)
            cells[address.offset] = (old | mask) if value else (old & ~mask)
        else:
            byte_order, word_order = orders(address.order, byte_order, word_order)
            self.set_raw(unit, address.table, address.offset, encode(value, address.type, byte_order, word_order))

    def fail(self, unit: int, table: str, offset: int, code: int) -> None:
        """Reads touching this address answer exception `code` (0: answer normally again)."""
        if code:
            self.failures[(unit, table, offset)] = code
        else:
            self.failures.pop((unit, table, offset), None)

    def units(self) -> list[int]:
        return sorted({unit for unit, _ in self.values} | {1})


class ModbusDevice:
    """A pymodbus TCP server showing a RegisterImage; start, stop and start again."""

    def __init__(self, image: RegisterImage, host: str = "127.0.0.1", port: int = 5020, strict: bool = False,
                 size: int | None = None) -> None:
        self.image = image
        self.host = host
        self.port = port
        self.strict = strict
        self.size = size  # registers per table; default: up to the highest address set (at least 16)
        self.server: ModbusTcpServer | None = None
        self.requests = 0

    def _devices(self) -> list[SimDevice]:
        devices = []
        for unit in self.image.units():
            blocks = []
            for table in TABLES:
                highest = max(self.image.values.get((unit, table), {0: 0}), default=0)
                size = self.size or max(16, highest + 1)
                if table in BIT_TABLES:  # bits live 16 to a register
                    blocks.append([SimData(0, count=(size + 15) // 16, values=0, datatype=DataType.BITS)])
                else:
                    blocks.append([SimData(0, count=size, values=0, datatype=DataType.REGISTERS)])
            devices.append(SimDevice(unit, simdata=(blocks[0], blocks[1], blocks[2], blocks[3]),
                                     action=functools.partial(self._action, unit)))
        return devices

    async def _action(self, unit: int, function: int, start: int, address: int, count: int,
                      registers: list[int], written: list[int] | list[bool] | None) -> ExcCodes | None:
        """Before pymodbus answers a request: fill the asked range from the image, or answer an exception."""
        self.requests += 1
        table = TABLE_OF_FUNCTION.get(function)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if unit in self.image.silent:
            await asyncio.sleep(SILENT_S)  # the client gives up first
        if self.image.fail_all and unit != self.image.exempt:
            return ExcCodes(self.image.fail_all)
        cells = self.image.values.get((unit, table), {})
        bits = table in BIT_TABLES
        # for coils and discrete inputs pymodbus passes the first bit and the count of 16-bit words holding them
        span = range(address, (address // 16 + count) * 16) if bits else range(address, address + count)
        for offset in span:
            code = self.image.failures.get((unit, table, offset))
            if code:
                return ExcCodes(code)
            if self.strict and not bits and offset not in cells:
                return ExcCodes.ILLEGAL_ADDRESS
        if written is not None:  # a client wrote: the image shows it from now on
            cells = self.image.values.setdefault((unit, table), {})
            for i, value in enumerate(written):
                cells[address + i] = int(value)
            return None
        if bits:
            words = [0] * len(registers)
            for offset, value in cells.items():
                if value and 0 <= offset // 16 - start < len(words):
                    words[offset // 16 - start] |= 1 << (offset % 16)
            registers[:] = words
        else:
            for offset in span:
                if 0 <= offset - start < len(registers):
                    registers[offset - start] = cells.get(offset, 0)
        return None

    async def start(self) -> None:
        """Listen (again) on host:port."""
        server = ModbusTcpServer(self._devices(), address=(self.host, self.port))
        await server.serve_forever(background=True)
        self.server = server
        log.info("Modbus device listening on %s:%s (units %s)", self.host, self.port, self.image.units())

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        server, self.server = self.server, None
        if server is not None:
            await server.shutdown()

    async def __aenter__(self) -> ModbusDevice:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
