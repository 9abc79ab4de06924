/*
 * Shopfloor machine page: the machine's shift from `api.detail`, drawn with the vendored ECharts: state
 * timeline, output per hour against plan, stop Pareto by reason, the KPI table (ISO 22400 and TPM views of
 * micro-stops) and one trend per process value. The live tile above comes from board.js (the line's stream);
 * this module is loaded with type="module" after the vendored ECharts (a classic script: the global `echarts`).
 *
 * The detail is fetched again every 30 s and soon after the machine changes state. Chart instances are made
 * once per chart box and redrawn with setOption(..., {notMerge: true}); a trend whose value disappears is
 * disposed with its box, so nothing accumulates on a page left open.
 */

import { API, CFG, STATES, STATE_COLOURS, reasonName, t, tOr } from "./sf-page.js";
import { fmt, isNum } from "./sf-format.js";
import { clock } from "./sf-clock.js";
import { byId, el, label, setText, show, syncList } from "./sf-dom.js";
import { renderLegend, stateLabelKey } from "./sf-states.js";
import { getJson } from "./sf-live.js";
import { onBoard } from "./board.js";

const REFRESH_MS = 30000;
const STATE_CHANGE_DELAY_MS = 2000; // let the historian receive the new state before asking again
const machineId = CFG.machine && CFG.machine.id;
const css = getComputedStyle(document.documentElement);
const color = (name) => css.getPropertyValue(name).trim();
const TEXT = color("--text") || "#e9eef5";
const DIM = color("--dim") || "#93a0b3";
const RULE = color("--rule") || "#273142";
const GOOD = color("--good") || "#2fb85f";
const WARN = color("--warn") || "#ffb020";
const FONT = color("--font") || "sans-serif";
// OFFLINE is striped on the boards; on a chart, a lighter grey with a hatch (ECharts decal) says the same.
const OFFLINE_STYLE = {
  color: "#4a525e",
  decal: { symbol: "rect", symbolSize: 1, color: "rgba(255,255,255,0.18)", dashArrayX: [1, 0], dashArrayY: [3, 5], rotation: -Math.PI / 4 },
};
const FONT_SIZE = Math.max(12, Math.min(16, Math.round(Math.min(window.innerHeight, window.innerWidth * 0.5625) * 0.014)));

// --- chart instances ---------------------------------------------------------------------------------------

const charts = new Map(); // chart box element -> ECharts instance (bounded by the boxes on the page)

function chartOf(box) {
  let chart = charts.get(box);
  if (!chart) {
    chart = echarts.init(box, "dark", { renderer: "canvas" });
    charts.set(box, chart);
  }
  return chart;
}

function dropChart(box) {
  const chart = charts.get(box);
  if (chart) chart.dispose();
  charts.delete(box);
}

function draw(box, option) {
  chartOf(box).setOption(Object.assign({
    backgroundColor: "transparent",
    animation: false,
    textStyle: { fontFamily: FONT, fontSize: FONT_SIZE, color: TEXT },
  }, option), { notMerge: true });
}

window.addEventListener("resize", () => { for (const chart of charts.values()) chart.resize(); });

const axisCommon = {
  axisLine: { lineStyle: { color: RULE } },
  axisLabel: { color: DIM, fontSize: FONT_SIZE },
  splitLine: { lineStyle: { color: RULE, opacity: 0.5 } },
};
const tooltipCommon = { backgroundColor: "rgba(16,20,28,0.95)", borderColor: RULE, textStyle: { color: TEXT, fontSize: FONT_SIZE } };
// Times in the site's time zone (ECharts would use the browser's); seconds shown on spans under 20 minutes.
const timeAxis = (shift, spanMs) => Object.assign({
  type: "time",
  min: shift ? shift.start_ms : undefined,
  max: shift ? Math.min(shift.end_ms, Math.max(clock.now(), shift.start_ms + 60000)) : undefined,
  axisLabel: {
    color: DIM, fontSize: FONT_SIZE, hideOverlap: true,
    formatter: (v) => (isNum(spanMs) && spanMs < 20 * 60000 ? fmt.time(v) : fmt.hm(v)),
  },
}, { axisLine: axisCommon.axisLine, splitLine: { show: false } });

