/*
 * Shopfloor e-boards: the kiosk (a TV): the line board rotating through the kiosk's lines in place, on the
 * same live connection, a fresh page every reload_h hours, and full screen after one gesture when the browser
 * was not started in kiosk mode.
 */

import { API, CFG } from "./sf-page.js";
import { isNum } from "./sf-format.js";
import { byId, el, setText, show } from "./sf-dom.js";

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

export function startKiosk(live) {
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
