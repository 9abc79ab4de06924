"""OPC UA PLC simulator: an asyncua server showing the machines of the simulated plant (simulators/plant.py).

The plant decides what each machine does (the line's orders, changeovers, stops, faults, breaks and shifts); this
server shows it through the raw tags each machine type declares (state codes, PackML names or bits; counters with
rollover; the product; process values; alarm codes), every change stamped with its own simulated time when
`--sim-timestamps` is given. Beside the raw tags it publishes the ground truth (unwrapped counts, true board
state), writes the plant's full truth to `--truth FILE`, and has two controls: `Sim.Running` stops the simulated
clock, `<line>.<machine>.Force` pins a machine in a board state.

Security modes accept every client certificate: this is a simulator, it trusts whoever connects.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import hmac
import json
import logging
import math
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from asyncua import Server, ua
from asyncua.common.node import Node
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server import monitored_item_service as mis
from asyncua.server.address_space import AttributeValue
from asyncua.server.user_managers import UserManager

from agent import config as agent_config
from agent.clock import add_anchor_argument, caught_up
from agent.config import FactoryConfig, StateMapSpec, TagSpec
from agent.core.states import BoardState, StateMapper
from simulators import pki
from simulators.plant import DEFAULT_CYCLE_S, US, MachineSnapshot, Plant, PlantMachine

log = logging.getLogger(__name__)

NAMESPACE_URI = "urn:shopfloor:plc-sim"
DEFAULT_ENDPOINT = "opc.tcp://127.0.0.1:4840/shopfloor/plc"
DEFAULT_CERT_DIR = Path("data/plc-sim-pki")
TICK_S = 0.1
TRUTH_EVERY_S = 2.0  # the truth file is written this often (and on stop)
COUNTER_WRAP = 2**32
BENCH_TAGS_PER_MACHINE = 100  # bench machine bench.m<k> has tags t00..t99 plus State
BENCH_STATE_RUNNING = 1  # the constant bench.m<k>.State value (the bench config maps code 1 to RUNNING)
BENCH_STATS_EVERY_S = 1.0
# asyncua closes a connection once this many requests wait behind its processor; 500 (the default) is too few
# for a client that creates monitored items one request per tag.
MAX_PENDING_REQUESTS = 100_000

SECURITY_POLICIES: dict[str, list[ua.SecurityPolicyType]] = {
    "none": [ua.SecurityPolicyType.NoSecurity],
    "secure": [
        ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
        ua.SecurityPolicyType.Basic256Sha256_Sign,
    ],
    "all": [
        ua.SecurityPolicyType.NoSecurity,
        ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
        ua.SecurityPolicyType.Basic256Sha256_Sign,
    ],
}


# --- raw state encoding -----------------------------------------------------------------------------------

# PackML state names as PLCs spell them, most typical first: the first that maps to a board state is shown.
PACKML_NAMES = (
    "Execute", "Held", "Aborted", "Idle", "Suspended", "Starting", "Stopped", "Complete", "Resetting", "Holding",
    "Suspending", "Stopping", "Aborting", "Clearing", "Completing", "Unholding", "Unsuspending",
)
# When a state map has no raw value for a board state, the machine shows the nearest one it has.
_FALLBACKS: dict[BoardState, tuple[BoardState, ...]] = {
    BoardState.NO_SHIFT: (BoardState.PLANNED_STOP, BoardState.STOPPED),
    BoardState.PLANNED_STOP: (BoardState.STOPPED,),
    BoardState.SETUP: (BoardState.PLANNED_STOP, BoardState.STOPPED),
    BoardState.FAULT: (BoardState.STOPPED,),
    BoardState.STARVED: (BoardState.BLOCKED, BoardState.STOPPED),
    BoardState.BLOCKED: (BoardState.STARVED, BoardState.STOPPED),
    BoardState.MICROSTOP: (BoardState.STOPPED,),
    BoardState.SLOW: (BoardState.RUNNING,),
    BoardState.OFFLINE: (BoardState.STOPPED,),
}

RawState = int | str | dict[str, bool]


class RawStateCodec:
    """Board state -> the raw value a machine type's PLC shows for it, by inverting the configured state map."""

    def __init__(self, spec: StateMapSpec, mapper: StateMapper) -> None:
        self.kind = spec.kind
        self._spec = spec
        self._mapper = mapper
        self.bits: list[str] = list(dict.fromkeys(rule.bit for rule in spec.rules))
        self._cache: dict[BoardState, tuple[BoardState, RawState]] = {}

    def encode(self, state: BoardState) -> tuple[BoardState, RawState]:
        """(the board state the raw value really maps to, the raw value) for a wanted board state."""
        if state not in self._cache:
            self._cache[state] = self._encode(state)
        return self._cache[state]

    def _encode(self, state: BoardState) -> tuple[BoardState, RawState]:
        for candidate in (state, *_FALLBACKS.get(state, ())):
            raw = self._raw_for(candidate)
            if raw is not None:
                return candidate, raw
        raw = self._any_raw()
        return self._mapper.map(raw) or BoardState.STOPPED, raw

    def _raw_for(self, state: BoardState) -> RawState | None:
        if self.kind == "code":
            for code, mapped in self._spec.codes.items():
                if mapped == state:
                    return code
            if self._spec.default == state:
                return max(self._spec.codes, default=-1) + 1  # any code outside the table maps to the default
            return None
        if self.kind == "packml":
            for name in (*self._spec.names, *PACKML_NAMES):
                if self._mapper.map(name) == state:
                    return name
            return None
        rules = self._spec.rules
        firing_index = [i for i, rule in enumerate(rules) if rule.state == state]
        options: list[int | None] = [*firing_index, None] if self._spec.default == state else list(firing_index)
        for k in options:
            # Rules before k must not fire; rule k fires; later rules do not matter but are kept quiet.
            bits: dict[str, bool] = {}
            if k is not None:
                bits[rules[k].bit] = rules[k].value
            for rule in rules:
                bits.setdefault(rule.bit, not rule.value)
            if self._mapper.map(bits) == state:
                return bits
        return None

    def _any_raw(self) -> RawState:
        if self.kind == "code":
            return next(iter(self._spec.codes), 0)
        if self.kind == "packml":
            return "Stopped"
        return dict.fromkeys(self.bits, False)


