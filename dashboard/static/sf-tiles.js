/*
 * Shopfloor e-boards: the machine tiles of the line board and the machine page: state and for how long, why a
 * machine is offline or stopped, its alarm, order and count, shift OEE, how far its data reaches, and its
 * process values. A tile is built once per machine and then updated in place.
 */

import { CFG, STOP_STATES, pageUrl, reasonName, t, tOr } from "./sf-page.js";
import { DASH, fmt, isNum } from "./sf-format.js";
import { clock } from "./sf-clock.js";
import { el, label, setAttr, setLabel, setPlain, setText, setWidth, show, syncList } from "./sf-dom.js";
import { showState } from "./sf-states.js";

/** Why a machine is OFFLINE, in words of the page's language (the server sends a few fixed English texts). */
function offlineText(reason) {
  if (!reason) return "";
  if (reason === "no live broker configured") return t("offline.no_broker");
  if (reason === "dashboard lost the live broker") return t("offline.broker_lost");
  if (reason === "no data yet") return t("offline.no_data");
  if (reason === "live view stopped") return t("offline.live_stopped");
  const agent = /^agent (.+) offline$/.exec(reason);
  if (agent) return t("offline.agent", { agent: agent[1] });
  return t("offline.other", { raw: reason });
}

/** Station id -> name, from the board's people panel. */
export function stationNamesOf(board) {
  const names = {};
  for (const s of (board.people && board.people.stations) || []) names[s.id] = s.name;
  return names;
}

function buildTile(machine) {
  const root = el("article", "tile");
  root.setAttribute("data-machine", machine.id);
  const r = {};
  const head = el("header", "tile-head");
  const linkable = CFG.page !== "machine" && !CFG.kiosk && CFG.urls && CFG.urls.machine;
  r.name = el(linkable ? "a" : "span", "tile-name");
  r.station = el("span", "tile-station");
  head.append(r.name, r.station);

  const band = el("div", "tile-band");
  r.state = el("span", "state-text");
  r.since = el("span", "state-dur");
  band.append(r.state, r.since);

  const notice = el("div", "tile-notice");
  r.offline = el("p", "notice notice-offline");
  r.stop = el("p", "notice notice-stop");
  r.stopLabel = label("span", "lbl", "tile.reason");
  r.stopReason = el("b", "");
  r.stop.append(r.stopLabel, r.stopReason);
  r.alarm = el("p", "notice notice-alarm");
  r.alarmIcon = el("span", "alarm-icon", "⚠");
  r.alarmLabel = label("span", "lbl", "tile.alarm");
  r.alarmCode = el("b", "alarm-code");
  r.alarmText = el("span", "alarm-text");
  r.alarm.append(r.alarmIcon, r.alarmLabel, r.alarmCode, r.alarmText);
  notice.append(r.offline, r.stop, r.alarm);
  r.notice = notice;

  const order = el("div", "tile-order");
  r.orderLabel = label("span", "lbl", "tile.order");
  r.orderId = el("b", "order-id");
  r.skuLabel = label("span", "lbl", "tile.sku");
  r.sku = el("b", "sku");
  order.append(r.orderLabel, r.orderId, r.skuLabel, r.sku);

  const count = el("div", "tile-count");
  const countText = el("div", "count-text");
  r.countLabel = label("span", "lbl", "tile.count");
  r.good = el("b", "count-good");
  r.target = el("span", "count-target");
  countText.append(r.countLabel, r.good, r.target);
  const bar = el("div", "bar");
  r.bar = el("i");
  bar.append(r.bar);
  count.append(countText, bar);

  const kpi = el("div", "tile-kpi");
  const big = el("div", "oee-big");
  big.append(label("span", "lbl", "kpi.shift_oee"));
  r.oee = el("b", "oee-value");
  big.append(r.oee);
  const aeq = el("div", "aeq");
  r.a = el("b");
  r.e = el("b");
  r.q = el("b");
  for (const [key, node] of [["kpi.a_short", r.a], ["kpi.e_short", r.e], ["kpi.q_short", r.q]]) {
    const cell = el("span", "aeq-cell");
    cell.append(label("span", "lbl", key), node);
    aeq.append(cell);
  }
  kpi.append(big, aeq);
  r.coverage = el("p", "badge badge-coverage");
  r.coverage.append(label("span", "", "kpi.coverage"), document.createTextNode(" "));
  r.coverageValue = el("b");
  r.coverage.append(r.coverageValue);
  r.flag = el("p", "badge badge-flag");
  r.flag.append(document.createTextNode("⚠ "), label("span", "", "flag.effectiveness"));
  // how far the machine's data reaches, when the figures stop short of now; units the board cannot attribute
  r.reach = el("p", "badge badge-reach");
  r.apart = el("p", "badge badge-apart");
  r.badges = el("div", "tile-badges");
  r.badges.append(r.reach, r.coverage, r.flag, r.apart);

  r.pv = el("dl", "tile-pv");
  root.append(head, band, notice, order, count, kpi, r.badges, r.pv);
  root._refs = r;
  return root;
}

