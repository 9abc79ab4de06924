"""The whole factory config (one section per key of the YAML file), the plan the mapper is given, and the
rules across sections, checked in the order their problems are reported."""

from __future__ import annotations

from collections.abc import Iterable

from agent.config.base import Issue, Model
from agent.config.capacity import CapacitySettings, check_capacity
from agent.config.collect import Collect, check_collect, collect_bindings
from agent.config.dashboard import (
    DashboardSettings,
    check_dashboard,
    check_dashboard_secrets,
    check_dashboard_users,
)
from agent.config.kpi import KpiSettings, check_kpi
from agent.config.machine_types import MachineType, StateMapSpec, check_machine_types
from agent.config.plant import Line, Machine, check_line_ids, check_lines
from agent.config.runtime import (
    AgentSettings,
    HistorianSettings,
    LiveSettings,
    OutboxSettings,
    check_historian,
    check_live,
)
from agent.config.site import Material, Operator, Product, Shift, Site, check_products, check_site_ids
from agent.config.sources import Sources, check_routes, check_source_ids, check_source_secrets
from agent.core.plan import MappingPlan, TagBinding
from agent.core.states import StateMapper


class FactoryConfig(Model):
    site: Site
    shifts: list[Shift] = []
    products: list[Product] = []
    materials: list[Material] = []
    operators: list[Operator] = []
    lines: list[Line] = []
    machine_types: dict[str, MachineType] = {}
    state_maps: dict[str, StateMapSpec] = {}
    sources: Sources = Sources()
    collect: Collect = {}
    agent: AgentSettings = AgentSettings()
    outbox: OutboxSettings = OutboxSettings()
    historian: HistorianSettings = HistorianSettings()
    live: LiveSettings = LiveSettings()
    dashboard: DashboardSettings = DashboardSettings()
    kpi: KpiSettings = KpiSettings()
    capacity: CapacitySettings = CapacitySettings()

    def machines(self) -> Iterable[tuple[Line, Machine]]:
        for line in self.lines:
            for machine in line.machines:
                yield line, machine

    def state_mapper(self, machine_type: str) -> StateMapper:
        return self.state_maps[self.machine_types[machine_type].state_map].mapper()

    def mapping_plan(self) -> MappingPlan:
        """What the mapper (agent/core) needs of this config, as plain data."""
        bindings = []
        for line, machine in self.machines():
            mtype = self.machine_types[machine.type]
            mapper = self.state_mapper(machine.type)
            for spec in mtype.tags:
                pv_tags = {"site": self.site.id, "line": line.id, "machine": machine.id,
                           "name": spec.name or spec.node}
                bindings.append(TagBinding(machine.source, machine.node_id(spec), line.id, machine.id, spec.plan(),
                                           mapper, dict(mtype.alarm_texts), pv_tags))
        bindings += collect_bindings(self.site.id, self.collect, self.sources.tag_kinds())
        return MappingPlan(
            site=self.site.id,
            stations={ln.id: frozenset(s.id for s in ln.stations) for ln in self.lines},
            machines={m.id: (ln.id, m.source) for ln, m in self.machines()},
            materials=frozenset(m.id for m in self.materials),
            skus=frozenset(p.sku for p in self.products),
            badges={o.badge: o.id for o in self.operators},
            routes={s.id: [r.plan() for r in s.routes] for s in self.sources.mqtt},
            max_payload={s.id: s.max_payload_bytes for s in self.sources.mqtt},
            bindings=bindings,
            microstop_s=self.kpi.microstop_s)


def cross_check(cfg: FactoryConfig, resolve_secrets: bool) -> list[Issue]:
    """Rules across sections: references resolve, ids are unique, secrets come from one place and (when
    `resolve_secrets`) can be read. Each section checks its own rules, next to its models; the calls below are
    in the order a user sees the problems."""
    line_ids = [ln.id for ln in cfg.lines]
    material_ids = {m.id for m in cfg.materials}
    product_skus = {p.sku for p in cfg.products}
    mqtt_ids = {s.id for s in cfg.sources.mqtt}
    return [
        *check_line_ids(cfg.lines),
        *check_site_ids(cfg.shifts, cfg.products, cfg.operators, cfg.materials),
        *check_source_ids(cfg.sources),
        *check_lines(cfg.lines, cfg.machine_types, cfg.sources.tag_kinds()),
        *check_machine_types(cfg.machine_types, cfg.state_maps, product_skus),
        *check_products(cfg.products, line_ids, material_ids),
        *check_routes(cfg.sources),
        *check_collect(cfg.collect, cfg.sources.tag_kinds()),
        *check_dashboard(cfg.dashboard, line_ids, mqtt_ids),
        *check_kpi(cfg.kpi, line_ids, cfg.products),
        *check_capacity(cfg.capacity, line_ids, product_skus, resolve_secrets),
        *check_dashboard_users(cfg.dashboard),
        *check_live(cfg.live, mqtt_ids),
        *check_source_secrets(cfg.sources, resolve_secrets),
        *check_dashboard_secrets(cfg.dashboard, resolve_secrets),
        *check_historian(cfg.historian, resolve_secrets),
    ]
