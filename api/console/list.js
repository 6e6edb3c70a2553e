// The captures list: filters, search, sort, rows with live counters, the rows' menus and keys,
// and the empty state.

import { regionKey } from './api.js';
import { bytes, count, duration, h, set, time, uid } from './ui.js';
import { STATUSES, captureKey, durationOf, outputOf, permission, reasonOf, setView, soon, state, statusOf, targetName, writableSubs } from './model.js';
import { deleteCapture, openActions } from './actions.js';

const main = document.getElementById('main');

const COLUMNS = [
  { key: 'name', label: 'Name' },
  { key: 'target', label: 'Target' },
  { key: 'region', label: 'Region' },
  { key: 'status', label: 'Status' },
  { key: 'reason', label: 'Stop reason / error' },
  { key: 'started', label: 'Started' },
  { key: 'duration', label: 'Duration' },
  { key: 'packets', label: 'Packets', num: true },
  { key: 'bytes', label: 'Bytes', num: true },
  { key: 'drops', label: 'Kernel drops', num: true },
  { key: 'output', label: 'Output' },
];

function sortValue(c, key) {
  const s = c.status || {};
  switch (key) {
    case 'name': return c.name.toLowerCase();
    case 'target': return targetName(c).toLowerCase();
    case 'region': return regionKey(c.location);
    case 'status': return statusOf(c);
    case 'reason': return reasonOf(c);
    case 'started': return s.captureStartTime ? Date.parse(s.captureStartTime) : -Infinity;
    case 'duration': return durationOf(c) ?? -Infinity;
    case 'packets': return s.packetsCaptured ?? -Infinity;
    case 'bytes': return s.bytesCaptured ?? -Infinity;
    case 'drops': return s.kernelDrops ?? -Infinity;
    case 'output': return outputOf(c);
    default: return '';
  }
}

function visibleCaptures() {
  const f = state.filters;
  const q = f.q.trim().toLowerCase();
  const rows = [...state.captures.values()].filter((c) => (!f.sub || c.sub === f.sub)
    && (!f.rg || c.rg.toLowerCase() === f.rg.toLowerCase())
    && (!f.region || regionKey(c.location) === f.region)
    && (!f.status || statusOf(c) === f.status)
    && (!q || [c.name, c.props.target, c.location, c.rg, c.sub, statusOf(c), reasonOf(c), outputOf(c), c.watcher]
      .some((v) => String(v || '').toLowerCase().includes(q))));
  const { key, dir } = state.sort;
  return rows
    .map((c) => ({ c, v: sortValue(c, key), n: c.name }))
    .sort((a, b) => {
      if (a.v < b.v) return -dir;
      if (a.v > b.v) return dir;
      return a.n < b.n ? -1 : a.n > b.n ? 1 : 0;
    })
    .map((x) => x.c);
}

function optionList(values, all, selected, labels = (v) => v) {
  return [h('option', { value: '' }, all), ...values.map((v) => h('option', { value: v, selected: v === selected ? true : null }, labels(v)))];
}

function filterBar() {
  const caps = [...state.captures.values()];
  const uniq = (xs) => [...new Set(xs.filter(Boolean))].sort();
  const field = (label, el) => {
    const id = uid('f');
    el.id = id;
    return h('div', { class: 'filter' }, h('label', { for: id }, label), el);
  };
  const sel = (key, values, all, labels) => {
    const s = h('select', { name: key }, optionList(values, all, state.filters[key], labels));
    s.addEventListener('change', () => { state.filters[key] = s.value; renderRows(); });
    return s;
  };
  const search = h('input', { type: 'search', name: 'q', placeholder: 'Name, target, status…', value: state.filters.q, autocomplete: 'off' });
  search.addEventListener('input', () => { state.filters.q = search.value; renderRows(); });
  return h('div', { class: 'filters', role: 'search', 'aria-label': 'Filter captures' },
    field('Search', search),
    field('Subscription', sel('sub', uniq([...state.subs, ...caps.map((c) => c.sub)]), 'All subscriptions')),
    field('Resource group', sel('rg', uniq(caps.map((c) => c.rg)), 'All resource groups')),
    field('Region', sel('region', uniq(caps.map((c) => regionKey(c.location))), 'All regions')),
    field('Status', sel('status', STATUSES, 'All statuses')));
}

