/*
 * Shopfloor e-boards: the line board: the summary strip (order, output against plan, line OEE, state mix,
 * headcount, andon and shortages), the machine tiles, the people panel (stations, operators, andon calls) and
 * the materials panel (stock, minutes to shortage, lots, material calls). Rows are keyed by id and updated in
 * place; lists are bounded.
 */

import { API, t, tOr } from "./sf-page.js";
import { DASH, fmt, isNum } from "./sf-format.js";
import { byId, el, label, setAttr, setLabel, setPlain, setText, setWidth, show, syncList } from "./sf-dom.js";
import { renderStateMix } from "./sf-states.js";
import { renderTiles, stationNamesOf } from "./sf-tiles.js";
import { renderShift, showLiveStatus, tick } from "./sf-topbar.js";
import { postJson } from "./sf-write.js";

const LIST_MAX = 5;             // calls shown per list on one screen; the rest is counted

function lineOee(board) {
  const ids = board.machine_ids || [];
  const last = ids.length ? board.machines[ids[ids.length - 1]] : null;
  const coverage = ids.map((id) => board.machines[id] && board.machines[id].oee && board.machines[id].oee.coverage)
    .filter(isNum);
  return { oee: last && last.oee, coverage: coverage.length ? Math.min(...coverage) : null };
}

function renderSummary(board) {
  const order = board.order;
  const orderNode = byId("sum-order");
  if (order) {
    setPlain(orderNode, order.order_id);
    setText(byId("sum-product"), [order.sku, isNum(order.target_qty)
      ? t("tile.target") + " " + fmt.num(order.target_qty) + " " + fmt.unit("pcs") : "", order.product].filter(Boolean).join(" · "));
  } else {
    setLabel(orderNode, "tile.no_order");
    setText(byId("sum-product"), "");
  }

  const out = board.output || {};
  setText(byId("sum-good"), fmt.num(out.good));
  setText(byId("sum-plan"), isNum(out.plan) ? " / " + fmt.num(out.plan) + " " + fmt.unit("pcs") : " " + fmt.unit("pcs"));
  setWidth(byId("sum-output-bar"), isNum(out.plan) && out.plan > 0 ? out.good / out.plan : 0);
  const behind = isNum(out.plan) && out.plan > 0 && out.good / out.plan < 0.9;
  byId("sum-good").classList.toggle("behind", behind);
  const apartLine = [out.no_order ? t("tile.no_order_units", { n: fmt.num(out.no_order) }) : "",
    out.other_sku ? t("tile.other_sku_units", { n: fmt.num(out.other_sku) }) : ""].filter(Boolean).join(" · ");
  const apartNode = byId("sum-apart");
  if (apartNode) { setText(apartNode, apartLine); show(apartNode, Boolean(apartLine)); }

  const { oee, coverage } = lineOee(board);
  setText(byId("sum-oee"), fmt.pct(oee && oee.oee));
  const sub = [];
  if (oee) sub.push(t("kpi.a_short") + " " + fmt.pct(oee.availability), t("kpi.e_short") + " " + fmt.pct(oee.effectiveness),
    t("kpi.q_short") + " " + fmt.pct(oee.quality));
  if (isNum(coverage) && coverage < 0.9995) sub.push(t("kpi.coverage") + " " + fmt.pct(coverage));
  setText(byId("sum-aeq"), sub.join(" · "));

  renderStateMix(byId("sum-states"), board.states);

  const people = board.people || {};
  const head = people.headcount || {};
  setText(byId("sum-headcount"), fmt.num(head.present) + " / " + fmt.num(head.planned));
  byId("sum-headcount").classList.toggle("behind", isNum(head.planned) && head.present < head.planned);
  setText(byId("sum-opo"), isNum(people.output_per_operator)
    ? t("people.output_per_operator") + " " + fmt.num1(people.output_per_operator) + " " + fmt.unit("pcs_per_person") : "");

  const open = (people.andon || []).length;
  setText(byId("sum-andon"), fmt.num(open));
  byId("sum-andon-box").classList.toggle("alert", open > 0);
  const materials = (board.materials && board.materials.items) || [];
  const short = materials.filter(isShort);
  setText(byId("sum-shortage"), short.length ? t("ov.shortages") + ": " + short.map((i) => i.name).join(", ") : "");
}