// --- the charts ------------------------------------------------------------------------------------------

function drawTimeline(detail) {
  const items = (detail.timeline || []).filter((i) => isNum(i.start_ms) && isNum(i.end_ms));
  const data = items.map((i) => ({
    value: [0, i.start_ms, i.end_ms, i.state, i.reason || ""],
    itemStyle: i.state === "OFFLINE" ? OFFLINE_STYLE : { color: STATE_COLOURS[i.state] || "#888" },
  }));
  draw(byId("chart-timeline"), {
    grid: { left: 10, right: 24, top: 8, bottom: 34, containLabel: false },
    xAxis: timeAxis(detail.shift),
    yAxis: { type: "category", data: [""], show: false },
    tooltip: Object.assign({
      formatter: (p) => {
        const [, start, end, state, reason] = p.value;
        return "<b>" + t(stateLabelKey(state)) + "</b><br>" + fmt.time(start) + " – " + fmt.time(end)
          + " (" + fmt.clock(end - start) + ")" + (reason ? "<br>" + t("tile.reason") + ": " + echarts.format.encodeHTML(reasonName(reason)) : "");
      },
    }, tooltipCommon),
    series: [{
      type: "custom",
      encode: { x: [1, 2], y: 0 },
      data,
      renderItem(params, api) {
        const start = api.coord([api.value(1), 0]);
        const end = api.coord([api.value(2), 0]);
        const height = api.size([0, 1])[1] * 0.8;
        const box = params.coordSys;
        const shape = echarts.graphic.clipRectByRect(
          { x: start[0], y: start[1] - height / 2, width: Math.max(1, end[0] - start[0]), height },
          { x: box.x, y: box.y, width: box.width, height: box.height });
        return shape && { type: "rect", shape, style: api.style() };
      },
    }],
  });
  const present = STATES.filter((s) => items.some((i) => i.state === s));
  renderLegend(byId("timeline-legend"), present);
}

function drawHourly(detail) {
  const hours = detail.hourly || [];
  draw(byId("chart-hourly"), {
    grid: { left: 56, right: 20, top: 36, bottom: 34 },
    legend: { top: 0, textStyle: { color: DIM, fontSize: FONT_SIZE }, data: [t("chart.good"), t("chart.plan")] },
    tooltip: Object.assign({ trigger: "axis" }, tooltipCommon),
    xAxis: Object.assign({ type: "category", data: hours.map((h) => fmt.hm(h.start_ms)) }, axisCommon, { splitLine: { show: false } }),
    yAxis: Object.assign({ type: "value", name: fmt.unit("pcs"), nameTextStyle: { color: DIM } }, axisCommon),
    series: [
      {
        name: t("chart.good"), type: "bar", barMaxWidth: 48, itemStyle: { color: GOOD },
        data: hours.map((h) => ({
          value: h.good,
          itemStyle: { color: isNum(h.plan) && h.plan > 0 && h.good < 0.9 * h.plan ? WARN : GOOD },
        })),
        label: { show: true, position: "top", color: TEXT, fontSize: FONT_SIZE * 0.9 },
      },
      {
        name: t("chart.plan"), type: "line", symbol: "circle", symbolSize: 8,
        lineStyle: { color: TEXT, type: "dashed", width: 2 }, itemStyle: { color: TEXT },
        data: hours.map((h) => (isNum(h.plan) ? h.plan : "-")),
      },
    ],
  });
}