function canAdd() {
  if (state.subs.length === 0) return 'You cannot read any subscription yet.';
  return writableSubs().length ? null : permission(state.subs[0], 'write');
}

export function renderList() {
  document.title = 'Packet capture';
  setView(renderList);
  const addWhy = canAdd();
  const addBtn = h('button', {
    type: 'button', class: 'btn primary', id: 'add-button',
    'aria-disabled': addWhy && state.loaded ? 'true' : null,
    title: addWhy && state.loaded ? addWhy : null,
    onclick: () => { if (!(addWhy && state.loaded)) window.location.hash = '#/add'; },
  }, '+ Add');
  const refreshBtn = h('button', { type: 'button', class: 'btn', onclick: () => soon(0) }, 'Refresh');
  const focusedKey = document.activeElement && document.activeElement.closest && document.activeElement.closest('[data-capture]')
    ? document.activeElement.closest('[data-capture]').dataset.capture : null;
  const wasInFilters = document.activeElement && document.activeElement.closest && document.activeElement.closest('.filters')
    ? document.activeElement.name : null;
  const selStart = wasInFilters === 'q' ? document.activeElement.selectionStart : null;
  const scrolled = window.scrollY;
  set(main,
    h('div', { class: 'page-head' },
      h('h1', {}, 'Packet capture'),
      h('div', { class: 'toolbar' }, addBtn, refreshBtn,
        addWhy && state.loaded ? h('span', { class: 'hint', id: 'add-why' }, addWhy) : null)),
    filterBar(),
    h('div', { id: 'problems' }),
    h('div', { id: 'rows' }));
  renderRows();
  window.scrollTo(0, scrolled);
  if (focusedKey) {
    const el = main.querySelector(`[data-capture="${CSS.escape(focusedKey)}"] .row-link`);
    if (el) el.focus({ preventScroll: true });
  } else if (wasInFilters) {
    const el = main.querySelector(`.filters [name="${wasInFilters}"]`);
    if (el) {
      el.focus({ preventScroll: true });
      if (selStart !== null) el.setSelectionRange(selStart, selStart);
    }
  }
}

