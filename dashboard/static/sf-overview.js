/*
 * Shopfloor e-boards: the factory overview: a card per line (state mix, output against plan, OEE, andon,
 * headcount, order, shortages, a chip per machine), each linking to its line board, and the capacity push's
 * last delivery to the C2M platform.
 */

import { STATES, pageUrl, t } from "./sf-page.js";
import { fmt, isNum } from "./sf-format.js";
import { byId, el, label, setAttr, setText, setWidth, show, syncList } from "./sf-dom.js";
import { renderStateMix, showState } from "./sf-states.js";
import { renderShift, showLiveStatus, tick } from "./sf-topbar.js";

function buildCard(card) {
  const r = {};
  r.mixbar = el("div", "mixbar");
  r.mix = el("div", "state-mix");
  const kpis = el("div", "card-kpis");
  const box = (key, cls) => {
    const node = el("div", "card-kpi " + (cls || ""));
    node.append(label("span", "lbl", key));
    const value = el("b", "card-value");
    const sub = el("span", "card-sub");
    node.append(value, sub);
    kpis.append(node);
    return { node, value, sub };
  };
  r.output = box("ov.output", "kpi-output");
  r.outputBar = el("span", "bar");
  r.outputBarFill = el("i");
  r.outputBar.append(r.outputBarFill);
  r.output.node.append(r.outputBar);
  r.oee = box("kpi.line_oee", "kpi-oee");
  r.andon = box("ov.andon_open", "kpi-andon");
  r.staff = box("ov.headcount", "kpi-staff");
  r.orderLine = el("p", "card-order");
  r.shortage = el("p", "card-shortage");
  r.shortage.append(label("span", "lbl", "ov.shortages"), el("b"));
  r.chips = el("div", "machine-chips");
  card.append(r.mixbar, r.mix, kpis, r.orderLine, r.shortage, r.chips);
  card._refs = r;
}

function updateCard(card, line) {
  if (!card._refs) buildCard(card);
  const r = card._refs;
  const title = card.querySelector(".card-title");
  if (title) setText(title, line.name);
  const mix = STATES.filter((s) => line.states && line.states[s] > 0).map((s) => [s, line.states[s]]);
  syncList(r.mixbar, mix, (i) => i[0], () => el("span", "mix-seg"), (seg, [state, n]) => {
    setAttr(seg, "data-state", state);
    if (seg.style.flexGrow !== String(n)) seg.style.flexGrow = String(n);
  });
  renderStateMix(r.mix, line.states);

  const out = line.output || {};
  setText(r.output.value, fmt.num(out.good));
  setText(r.output.sub, isNum(out.plan) ? "/ " + fmt.num(out.plan) + " " + fmt.unit("pcs") : fmt.unit("pcs"));
  setWidth(r.outputBarFill, isNum(out.plan) && out.plan > 0 ? out.good / out.plan : 0);
  r.output.node.classList.toggle("behind", isNum(out.plan) && out.plan > 0 && out.good / out.plan < 0.9);

  setText(r.oee.value, fmt.pct(line.oee && line.oee.oee));
  setText(r.oee.sub, isNum(line.coverage) && line.coverage < 0.9995 ? t("kpi.coverage") + " " + fmt.pct(line.coverage) : "");
  setText(r.andon.value, fmt.num(line.andon_open));
  r.andon.node.classList.toggle("alert", line.andon_open > 0);
  const head = line.headcount || {};
  setText(r.staff.value, fmt.num(head.present) + " / " + fmt.num(head.planned));
  r.staff.node.classList.toggle("behind", isNum(head.planned) && head.present < head.planned);

  const order = line.order;
  setText(r.orderLine, order ? [order.order_id, order.sku, order.product].filter(Boolean).join(" · ") : "");
  const short = line.shortages || [];
  show(r.shortage, short.length > 0);
  setText(r.shortage.lastChild, " " + short.join(", "));

  syncList(r.chips, line.machines || [], (m) => m.id, (m) => {
    const chip = el("span", "machine-chip");
    chip.setAttribute("data-machine", m.id);
    chip._refs = { name: el("span", "mc-name"), state: el("span", "mc-state"), since: el("span", "mc-since") };
    chip.append(chip._refs.name, chip._refs.state, chip._refs.since);
    return chip;
  }, (chip, m) => {
    showState(chip, m.state, chip._refs.state);
    setText(chip._refs.name, m.name);
    setAttr(chip._refs.since, "data-since-ms", isNum(m.since_ms) ? m.since_ms : "0");
  });
}

export function renderOverview(board) {
  renderShift(board.shift);
  showLiveStatus(board.live);
  const container = byId("line-cards");
  const lines = board.lines || {};
  const ids = (board.line_ids || Object.keys(lines)).filter((id) => lines[id]);
  syncList(container, ids.map((id) => lines[id]), (l) => l.id, (line) => {
    const card = el("a", "card");
    card.id = "card-" + line.id;
    card.setAttribute("data-line", line.id);
    card.href = pageUrl("line", line.id);
    card.append(el("h2", "card-title", line.name));
    return card;
  }, updateCard);
  renderPlatform(board.platform);
  tick();
}

/** The capacity push's last delivery to the C2M platform, per endpoint (hidden without a push). */
function renderPlatform(platform) {
  const node = byId("platform-status");
  if (!node) return;
  const endpoints = (platform && platform.endpoints) || [];
  show(node, endpoints.length > 0);
  setText(node, endpoints.map((e) => [
    t("ov.platform", { name: e.name }),
    isNum(e.last_delivery_ms) ? t("ov.platform_last", { time: fmt.dayTime(e.last_delivery_ms) }) : t("ov.platform_never"),
    e.queue > 0 ? t("ov.platform_waiting", { n: fmt.num(e.queue) }) : "",
    e.disabled ? t("ov.platform_disabled") : e.failing ? t("ov.platform_failing") : "",
  ].filter(Boolean).join(" · ")).join("   "));
  node.classList.toggle("alert", endpoints.some((e) => e.disabled || e.failing));
}
