/*
 * Shopfloor e-boards: the board states on a page: their names, state chips, mixes and legends, always in the
 * server's order of states (sf-page.js). The colours follow data-state through the page's CSS.
 */

import { LABELS, STATES } from "./sf-page.js";
import { fmt } from "./sf-format.js";
import { el, setAttr, setLabel, setText, syncList } from "./sf-dom.js";

export function stateLabelKey(state) { return LABELS["state." + state] !== undefined ? "state." + state : "state.unknown"; }

/** `node` takes the colours of `state` (its data-state) and `nameNode` (else `node` itself) shows its name. */
export function showState(node, state, nameNode) {
  setAttr(node, "data-state", state);
  setLabel(nameNode || node, stateLabelKey(state));
}

/** Chips "state count" in the standard state order, one per state present. */
export function renderStateMix(container, states) {
  const items = STATES.filter((s) => states && states[s] > 0).map((s) => [s, states[s]]);
  for (const s of Object.keys(states || {})) if (!STATES.includes(s) && states[s] > 0) items.push([s, states[s]]);
  syncList(container, items, (i) => i[0], (item) => {
    const chip = el("span", "chip state-chip");
    chip._refs = { name: el("span", "chip-name"), count: el("b", "chip-count") };
    chip.append(chip._refs.name, chip._refs.count);
    return chip;
  }, (chip, [state, count]) => {
    showState(chip, state, chip._refs.name);
    setText(chip._refs.count, fmt.num(count));
  });
}

export function renderLegend(container, states) {
  if (!container) return;
  syncList(container, states, (s) => s, () => {
    const chip = el("span", "chip legend-chip");
    chip.append(el("i", "swatch"), el("span"));
    return chip;
  }, (chip, state) => {
    showState(chip, state, chip.lastChild);
  });
}
