/*
 * Shopfloor e-boards: the live connection. One board per page arrives from the server as a snapshot, then as
 * numbered JSON merge patches (RFC 7386) on a Server-Sent Events stream, with heartbeats carrying the server's
 * clock; when the stream is silent, broken or unsupported, the board is polled and the page says so.
 */

import { isNum } from "./sf-format.js";
import { clock } from "./sf-clock.js";
import { showConnectionLost, tick } from "./sf-topbar.js";

const SILENCE_MS = 8000;        // no stream message for this long: the connection is lost
const POLL_MS = 30000;          // snapshot polling while the stream is down (or unavailable)
const RECONNECT_MAX_MS = 10000; // reconnect backoff cap

/**
 * The page's board, kept current from the stream at `api.stream` (snapshot + patches + heartbeats), falling
 * back to polling `api.board` when the stream is silent, broken or unsupported. Calls `onBoard(board)` after
 * changes, at most once per animation-sized slice of time.
 */
export class LiveBoard {
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
      const board = await getJson(this.api.board);
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
export function mergePatch(target, patch) {
  if (patch === null || typeof patch !== "object" || Array.isArray(patch)) return patch;
  const out = target !== null && typeof target === "object" && !Array.isArray(target) ? target : {};
  for (const key of Object.keys(patch)) {
    const value = patch[key];
    if (value === null) delete out[key];
    else out[key] = mergePatch(out[key], value);
  }
  return out;
}

/** The JSON answer of `url`, never from a cache; an HTTP error throws, with the status as its message. */
export async function getJson(url) {
  const answer = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
  if (!answer.ok) throw new Error(String(answer.status));
  return answer.json();
}