# --- machine behaviour ------------------------------------------------------------------------------------


@dataclass
class ProcessValue:
    """A bounded random walk near a nominal value (temperature, pressure, load...)."""

    nominal: float
    low: float
    high: float
    value: float
    fault_rise: float

    def step(self, rng: random.Random, dt: float, fault: bool) -> float:
        target = self.nominal + (self.fault_rise if fault else 0.0)
        span = self.high - self.low
        pull = min(1.0, dt / 120.0)  # settles towards the target over a couple of simulated minutes
        noise = rng.gauss(0.0, 0.002 * span * math.sqrt(dt))
        self.value = min(self.high, max(self.low, self.value + (target - self.value) * pull + noise))
        return round(self.value, 3)


def _process_value_for(tag: TagSpec, rng: random.Random) -> ProcessValue:
    unit = (tag.unit or "").lower()
    low, high, nominal = {"degc": (0.0, 150.0, 60.0), "bar": (0.0, 16.0, 6.0), "%": (0.0, 100.0, 45.0)}.get(
        unit, (0.0, 100.0, 50.0)
    )
    nominal *= rng.uniform(0.9, 1.1)  # machines of one type are not identical
    return ProcessValue(nominal, low, high, nominal, fault_rise=0.06 * (high - low))


def _is_speed(tag: TagSpec) -> bool:
    return tag.node.lower() == "speed" or (tag.name or "").lower() == "speed" or "/min" in (tag.unit or "")


def _node_id(name: str, namespace: int) -> ua.NodeId:
    """A string NodeId (asyncua's stubs want its own str/int subclasses)."""
    return ua.NodeId(ua.String(name), ua.Int16(namespace))


# --- asyncua server fast path -----------------------------------------------------------------------------

_IMMUTABLE = (bool, int, float, str, bytes, datetime, type(None))
_fast_path_installed = False
_HAS_PROPERTY = ua.NodeId(ua.Int32(ua.ObjectIds.HasProperty))


def _set_current_datavalue(self: mis.MonitoredItemValues, cur_val: ua.DataValue) -> None:
    """Like asyncua's, but shares scalar values instead of deep-copying each one for every monitored item.

    Sharing is safe because nothing in asyncua (nor this simulator) changes a DataValue after writing it: new
    values always come as new objects. Arrays and structures are still copied.
    """
    self.old_dvalue = self.current_dvalue
    variant = cur_val.Value
    if variant is None or isinstance(variant.Value, _IMMUTABLE):
        self.current_dvalue = cur_val
    else:
        self.current_dvalue = copy.deepcopy(cur_val)


def _eu_range(service: mis.MonitoredItemService, mdata: mis.MonitoredItemData) -> tuple[float, float] | None:
    """The EURange property of the monitored node, looked up once per monitored item."""
    cached = getattr(mdata, "_shopfloor_eu_range", False)
    if cached is not False:
        return cached  # type: ignore[return-value]
    found: tuple[float, float] | None = None
    node_id = mdata.read_value_id.NodeId if mdata.read_value_id is not None else None
    node = service.aspace.get(node_id) if node_id is not None else None
    for ref in node.references if node is not None else []:
        if ref.ReferenceTypeId == _HAS_PROPERTY and ref.BrowseName.Name == "EURange":
            dv = service.aspace.read_attribute_value(ref.NodeId, ua.AttributeIds.Value)
            if dv.Value is not None and isinstance(dv.Value.Value, ua.Range):
                found = (dv.Value.Value.Low, dv.Value.Value.High)
    mdata._shopfloor_eu_range = found  # type: ignore[attr-defined]
    return found


def _passes_filter(
    service: mis.MonitoredItemService, mdata: mis.MonitoredItemData, new: ua.DataValue, last: ua.DataValue | None
) -> bool:
    """Whether a new value is reported, judged against the last *reported* value as OPC UA Part 4 7.22.2 says."""
    if last is None:
        return True
    if new.StatusCode != last.StatusCode:
        return True
    # Duck-typed: after a server loads its type definitions, ua.DataChangeFilter may be another class than
    # the one a decoded request carries.
    flt = mdata.filter if hasattr(mdata.filter, "DeadbandType") else None
    trigger = flt.Trigger if flt is not None else ua.DataChangeTrigger.StatusValue
    if trigger == ua.DataChangeTrigger.Status:
        return False
    if trigger == ua.DataChangeTrigger.StatusValueTimestamp and new.SourceTimestamp != last.SourceTimestamp:
        return True
    if new.Value == last.Value:
        return False
    if flt is None or flt.DeadbandType == ua.DeadbandType.None_:
        return True
    try:
        delta = abs(float(new.Value.Value) - float(last.Value.Value))  # type: ignore[union-attr, arg-type]
    except (TypeError, ValueError, AttributeError):
        return True  # deadbands apply to numbers only
    if flt.DeadbandType == ua.DeadbandType.Absolute:
        return delta > flt.DeadbandValue
    if flt.DeadbandType == ua.DeadbandType.Percent:
        eu_range = _eu_range(service, mdata)
        if eu_range is None:
            return True
        return delta > flt.DeadbandValue / 100.0 * abs(eu_range[1] - eu_range[0])
    return True


