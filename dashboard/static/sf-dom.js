/*
 * Shopfloor e-boards: small DOM helpers. Nodes are created once and updated in place: the setters touch the DOM
 * only when a value changes, and syncList keeps one child per item, keyed by id.
 */

import { t } from "./sf-page.js";
import { isNum } from "./sf-format.js";

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

/** An element showing label `key`, marked with data-i18n so tests can find every label. */
export function label(tag, className, key, vars) {
  const node = el(tag, className, t(key, vars));
  node.setAttribute("data-i18n", key);
  return node;
}

export function setText(node, text) {
  const value = text === null || text === undefined ? "" : String(text);
  if (node.textContent !== value) node.textContent = value;
}

export function setAttr(node, name, value) {
  if (value === null || value === undefined || value === false) {
    if (node.hasAttribute(name)) node.removeAttribute(name);
  } else if (node.getAttribute(name) !== String(value)) {
    node.setAttribute(name, String(value));
  }
}

export function setLabel(node, key, vars) {
  setAttr(node, "data-i18n", key);
  setText(node, t(key, vars));
}

export function show(node, visible) {
  if (node && node.hidden === Boolean(visible)) node.hidden = !visible;
}

export function setWidth(node, fraction) {
  const f = isNum(fraction) ? Math.max(0, Math.min(1, fraction)) : 0;
  const w = (f * 100).toFixed(1) + "%";
  if (node.style.width !== w) node.style.width = w;
}

export const byId = (id) => document.getElementById(id);

/** Plain text that is not a label (a name, an id from the data): the node stops being marked as one. */
export function setPlain(node, text) {
  node.removeAttribute("data-i18n");
  setText(node, text);
}

/**
 * Make `container`'s children match `items`, reusing the child whose data-key is the item's key:
 * `create(item)` builds a new child, `update(child, item)` refreshes one. Children of gone items are removed.
 */
export function syncList(container, items, keyOf, create, update) {
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