function isShort(item) {
  return item.below_reorder || (isNum(item.minutes_to_shortage) && item.minutes_to_shortage < 60);
}

function renderPeople(board) {
  const people = board.people || {};
  const output = people.operator_output || {};
  syncList(byId("stations"), people.stations || [], (s) => s.id, () => {
    const row = el("tr");
    row._refs = { name: el("td", "station-name"), ops: el("div", "ops"), head: el("td", "num"), missing: el("td", "num") };
    const cell = el("td", "operators");
    cell.append(row._refs.ops);
    row.append(row._refs.name, cell, row._refs.head, row._refs.missing);
    return row;
  }, (row, s) => {
    const r = row._refs;
    setText(r.name, s.name || s.id);
    const present = s.present || [];
    const shown = present.length ? present : [{ badge: "", nobody: true }];
    syncList(r.ops, shown, (p) => (p.nobody ? "-" : p.badge), (p) => {
      if (p.nobody) return label("span", "op nobody", "people.nobody");
      const chip = el("span", "op");
      chip._refs = { warn: el("span", "op-warn", "⚠"), name: el("span", "op-name"), out: el("span", "op-out") };
      chip.append(chip._refs.warn, chip._refs.name, chip._refs.out);
      return chip;
    }, (chip, p) => {
      if (p.nobody) return;
      chip.classList.toggle("unskilled", p.skilled === false);
      show(chip._refs.warn, p.skilled === false);
      setText(chip._refs.name, p.name || p.badge);
      const made = output[p.badge];
      setText(chip._refs.out, isNum(made) ? fmt.num(made) : "");
    });
    setText(r.head, fmt.num(present.length) + " / " + fmt.num(s.planned));
    setText(r.missing, fmt.num(s.missing));
    r.missing.classList.toggle("alert", s.missing > 0);
    row.classList.toggle("short", s.missing > 0);
  });
  const anyUnskilled = (people.stations || []).some((s) => (s.present || []).some((p) => p.skilled === false));
  const legend = byId("unskilled-legend");
  show(legend, anyUnskilled);

  const stationNames = stationNamesOf(board);
  const calls = people.andon || [];
  renderCalls(byId("andon-list"), calls, (c) => c.call_id, (li, c) => {
    const r = li._refs;
    setAttr(li, "data-kind", c.kind);
    setText(r.kind, tOr("andon.kind." + c.kind, c.kind));
    setText(r.where, stationNames[c.station] || c.station);
    setAttr(r.age, "data-since-ms", c.called_ms);
    setLabel(r.status, c.acked_ms ? "andon.acked" : "andon.waiting");
    li.classList.toggle("acked", Boolean(c.acked_ms));
    r.status.classList.remove("error");
    if (API.ack) showAckButton(li, c, board.line && board.line.id);
  });
  show(byId("andon-empty"), calls.length === 0);
  const stats = people.andon_shift || {};
  setText(byId("andon-stats"), [t("andon.calls_shift") + " " + fmt.num(stats.calls),
    t("andon.mean_ack") + " " + fmt.span(stats.mean_ack_s),
    t("andon.mean_resolve") + " " + fmt.span(stats.mean_resolve_s)].join(" · "));
}

/** The Acknowledge button of an open andon call, for a user who may (the page's `api.ack` is only given to a
 * lead or admin): POSTs to the call's ack URL; the board's next update shows the call acknowledged. */
function showAckButton(li, call, lineId) {
  const r = li._refs;
  li._call = call;
  li._line = lineId;
  if (!r.ack) {
    r.ack = label("button", "call-ack", "andon.ack");
    r.ack.type = "button";
    r.ack.addEventListener("click", () => acknowledge(li));
    li.append(r.ack);
    li.classList.add("can-ack");
  }
  show(r.ack, !call.acked_ms);
}

async function acknowledge(li) {
  const r = li._refs;
  const url = API.ack.replace("{line}", encodeURIComponent(li._line || ""))
    .replace("{call_id}", encodeURIComponent(li._call.call_id));
  r.ack.disabled = true;
  try {
    await postJson(url, {}, t("andon.ack_failed"));
    setLabel(r.status, "andon.acked");
    li.classList.add("acked");
    show(r.ack, false);
  } catch (err) {
    setAttr(r.status, "data-i18n", null);
    setText(r.status, err.message);
    r.status.classList.add("error");
  } finally {
    r.ack.disabled = false;
  }
}

