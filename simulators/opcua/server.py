"""The OPC UA PLC simulator's server: an asyncua server showing the machines of one source of the simulated plant.

The machines and their raw tags come from simulators/machines (protocol-neutral); this module gives each tag a
variable `<line>.<machine>.<tag>` (truth under `<line>.<machine>.Truth`), writes every change stamped with its own
simulated time when asked, and serves the two controls: `Sim.Running` stops the simulated clock,
`<line>.<machine>.Force` pins a machine in a board state. Bench tags (`bench.m<k>.t00`..) are changing Doubles for
throughput measurements.

Security modes accept every client certificate: this is a simulator, it trusts whoever connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
import random
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
from asyncua.server.address_space import AttributeValue
from asyncua.server.user_managers import UserManager

from agent.config import FactoryConfig
from simulators import pki
from simulators.machines import Machine, MachineTags, SimClock, TagBatch, TagType, save_truth
from simulators.opcua.fastpath import install_fast_datachange
from simulators.plant import US, PlantMachine

log = logging.getLogger(__name__)

NAMESPACE_URI = "urn:shopfloor:plc-sim"
DEFAULT_ENDPOINT = "opc.tcp://127.0.0.1:4840/shopfloor/plc"
DEFAULT_CERT_DIR = Path("data/plc-sim-pki")
TICK_S = 0.1
TRUTH_EVERY_S = 2.0  # the truth file is written this often (and on stop)
BENCH_TAGS_PER_MACHINE = 100  # bench machine bench.m<k> has tags t00..t99 plus State
BENCH_STATE_RUNNING = 1  # the constant bench.m<k>.State value (the bench config maps code 1 to RUNNING)
BENCH_STATS_EVERY_S = 1.0
# asyncua closes a connection once this many requests wait behind its processor; 500 (the default) is too few
# for a client that creates monitored items one request per tag.
MAX_PENDING_REQUESTS = 100_000

VARIANT_TYPES: dict[TagType, ua.VariantType] = {
    "bool": ua.VariantType.Boolean, "int32": ua.VariantType.Int32, "uint32": ua.VariantType.UInt32,
    "uint64": ua.VariantType.UInt64, "double": ua.VariantType.Double, "string": ua.VariantType.String,
}

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


def _node_id(name: str, namespace: int) -> ua.NodeId:
    """A string NodeId (asyncua's stubs want its own str/int subclasses)."""
    return ua.NodeId(ua.String(name), ua.Int16(namespace))


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
    """A machine of the model and the variables that show its tags (by tag name)."""

    machine: Machine
    variables: dict[str, _Variable] = field(default_factory=dict)
    force_id: ua.NodeId | None = None
    force_seen: str = ""


class PlcSimulator:
    """An OPC UA server simulating the machines of one OPC UA source of a factory config.

    Use as `async with PlcSimulator(cfg, endpoint=..., speed=60) as sim:`; `sim.endpoint` is the URL clients
    connect to (a port 0 endpoint is resolved to the port actually bound). Every simulated timestamp comes from
    `sim.clock`; only with `sim_timestamps=False` are values stamped with the wall clock, on purpose: the agent
    measures its latency from them.
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
        clock: SimClock | None = None,
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
        self.speed = clock.speed if clock is not None else speed
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
        # The simulated clock stands still while the gate (Sim.Running) is closed; it is read afresh on every tick,
        # so time spent starting the server is not lost (no lag behind the demo's clock). A given clock (a test's)
        # replaces the one `start_time` and `speed` would make.
        self.clock = clock or SimClock(int(start_time.timestamp() * US) if start_time is not None else None, speed,
                                       running=not paused)
        # The plant starts at the demo's shared clock start (`origin`), so every simulator of the demo runs the
        # same world; it is then brought up to this simulator's now.
        origin_us = int(origin.timestamp() * US) if origin is not None else self.clock.start_us
        self.model = MachineTags(cfg, None if bench_only else self.source, seed=seed, origin_us=origin_us,
                                 now_us=self.clock.start_us)
        self.plant = self.model.plant
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
        # the clock ran on while the server started
        await self._show(self.model.start(max(self.model.now_us, self.clock.now_us())), first=True)
        self.clock.set_running(self._gate_open())
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

    @property
    def sim_now(self) -> float:
        """The simulated time (epoch seconds) the machines have been shown up to."""
        return self.model.now_us / US

    # -- helpers for tests

    def node_id(self, name: str) -> ua.NodeId:
        """The NodeId of a served node by its string id, e.g. `line-1.press-1.TotalCount`."""
        return _node_id(name, self.namespace_index)

    def machine(self, line_id: str, machine_id: str) -> PlantMachine:
        """A served machine of the plant (its counts are the ground truth)."""
        return self.plant.machines[(line_id, machine_id)]

    def write_truth(self) -> None:
        """The plant's ground truth up to now, as JSON (temp file + rename), when a truth file was asked for."""
        if self.truth_file is not None:
            save_truth(self.truth_file, self.model.truth_json())

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
        for machine in self.model.machines:
            if machine.line_id not in lines:
                lines[machine.line_id] = await objects.add_folder(_node_id(machine.line_id, idx),
                                                                  ua.QualifiedName(machine.line_id, idx))
            served = _ServedMachine(machine)
            prefix = machine.key
            obj = await lines[machine.line_id].add_object(_node_id(prefix, idx),
                                                          ua.QualifiedName(machine.machine_id, idx))
            truth: Node | None = None
            for tag in machine.tags.values():
                parent = obj
                if tag.truth:
                    if truth is None:
                        truth = await obj.add_folder(_node_id(f"{prefix}.Truth", idx), ua.QualifiedName("Truth", idx))
                    parent = truth
                value = machine.values[tag.name]
                var = _Variable(_node_id(f"{prefix}.{tag.name}", idx), VARIANT_TYPES[tag.type], value)
                served.variables[tag.name] = var
                node = await parent.add_variable(var.node_id, ua.QualifiedName(tag.name.rsplit(".", 1)[-1], idx),
                                                 value, var.variant_type)
                if tag.eu_range is not None:
                    # An EURange property is what a PercentDeadband filter is computed from (AnalogItemType's
                    # contract).
                    await node.add_property(_node_id(f"{prefix}.{tag.name}.EURange", idx),
                                            ua.QualifiedName("EURange", 0), ua.Range(*tag.eu_range))
            force = await obj.add_variable(
                _node_id(f"{prefix}.Force", idx), ua.QualifiedName("Force", idx), "", ua.VariantType.String
            )
            await force.set_writable()
            served.force_id = force.nodeid
            self._machines.append(served)

    # -- ticking

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + TICK_S
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at + TICK_S, loop.time())
            try:
                await self._drop_subscriptions_if_asked()
                await self._read_forces()
                self.clock.set_running(self._gate_open())
                now = self.clock.now_us()
                if now > self.model.now_us and self._machines:
                    await self._show(self.model.advance(now))
                    if self.truth_file is not None and loop.time() >= self._next_truth:
                        self._next_truth = loop.time() + TRUTH_EVERY_S
                        # the record is taken here; the file is written beside the loop, which goes on serving
                        await asyncio.to_thread(save_truth, self.truth_file, self.model.truth_json())
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
            self.model.force(served.machine.line_id, served.machine.machine_id, text)
        await self._show(self.model.take_forced())

    async def _show(self, batches: Sequence[TagBatch], first: bool = False) -> None:
        """Write the tag changes of the model, batch by batch, each with its own simulated time."""
        served = {s.machine.key: s for s in self._machines}
        for batch in batches:
            changed: list[_Variable] = []
            for change in batch.changes:
                var = served[change.machine.key].variables[change.tag.name]
                if first or var.value != change.value:
                    var.value = change.value
                    changed.append(var)
            await self._write(changed, batch.at_us / US)

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
