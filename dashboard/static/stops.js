/*
 * Shopfloor stop-reason form: the shift's stops of a line from `api.stops`, a reason picker per stop, and a
 * save button that POSTs {"reason": code} as JSON to `api.reason` (with the session cookie and the page's CSRF
 * token). The answer is shown on the row (saved, or the problem's `detail`) and the table is reloaded.
 * Loaded with type="module" beside board.js, which keeps the page's line board (machine names) current.
 */

import { API, reasonName, t } from "./sf-page.js";
import { fmt, isNum } from "./sf-format.js";
import { clock } from "./sf-clock.js";
import { byId, el, label, setAttr, setLabel, setPlain, setText, show, syncList } from "./sf-dom.js";
import { showState } from "./sf-states.js";
import { renderShift } from "./sf-topbar.js";
import { onBoard } from "./board.js";
import { postJson, problemText } from "./sf-write.js";

const REFRESH_MS = 60000;
const options = byId("reason-options");
const tbody = byId("stops-rows");
const machineNames = {};
let lastStops = null;
let loading = false;
let saving = 0;

onBoard((board) => {
  let changed = false;
  for (const id of board.machine_ids || []) {
    const name = board.machines[id] && board.machines[id].name;
    if (name && machineNames[id] !== name) { machineNames[id] = name; changed = true; }
  }
  if (changed && lastStops) render(lastStops);
});

async function load() {
  if (!API.stops || loading) return;
  loading = true;
  try {
    const answer = await fetch(API.stops, { cache: "no-store", credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!answer.ok) throw new Error(await problemText(answer, t("stops.failed")));
    lastStops = await answer.json();
    render(lastStops);
  } catch (err) {
    result(byId("stops-result"), false, err.message);
  } finally {
    loading = false;
  }
}

function render(data) {
  if (!API.stream) renderShift(data.shift);
  const stops = data.stops || [];
  // An ongoing stop ends "now" on the server's clock: without a stream that is the page's clock.
  const now = Math.max(...stops.filter((s) => s.open && isNum(s.end_ms)).map((s) => s.end_ms), -Infinity);
  if (!clock.fromHeartbeat && isNum(now)) clock.learn(now, false);
  syncList(tbody, stops, (s) => s.machine + "/" + s.id, buildRow, updateRow);
  show(byId("stops-empty"), stops.length === 0);
}

function buildRow() {
  const row = el("tr");
  const r = {
    machine: el("td"), state: el("td"), start: el("td"), end: el("td"), duration: el("td", "num"),
    reason: el("td"), action: el("td", "action"),
  };
  r.stateChip = el("span", "chip state-chip");
  r.state.append(r.stateChip);
  r.select = el("select");
  r.select.append(options.content.cloneNode(true));
  r.button = label("button", "", "stops.save");
  r.button.type = "button";
  r.result = el("span", "row-result");
  r.action.append(r.select, document.createTextNode(" "), r.button, r.result);
  r.button.addEventListener("click", () => save(row));
  row.append(r.machine, r.state, r.start, r.end, r.duration, r.reason, r.action);
  row._refs = r;
  return row;
}

function updateRow(row, stop) {
  const r = row._refs;
  row._stop = stop;
  setText(r.machine, machineNames[stop.machine] || stop.machine);
  showState(r.stateChip, stop.state);
  setText(r.start, fmt.dayTime(stop.start_ms));
  row.classList.toggle("open", Boolean(stop.open));
  if (stop.open) {
    setLabel(r.end, "stops.ongoing");
    setAttr(r.duration, "data-since-ms", stop.start_ms);
  } else {
    setPlain(r.end, fmt.dayTime(stop.end_ms));
    setAttr(r.duration, "data-since-ms", null);
    setText(r.duration, isNum(stop.end_ms) ? fmt.clock(stop.end_ms - stop.start_ms) : "");
  }
  if (stop.reason) {
    setPlain(r.reason, reasonName(stop.reason));
  } else {
    setLabel(r.reason, "tile.no_reason");
  }
  r.reason.classList.toggle("reason-missing", !stop.reason);
}

async function save(row) {
  const r = row._refs;
  const stop = row._stop;
  const code = r.select.value;
  if (!code) {
    result(r.result, false, t("stops.pick_first"));
    return;
  }
  const url = (API.reason || "").replace("{machine}", encodeURIComponent(stop.machine))
    .replace("{stop_id}", encodeURIComponent(stop.id));
  r.button.disabled = true;
  saving += 1;
  try {
    await postJson(url, { reason: code }, t("stops.failed"));
    result(r.result, true, t("stops.saved"));
    result(byId("stops-result"), true, t("stops.saved") + ": " + (machineNames[stop.machine] || stop.machine)
      + " " + fmt.dayTime(stop.start_ms) + " → " + reasonName(code));
    r.select.value = "";
  } catch (err) {
    result(r.result, false, err.message);
    result(byId("stops-result"), false, err.message);
  } finally {
    r.button.disabled = false;
    saving -= 1;
  }
  load();
}

function result(node, ok, text) {
  if (!node) return;
  node.classList.toggle("ok", ok);
  node.classList.toggle("error", !ok);
  setText(node, text);
}

load();
// New stops appear without a reload, but never while someone is picking a reason.
setInterval(() => {
  const picking = saving > 0 || Array.from(tbody.querySelectorAll("select")).some((s) => s.value)
    || (document.activeElement && document.activeElement.tagName === "SELECT");
  if (!picking) load();
}, REFRESH_MS);
