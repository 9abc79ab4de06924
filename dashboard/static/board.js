/*
 * Shopfloor e-boards: the live part of every page (an ES module: the page loads it with type="module").
 *
 * The page's board is kept current from the server's stream (sf-live.js) and drawn: the line board
 * (sf-line.js: summary, machine tiles, people, materials), the overview (sf-overview.js: a card per line) and
 * the machine page's tile (sf-tiles.js); the top bar (sf-topbar.js) shows the shift, the clock and, loudly,
 * when the data cannot be trusted (#connection-lost and #no-live-data). A TV page rotates through its lines
 * (sf-kiosk.js). machine.js and stops.js import this module for `onBoard` and the sf-*.js modules for the rest.
 *
 * Memory stays flat on a TV left on for weeks: DOM nodes are created once per machine, station, call or
 * material and then updated in place (keyed by id); lists are bounded by the board; no listener is added per
 * update; timers are created once.
 */

import { API, CFG, STATES } from "./sf-page.js";
import { byId, show } from "./sf-dom.js";
import { renderLegend } from "./sf-states.js";
import { renderShift, showLiveStatus, tick } from "./sf-topbar.js";
import { LiveBoard } from "./sf-live.js";
import { renderTiles } from "./sf-tiles.js";
import { renderLine } from "./sf-line.js";
import { renderOverview } from "./sf-overview.js";
import { startKiosk } from "./sf-kiosk.js";

const boardListeners = [];

function renderMachinePage(board) {
  renderShift(board.shift);
  showLiveStatus(board.live);
  const id = CFG.machine && CFG.machine.id;
  renderTiles(byId("tiles"), board, id ? [id] : []);
  tick();
}

const renderers = { line: renderLine, overview: renderOverview, machine: renderMachinePage };

function drawBoard(board) {
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

if (API.stream || API.board) {
  const live = new LiveBoard(API, drawBoard);
  live.start();
  if (CFG.kiosk && CFG.page === "line") startKiosk(live);
}

/** Call `listener(board)` after every board update of this page. */
export function onBoard(listener) {
  boardListeners.push(listener);
}
