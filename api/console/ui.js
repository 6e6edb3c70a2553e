// Small DOM helpers: element builder, dialogs, menus, toasts. No innerHTML anywhere: every text
// reaches the page as a text node.

/** Builds an element: h('button', {class: 'x', onclick: f}, 'text', child…). */
export function h(tag, attrs = {}, ...children) {
  const svg = tag.startsWith('svg:');
  const el = svg
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value' && !svg) el.value = v;
    else if (k === 'checked' && !svg) el.checked = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function set(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let idSeq = 0;
/** A fresh element id with a prefix. */
export function uid(prefix = 'id') {
  idSeq += 1;
  return `${prefix}-${idSeq}`;
}

/** Shows a short message in the live region. */
export function toast(message, kind = 'info') {
  const box = document.getElementById('toasts');
  if (!box) return;
  const t = h('div', { class: `toast ${kind}` }, message);
  box.append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 12000 : 5000);
}

/** Elements a keyboard can reach inside `root`. */
function focusables(root) {
  return [...root.querySelectorAll(
    'a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])',
  )].filter((e) => e.offsetParent !== null || e === document.activeElement);
}

/** Keeps Tab inside `root`; Escape calls `onEscape`. Returns the remover. */
export function trapFocus(root, onEscape) {
  const onKey = (e) => {
    if (e.key === 'Escape') {
      e.preventDefault();
      onEscape();
      return;
    }
    if (e.key !== 'Tab') return;
    const f = focusables(root);
    if (f.length === 0) return;
    const first = f[0];
    const last = f[f.length - 1];
    if (e.shiftKey && document.activeElement === first) {
      e.preventDefault();
      last.focus();
    } else if (!e.shiftKey && document.activeElement === last) {
      e.preventDefault();
      first.focus();
    }
  };
  root.addEventListener('keydown', onKey);
  return () => root.removeEventListener('keydown', onKey);
}

/**
 * A modal Yes/No confirmation (role alertdialog). Resolves true for Yes.
 */
export function confirmDialog({ title, message, yes = 'Yes', no = 'No' }) {
  return new Promise((resolve) => {
    const back = document.activeElement;
    const titleId = uid('dlg-title');
    const descId = uid('dlg-desc');
    let release = () => {};
    const close = (answer) => {
      release();
      overlay.remove();
      if (back && back.isConnected) back.focus();
      resolve(answer);
    };
    const noBtn = h('button', { type: 'button', class: 'btn', onclick: () => close(false) }, no);
    const yesBtn = h('button', { type: 'button', class: 'btn primary danger', onclick: () => close(true) }, yes);
    const dialog = h('div', {
      class: 'dialog', role: 'alertdialog', 'aria-modal': 'true',
      'aria-labelledby': titleId, 'aria-describedby': descId,
    },
    h('h2', { id: titleId }, title),
    h('div', { id: descId }, message),
    h('div', { class: 'dialog-actions' }, yesBtn, noBtn));
    const overlay = h('div', { class: 'overlay' }, dialog);
    document.body.append(overlay);
    release = trapFocus(dialog, () => close(false));
    noBtn.focus();
  });
}

/**
 * A menu (role menu) of items {label, onSelect, disabled, title} at a position or under an
 * anchor. Arrow keys move, Enter/Space select, Escape closes; focus returns to `returnTo`.
 */
export function openMenu({ items, anchor, x, y, returnTo, label }) {
  closeMenus();
  const menu = h('div', { class: 'menu', role: 'menu', 'aria-label': label || 'Actions' });
  const buttons = items.map((it) => {
    const b = h('button', {
      type: 'button', role: 'menuitem', tabindex: '-1', class: 'menu-item',
      'aria-disabled': it.disabled ? 'true' : null,
      title: it.disabled && it.title ? it.title : null,
      dataset: { action: it.action || '' },
    }, it.label, it.disabled && it.title ? h('span', { class: 'menu-why' }, it.title) : null);
    b.addEventListener('click', (e) => {
      e.stopPropagation();
      if (it.disabled) return;
      close();
      it.onSelect();
    });
    return b;
  });
  menu.append(...buttons);
  document.body.append(menu);
  const rect = anchor ? anchor.getBoundingClientRect() : null;
  let left = rect ? rect.right - menu.offsetWidth : x;
  let top = rect ? rect.bottom + 2 : y;
  left = Math.max(4, Math.min(left, window.innerWidth - menu.offsetWidth - 4));
  top = Math.max(4, Math.min(top, window.innerHeight - menu.offsetHeight - 4));
  menu.style.left = `${left + window.scrollX}px`;
  menu.style.top = `${top + window.scrollY}px`;
  let index = 0;
  const focusAt = (i) => {
    index = (i + buttons.length) % buttons.length;
    buttons[index].focus();
  };
  function close() {
    menu.remove();
    document.removeEventListener('mousedown', outside, true);
    if (returnTo && returnTo.isConnected) returnTo.focus();
  }
  const outside = (e) => {
    if (!menu.contains(e.target)) {
      menu.remove();
      document.removeEventListener('mousedown', outside, true);
    }
  };
  menu.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowDown') { e.preventDefault(); focusAt(index + 1); }
    else if (e.key === 'ArrowUp') { e.preventDefault(); focusAt(index - 1); }
    else if (e.key === 'Home') { e.preventDefault(); focusAt(0); }
    else if (e.key === 'End') { e.preventDefault(); focusAt(buttons.length - 1); }
    else if (e.key === 'Escape' || e.key === 'Tab') { e.preventDefault(); close(); }
  });
  document.addEventListener('mousedown', outside, true);
  focusAt(0);
  menu.closeMenu = close;
  return menu;
}

export function closeMenus() {
  for (const m of document.querySelectorAll('.menu')) m.remove();
}

/** Formats a byte count: 1.2 MB. */
export function bytes(n) {
  if (n === null || n === undefined) return '–';
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u += 1; }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

// One formatter each: creating them (what toLocaleString does at each call) is slow.
const NUMBER = new Intl.NumberFormat('en-US');
const DATE = new Intl.DateTimeFormat(undefined, { dateStyle: 'short', timeStyle: 'medium' });

/** Formats a count with thousands separators. */
export function count(n) {
  if (n === null || n === undefined) return '–';
  return NUMBER.format(Number(n));
}

/** Formats a duration in seconds: 1 h 02 min, 3 min 05 s, 12 s. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '–';
  const s = Math.max(0, Math.round(seconds));
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = s % 60;
  if (hh > 0) return `${hh} h ${String(mm).padStart(2, '0')} min`;
  if (mm > 0) return `${mm} min ${String(ss).padStart(2, '0')} s`;
  return `${ss} s`;
}

/** A date-time in the user's locale, with its ISO form as a tooltip. */
export function time(iso) {
  if (!iso) return '–';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const utc = d.toISOString();
  return h('time', { datetime: utc, title: utc }, DATE.format(d));
}