function drawPareto(detail) {
  const rows = (detail.pareto || []).filter((r) => r.seconds > 0).slice().sort((a, b) => b.seconds - a.seconds);
  const total = rows.reduce((sum, r) => sum + r.seconds, 0);
  let running = 0;
  const cumulative = rows.map((r) => { running += r.seconds; return total ? running / total : 0; });
  draw(byId("chart-pareto"), {
    grid: { left: 56, right: 56, top: 36, bottom: 56 },
    legend: { top: 0, textStyle: { color: DIM, fontSize: FONT_SIZE }, data: [t("chart.duration_min"), t("chart.cumulative")] },
    tooltip: Object.assign({ trigger: "axis" }, tooltipCommon),
    xAxis: Object.assign({
      type: "category",
      // Without a reason the stop counts under its state ("STOPPED", "FAULT"...): shown as that state's name.
      data: rows.map((r) => (!r.reason ? t("chart.no_reason")
        : STATES.includes(r.reason) ? t(stateLabelKey(r.reason)) : reasonName(r.reason))),
    }, axisCommon, { axisLabel: { color: DIM, fontSize: FONT_SIZE, interval: 0, rotate: rows.length > 5 ? 25 : 0 }, splitLine: { show: false } }),
    yAxis: [
      Object.assign({ type: "value", name: fmt.unit("min"), nameTextStyle: { color: DIM } }, axisCommon),
      Object.assign({ type: "value", min: 0, max: 1, axisLabel: { color: DIM, formatter: (v) => fmt.pct0(v) } },
        { axisLine: axisCommon.axisLine, splitLine: { show: false } }),
    ],
    series: [
      {
        name: t("chart.duration_min"), type: "bar", barMaxWidth: 56,
        tooltip: { valueFormatter: (v) => fmt.num1(v) + " " + fmt.unit("min") },
        itemStyle: { color: STATE_COLOURS.STOPPED },
        data: rows.map((r) => Math.round(r.seconds / 6) / 10),
        label: { show: true, position: "top", color: TEXT, fontSize: FONT_SIZE * 0.9 },
      },
      {
        name: t("chart.cumulative"), type: "line", yAxisIndex: 1, symbolSize: 8,
        tooltip: { valueFormatter: (v) => fmt.pct(v) },
        lineStyle: { color: TEXT, width: 2 }, itemStyle: { color: TEXT },
        data: cumulative,
      },
    ],
  });
}

function untilNow(points, now) {
  if (!points || !points.length) return [];
  const last = points[points.length - 1];
  return last[0] < now ? points.concat([[now, last[1]]]) : points;
}

function drawTrends(detail) {
  const container = byId("trends");
  const units = detail.units || {};
  const names = Object.keys(detail.trends || {}).sort();
  // One time range for every trend, up to now: a value that has not changed since (deadband) runs on to now.
  const now = isNum(detail.now_ms) ? detail.now_ms : clock.now();
  const starts = names.map((n) => detail.trends[n]).filter((p) => p.length).map((p) => p[0][0]);
  const range = { start_ms: starts.length ? Math.min(...starts) : now - 3600000, end_ms: now };
  // Boxes of values no longer reported go, with their charts.
  for (const box of Array.from(container.children)) {
    if (!names.includes(box.dataset.key)) dropChart(box._refs.chart);
  }
  syncList(container, names, (n) => n, () => {
    const box = el("div", "trend");
    box._refs = { title: el("h3"), chart: el("div", "chart") };
    box.append(box._refs.title, box._refs.chart);
    return box;
  }, (box, name) => {
    const unit = fmt.unit(units[name] || "");
    setText(box._refs.title, tOr("pv." + name, name) + (unit ? " (" + unit + ")" : ""));
    // The box may be new: draw once it is in the document and has its size.
    requestAnimationFrame(() => draw(box._refs.chart, {
      grid: { left: 56, right: 16, top: 12, bottom: 30 },
      tooltip: Object.assign({ trigger: "axis", valueFormatter: (v) => fmt.value(v) + (unit ? " " + unit : "") }, tooltipCommon),
      xAxis: Object.assign(timeAxis(range, range.end_ms - range.start_ms), { max: range.end_ms }),
      yAxis: Object.assign({ type: "value", scale: true }, axisCommon),
      series: [{
        type: "line", showSymbol: false, sampling: "lttb", lineStyle: { width: 2, color: "#4dabf7" },
        areaStyle: { color: "rgba(77,171,247,0.08)" },
        data: untilNow(detail.trends[name], now),
      }],
    }));
  });
}