async def _datachange_callback(
    self: mis.MonitoredItemService, handle: int, value: ua.DataValue, error: ua.StatusCode | None = None
) -> None:
    """asyncua's data change callback with the per-item deep copy avoided and deadbands done as the spec says."""
    if error:
        await self.trigger_statuschange(error)
        return
    mid = self._monitored_datachange[handle]
    mdata = self._monitored_items[mid]
    if mdata.mode == ua.MonitoringMode.Disabled:
        return
    mdata.mvalue.set_current_datavalue(value)
    last = getattr(mdata.mvalue, "_shopfloor_reported", None)
    if not _passes_filter(self, mdata, value, last):
        return
    mdata.mvalue._shopfloor_reported = value  # type: ignore[attr-defined]
    event = ua.MonitoredItemNotification(ClientHandle=mdata.client_handle, Value=value)
    await self.isub.enqueue_datachange_event(mid, event, mdata.queue_size)


def install_fast_datachange() -> None:
    """Patch asyncua 2.1.0's server data change path (process-wide, idempotent).

    Stock asyncua deep-copies every value for every monitored item (most of its ~65 us per change), compares
    deadbands with the previous *sampled* value (so a slow drift is never reported) and does not implement
    PercentDeadband at all (it logs a warning per change and reports everything). The patch shares immutable
    values, compares with the last reported value, and applies PercentDeadband using the node's EURange.
    """
    global _fast_path_installed
    if _fast_path_installed:
        return
    mis.MonitoredItemValues.set_current_datavalue = _set_current_datavalue  # type: ignore[method-assign]
    mis.MonitoredItemService.datachange_callback = _datachange_callback  # type: ignore[method-assign]
    _fast_path_installed = True


# --- the server -------------------------------------------------------------------------------------------


class _PasswordUserManager(UserManager):
    """One username and password; everyone else, anonymous included, is refused."""

    def __init__(self, username: str, password: str) -> None:
        self._username = username
        self._password = password.encode()

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        given = password.encode() if isinstance(password, str) else password or b""
        if username == self._username and hmac.compare_digest(given, self._password):
            return User(role=UserRole.User, name=username)
        log.warning("refused login for user %r", username)
        return None


@dataclass
class _Variable:
    """One served variable and the last value written to it (writes happen only on change)."""

    node_id: ua.NodeId
    variant_type: ua.VariantType
    value: Any = None
    attribute: AttributeValue | None = None  # asyncua's storage of the Value attribute, found on first write


@dataclass
class _ServedMachine:
    line_id: str
    machine_id: str
    codec: RawStateCodec
    fastest_cycle_s: float
    pv_rng: random.Random
    process_values: dict[str, ProcessValue]  # by tag node
    state_tag: str | None = None
    count_tags: list[tuple[str, str, int]] = field(default_factory=list)  # node, counter kind, wrap
    speed_tags: list[str] = field(default_factory=list)
    alarm_tags: list[str] = field(default_factory=list)
    product_tags: list[tuple[str, dict[str, int]]] = field(default_factory=list)  # node, SKU -> code (or none)
    last: MachineSnapshot | None = None
    variables: dict[str, _Variable] = field(default_factory=dict)  # by node suffix
    force_id: ua.NodeId | None = None
    force_seen: str = ""


