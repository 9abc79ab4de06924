/*
 * Shopfloor e-boards: the live part of every page.
 *
 * One board per page arrives from the server as a snapshot, then as numbered JSON merge patches (RFC 7386) on a
 * Server-Sent Events stream, with heartbeats carrying the server's clock. This script keeps that board current,
 * says loudly when it cannot (the #connection-lost and #no-live-data banners), and draws it: the line board
 * (summary, machine tiles, people, materials), the overview (a card per line) and the machine page's tile.
 * machine.js and stops.js build on the helpers exported as window.Shopfloor.
 *
 * Memory stays flat on a TV left on for weeks: DOM nodes are created once per machine, station, call or
 * material and then updated in place (keyed by id); lists are bounded by the board; no listener is added per
 * update; timers are created once.
 */
(() => {
  "use strict";

  const CFG = JSON.parse(document.getElementById("sf-config").textContent);
  const LABELS = CFG.labels || {};
  const LANG = CFG.lang || "en";
  const TZ = (CFG.site && CFG.site.timezone) || undefined;
  const API = CFG.api || {};

  // The board states from the server (its one list), in the order their rules are tried: also the order of every
  // state legend and mix. Their names are the labels state.<STATE>; their colours come with the page's CSS.
  const STATES = (CFG.states || []).map((s) => s.state);
  const STOP_STATES = new Set((CFG.states || []).filter((s) => s.stop).map((s) => s.state));
  const SILENCE_MS = 8000;        // no stream message for this long: the connection is lost
  const POLL_MS = 30000;          // snapshot polling while the stream is down (or unavailable)
  const RECONNECT_MAX_MS = 10000; // reconnect backoff cap
  const LIST_MAX = 5;             // calls shown per list on one screen; the rest is counted

  // --- labels and formats ------------------------------------------------------------------------------------

  /** The label of `key` in the page's language, with `{name}` placeholders filled from `vars`. */
  function t(key, vars) {
    let text = Object.prototype.hasOwnProperty.call(LABELS, key) ? LABELS[key] : key;
    if (vars) text = text.replace(/\{(\w+)\}/g, (all, name) => (vars[name] === undefined ? all : String(vars[name])));
    return text;
  }

  /** A label if the key exists, else `fallback` (config names, codes). */
  function tOr(key, fallback) {
    return Object.prototype.hasOwnProperty.call(LABELS, key) ? LABELS[key] : fallback;
  }

  const DASH = "–";
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

  const isNum = (x) => typeof x === "number" && Number.isFinite(x);
  const pad2 = (n) => (n < 10 ? "0" : "") + n;

  const fmt = {
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

  // --- the server's clock ----------------------------------------------------------------------------------

  /** "Now" on the server (which may run a simulated clock far from this browser's): every age and duration. */
  const clock = {
    offset: 0,
    fromHeartbeat: false,
    now() { return Date.now() + this.offset; },
    /** Learn the server's time; a board's own now_ms only until a heartbeat has been seen. */
    learn(serverMs, heartbeat) {
      if (!isNum(serverMs) || (this.fromHeartbeat && !heartbeat)) return;
      this.offset = serverMs - Date.now();
      if (heartbeat) this.fromHeartbeat = true;
    },
  };

  // --- DOM helpers -----------------------------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  /** An element showing label `key`, marked with data-i18n so tests can find every label. */
  function label(tag, className, key, vars) {
    const node = el(tag, className, t(key, vars));
    node.setAttribute("data-i18n", key);
    return node;
  }

  function setText(node, text) {
    const value = text === null || text === undefined ? "" : String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  function setAttr(node, name, value) {
    if (value === null || value === undefined || value === false) {
      if (node.hasAttribute(name)) node.removeAttribute(name);
    } else if (node.getAttribute(name) !== String(value)) {
      node.setAttribute(name, String(value));
    }
  }

  function setLabel(node, key, vars) {
    setAttr(node, "data-i18n", key);
    setText(node, t(key, vars));
  }

  function show(node, visible) {
    if (node && node.hidden === Boolean(visible)) node.hidden = !visible;
  }

  function setWidth(node, fraction) {
    const f = isNum(fraction) ? Math.max(0, Math.min(1, fraction)) : 0;
    const w = (f * 100).toFixed(1) + "%";
    if (node.style.width !== w) node.style.width = w;
  }

  const byId = (id) => document.getElementById(id);

  /**
   * Make `container`'s children match `items`, reusing the child whose data-key is the item's key:
   * `create(item)` builds a new child, `update(child, item)` refreshes one. Children of gone items are removed.
   */
  function syncList(container, items, keyOf, create, update) {
    const old = new Map();
    for (const child of container.children) old.set(child.dataset.key, child);
    let index = 0;
    for (const item of items) {
      const key = String(keyOf(item));
      let node = old.get(key);
      if (node) old.delete(key);
      else {
        node = create(item);
        node.dataset.key = key;
      }
      update(node, item);
      if (container.children[index] !== node) container.insertBefore(node, container.children[index] || null);
      index += 1;
    }
    for (const node of old.values()) node.remove();
  }

  /** A URL of another page: the config's pattern with {line}/{machine} filled, in this page's language. */
  function pageUrl(kind, lineId, machineId) {
    const pattern = (CFG.urls && CFG.urls[kind]) || "";
    if (!pattern) return "";
    const url = pattern.replace("{line}", encodeURIComponent(lineId || "")).replace("{machine}", encodeURIComponent(machineId || ""));
    return url + (url.includes("?") ? "&" : "?") + "lang=" + encodeURIComponent(LANG);
  }

  function stateLabelKey(state) { return LABELS["state." + state] !== undefined ? "state." + state : "state.unknown"; }

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

  const REASONS = new Map((CFG.reasons || []).map((r) => [r.code, r.name || {}]));
  /** A stop reason code's name in the page's language ("" for none). */
  function reasonName(code) {
    if (!code) return "";
    const names = REASONS.get(code);
    return (names && (names[LANG] || names.en)) || code;
  }

  // --- the live connection ---------------------------------------------------------------------------------

  /**
   * The page's board, kept current from the stream at `api.stream` (snapshot + patches + heartbeats), falling
   * back to polling `api.board` when the stream is silent, broken or unsupported. Calls `onBoard(board)` after
   * changes, at most once per animation-sized slice of time.
   */
  class LiveBoard {
    constructor(api, onBoard) {
      this.api = api;
      this.onBoard = onBoard;
      this.board = null;
      this.seq = null;
      this.source = null;
      this.lost = false;
      this.lastMessage = Date.now();
      this.lastData = 0;
      this.failures = 0;
      this.reopenTimer = 0;
      this.openedAt = 0;
      this.pollTimer = 0;
      this.renderTimer = 0;
      this.aheadBeats = 0;
      this.onSnapshot = (e) => this.snapshot(e);
      this.onPatch = (e) => this.patch(e);
      this.onHeartbeat = (e) => this.heartbeat(e);
      this.onError = () => this.fail();
      this.canStream = typeof window.EventSource === "function" && Boolean(api.stream);
    }

    start() {
      if (this.canStream) {
        this.open();
        this.watchdog = setInterval(() => {
          const silent = Date.now() - this.lastMessage;
          if (!this.lost && silent > SILENCE_MS) this.fail();
          // Still nothing on a connection opened a while ago (a half-open socket, a frozen proxy): try anew.
          else if (this.lost && this.source && Date.now() - this.openedAt > RECONNECT_MAX_MS + SILENCE_MS) this.fail();
        }, 1000);
      } else if (this.api.board) {
        this.poll();
        this.pollTimer = setInterval(() => this.poll(), POLL_MS);
      }
    }

    /** Watch another board (the kiosk's next line) on the same connection machinery. */
    switchTo(api) {
      this.api = api;
      this.board = null;
      this.seq = null;
      if (this.canStream) this.reopen(0);
      else this.poll();
    }

    open() {
      this.close();
      const source = new EventSource(this.api.stream);
      source.addEventListener("snapshot", this.onSnapshot);
      source.addEventListener("patch", this.onPatch);
      source.addEventListener("heartbeat", this.onHeartbeat);
      source.addEventListener("error", this.onError);
      this.source = source;
      this.openedAt = Date.now();
      if (!this.lost) this.lastMessage = Date.now(); // a fresh connection gets the full silence allowance
    }

    close() {
      if (!this.source) return;
      this.source.removeEventListener("snapshot", this.onSnapshot);
      this.source.removeEventListener("patch", this.onPatch);
      this.source.removeEventListener("heartbeat", this.onHeartbeat);
      this.source.removeEventListener("error", this.onError);
      this.source.close();
      this.source = null;
    }

    reopen(delay) {
      clearTimeout(this.reopenTimer);
      this.close();
      this.reopenTimer = setTimeout(() => this.open(), delay);
    }

    alive() {
      this.lastMessage = Date.now();
      if (this.lost) {
        this.lost = false;
        this.failures = 0;
        clearInterval(this.pollTimer);
        this.pollTimer = 0;
        showConnectionLost(false);
      }
    }

    /** The stream broke or went silent: say so, reconnect with backoff, and poll meanwhile. */
    fail() {
      this.failures += 1;
      const delay = Math.min(RECONNECT_MAX_MS, 1000 * 2 ** Math.min(this.failures - 1, 4));
      this.reopen(delay);
      if (!this.lost) {
        this.lost = true;
        showConnectionLost(true, this.lastData);
        this.poll();
        this.pollTimer = setInterval(() => this.poll(), POLL_MS);
      }
    }

    snapshot(event) {
      const data = parse(event.data);
      if (!data || typeof data.board !== "object") return;
      this.alive();
      this.seq = data.seq;
      this.board = data.board;
      this.aheadBeats = 0;
      clock.learn(this.board.now_ms, false);
      this.changed();
    }

    patch(event) {
      const data = parse(event.data);
      if (!data) return;
      this.alive();
      if (this.board === null || this.seq === null || data.seq !== this.seq + 1) {
        this.reopen(0); // a gap: the server sends a fresh snapshot on every connect
        return;
      }
      this.board = mergePatch(this.board, data.patch);
      this.seq = data.seq;
      this.changed();
    }

    heartbeat(event) {
      const data = parse(event.data);
      if (!data) return;
      this.alive();
      clock.learn(data.now_ms, true);
      // The server is ahead of us on two heartbeats in a row: a patch went missing.
      if (isNum(data.seq) && this.seq !== null && data.seq > this.seq) {
        this.aheadBeats += 1;
        if (this.aheadBeats >= 2) this.reopen(0);
      } else {
        this.aheadBeats = 0;
      }
      tick();
    }

    async poll() {
      if (!this.api.board) return;
      try {
        const answer = await fetch(this.api.board, { cache: "no-store", headers: { Accept: "application/json" } });
        if (!answer.ok) throw new Error(String(answer.status));
        const board = await answer.json();
        this.board = board;
        this.seq = null; // a polled board has no place in the patch sequence; the next snapshot resets it
        clock.learn(board.now_ms, false);
        this.changed();
        if (!this.canStream) showConnectionLost(false);
      } catch (err) {
        if (!this.canStream) showConnectionLost(true, this.lastData);
      }
    }

    changed() {
      this.lastData = clock.now();
      if (this.renderTimer) return;
      this.renderTimer = setTimeout(() => {
        this.renderTimer = 0;
        if (this.board) this.onBoard(this.board);
      }, 30);
    }
  }

  function parse(text) {
    try { return JSON.parse(text); } catch (err) { return null; }
  }

  /** Apply an RFC 7386 merge patch to `target` in place (objects merge, null deletes, anything else replaces). */
  function mergePatch(target, patch) {
    if (patch === null || typeof patch !== "object" || Array.isArray(patch)) return patch;
    const out = target !== null && typeof target === "object" && !Array.isArray(target) ? target : {};
    for (const key of Object.keys(patch)) {
      const value = patch[key];
      if (value === null) delete out[key];
      else out[key] = mergePatch(out[key], value);
    }
    return out;
  }

  function showConnectionLost(visible, lastData) {
    const banner = byId("connection-lost");
    if (!banner) return;
    show(banner, visible);
    document.body.classList.toggle("stale", Boolean(visible));
    const since = byId("connection-lost-since");
    if (since) setText(since, visible && lastData ? t("banner.stale_since") + " " + fmt.time(lastData) : "");
  }

  /** #no-live-data: the dashboard has no broker, or every agent it knows of is down. */
  function showLiveStatus(live) {
    const banner = byId("no-live-data");
    if (!banner || !live) return;
    const agents = live.agents ? Object.values(live.agents) : [];
    const none = live.broker === false || (agents.length > 0 && !agents.some(Boolean));
    show(banner, none);
  }

  // --- the top bar: clock and shift ------------------------------------------------------------------------

  let currentShift = null;

  function renderShift(shift) {
    currentShift = shift || null;
    const name = byId("shift-name");
    const hours = byId("shift-hours");
    if (!name) return;
    if (!shift) {
      setLabel(name, "shift.none");
      setText(hours, "");
      return;
    }
    name.removeAttribute("data-i18n");
    setText(name, shift.name);
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
  function tick() {
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

  // --- machine tiles ---------------------------------------------------------------------------------------

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
    setAttr(root, "data-state", state);
    setText(r.name, m.name || m.id);
    if (r.name.tagName === "A") setAttr(r.name, "href", pageUrl("machine", context.lineId, m.id));
    setText(r.station, context.stationNames[m.station] || "");

    setLabel(r.state, stateLabelKey(state));
    setAttr(r.since, "data-since-ms", isNum(m.since_ms) ? m.since_ms : "0");
    if (!isNum(m.since_ms)) setText(r.since, "");

    const offline = state === "OFFLINE";
    show(r.offline, offline);
    setText(r.offline, offline ? offlineText(m.offline_reason) : "");
    const stop = m.stop && STOP_STATES.has(state) && state !== "MICROSTOP" ? m.stop : null;
    show(r.stop, Boolean(stop));
    if (stop) {
      if (stop.reason) {
        r.stopReason.removeAttribute("data-i18n");
        setText(r.stopReason, reasonName(stop.reason));
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

  function renderTiles(container, board, ids) {
    const stationNames = {};
    for (const s of (board.people && board.people.stations) || []) stationNames[s.id] = s.name;
    const context = { lineId: board.line && board.line.id, stationNames };
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

  // --- state chips and mixes -------------------------------------------------------------------------------

  /** Chips "state count" in the standard state order, one per state present. */
  function renderStateMix(container, states) {
    const items = STATES.filter((s) => states && states[s] > 0).map((s) => [s, states[s]]);
    for (const s of Object.keys(states || {})) if (!STATES.includes(s) && states[s] > 0) items.push([s, states[s]]);
    syncList(container, items, (i) => i[0], (item) => {
      const chip = el("span", "chip state-chip");
      chip._refs = { name: el("span", "chip-name"), count: el("b", "chip-count") };
      chip.append(chip._refs.name, chip._refs.count);
      return chip;
    }, (chip, [state, count]) => {
      setAttr(chip, "data-state", state);
      setLabel(chip._refs.name, stateLabelKey(state));
      setText(chip._refs.count, fmt.num(count));
    });
  }

  function renderLegend(container, states) {
    if (!container) return;
    syncList(container, states, (s) => s, () => {
      const chip = el("span", "chip legend-chip");
      chip.append(el("i", "swatch"), el("span"));
      return chip;
    }, (chip, state) => {
      setAttr(chip, "data-state", state);
      setLabel(chip.lastChild, stateLabelKey(state));
    });
  }

  // --- the line board --------------------------------------------------------------------------------------

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
      orderNode.removeAttribute("data-i18n");
      setText(orderNode, order.order_id);
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

    const stationNames = {};
    for (const s of people.stations || []) stationNames[s.id] = s.name;
    const calls = people.andon || [];
    renderCalls(byId("andon-list"), calls, (c) => c.call_id, (li, c) => {
      const r = li._refs;
      setAttr(li, "data-kind", c.kind);
      setText(r.kind, tOr("andon.kind." + c.kind, c.kind));
      setText(r.where, stationNames[c.station] || c.station);
      setAttr(r.age, "data-since-ms", c.called_ms);
      setLabel(r.status, c.acked_ms ? "andon.acked" : "andon.waiting");
      li.classList.toggle("acked", Boolean(c.acked_ms));
    });
    show(byId("andon-empty"), calls.length === 0);
    const stats = people.andon_shift || {};
    setText(byId("andon-stats"), [t("andon.calls_shift") + " " + fmt.num(stats.calls),
      t("andon.mean_ack") + " " + fmt.span(stats.mean_ack_s),
      t("andon.mean_resolve") + " " + fmt.span(stats.mean_resolve_s)].join(" · "));
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
    const stationNames = {};
    for (const s of (board.people && board.people.stations) || []) stationNames[s.id] = s.name;
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

  function renderLine(board) {
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

  // --- the overview ----------------------------------------------------------------------------------------

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
      setAttr(chip, "data-state", m.state);
      setText(chip._refs.name, m.name);
      setLabel(chip._refs.state, stateLabelKey(m.state));
      setAttr(chip._refs.since, "data-since-ms", isNum(m.since_ms) ? m.since_ms : "0");
    });
  }

  function renderOverview(board) {
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

  // --- kiosk (TV) ------------------------------------------------------------------------------------------

  /** URLs of another line's board: from `api.line_board`/`api.line_stream` patterns when given, else this
   *  page's URLs with the line id swapped (path segment or `scope=line/<id>`). */
  function apiForLine(lineId) {
    const from = CFG.line && CFG.line.id;
    const swap = (url) => {
      if (!url || !from) return url;
      return url.split(/([/?&=]|%2F)/i).map((part) => (part === from || part === encodeURIComponent(from)
        ? encodeURIComponent(lineId) : part)).join("");
    };
    const pattern = (p) => p.replace("{line}", encodeURIComponent(lineId));
    return {
      board: API.line_board ? pattern(API.line_board) : swap(API.board),
      stream: API.line_stream ? pattern(API.line_stream) : swap(API.stream),
    };
  }

  function startKiosk(live) {
    const k = CFG.kiosk;
    const ids = (k.lines || []).filter(Boolean);
    const rotateMs = Math.max(5, Number(k.rotate_s) || 30) * 1000;
    const reloadMs = Math.max(0.05, Number(k.reload_h) || 6) * 3600 * 1000;
    let index = isNum(k.index) ? k.index : Math.max(0, ids.indexOf(CFG.line && CFG.line.id));

    // Whatever happens in between, a fresh page every reload_h hours keeps a TV's browser from aging.
    setTimeout(() => window.location.reload(), reloadMs);

    const dots = byId("kiosk-dots");
    const bar = byId("kiosk-bar");
    const names = {};
    for (const l of CFG.lines || []) names[l.id] = l.name;
    if (dots) {
      for (const id of ids) {
        const dot = el("i", "kiosk-dot");
        dot.dataset.line = id;
        dots.append(dot);
      }
    }
    const mark = () => {
      if (dots) for (const dot of dots.children) dot.classList.toggle("on", dot.dataset.line === ids[index]);
      if (bar) {
        bar.style.transition = "none";
        bar.style.width = "0%";
        void bar.offsetWidth; // restart the fill from zero
        bar.style.transition = "width " + rotateMs + "ms linear";
        bar.style.width = ids.length > 1 ? "100%" : "0%";
      }
    };
    mark();
    if (ids.length > 1) {
      setInterval(() => {
        index = (index + 1) % ids.length;
        const lineId = ids[index];
        const heading = byId("line-name");
        if (heading) setText(heading, names[lineId] || lineId);
        byId("line-board").dataset.line = lineId;
        // The old line's tiles and rows go; the new board's are built when its snapshot arrives.
        for (const id of ["tiles", "stations", "materials", "andon-list", "material-calls", "sum-states"]) {
          const node = byId(id);
          if (node) node.replaceChildren();
        }
        live.switchTo(apiForLine(lineId));
        mark();
        // A reload (every reload_h hours, or by hand) comes back to the line on screen.
        const here = new URL(window.location.href);
        here.searchParams.set("start", lineId);
        here.searchParams.delete("i");
        window.history.replaceState(null, "", here.toString());
      }, rotateMs);
    }

    // Browsers allow full screen only after a gesture; a kiosk browser started with --kiosk already is.
    const hint = byId("kiosk-hint");
    const fullAlready = document.fullscreenElement || (window.innerHeight >= screen.height - 1 && window.innerWidth >= screen.width - 1);
    if (hint && !fullAlready && document.documentElement.requestFullscreen) {
      show(hint, true);
      setTimeout(() => show(hint, false), 15000);
      const goFull = () => {
        show(hint, false);
        document.documentElement.requestFullscreen().catch(() => {});
      };
      document.addEventListener("pointerdown", goFull, { once: true });
      document.addEventListener("keydown", goFull, { once: true });
    }
  }

  // --- start -----------------------------------------------------------------------------------------------

  const boardListeners = [];

  function renderMachinePage(board) {
    renderShift(board.shift);
    showLiveStatus(board.live);
    const id = CFG.machine && CFG.machine.id;
    renderTiles(byId("tiles"), board, id ? [id] : []);
    tick();
  }

  const renderers = { line: renderLine, overview: renderOverview, machine: renderMachinePage };

  function onBoard(board) {
    const render = renderers[CFG.page];
    if (render) render(board);
    else {
      renderShift(board.shift);
      showLiveStatus(board.live);
    }
    for (const listener of boardListeners) listener(board);
  }

  renderLegend(byId("legend"), STATES);
  // A page without board data (sign-in) has no shift to show.
  if (!API.stream && !API.board && !API.stops) show(byId("shift"), false);
  tick();
  setInterval(tick, 1000);

  let live = null;
  if (API.stream || API.board) {
    live = new LiveBoard(API, onBoard);
    live.start();
    if (CFG.kiosk && CFG.page === "line") startKiosk(live);
  }

  window.Shopfloor = {
    CFG, STATES, t, tOr, fmt, clock, el, label, setText, setAttr, setLabel, show, syncList, byId, isNum,
    stateLabelKey, reasonName, renderShift, renderLegend, pageUrl, mergePatch,
    /** Call `listener(board)` after every board update of this page. */
    onBoard(listener) { boardListeners.push(listener); },
  };
})();