// --- the KPI table ---------------------------------------------------------------------------------------

// [label key, ISO value, TPM value (undefined: one value for both views), main row]
const KPI_ROWS = [
  ["kpi.availability", (k) => fmt.pct(k.availability), (k) => fmt.pct(k.availability_tpm), true],
  ["kpi.effectiveness", (k) => fmt.pct(k.effectiveness), (k) => fmt.pct(k.effectiveness_tpm), true],
  ["kpi.quality", (k) => fmt.pct(k.quality), undefined, true],
  ["kpi.oee", (k) => fmt.pct(k.oee), undefined, true],
  ["kpi.oee_check", (k) => fmt.pct(k.oee_check)],
  ["kpi.coverage", (k) => fmt.pct(k.coverage)],
  ["kpi.pbt", (k) => fmt.span(k.pbt_s)],
  ["kpi.apt", (k) => fmt.span(k.apt_s)],
  ["kpi.offline_time", (k) => fmt.span(k.offline_s)],
  ["kpi.produced", (k) => fmt.num(k.produced) + " " + fmt.unit("pcs")],
  ["kpi.good", (k) => fmt.num(k.good) + " " + fmt.unit("pcs")],
  ["kpi.rejected", (k) => fmt.num(k.rejected) + " " + fmt.unit("pcs")],
  ["kpi.failures", (k) => fmt.num(k.failures)],
  ["kpi.mtbf", (k) => fmt.span(k.mtbf_s), undefined, false, "kpi.mtbf_long"],
  ["kpi.mttr", (k) => fmt.span(k.mttr_s), undefined, false, "kpi.mttr_long"],
  ["kpi.microstops", (k) => fmt.num(k.microstops)],
  ["kpi.microstop_time", (k) => fmt.span(k.microstop_s)],
];

function drawKpis(k) {
  const tbody = byId("kpi-rows");
  const kpi = k || {};
  syncList(tbody, KPI_ROWS, (row) => row[0], (row) => {
    const tr = el("tr", row[3] ? "main" : "");
    const name = el("td");
    name.append(label("span", "", row[0]));
    if (row[4]) name.append(document.createTextNode(" "), label("small", "dim", row[4]));
    const iso = el("td", "num");
    iso.append(el("b"));
    tr.append(name, iso);
    if (row[2]) {
      const tpm = el("td", "num");
      tpm.append(el("b"));
      tr.append(tpm);
    } else {
      iso.colSpan = 2;
    }
    return tr;
  }, (tr, row) => {
    setText(tr.children[1].firstChild, row[1](kpi));
    if (row[2]) setText(tr.children[2].firstChild, row[2](kpi));
  });
  show(byId("kpi-flag"), Boolean(kpi.effectiveness_flag));
}

// --- fetching --------------------------------------------------------------------------------------------

let inFlight = false;
let lastState = null;
let stateTimer = 0;

async function load() {
  if (!API.detail || inFlight) return;
  inFlight = true;
  try {
    const detail = await getJson(API.detail);
    clock.learn(detail.now_ms, false);
    const noShift = !detail.shift;
    show(byId("detail-empty"), noShift);
    drawKpis(detail.kpi);
    drawTimeline(detail);
    drawHourly(detail);
    drawPareto(detail);
    drawTrends(detail);
  } catch (err) {
    // The top bar's banner (sf-topbar.js) tells about a lost connection; the charts keep their last picture.
  } finally {
    inFlight = false;
  }
}

onBoard((board) => {
  const machine = board.machines && board.machines[machineId];
  // the key figures are the tile's: redraw them whenever the tile's figures change, so the two always agree
  if (machine && machine.oee) drawKpis(machine.oee);
  const state = machine ? machine.state + "@" + machine.since_ms : null;
  if (lastState !== null && state !== lastState) {
    clearTimeout(stateTimer);
    stateTimer = setTimeout(load, STATE_CHANGE_DELAY_MS);
  }
  lastState = state;
});

drawKpis(null);
load();
setInterval(load, REFRESH_MS);