class PlcSimulator:
    """An OPC UA server simulating the machines of one OPC UA source of a factory config.

    Use as `async with PlcSimulator(cfg, endpoint=..., speed=60) as sim:`; `sim.endpoint` is the URL clients
    connect to (a port 0 endpoint is resolved to the port actually bound).
    """

    def __init__(
        self,
        cfg: FactoryConfig,
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        source: str | None = None,
        speed: float = 1.0,
        seed: int = 1,
        paused: bool = False,
        security: str = "none",
        cert_dir: Path = DEFAULT_CERT_DIR,
        username: str | None = None,
        password: str | None = None,
        bench_tags: int = 0,
        bench_period_ms: float = 100.0,
        bench_only: bool = False,
        bench_offset: int = 0,
        bench_stats_file: Path | None = None,
        start_time: datetime | None = None,
        sim_timestamps: bool = False,
        operation_limit: int | None = None,
        origin: datetime | None = None,
        truth_file: Path | None = None,
    ) -> None:
        if security not in SECURITY_POLICIES:
            raise ValueError(f"security must be one of {', '.join(SECURITY_POLICIES)}, not {security!r}")
        if username is not None and not password:
            raise ValueError("a username needs a password")
        if speed <= 0:
            raise ValueError("speed must be positive")
        if bench_tags < 0 or bench_tags % BENCH_TAGS_PER_MACHINE:
            raise ValueError(f"bench tags come in machines of {BENCH_TAGS_PER_MACHINE}: "
                             f"a multiple of {BENCH_TAGS_PER_MACHINE} expected, not {bench_tags}")
        if bench_offset < 0 or bench_offset + bench_tags // BENCH_TAGS_PER_MACHINE > 1000:
            raise ValueError("bench machines are numbered m000..m999: offset + machines must stay within 1000")
        if bench_period_ms <= 0:
            raise ValueError("the bench period must be positive")
        self.cfg = cfg
        self.endpoint = endpoint
        self.source = source or (cfg.sources.opcua[0].id if cfg.sources.opcua else None)
        self.speed = speed
        self.sim_timestamps = sim_timestamps
        self.seed = seed
        self.security = security
        self.cert_dir = Path(cert_dir)
        self.certificate_path: Path | None = None
        self.namespace_index = 0
        self._username = username
        self._password = password
        self._bench_tags = bench_tags
        self._bench_period_s = bench_period_ms / 1000.0
        self._bench_only = bench_only
        self._bench_offset = bench_offset
        self._bench_stats_file = Path(bench_stats_file) if bench_stats_file is not None else None
        # advertised as MaxMonitoredItemsPerCall and MaxNodesPerRead, so clients must split larger calls
        self._operation_limit = operation_limit
        # What the bench loop really did, for a benchmark to compare offered with stored: value changes written,
        # write rounds, and rounds that started late (the simulator could not keep up with the period).
        self.bench_changes = 0
        self.bench_rounds = 0
        self.bench_late_rounds = 0
        self._running_at_start = not paused
        self.sim_now = (start_time or datetime.now(UTC)).timestamp()
        # The simulated clock: sim_now = base + (monotonic - since) x speed while the gate is open. It is read
        # afresh on every tick, so time spent starting the server is not lost (no lag behind the demo's clock).
        self._clock_base = self.sim_now
        self._clock_since: float | None = None if paused else time.monotonic()
        # The plant starts at the demo's shared clock start (`origin`), so every simulator of the demo runs the
        # same world; it is then brought up to this simulator's now.
        origin_s = (origin or start_time or datetime.fromtimestamp(self.sim_now, UTC)).timestamp()
        self.plant = Plant(cfg, seed, int(min(origin_s, self.sim_now) * US))
        self.plant.advance(int(self.sim_now * US))
        self.truth_file = Path(truth_file) if truth_file is not None else None
        self._next_truth = 0.0
        self._server: Server | None = None
        self._machines: list[_ServedMachine] = []
        self._bench: list[_Variable] = []  # the changing Double tags, written every bench period
        self._bench_states: list[_Variable] = []  # one constant Int32 State per bench machine, written once
        self._running_id: ua.NodeId | None = None
        self._drop_id: ua.NodeId | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> PlcSimulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- life cycle

    async def start(self) -> None:
        """Build the address space, open the endpoint and start ticking."""
        install_fast_datachange()
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("Shopfloor PLC simulator")
        await server.set_application_uri(NAMESPACE_URI)
        server.disable_clock()  # its 1 s CurrentTime writes are noise in a simulator
        server.iserver.max_pending_messages_per_connection = MAX_PENDING_REQUESTS
        if self.security != "none":
            pair = pki.ensure_self_signed(self.cert_dir, NAMESPACE_URI, "Shopfloor PLC simulator")
            await server.load_certificate(str(pair.certificate))
            await server.load_private_key(str(pair.private_key))
            self.certificate_path = pair.certificate.resolve()
        server.set_security_policy(SECURITY_POLICIES[self.security])
        if self._username is not None and self._password is not None:
            server.iserver.set_user_manager(_PasswordUserManager(self._username, self._password))
            server.set_identity_tokens([ua.UserNameIdentityToken])
        else:
            server.set_identity_tokens([ua.AnonymousIdentityToken])
        self.namespace_index = await server.register_namespace(NAMESPACE_URI)
        self._server = server
        await self._build_address_space(server)
        if self._operation_limit:
            for limit in (ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
                          ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead):
                await server.write_attribute_value(
                    ua.NodeId(ua.Int32(limit)), ua.DataValue(ua.Variant(self._operation_limit, ua.VariantType.UInt32)))
        await server.start()
        if server.bserver is not None and server.bserver.port and ":0/" in self.endpoint + "/":
            self.endpoint = self.endpoint.replace(":0", f":{server.bserver.port}", 1)
        self.sim_now = max(self.sim_now, self._clock())  # the clock ran on while the server started
        await self._write_machines(first=True)
        self._set_gate(self._gate_open())
        await self._write(self._bench_states)
        await self._write_bench(0.0)
        self._tasks.append(asyncio.create_task(self._tick_loop(), name="plc-sim-tick"))
        if self._bench:
            self._tasks.append(asyncio.create_task(self._bench_loop(), name="plc-sim-bench"))
        log.info("PLC simulator serving %d machines and %d bench tags (%d bench machines) at %s",
                 len(self._machines), len(self._bench), len(self._bench_states), self.endpoint)

    async def stop(self) -> None:
        """Stop ticking and close the server; safe to call twice."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self.write_truth()
        if self._server is not None:
            await self._server.stop()
            self._server = None

    # -- helpers for tests

    def node_id(self, name: str) -> ua.NodeId:
        """The NodeId of a served node by its string id, e.g. `line-1.press-1.TotalCount`."""
        return _node_id(name, self.namespace_index)

    def machine(self, line_id: str, machine_id: str) -> PlantMachine:
        """A served machine of the plant (its counts are the ground truth)."""
        return self.plant.machines[(line_id, machine_id)]

    def write_truth(self) -> None:
        """The plant's ground truth up to now, as JSON (temp file + rename), when a truth file was asked for."""
        if self.truth_file is None:
            return
        self._save_truth(json.dumps(self.plant.truth.as_dict(), separators=(",", ":"), ensure_ascii=False))

    def _save_truth(self, text: str) -> None:
        assert self.truth_file is not None
        tmp = self.truth_file.with_name(self.truth_file.name + ".tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.truth_file)
        except OSError as exc:
            log.warning("cannot write the truth file %s: %s", self.truth_file, exc)

    async def set_running(self, running: bool) -> None:
        """Open or close the production gate, as a client writing Sim.Running would."""
        assert self._server is not None and self._running_id is not None
        await self._server.write_attribute_value(self._running_id, ua.DataValue(ua.Variant(running, ua.VariantType.Boolean)))

    # -- address space

    async def _build_address_space(self, server: Server) -> None:
        idx = self.namespace_index
        objects = server.nodes.objects
        sim = await objects.add_folder(_node_id("Sim", idx), ua.QualifiedName("Sim", idx))
        running = await sim.add_variable(
            _node_id("Sim.Running", idx), ua.QualifiedName("Running", idx), self._running_at_start, ua.VariantType.Boolean
        )
        await running.set_writable()
        self._running_id = running.nodeid
        drop = await sim.add_variable(_node_id("Sim.DropSubscriptions", idx),
                                      ua.QualifiedName("DropSubscriptions", idx), False, ua.VariantType.Boolean)
        await drop.set_writable()
        self._drop_id = drop.nodeid
        if not self._bench_only:
            await self._add_machines(server, objects)
        if self._bench_tags:
            await self._add_bench(objects)

    async def _add_bench(self, objects: Node) -> None:
        """Bench machines `bench.m<k>` (k from the offset): Double tags `t00`..`t99` and an Int32 `State`.

        Grouped as machines so that an agent config can address them like real ones (node_prefix
        `...;s=bench.m007.`); a hundred variables per object also keeps start-up linear, since asyncua scans
        all of a parent's references on every add.
        """
        idx = self.namespace_index
        folder = await objects.add_folder(_node_id("bench", idx), ua.QualifiedName("bench", idx))
        for k in range(self._bench_offset, self._bench_offset + self._bench_tags // BENCH_TAGS_PER_MACHINE):
            prefix = f"bench.m{k:03d}"
            obj = await folder.add_object(_node_id(prefix, idx), ua.QualifiedName(f"m{k:03d}", idx))
            state = _Variable(_node_id(f"{prefix}.State", idx), ua.VariantType.Int32, BENCH_STATE_RUNNING)
            await obj.add_variable(state.node_id, ua.QualifiedName("State", idx), BENCH_STATE_RUNNING,
                                   ua.VariantType.Int32)
            self._bench_states.append(state)
            for j in range(BENCH_TAGS_PER_MACHINE):
                var = _Variable(_node_id(f"{prefix}.t{j:02d}", idx), ua.VariantType.Double, 0.0)
                await obj.add_variable(var.node_id, ua.QualifiedName(f"t{j:02d}", idx), 0.0, ua.VariantType.Double)
                self._bench.append(var)

    async def _add_machines(self, server: Server, objects: Node) -> None:
        idx = self.namespace_index
        lines: dict[str, Node] = {}
        for line, machine in self.cfg.machines():
            if machine.source != self.source:
                continue
            if line.id not in lines:
                lines[line.id] = await objects.add_folder(_node_id(line.id, idx), ua.QualifiedName(line.id, idx))
            mtype = self.cfg.machine_types[machine.type]
            spec = self.cfg.state_maps[mtype.state_map]
            codec = RawStateCodec(spec, spec.mapper())
            cycles = [p.ideal_cycle_s[line.id] for p in self.cfg.products if line.id in p.ideal_cycle_s]
            pv_rng = random.Random(f"{self.seed}:{line.id}:{machine.id}:pv")
            served = _ServedMachine(
                line.id, machine.id, codec, min(cycles, default=DEFAULT_CYCLE_S), pv_rng,
                {tag.node: _process_value_for(tag, pv_rng) for tag in mtype.tags
                 if tag.signal == "process_value" and not _is_speed(tag)})
            prefix = f"{line.id}.{machine.id}"
            obj = await lines[line.id].add_object(_node_id(prefix, idx), ua.QualifiedName(machine.id, idx))

            async def add(parent: Node, suffix: str, vtype: ua.VariantType, value: Any, served: _ServedMachine = served,
                          prefix: str = prefix) -> Node:
                var = _Variable(_node_id(f"{prefix}.{suffix}", idx), vtype, value)
                served.variables[suffix] = var
                name = suffix.rsplit(".", 1)[-1]
                return await parent.add_variable(var.node_id, ua.QualifiedName(name, idx), value, vtype)

            for tag in mtype.tags:
                await self._add_tag(obj, tag, served, codec, add)
            truth = await obj.add_folder(_node_id(f"{prefix}.Truth", idx), ua.QualifiedName("Truth", idx))
            for counter in ("Total", "Good", "Reject"):
                await add(truth, f"Truth.{counter}", ua.VariantType.UInt64, 0)
            await add(truth, "Truth.State", ua.VariantType.String, "")
            force = await obj.add_variable(
                _node_id(f"{prefix}.Force", idx), ua.QualifiedName("Force", idx), "", ua.VariantType.String
            )
            await force.set_writable()
            served.force_id = force.nodeid
            self._machines.append(served)

    async def _add_tag(self, obj: Node, tag: TagSpec, served: _ServedMachine, codec: RawStateCodec, add: Any) -> None:
        idx = self.namespace_index
        if tag.signal == "state":
            served.state_tag = tag.node
            if codec.kind == "bits":
                for bit in codec.bits:
                    await add(obj, bit, ua.VariantType.Boolean, False)
            elif codec.kind == "packml":
                await add(obj, tag.node, ua.VariantType.String, "")
            else:
                await add(obj, tag.node, ua.VariantType.Int32, 0)
        elif tag.signal == "count":
            assert tag.counter is not None
            served.count_tags.append((tag.node, tag.counter, tag.rollover or COUNTER_WRAP))
            await add(obj, tag.node, ua.VariantType.UInt32, 0)
        elif tag.signal == "alarm":
            served.alarm_tags.append(tag.node)
            await add(obj, tag.node, ua.VariantType.Int32, 0)
        elif tag.signal == "product":
            # the SKU being made, as text, or as a code where the tag maps codes to SKUs
            codes = {str(sku): int(code) for code, sku in (getattr(tag, "codes", None) or {}).items()}
            served.product_tags.append((tag.node, codes))
            if codes:
                await add(obj, tag.node, ua.VariantType.Int32, 0)
            else:
                await add(obj, tag.node, ua.VariantType.String, "")
        else:
            if _is_speed(tag):
                served.speed_tags.append(tag.node)
                eu = (0.0, max(1.0, round(2 * 60.0 / served.fastest_cycle_s, 1)))
                start = 0.0
            else:
                pv = served.process_values[tag.node]
                eu, start = (pv.low, pv.high), round(pv.value, 3)
            node = await add(obj, tag.node, ua.VariantType.Double, start)
            # An EURange property is what a PercentDeadband filter is computed from (AnalogItemType's contract).
            await node.add_property(
                _node_id(f"{node.nodeid.Identifier}.EURange", idx), ua.QualifiedName("EURange", 0), ua.Range(*eu)
            )

    # -- ticking

    def _clock(self) -> float:
        """The simulated now (epoch seconds); it stands still while the gate (Sim.Running) is closed."""
        if self._clock_since is None:
            return self._clock_base
        return self._clock_base + (time.monotonic() - self._clock_since) * self.speed

    def _set_gate(self, running: bool) -> None:
        if running and self._clock_since is None:
            self._clock_since = time.monotonic()
        elif not running and self._clock_since is not None:
            self._clock_base, self._clock_since = self._clock(), None

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + TICK_S
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at + TICK_S, loop.time())
            try:
                await self._drop_subscriptions_if_asked()
                await self._read_forces()
                self._set_gate(self._gate_open())
                now = self._clock()
                if now > self.sim_now and self._machines:
                    dt_sim, self.sim_now = now - self.sim_now, now
                    await self._write_machines(dt_sim=dt_sim)
                    if self.truth_file is not None and loop.time() >= self._next_truth:
                        self._next_truth = loop.time() + TRUTH_EVERY_S
                        # the record is taken here; the file is written beside the loop, which goes on serving
                        text = json.dumps(self.plant.truth.as_dict(), separators=(",", ":"), ensure_ascii=False)
                        await asyncio.to_thread(self._save_truth, text)
            except Exception:
                log.exception("simulator tick failed")

    async def _bench_loop(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = next_at = loop.time()
        next_stats = t0
        while True:
            now = loop.time()
            if now > next_at + self._bench_period_s:
                self.bench_late_rounds += 1  # the last round overran a whole period: offered < asked
            next_at = max(next_at + self._bench_period_s, now)
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if self._gate_open():
                await self._write_bench(loop.time() - t0)
                self.bench_changes += len(self._bench)
                self.bench_rounds += 1
            if self._bench_stats_file is not None and loop.time() >= next_stats:
                next_stats = loop.time() + BENCH_STATS_EVERY_S
                self._write_bench_stats()

    def _write_bench_stats(self) -> None:
        """The bench counters as JSON (temp file + rename, so a reader never sees half a file)."""
        assert self._bench_stats_file is not None
        stats = {"time": time.time(), "changes": self.bench_changes, "rounds": self.bench_rounds,
                 "late_rounds": self.bench_late_rounds, "tags": len(self._bench),
                 "period_ms": self._bench_period_s * 1000.0, "cpu_s": time.process_time()}
        tmp = self._bench_stats_file.with_name(self._bench_stats_file.name + ".tmp")
        try:
            tmp.write_text(json.dumps(stats), encoding="utf-8")
            os.replace(tmp, self._bench_stats_file)
        except OSError as exc:
            log.warning("cannot write bench stats to %s: %s", self._bench_stats_file, exc)

    async def _drop_subscriptions_if_asked(self) -> None:
        """Sim.DropSubscriptions: delete every subscription on the server while the sessions stay open.

        A client then sees a healthy connection that delivers nothing: what a PLC whose subscription died
        looks like, for testing the agent's silent-subscription watchdog.
        """
        assert self._server is not None and self._drop_id is not None
        dv = self._server.read_attribute_value(self._drop_id)
        if not (dv.Value is not None and dv.Value.Value):
            return
        await self._server.write_attribute_value(self._drop_id, ua.DataValue(ua.Variant(False, ua.VariantType.Boolean)))
        service = self._server.iserver.subscription_service
        ids = list(service.subscriptions)
        await service.delete_subscriptions(ids)
        log.warning("dropped %s subscriptions on request (Sim.DropSubscriptions)", len(ids))

    def _gate_open(self) -> bool:
        assert self._server is not None and self._running_id is not None
        dv = self._server.read_attribute_value(self._running_id)
        return bool(dv.Value is not None and dv.Value.Value)

    async def _read_forces(self) -> None:
        assert self._server is not None
        for served in self._machines:
            assert served.force_id is not None
            dv = self._server.read_attribute_value(served.force_id)
            text = str(dv.Value.Value or "") if dv.Value is not None else ""
            if text == served.force_seen:
                continue
            served.force_seen = text
            wanted = text.strip().upper()
            name = f"{served.line_id}.{served.machine_id}"
            if not wanted:
                self.plant.force(served.line_id, served.machine_id, None)
                log.info("%s: force released", name)
            elif wanted in BoardState.__members__:
                self.plant.force(served.line_id, served.machine_id, BoardState(wanted))
                log.info("%s: forced to %s", name, wanted)
            else:
                log.warning("%s: Force %r is not a board state (%s); ignored", name, text,
                            ", ".join(BoardState.__members__))
        forced = self.plant.take_snapshots()
        if forced:
            await self._show(forced)

    async def _write_machines(self, *, dt_sim: float = 0.0, first: bool = False) -> None:
        """Run the plant up to now and write every change its machines went through, each stamped with its
        own simulated time (with --sim-timestamps), then the process values."""
        snapshots, _messages = self.plant.advance(int(self.sim_now * US))
        if first:
            snapshots = [self.plant.snapshot(s.line_id, s.machine_id) for s in self._machines]
        await self._show(snapshots, first=first)
        if dt_sim > 0 or first:
            stamp = self.sim_now
            changed: list[_Variable] = []
            for served in self._machines:
                fault = served.last is not None and served.last.state == BoardState.FAULT
                for node, pv in served.process_values.items():
                    value = pv.step(served.pv_rng, dt_sim, fault) if dt_sim > 0 else round(pv.value, 3)
                    var = served.variables[node]
                    if first or var.value != value:
                        var.value = value
                        changed.append(var)
            await self._write(changed, stamp)

    async def _show(self, snapshots: Sequence[MachineSnapshot], first: bool = False) -> None:
        """Write the PLC tags for machine snapshots, in time order, each with its own time."""
        by_machine = {(s.line_id, s.machine_id): s for s in self._machines}
        for snap in sorted(snapshots, key=lambda x: x.at_us):
            served = by_machine.get((snap.line, snap.machine))
            if served is None:
                continue
            served.last = snap
            changed: list[_Variable] = []

            def put(var: _Variable, value: Any, changed: list[_Variable] = changed) -> None:
                if first or var.value != value:
                    var.value = value
                    changed.append(var)

            shown, raw = served.codec.encode(snap.state)
            if served.state_tag is not None:
                if isinstance(raw, dict):
                    for bit, on in raw.items():
                        put(served.variables[bit], on)
                else:
                    put(served.variables[served.state_tag], raw)
            counts = {"total": snap.total, "good": snap.good, "reject": snap.reject}
            for node, kind, wrap in served.count_tags:
                put(served.variables[node], counts[kind] % wrap)
            for node in served.speed_tags:
                put(served.variables[node], snap.rate_per_min)
            for node in served.alarm_tags:
                put(served.variables[node], snap.alarm)
            for node, codes in served.product_tags:
                put(served.variables[node], codes.get(snap.sku, 0) if codes else snap.sku)
            put(served.variables["Truth.Total"], snap.total)
            put(served.variables["Truth.Good"], snap.good)
            put(served.variables["Truth.Reject"], snap.reject)
            put(served.variables["Truth.State"],
                BoardState.NO_SHIFT.value if snap.state == BoardState.NO_SHIFT else shown.value)
            await self._write(changed, snap.at_us / US)

    async def _write_bench(self, t: float) -> None:
        if not self._bench:
            return
        rng = random.Random(int(t * 1000) ^ self.seed)
        for i, var in enumerate(self._bench):
            # Each tag gets its own phase, so every tag really changes every period (the Gaussian noise
            # makes an unchanged value, which the server would not report, practically impossible).
            var.value = round(math.sin(t / 5.0 + i) * 50.0 + rng.gauss(0.0, 0.5), 4)
        await self._write(self._bench)

    async def _write(self, variables: Sequence[_Variable], sim_time: float | None = None) -> None:
        """Write values with the wall clock as source and server timestamp (the agent measures latency from it),
        or with their simulated time when asked (the demo, so that the boards' shifts match the machines')."""
        assert self._server is not None
        if not variables:
            return
        stamp = ua.DateTime.fromtimestamp(self.sim_now if sim_time is None else sim_time, UTC) \
            if self.sim_timestamps else ua.DateTime.now(UTC)
        aspace = self._server.iserver.aspace
        for var in variables:
            dv = ua.DataValue(ua.Variant(var.value, var.variant_type), SourceTimestamp=stamp, ServerTimestamp=stamp)
            if var.attribute is None:
                node = aspace.get(var.node_id)
                assert node is not None, var.node_id
                var.attribute = node.attributes[ua.AttributeIds.Value]
            # What AddressSpace.write_attribute_value does, minus the node lookup and the type check (the
            # simulator always writes its variables' own types): about a fifth of the CPU per change.
            var.attribute.value = dv
            callbacks = var.attribute.datachange_callbacks
            if callbacks:
                for handle, callback in tuple(callbacks.items()):
                    try:
                        await callback(handle, dv)
                    except Exception:
                        log.exception("data change callback failed for %s", var.node_id.Identifier)


# --- command line -----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the PLC simulator's options to a (sub)command parser."""
    parser.add_argument("--config", required=True, type=Path, metavar="FILE", help="factory config (YAML)")
    parser.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help="OPC UA endpoint URL to serve (default %(default)s)")
    parser.add_argument("--source", help="serve the machines of this OPC UA source id (default: the first one)")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="simulated seconds per real second (default %(default)s; 60 = a minute per second)")
    parser.add_argument("--seed", type=int, default=1, help="random seed; same seed, same behaviour (default 1)")
    parser.add_argument("--start", type=datetime.fromisoformat, metavar="ISO_TIME",
                        help="simulated clock start, e.g. 2025-03-03T09:00+08:00 (default: now)")
    add_anchor_argument(parser)
    parser.add_argument("--truth", type=Path, default=None, metavar="FILE",
                        help="write the plant's ground truth there (JSON, every second and on stop): time per board "
                             "state, units per SKU and ideal time per machine and shift; staffing and material per "
                             "line (docs/kpi.md)")
    parser.add_argument("--sim-timestamps", action="store_true",
                        help="stamp values with the simulated clock (default: the wall clock)")
    parser.add_argument("--paused", action="store_true", help="start with Sim.Running false (clock stopped)")
    parser.add_argument("--security", choices=sorted(SECURITY_POLICIES), default="none",
                        help="none; secure = Basic256Sha256 Sign and SignAndEncrypt only; all = both (default none)")
    parser.add_argument("--cert-dir", type=Path, default=DEFAULT_CERT_DIR, metavar="DIR",
                        help="where the server certificate and key are generated once (default %(default)s)")
    parser.add_argument("--username", help="require this user name (anonymous login is then refused)")
    parser.add_argument("--password-env", default="SHOPFLOOR_SIM_PASSWORD", metavar="VAR",
                        help="environment variable holding the password (default %(default)s)")
    parser.add_argument("--bench-tags", type=int, default=0, metavar="N",
                        help="add N changing Double tags (a multiple of 100), as machines bench.m<k> with tags "
                             "bench.m<k>.t00..t99 and a constant Int32 bench.m<k>.State = 1")
    parser.add_argument("--bench-period-ms", type=float, default=100.0, metavar="P",
                        help="each bench tag changes every P ms (default %(default)s)")
    parser.add_argument("--bench-only", action="store_true", help="serve only the bench tags, no machines")
    parser.add_argument("--bench-offset", type=int, default=0, metavar="K",
                        help="number the bench machines from m<K> (several simulators serve disjoint machines)")
    parser.add_argument("--operation-limit", type=int, default=None, metavar="N",
                        help="advertise N as MaxMonitoredItemsPerCall and MaxNodesPerRead (default: asyncua's)")
    parser.add_argument("--bench-stats-file", type=Path, default=None, metavar="PATH",
                        help="write the bench counters (changes written, rounds, late rounds) there as JSON "
                             "every second")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; 0 on a clean stop, 2 on a configuration problem."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("asyncua").setLevel(logging.WARNING)  # asyncua logs every monitored item at INFO
    try:
        cfg = agent_config.load(args.config, resolve_secrets=False)
    except agent_config.ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    password = None
    if args.username:
        password = os.environ.get(args.password_env)
        if not password:
            print(f"--username needs a password in the environment variable {args.password_env}", file=sys.stderr)
            return 2
    source = args.source or (cfg.sources.opcua[0].id if cfg.sources.opcua else None)
    if not args.bench_only and source not in {s.id for s in cfg.sources.opcua}:
        print(f"{args.config}: no OPC UA source {source!r} (sources.opcua)", file=sys.stderr)
        return 2
    try:
        simulator = PlcSimulator(
            cfg, endpoint=args.endpoint, source=source, speed=args.speed, seed=args.seed, paused=args.paused,
            security=args.security, cert_dir=args.cert_dir, username=args.username, password=password,
            bench_tags=args.bench_tags, bench_period_ms=args.bench_period_ms, bench_only=args.bench_only,
            bench_offset=args.bench_offset, bench_stats_file=args.bench_stats_file, start_time=caught_up(args.start, args.speed, args.sim_anchor),
            sim_timestamps=args.sim_timestamps,
            operation_limit=args.operation_limit,
            origin=args.start, truth_file=args.truth,
        )
    except ValueError as exc:
        print(f"plc simulator: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(simulator))


async def _serve(simulator: PlcSimulator) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except NotImplementedError:  # Windows: no loop signal handlers
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))
    started = time.monotonic()
    async with simulator:
        if simulator.certificate_path is not None:
            print(f"PLC simulator certificate {simulator.certificate_path}", flush=True)
        print(f"PLC simulator ready at {simulator.endpoint}", flush=True)
        log.info("ready after %.1f s", time.monotonic() - started)
        await stop.wait()
    log.info("PLC simulator stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator standalone: `python -m simulators.plc --config config/factory.yaml`."""
    parser = argparse.ArgumentParser(prog="shopfloor simulate plc", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
