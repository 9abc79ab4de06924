/*
 * Shopfloor e-boards: what the server tells every page (the #sf-config JSON of base.html): its language and
 * labels, the site, the lines, the board states in order, the page URLs, the stop reasons, the APIs to read.
 */

export const CFG = JSON.parse(document.getElementById("sf-config").textContent);
export const LABELS = CFG.labels || {};
export const LANG = CFG.lang || "en";
export const TZ = (CFG.site && CFG.site.timezone) || undefined;
export const API = CFG.api || {};

// The board states from the server (its one list), in the order their rules are tried: also the order of every
// state legend and mix. Their names are the labels state.<STATE>; their colours come with the page's CSS.
export const STATES = (CFG.states || []).map((s) => s.state);
export const STOP_STATES = new Set((CFG.states || []).filter((s) => s.stop).map((s) => s.state));
export const STATE_COLOURS = Object.fromEntries((CFG.states || []).map((s) => [s.state, s.colour]));

// --- labels, links, stop reasons ---------------------------------------------------------------------------

/** The label of `key` in the page's language, with `{name}` placeholders filled from `vars`. */
export function t(key, vars) {
  let text = Object.prototype.hasOwnProperty.call(LABELS, key) ? LABELS[key] : key;
  if (vars) text = text.replace(/\{(\w+)\}/g, (all, name) => (vars[name] === undefined ? all : String(vars[name])));
  return text;
}

/** A label if the key exists, else `fallback` (config names, codes). */
export function tOr(key, fallback) {
  return Object.prototype.hasOwnProperty.call(LABELS, key) ? LABELS[key] : fallback;
}

/** A URL of another page: the config's pattern with {line}/{machine} filled, in this page's language. */
export function pageUrl(kind, lineId, machineId) {
  const pattern = (CFG.urls && CFG.urls[kind]) || "";
  if (!pattern) return "";
  const url = pattern.replace("{line}", encodeURIComponent(lineId || "")).replace("{machine}", encodeURIComponent(machineId || ""));
  return url + (url.includes("?") ? "&" : "?") + "lang=" + encodeURIComponent(LANG);
}

const REASONS = new Map((CFG.reasons || []).map((r) => [r.code, r.name || {}]));
/** A stop reason code's name in the page's language ("" for none). */
export function reasonName(code) {
  if (!code) return "";
  const names = REASONS.get(code);
  return (names && (names[LANG] || names.en)) || code;
}