/** A bounded list of open calls (andon or material) with a ticking age; beyond LIST_MAX only a count. */
function renderCalls(list, calls, keyOf, update) {
  const shown = calls.slice(0, LIST_MAX);
  const more = calls.length - shown.length;
  const items = more > 0 ? shown.concat([{ more }]) : shown;
  syncList(list, items, (c) => (c.more ? "+more" : keyOf(c)), (c) => {
    const li = el("li", c.more ? "call more" : "call");
    li._refs = { kind: el("span", "call-kind"), where: el("span", "call-where"), age: el("span", "call-age"), status: el("span", "call-status") };
    li.append(li._refs.kind, li._refs.where, li._refs.age, li._refs.status);
    li._refs.age.dataset.warnAfterS = "300";
    return li;
  }, (li, c) => {
    if (c.more) setText(li._refs.kind, "+" + fmt.num(c.more));
    else update(li, c);
  });
}

function renderMaterials(board) {
  const m = board.materials || {};
  const stationNames = stationNamesOf(board);
  const names = {};
  const units = {};
  for (const i of m.items || []) { names[i.id] = i.name; units[i.id] = i.unit; }
  setText(byId("material-rate"), isNum(m.rate_per_min)
    ? t("material.line_rate") + " " + fmt.num1(m.rate_per_min) + " " + fmt.unit("pcs/min") : "");
  const lots = m.lots || [];
  syncList(byId("materials"), m.items || [], (i) => i.id, () => {
    const row = el("tr");
    const r = { name: el("td", "mat-name"), stock: el("td", "num"), left: el("td", "num"), lots: el("td", "lots") };
    r.nameText = el("span");
    r.notUsed = label("small", "dim", "material.not_used");
    r.name.append(r.nameText, r.notUsed);
    r.stockValue = el("b");
    r.stockUnit = el("span", "unit");
    r.reorder = el("span", "reorder-mark", "⚠");
    r.stock.append(r.reorder, r.stockValue, r.stockUnit);
    r.leftValue = el("b");
    r.left.append(r.leftValue);
    row.append(r.name, r.stock, r.left, r.lots);
    row._refs = r;
    return row;
  }, (row, item) => {
    const r = row._refs;
    setText(r.nameText, item.name);
    show(r.notUsed, !item.in_bom);
    setText(r.stockValue, fmt.num1(item.stock));
    setText(r.stockUnit, fmt.unitAfter(item.unit));
    setText(r.leftValue, item.in_bom ? fmt.minutes(item.minutes_to_shortage) : DASH);
    show(r.reorder, Boolean(item.below_reorder));
    const soon = isNum(item.minutes_to_shortage) && item.minutes_to_shortage < 60;
    row.classList.toggle("short", soon || Boolean(item.below_reorder));
    row.classList.toggle("below", Boolean(item.below_reorder));
    r.left.classList.toggle("alert", soon);
    const mine = lots.filter((l) => l.material === item.id);
    setText(r.lots, mine.map((l) => (stationNames[l.station] || l.station) + ": " + (l.lot || DASH)).join(" · "));
  });
  show(byId("reorder-legend"), (m.items || []).some((i) => i.below_reorder));
  const calls = m.calls || [];
  renderCalls(byId("material-calls"), calls, (c) => c.call_id, (li, c) => {
    const r = li._refs;
    setAttr(li, "data-kind", "material");
    setText(r.kind, names[c.material] || c.material);
    setText(r.where, (stationNames[c.station] || c.station) + (isNum(c.qty) ? " · " + fmt.num1(c.qty) + " " + fmt.unit(units[c.material]) : ""));
    setAttr(r.age, "data-since-ms", c.called_ms);
    setText(r.status, "");
  });
  show(byId("material-calls-empty"), calls.length === 0);
}

export function renderLine(board) {
  renderShift(board.shift);
  showLiveStatus(board.live);
  const name = byId("line-name");
  if (name && board.line) setText(name, board.line.name);
  renderSummary(board);
  renderTiles(byId("tiles"), board, board.machine_ids || []);
  renderPeople(board);
  renderMaterials(board);
  tick();
}
