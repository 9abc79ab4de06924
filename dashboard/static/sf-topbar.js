/*
 * Shopfloor e-boards: the top of every page: the banners that say when the data cannot be trusted (connection
 * lost, no live data), the shift with its progress, the clock, and every running duration ([data-since-ms]).
 */

import { t } from "./sf-page.js";
import { DASH, fmt } from "./sf-format.js";
import { clock } from "./sf-clock.js";
import { byId, setLabel, setPlain, setText, setWidth, show } from "./sf-dom.js";

export function showConnectionLost(visible, lastData) {
  const banner = byId("connection-lost");
  if (!banner) return;
  show(banner, visible);
  document.body.classList.toggle("stale", Boolean(visible));
  const since = byId("connection-lost-since");
  if (since) setText(since, visible && lastData ? t("banner.stale_since") + " " + fmt.time(lastData) : "");
}

/** #no-live-data: the dashboard has no broker, or every agent it knows of is down. */
export function showLiveStatus(live) {
  const banner = byId("no-live-data");
  if (!banner || !live) return;
  const agents = live.agents ? Object.values(live.agents) : [];
  const none = live.broker === false || (agents.length > 0 && !agents.some(Boolean));
  show(banner, none);
}

// --- the shift -----------------------------------------------------------------------------------------------

let currentShift = null;

export function renderShift(shift) {
  currentShift = shift || null;
  const name = byId("shift-name");
  const hours = byId("shift-hours");
  if (!name) return;
  if (!shift) {
    setLabel(name, "shift.none");
    setText(hours, "");
    return;
  }
  setPlain(name, shift.name);
  setText(hours, fmt.hm(shift.start_ms) + "–" + fmt.hm(shift.end_ms) + (shift.on ? "" : " · " + t("shift.ended")));
  tickShift();
}

function tickShift() {
  const bar = byId("shift-progress");
  const shift = currentShift;
  if (!bar) return;
  if (!shift || !shift.on) { setWidth(bar, shift ? 1 : 0); return; }
  const now = clock.now();
  setWidth(bar, (now - shift.start_ms) / (shift.end_ms - shift.start_ms));
  const onBreak = (shift.breaks || []).some((b) => now >= b[0] && now < b[1]);
  byId("shift").classList.toggle("on-break", onBreak);
  const hours = byId("shift-hours");
  const text = fmt.hm(shift.start_ms) + "–" + fmt.hm(shift.end_ms) + (onBreak ? " · " + t("shift.on_break") : "");
  setText(hours, text);
}

/** Once a second: the clock, the shift bar and every running duration ([data-since-ms]). */
export function tick() {
  const now = clock.now();
  const c = byId("clock");
  if (c) {
    setText(c, fmt.time(now));
    setText(byId("clock-date"), fmt.date(now));
  }
  tickShift();
  for (const node of document.querySelectorAll("[data-since-ms]")) {
    const since = Number(node.dataset.sinceMs);
    setText(node, since ? fmt.clock(now - since) : DASH);
    const warnAfter = Number(node.dataset.warnAfterS || 0);
    if (warnAfter) node.classList.toggle("late", now - since > warnAfter * 1000);
  }
}
