/* Shopfloor e-boards: numbers, times and durations in the page's language and the site's time zone. */

import { LANG, TZ, t, tOr } from "./sf-page.js";

export const DASH = "–";
const nf0 = new Intl.NumberFormat(LANG, { maximumFractionDigits: 0 });
const nf1 = new Intl.NumberFormat(LANG, { maximumFractionDigits: 1 });
const nf2 = new Intl.NumberFormat(LANG, { maximumFractionDigits: 2 });
const pctF = new Intl.NumberFormat(LANG, { style: "percent", minimumFractionDigits: 1, maximumFractionDigits: 1 });
const pct0F = new Intl.NumberFormat(LANG, { style: "percent", maximumFractionDigits: 0 });
const zoned = (opts) => new Intl.DateTimeFormat(LANG, Object.assign({ timeZone: TZ, hourCycle: "h23" }, opts));
const timeF = zoned({ hour: "2-digit", minute: "2-digit", second: "2-digit" });
const hmF = zoned({ hour: "2-digit", minute: "2-digit" });
const dateF = zoned({ year: "numeric", month: "2-digit", day: "2-digit", weekday: "short" });
const dayTimeF = zoned({ month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });

export const isNum = (x) => typeof x === "number" && Number.isFinite(x);
const pad2 = (n) => (n < 10 ? "0" : "") + n;

export const fmt = {
  num: (x) => (isNum(x) ? nf0.format(x) : DASH),
  num1: (x) => (isNum(x) ? nf1.format(x) : DASH),
  value: (x) => (isNum(x) ? (Math.abs(x) >= 100 ? nf1 : nf2).format(x) : (x === null || x === undefined ? DASH : String(x))),
  pct: (x) => (isNum(x) ? pctF.format(x) : DASH),
  pct0: (x) => (isNum(x) ? pct0F.format(x) : DASH),
  time: (ms) => (isNum(ms) ? timeF.format(ms) : DASH),
  hm: (ms) => (isNum(ms) ? hmF.format(ms) : DASH),
  date: (ms) => (isNum(ms) ? dateF.format(ms) : ""),
  dayTime: (ms) => (isNum(ms) ? dayTimeF.format(ms) : DASH),
  /** A running duration as h:mm:ss (hours keep counting past 24). */
  clock(ms) {
    if (!isNum(ms)) return DASH;
    const s = Math.max(0, Math.floor(ms / 1000));
    return Math.floor(s / 3600) + ":" + pad2(Math.floor((s % 3600) / 60)) + ":" + pad2(s % 60);
  },
  /** A length of time in words: "45 s", "12 min", "3.5 h" (translated). */
  span(seconds) {
    if (!isNum(seconds)) return DASH;
    if (seconds < 90) return t("fmt.seconds", { n: nf0.format(seconds) });
    const min = seconds / 60;
    if (min < 120) return t("fmt.minutes", { n: (min < 10 ? nf1 : nf0).format(min) });
    return t("fmt.hours", { n: nf1.format(min / 60) });
  },
  minutes(min) { return isNum(min) ? fmt.span(min * 60) : DASH; },
  unit: (u) => (u ? tOr("unit." + u, u) : ""),
  /** " kg", " 件/分钟", but "%" right after the number. */
  unitAfter: (u) => (!u ? "" : u === "%" ? "%" : "\u2009" + tOr("unit." + u, u)),
};