function renderRows() {
  const box = document.getElementById('rows');
  const problems = document.getElementById('problems');
  if (!box) return;
  set(problems, state.problems.map((p) => h('p', { class: 'alert', role: 'alert' },
    p.sub ? `Subscription ${p.sub}: ` : '', p.message)));
  if (!state.loaded) {
    set(box, h('p', { class: 'loading', role: 'status' }, 'Loading captures…'));
    return;
  }
  if (state.captures.size === 0) {
    set(box, emptyState());
    return;
  }
  const all = visibleCaptures();
  // At most `state.shown` rows at once (a thousand-row table takes long to lay out).
  const rows = all.slice(0, state.shown);
  const table = h('table', { class: 'captures', 'aria-label': 'Packet captures', 'aria-rowcount': String(all.length + 1) },
    h('thead', {}, h('tr', {},
      COLUMNS.map((col) => {
        const sorted = state.sort.key === col.key;
        return h('th', {
          scope: 'col', class: col.num ? 'num' : null,
          'aria-sort': sorted ? (state.sort.dir > 0 ? 'ascending' : 'descending') : 'none',
        }, h('button', {
          type: 'button', class: 'sort',
          onclick: () => {
            state.sort = { key: col.key, dir: sorted ? -state.sort.dir : 1 };
            renderRows();
            const again = document.querySelector(`th button.sort[data-key="${col.key}"]`);
            if (again) again.focus();
          },
          dataset: { key: col.key },
        }, col.label, h('span', { class: 'sort-mark', 'aria-hidden': 'true' }, sorted ? (state.sort.dir > 0 ? ' ▲' : ' ▼') : '')));
      }),
      h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
    rowActions(h('tbody', {}, rows.map(row))));
  set(box,
    h('p', { class: 'count', role: 'status' }, `${all.length} of ${state.captures.size} captures`,
      h('span', { class: 'keys' }, ' · Right-click a row, or press Shift+F10 on it, for its actions; Delete deletes.')),
    h('div', { class: 'table-wrap' }, table),
    all.length > rows.length
      ? h('p', {}, h('button', {
        type: 'button', class: 'btn', id: 'show-more',
        onclick: () => { state.shown += PAGE_ROWS; renderRows(); },
      }, `Show ${Math.min(PAGE_ROWS, all.length - rows.length)} more (${all.length - rows.length} not shown)`))
      : null);
}

const PAGE_ROWS = 100;

export function statusBadge(st) {
  return h('span', { class: `status status-${st.toLowerCase()}` }, h('span', { class: 'dot', 'aria-hidden': 'true' }), st);
}

function row(c) {
  const s = c.status || {};
  const st = statusOf(c);
  const menuBtn = h('button', {
    type: 'button', class: 'btn icon more', 'aria-haspopup': 'menu', 'aria-label': `Actions for ${c.name}`,
  }, '…');
  const link = h('a', { href: `#/captures/${encodeURIComponent(c.id)}`, class: 'row-link' }, c.name);
  return h('tr', { dataset: { capture: captureKey(c.id), status: st } },
    h('th', { scope: 'row', class: 'name' }, link, h('div', { class: 'sub-line' }, `${c.rg} · ${c.watcher}`)),
    h('td', { 'data-label': 'Target' }, targetName(c)),
    h('td', { 'data-label': 'Region' }, c.location),
    h('td', { 'data-label': 'Status', class: 'status-cell' }, statusBadge(st)),
    h('td', { 'data-label': 'Stop reason / error', class: 'reason' }, reasonOf(c)),
    h('td', { 'data-label': 'Started' }, time(s.captureStartTime)),
    h('td', { 'data-label': 'Duration' }, duration(durationOf(c))),
    h('td', { 'data-label': 'Packets', class: 'num packets' }, count(s.packetsCaptured)),
    h('td', { 'data-label': 'Bytes', class: 'num bytes' }, bytes(s.bytesCaptured)),
    h('td', { 'data-label': 'Kernel drops', class: 'num' }, count(s.kernelDrops)),
    h('td', { 'data-label': 'Output', class: 'output' }, outputOf(c)),
    h('td', { class: 'actions' }, menuBtn));
}

/**
 * The rows' actions, with one listener each on the table body (not three per row): the "..."
 * button, a right-click, Shift+F10 or the context menu key, and Delete on a row's link.
 */
function rowActions(tbody) {
  const target = (e) => {
    const tr = e.target.closest && e.target.closest('tr[data-capture]');
    const c = tr && state.captures.get(tr.dataset.capture);
    return c ? { tr, c, link: tr.querySelector('.row-link'), menuBtn: tr.querySelector('button.more') } : null;
  };
  tbody.addEventListener('click', (e) => {
    const t = target(e);
    if (!t || !e.target.closest('button.more')) return;
    e.stopPropagation();
    openActions(t.c, { anchor: t.menuBtn, returnTo: t.menuBtn });
  });
  tbody.addEventListener('contextmenu', (e) => {
    const t = target(e);
    if (!t) return;
    e.preventDefault();
    openActions(t.c, { x: e.clientX, y: e.clientY, returnTo: t.link });
  });
  tbody.addEventListener('keydown', (e) => {
    const t = target(e);
    if (!t) return;
    if ((e.key === 'F10' && e.shiftKey) || e.key === 'ContextMenu') {
      e.preventDefault();
      openActions(t.c, { anchor: t.menuBtn, returnTo: document.activeElement });
    } else if (e.key === 'Delete' && e.target === t.link) {
      e.preventDefault();
      deleteCapture(t.c, t.link);
    }
  });
  return tbody;
}

function emptyState() {
  const origin = window.location.origin;
  const sub = state.subs[0] || '<subscription id>';
  return h('section', { class: 'empty', 'aria-labelledby': 'empty-title' },
    h('h2', { id: 'empty-title' }, 'No packet captures yet'),
    h('p', {}, 'A capture runs on its target machine, by the capture agent of that machine. Register an agent on each machine to capture on (as root; it needs libpcap), then select ', h('strong', {}, '+ Add'), '.'),
    h('ol', {},
      h('li', {}, 'On the server, create an enrollment token for a resource group:',
        h('pre', {}, h('code', {}, `capture-api agent-tokens create --scope /subscriptions/${sub}/resourceGroups/rg1`))),
      h('li', {}, 'On the machine, run the agent with that token:',
        h('pre', {}, h('code', {}, `capture-agent run --server ${origin} --enrollment-token "$TOKEN" \\\n  --machine-id /subscriptions/${sub}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1 \\\n  --location eastus`)))));
}
