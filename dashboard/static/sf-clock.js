/* Shopfloor e-boards: the server's clock, which every age and duration on a page is measured by. */

import { isNum } from "./sf-format.js";

/** "Now" on the server (which may run a simulated clock far from this browser's): every age and duration. */
export const clock = {
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