function updateTile(root, m, context) {
  const r = root._refs;
  const state = m.state || "OFFLINE";
  showState(root, state, r.state);
  setText(r.name, m.name || m.id);
  if (r.name.tagName === "A") setAttr(r.name, "href", pageUrl("machine", context.lineId, m.id));
  setText(r.station, context.stationNames[m.station] || "");

  setAttr(r.since, "data-since-ms", isNum(m.since_ms) ? m.since_ms : "0");
  if (!isNum(m.since_ms)) setText(r.since, "");

  const offline = state === "OFFLINE";
  show(r.offline, offline);
  setText(r.offline, offline ? offlineText(m.offline_reason) : "");
  const stop = m.stop && STOP_STATES.has(state) && state !== "MICROSTOP" ? m.stop : null;
  show(r.stop, Boolean(stop));
  if (stop) {
    if (stop.reason) {
      setPlain(r.stopReason, reasonName(stop.reason));
    } else {
      setLabel(r.stopReason, "tile.no_reason");
    }
    r.stop.classList.toggle("missing", !stop.reason);
  }
  show(r.alarm, Boolean(m.alarm));
  if (m.alarm) {
    setText(r.alarmCode, m.alarm.code);
    setText(r.alarmText, m.alarm.text || "");
  }
  root.classList.toggle("has-notice", offline || Boolean(stop) || Boolean(m.alarm));

  const order = m.order;
  if (order) {
    setText(r.orderId, order.order_id || DASH);
    setText(r.sku, order.sku || DASH);
  } else {
    setLabel(r.orderId, "tile.no_order");
    setText(r.sku, DASH);
  }
  show(r.skuLabel, Boolean(order));
  show(r.sku, Boolean(order));

  const count = m.count || {};
  setLabel(r.countLabel, count.scope === "shift" ? "tile.count_shift" : "tile.count");
  setText(r.good, fmt.num(count.good));
  setText(r.target, isNum(count.target) ? " / " + fmt.num(count.target) + " " + fmt.unit("pcs") : " " + fmt.unit("pcs"));
  setWidth(r.bar, isNum(count.target) && count.target > 0 ? count.good / count.target : 0);

  const k = m.oee || {};
  setText(r.oee, fmt.pct(k.oee));
  setText(r.a, fmt.pct(k.availability));
  setText(r.e, fmt.pct(k.effectiveness));
  setText(r.q, fmt.pct(k.quality));
  const partial = isNum(k.coverage) && k.coverage < 0.9995;
  show(r.coverage, partial);
  if (partial) setText(r.coverageValue, fmt.pct(k.coverage));
  r.coverage.classList.toggle("bad", partial && k.coverage < 0.9);
  show(r.flag, Boolean(k.effectiveness_flag));
  const lags = Boolean(m.data_lags);
  show(r.reach, lags);
  // an old watermark shows its date too (a machine silent since yesterday is not "data up to 14:02")
  const reachText = isNum(m.reach_ms)
    ? (clock.now() - m.reach_ms > 12 * 3600 * 1000 ? fmt.dayTime(m.reach_ms) : fmt.time(m.reach_ms)) : "";
  if (lags) setText(r.reach, reachText ? t("tile.reach", { time: reachText }) : t("tile.no_data"));
  const apart = m.unattributed || {};
  const apartText = [apart.no_order ? t("tile.no_order_units", { n: fmt.num(apart.no_order) }) : "",
    apart.other_sku ? t("tile.other_sku_units", { n: fmt.num(apart.other_sku) }) : ""].filter(Boolean).join(" · ");
  show(r.apart, Boolean(apartText));
  setText(r.apart, apartText);
  show(r.badges, partial || Boolean(k.effectiveness_flag) || lags || Boolean(apartText));

  const pvs = Object.entries(m.pv || {});
  syncList(r.pv, pvs, (e) => e[0], buildPv, updatePv);
}

function buildPv() {
  const row = el("div", "pv");
  row._refs = { name: el("dt"), value: el("b"), unit: el("span", "unit") };
  const dd = el("dd");
  dd.append(row._refs.value, row._refs.unit);
  row.append(row._refs.name, dd);
  return row;
}

function updatePv(row, [name, pv]) {
  const r = row._refs;
  setText(r.name, tOr("pv." + name, name));
  setText(r.value, fmt.value(pv.value));
  setText(r.unit, fmt.unitAfter(pv.unit));
  const bad = pv.q && pv.q !== "Good" && pv.value !== null;
  row.classList.toggle("bad", Boolean(bad));
}

export function renderTiles(container, board, ids) {
  const context = { lineId: board.line && board.line.id, stationNames: stationNamesOf(board) };
  const machines = board.machines || {};
  const list = ids.filter((id) => machines[id]).map((id) => machines[id]);
  // One row up to 4 machines, then as many rows as keep the tiles wide enough to read.
  const rows = list.length <= 4 ? 1 : list.length <= 10 ? 2 : 3;
  const columns = "repeat(" + Math.max(1, Math.ceil(list.length / rows)) + ", minmax(0, 1fr))";
  if (container.style.gridTemplateColumns !== columns) container.style.gridTemplateColumns = columns;
  const boardNode = container.closest(".line-board");
  if (boardNode) setAttr(boardNode, "data-rows", rows);
  syncList(container, list, (m) => m.id, buildTile, (node, m) => updateTile(node, m, context));
}
