// The console: the captures list, the Add panel, row actions, details and the packet viewer.
// A client of the public ARM API only (see api.js), with the signed-in user's token (auth.js).

import * as auth from './auth.js';
import {
  ArmError, COMPUTE_VERSION, NETWORK_VERSION, STORAGE_VERSION, SUBSCRIPTIONS_VERSION,
  del, get, list, parseId, post, put, regionKey, request, versioned, waitOperation,
} from './api.js';
import * as V from './validate.js';
import { PcapError, parsePcap } from './pcap.js';
import {
  bytes, closeMenus, confirmDialog, count, duration, h, openMenu, set, time, toast, trapFocus, uid,
} from './ui.js';

const WRITE = 'Microsoft.Network/networkWatchers/packetCaptures/write';
const DELETE = 'Microsoft.Network/networkWatchers/packetCaptures/delete';
const STOP = 'Microsoft.Network/networkWatchers/packetCaptures/stop/action';
const FINAL = new Set(['Stopped', 'Error']);
const STATUSES = ['NotStarted', 'Running', 'Stopped', 'Error'];

const main = document.getElementById('main');
const userBox = document.getElementById('user');

const state = {
  subs: [],
  captures: new Map(), // key: lower-case id
  problems: [], // per-subscription load errors (403s and the like), shown above the list
  loaded: false,
  loading: false,
  permissions: new Map(), // subscription -> {write, delete, stop: reason or null}
  filters: { sub: '', rg: '', region: '', status: '', q: '' },
  sort: { key: 'started', dir: -1 },
  pollDelay: 2000,
  pollTimer: null,
  downloads: new Map(), // id key -> ArrayBuffer of the last download
  shown: 200, // rows of the list shown (PAGE_ROWS more at each "Show more")
  machinesSeen: null,
};

// ---------------------------------------------------------------------------------------------
// Loading: subscriptions, then watchers and captures per subscription, then each capture's status

/** Runs `f` over `items` with at most `n` at once. */
async function pool(items, n, f) {
  const out = [];
  let i = 0;
  const worker = async () => {
    while (i < items.length) {
      const k = i;
      i += 1;
      out[k] = await f(items[k]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

function captureKey(id) { return id.toLowerCase(); }

function shapeCapture(c, watcher) {
  const p = parseId(c.id);
  const previous = state.captures.get(captureKey(c.id));
  return {
    id: c.id,
    name: c.name || p.name,
    sub: p.subscription,
    rg: p.resourceGroup,
    watcher: watcher.name,
    watcherId: watcher.id,
    location: watcher.location,
    etag: c.etag,
    props: c.properties || {},
    status: previous ? previous.status : null,
    history: previous ? previous.history : [],
    seenStopAt: previous ? previous.seenStopAt : null,
    statusError: previous ? previous.statusError : null,
  };
}

async function loadPermissions(sub) {
  if (state.permissions.has(sub)) return;
  const need = (action) => `You need the permission ${action} (a role such as Network Contributor or Owner) on this subscription.`;
  // ARM's permissions of the caller at the subscription (one entry per role assigned at or
  // above it). Should it fail, the actions stay enabled and a 403 explains itself.
  try {
    const r = await get(`/subscriptions/${sub}/providers/Microsoft.Authorization/permissions?api-version=2022-04-01`);
    const perms = (r.body && r.body.value) || [];
    const allowed = (action) => perms.some((p) => (p.actions || []).some((a) => matches(a, action))
      && !(p.notActions || []).some((a) => matches(a, action)));
    const why = (action) => (allowed(action) ? null : need(action));
    state.permissions.set(sub, { write: why(WRITE), delete: why(DELETE), stop: why(STOP) });
  } catch {
    state.permissions.set(sub, { write: null, delete: null, stop: null });
  }
}

function matches(pattern, action) {
  const re = new RegExp(`^${pattern.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\/]/g, '\\$&')).join('.*')}$`, 'i');
  return re.test(action);
}

/** Remembers a 403 on an action, so that its buttons say why they are disabled. */
function denied(sub, what, err) {
  const p = state.permissions.get(sub) || { write: null, delete: null, stop: null };
  p[what] = err.message;
  state.permissions.set(sub, p);
}

function permission(sub, what) {
  const p = state.permissions.get(sub);
  return p ? p[what] : null;
}

async function loadAll() {
  if (!auth.currentSession()) return;
  state.loading = true;
  const problems = [];
  let subs;
  try {
    subs = (await list(versioned('/subscriptions', SUBSCRIPTIONS_VERSION))).map((s) => s.subscriptionId);
  } catch (e) {
    state.loading = false;
    state.problems = [{ sub: null, message: e.readable || e.message }];
    state.loaded = true;
    return;
  }
  state.subs = subs;
  const seen = new Set();
  await pool(subs, 4, async (sub) => {
    let watchers = [];
    try {
      watchers = await list(versioned(`/subscriptions/${sub}/providers/Microsoft.Network/networkWatchers`));
      await loadPermissions(sub);
    } catch (e) {
      problems.push({ sub, message: e.readable || e.message });
      // Captures of this subscription already shown stay (we could not read them now).
      for (const [k, c] of state.captures) if (c.sub === sub) seen.add(k);
      return;
    }
    await pool(watchers, 4, async (w) => {
      try {
        const caps = await list(versioned(`${w.id}/packetCaptures`));
        for (const c of caps) {
          const shaped = shapeCapture(c, w);
          state.captures.set(captureKey(c.id), shaped);
          seen.add(captureKey(c.id));
        }
      } catch (e) {
        problems.push({ sub, message: `${w.name}: ${e.readable || e.message}` });
        for (const [k, c] of state.captures) if (c.watcherId === w.id) seen.add(k);
      }
    });
  });
  for (const k of [...state.captures.keys()]) if (!seen.has(k)) state.captures.delete(k);
  // Statuses: every capture the first time, then those that may still change.
  // Never more than 200 a round (those never read first, then those shown), so that a long list
  // of waiting captures does not flood the server.
  const shown = new Set(visibleCaptures().map((c) => captureKey(c.id)));
  const pending = [...state.captures.values()]
    .filter((c) => !c.status || !FINAL.has(c.status.packetCaptureStatus))
    .sort((a, b) => (a.status ? 1 : 0) - (b.status ? 1 : 0) || (shown.has(captureKey(b.id)) ? 1 : 0) - (shown.has(captureKey(a.id)) ? 1 : 0));
  const unread = pending.filter((c) => !c.status);
  // The list shows at once; statuses fill in as they come (redrawn at most every 500 ms).
  state.problems = problems;
  state.loaded = true;
  if (unread.length) rerender();
  let drawn = Date.now();
  await pool(unread.length > 200 ? unread : pending.slice(0, 200), 12, async (c) => {
    await queryStatus(c);
    if (unread.length && Date.now() - drawn > 500) { drawn = Date.now(); rerender(); }
  });
  state.loading = false;
}

async function queryStatus(c) {
  try {
    const r = await post(versioned(`${c.id}/queryStatus`));
    const s = r.body || {};
    const before = c.status ? c.status.packetCaptureStatus : null;
    c.status = s;
    c.statusError = null;
    if (s.packetCaptureStatus === 'Running' || (before && !FINAL.has(before))) {
      c.history.push({ t: Date.now(), packets: s.packetsCaptured || 0, bytes: s.bytesCaptured || 0 });
      if (c.history.length > 600) c.history.shift();
    }
    if (FINAL.has(s.packetCaptureStatus) && before && !FINAL.has(before)) c.seenStopAt = Date.now();
  } catch (e) {
    c.statusError = e.readable || e.message;
  }
}

/** The poll: quick while something runs, backing off to 30 s while nothing changes. */
function schedulePoll(delay) {
  clearTimeout(state.pollTimer);
  state.pollTimer = setTimeout(poll, delay);
}

async function poll() {
  if (!auth.currentSession()) return;
  if (document.hidden) { schedulePoll(2000); return; }
  const before = snapshot();
  try {
    await loadAll();
  } catch (e) {
    state.problems = [{ sub: null, message: e.message }];
  }
  const busy = [...state.captures.values()].some((c) => !c.status || !FINAL.has(c.status.packetCaptureStatus)
    || (c.props.provisioningState && !['Succeeded', 'Failed', 'Canceled'].includes(c.props.provisioningState)));
  if (busy || snapshot() !== before) state.pollDelay = 2000;
  else state.pollDelay = Math.min(30000, state.pollDelay * 2);
  rerender();
  schedulePoll(state.pollDelay);
}

function snapshot() {
  return [...state.captures.values()].map((c) => `${c.id}:${c.status && c.status.packetCaptureStatus}`).join('|');
}

/** Polls again soon (after an action of the user). */
function soon(ms = 300) {
  state.pollDelay = 2000;
  schedulePoll(ms);
}

// ---------------------------------------------------------------------------------------------
// Routing

function route() {
  closeMenus();
  window.scrollTo(0, 0);
  const hash = window.location.hash || '#/';
  if (!auth.currentSession()) { renderSignIn(); return; }
  if (hash.startsWith('#/captures/')) {
    renderDetails(decodeURIComponent(hash.slice('#/captures/'.length)));
  } else {
    renderList();
    if (hash === '#/add') openAdd();
  }
}

let currentView = null;
function rerender() {
  if (document.querySelector('.menu') || document.querySelector('.overlay')) return;
  if (currentView) currentView();
}

// ---------------------------------------------------------------------------------------------
// Sign-in view

let signInMessage = null;

async function renderSignIn() {
  currentView = null;
  document.title = 'Sign in · Packet capture';
  const config = await auth.loadConfig();
  const tokenId = uid('token');
  const tokenForm = h('form', { class: 'token-form', 'aria-label': 'Use an access token' },
    h('label', { for: tokenId }, 'Access token'),
    h('textarea', { id: tokenId, name: 'token', rows: '3', autocomplete: 'off', spellcheck: 'false', required: true }),
    h('p', { class: 'hint' }, 'A bearer token for the API, e.g. from ', h('code', {}, 'capture-api token --principal CLIENT_ID'), '. It is kept in this tab only.'),
    h('button', { type: 'submit', class: 'btn' }, 'Use this token'));
  tokenForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const t = tokenForm.elements.token.value.trim();
    if (!t) return;
    auth.useToken(t);
    signInMessage = null;
    start();
  });
  const signInButton = config
    ? h('button', {
      type: 'button', class: 'btn primary big', id: 'sign-in',
      onclick: async () => {
        try { await auth.signIn(); } catch (e) { signInMessage = e.message; renderSignIn(); }
      },
    }, 'Sign in')
    : null;
  set(main,
    h('section', { class: 'signin', 'aria-labelledby': 'signin-title' },
      h('h1', { id: 'signin-title' }, 'Packet capture'),
      h('p', {}, 'Start, watch, stop, download and inspect packet captures on the machines that run the capture agent.'),
      signInMessage ? h('p', { class: 'alert', role: 'alert' }, signInMessage) : null,
      signInButton,
      config ? null : h('p', { class: 'hint' }, 'This server offers no sign-in page: use an access token.'),
      h('details', { class: 'advanced', open: config ? null : true },
        h('summary', {}, 'Use an access token instead'),
        tokenForm)));
  main.focus();
}

// ---------------------------------------------------------------------------------------------
// The list

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

function statusOf(c) {
  if (c.status) return c.status.packetCaptureStatus || 'Unknown';
  if (c.props.provisioningState === 'Failed') return 'Error';
  return c.statusError ? 'Unknown' : 'Loading';
}

function reasonOf(c) {
  const s = c.status || {};
  const errs = (s.packetCaptureError || []).join(', ');
  const parts = [];
  if (s.stopReason) parts.push(s.stopReason);
  if (errs) parts.push(errs);
  if (s.errorMessage) parts.push(s.errorMessage);
  if (c.statusError) parts.push(c.statusError);
  return parts.join(' · ');
}

function durationOf(c) {
  const s = c.status || {};
  if (!s.captureStartTime) return null;
  const start = Date.parse(s.captureStartTime);
  if (s.packetCaptureStatus === 'Running') return (Date.now() - start) / 1000;
  if (s.captureStopTime) return (Date.parse(s.captureStopTime) - start) / 1000;
  if (c.seenStopAt) return (c.seenStopAt - start) / 1000;
  const files = s.continuousCaptureFiles || [];
  const last = files.map((f) => Date.parse(f.lastPacketTime || '')).filter((t) => !Number.isNaN(t));
  if (last.length) return (Math.max(...last) - start) / 1000;
  return null;
}

function outputOf(c) {
  const loc = c.props.storageLocation || {};
  const parts = [];
  const path = loc.filePath || loc.localPath;
  if (path) parts.push(`File ${path}`);
  if (loc.storageId) parts.push(`Storage account ${parseId(loc.storageId).name}`);
  return parts.join(' + ');
}

function targetName(c) {
  const t = c.props.target || '';
  const p = parseId(t);
  return p.types.map(([, n]) => n).join('/') || t;
}

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
  const reasons = state.subs.map((s) => permission(s, 'write'));
  return reasons.every((r) => r) ? reasons[0] : null;
}

function renderList() {
  document.title = 'Packet capture';
  currentView = renderList;
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
    h('tbody', {}, rows.map(row)));
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

const PAGE_ROWS = 200;

function statusBadge(st) {
  return h('span', { class: `status status-${st.toLowerCase()}` }, h('span', { class: 'dot', 'aria-hidden': 'true' }), st);
}

function row(c) {
  const s = c.status || {};
  const st = statusOf(c);
  const menuBtn = h('button', {
    type: 'button', class: 'btn icon more', 'aria-haspopup': 'menu', 'aria-label': `Actions for ${c.name}`,
    onclick: (e) => { e.stopPropagation(); openActions(c, { anchor: menuBtn, returnTo: menuBtn }); },
  }, '…');
  const link = h('a', { href: `#/captures/${encodeURIComponent(c.id)}`, class: 'row-link' }, c.name);
  const tr = h('tr', { dataset: { capture: captureKey(c.id), status: st } },
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
  tr.addEventListener('contextmenu', (e) => {
    e.preventDefault();
    openActions(c, { x: e.clientX, y: e.clientY, returnTo: link });
  });
  tr.addEventListener('keydown', (e) => {
    if ((e.key === 'F10' && e.shiftKey) || e.key === 'ContextMenu') {
      e.preventDefault();
      openActions(c, { anchor: menuBtn, returnTo: document.activeElement });
    } else if (e.key === 'Delete' && e.target === link) {
      e.preventDefault();
      deleteCapture(c, link);
    }
  });
  return tr;
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

// ---------------------------------------------------------------------------------------------
// Row actions

function actionItems(c, returnTo) {
  const st = statusOf(c);
  const stopWhy = permission(c.sub, 'stop');
  const delWhy = permission(c.sub, 'delete');
  return [
    { label: 'Details', action: 'details', onSelect: () => { window.location.hash = `#/captures/${encodeURIComponent(c.id)}`; } },
    {
      label: 'Stop', action: 'stop',
      disabled: st !== 'Running' || !!stopWhy,
      title: stopWhy || (st !== 'Running' ? 'Only a running capture can be stopped.' : null),
      onSelect: () => stopCapture(c),
    },
    { label: 'Download', action: 'download', onSelect: () => downloadCapture(c) },
    {
      label: 'Delete', action: 'delete', disabled: !!delWhy, title: delWhy,
      onSelect: () => deleteCapture(c, returnTo),
    },
  ];
}

function openActions(c, { anchor, x, y, returnTo }) {
  openMenu({ items: actionItems(c, returnTo), anchor, x, y, returnTo, label: `Actions for ${c.name}` });
}

async function stopCapture(c) {
  try {
    const r = await post(versioned(`${c.id}/stop`));
    toast(`Stopping ${c.name}…`);
    const loc = r.headers.get('azure-asyncoperation');
    if (loc) await waitOperation(loc).catch(() => {});
    await queryStatus(c);
    soon(0);
  } catch (e) {
    if (e.status === 403) denied(c.sub, 'stop', e);
    toast(`Cannot stop ${c.name}: ${e.readable || e.message}`, 'error');
    rerender();
  }
}

/** Fetches the capture's file through the API: an ArrayBuffer (and remembers it). */
async function fetchCaptureFile(c) {
  const r = await post(versioned(`${c.id}/download`));
  const d = r.body || {};
  if (d.source === 'StorageAccount') return { link: d.downloadUrl, expiresOn: d.expiresOn };
  const res = await request('GET', d.downloadUrl, { accept: 'application/vnd.tcpdump.pcap, application/octet-stream', raw: true });
  const buf = await res.arrayBuffer();
  state.downloads.set(captureKey(c.id), buf);
  return { buffer: buf };
}

/** The file as the machine keeps it (`fileIndex`: one file of a continuous capture). */
async function fetchContent(c, fileIndex) {
  const q = fileIndex ? `&fileIndex=${fileIndex}` : '';
  const res = await request('GET', `${versioned(`${c.id}/content`)}${q}`, { accept: 'application/vnd.tcpdump.pcap, application/octet-stream', raw: true });
  return res.arrayBuffer();
}

async function downloadFile(c, index) {
  try {
    const buf = await fetchContent(c, index);
    saveBytes(buf, `${c.name}_${String(index).padStart(5, '0')}.cap`);
  } catch (e) {
    toast(`Cannot download file ${index}: ${e.readable || e.message}`, 'error');
  }
}

function saveBytes(buffer, name) {
  const url = URL.createObjectURL(new Blob([buffer], { type: 'application/vnd.tcpdump.pcap' }));
  const a = h('a', { href: url, download: name, class: 'visually-hidden' }, 'download');
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

async function downloadCapture(c) {
  toast(`Downloading ${c.name}…`);
  try {
    const f = await fetchCaptureFile(c);
    if (f.link) {
      // A read-only link to the blob (another origin): the browser fetches it itself.
      const a = h('a', { href: f.link, target: '_blank', rel: 'noopener noreferrer', class: 'visually-hidden' }, 'blob');
      document.body.append(a);
      a.click();
      a.remove();
      toast(`${c.name}: opened the storage blob's download link (valid until ${f.expiresOn || 'soon'}).`);
    } else {
      saveBytes(f.buffer, `${c.name}.cap`);
      toast(`${c.name}.cap downloaded (${bytes(f.buffer.byteLength)}).`);
    }
  } catch (e) {
    toast(`Cannot download ${c.name}: ${e.readable || e.message}`, 'error');
  }
}

async function deleteCapture(c, returnTo) {
  const why = permission(c.sub, 'delete');
  if (why) { toast(why, 'error'); return; }
  const yes = await confirmDialog({
    title: `Delete packet capture ${c.name}?`,
    message: h('div', {},
      h('p', {}, `The capture ${c.name} is removed from the list${statusOf(c) === 'Running' ? ' and stopped' : ''}.`),
      h('p', {}, h('strong', {}, 'Its files are not deleted: '), 'the file on the machine and the blob in the storage account stay where they are.')),
  });
  if (!yes) return;
  try {
    const r = await del(versioned(c.id));
    const op = r.headers.get('azure-asyncoperation');
    if (op) await waitOperation(op);
    state.captures.delete(captureKey(c.id));
    toast(`${c.name} deleted; its files are kept.`);
    if (window.location.hash.startsWith('#/captures/')) window.location.hash = '#/';
    else rerender();
    const next = document.querySelector('.row-link') || document.getElementById('add-button');
    if (next) next.focus();
    soon(1000);
  } catch (e) {
    if (e.status === 403) denied(c.sub, 'delete', e);
    toast(`Cannot delete ${c.name}: ${e.readable || e.message}`, 'error');
    if (returnTo && returnTo.isConnected) returnTo.focus();
    rerender();
  }
}

// ---------------------------------------------------------------------------------------------
// The Add panel

let addPanel = null;

async function inventory(sub) {
  const out = { vms: [], scaleSets: [], accounts: [], missing: false };
  const tryList = async (path) => {
    try { return await list(path); } catch (e) {
      if (e.status === 404) { out.missing = true; return []; }
      throw e;
    }
  };
  const [vms, ss, accounts] = await Promise.all([
    tryList(versioned(`/subscriptions/${sub}/providers/Microsoft.Compute/virtualMachines`, COMPUTE_VERSION)),
    tryList(versioned(`/subscriptions/${sub}/providers/Microsoft.Compute/virtualMachineScaleSets`, COMPUTE_VERSION)),
    tryList(versioned(`/subscriptions/${sub}/providers/Microsoft.Storage/storageAccounts`, STORAGE_VERSION)).catch(() => []),
  ]);
  out.vms = vms;
  out.scaleSets = ss;
  out.accounts = accounts;
  return out;
}

function closeAdd() {
  if (!addPanel) return;
  addPanel.release();
  addPanel.root.remove();
  addPanel = null;
  if (window.location.hash === '#/add') window.history.replaceState(null, '', '#/');
  const b = document.getElementById('add-button');
  if (b) b.focus();
}

function openAdd() {
  if (addPanel) return;
  const titleId = uid('add-title');
  const form = h('form', { class: 'add-form', novalidate: true, 'aria-labelledby': titleId });
  const banner = h('div', { class: 'form-banner', 'aria-live': 'polite' });
  const panel = h('div', { class: 'panel', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': titleId },
    h('div', { class: 'panel-head' },
      h('h2', { id: titleId }, 'Add packet capture'),
      h('button', { type: 'button', class: 'btn icon', 'aria-label': 'Close', onclick: closeAdd }, '✕')),
    banner, form);
  const root = h('div', { class: 'overlay side' }, panel);
  root.addEventListener('mousedown', (e) => { if (e.target === root) closeAdd(); });
  document.body.append(root);
  addPanel = { root, release: trapFocus(panel, closeAdd) };
  buildAddForm(form, banner);
}

/** A labelled field with its inline error; `control` gets the ids. */
function field(label, control, { hint, name } = {}) {
  const id = control.id || uid('fld');
  control.id = id;
  if (name) control.name = name;
  const errId = `${id}-error`;
  const hintId = hint ? `${id}-hint` : null;
  control.setAttribute('aria-describedby', [hintId, errId].filter(Boolean).join(' '));
  return h('div', { class: 'field' },
    h('label', { for: id }, label),
    control,
    hint ? h('p', { class: 'hint', id: hintId }, hint) : null,
    h('p', { class: 'field-error', id: errId, dataset: { for: id } }));
}

function showError(control, message) {
  const err = document.getElementById(`${control.id}-error`);
  if (err) err.textContent = message || '';
  if (message) control.setAttribute('aria-invalid', 'true');
  else control.removeAttribute('aria-invalid');
}

async function buildAddForm(form, banner) {
  const subs = state.subs.filter((s) => !permission(s, 'write'));
  const el = {};
  el.sub = h('select', { required: true }, subs.map((s) => h('option', { value: s }, s)));
  el.rg = h('select', { required: true });
  el.targetType = h('select', {}, h('option', { value: 'AzureVM' }, 'Virtual machine'), h('option', { value: 'AzureVMSS' }, 'Virtual machine scale set'));
  el.target = h('select', { required: true });
  el.targetText = h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false', placeholder: '/subscriptions/…/providers/Microsoft.Compute/virtualMachines/vm1' });
  el.include = h('input', { type: 'text', autocomplete: 'off', placeholder: '0;1' });
  el.exclude = h('input', { type: 'text', autocomplete: 'off', placeholder: '2' });
  el.name = h('input', { type: 'text', required: true, autocomplete: 'off', spellcheck: 'false', value: `capture-${new Date().toISOString().slice(0, 19).replace(/[-:T]/g, '')}` });
  el.useStorage = h('input', { type: 'checkbox' });
  el.useFile = h('input', { type: 'checkbox', checked: true });
  el.filePath = h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false' });
  el.account = h('select', {});
  el.perPacket = h('input', { type: 'text', inputmode: 'numeric', autocomplete: 'off', placeholder: 'whole packets' });
  el.perSession = h('input', { type: 'text', inputmode: 'numeric', autocomplete: 'off', value: '1073741824' });
  el.timeLimit = h('input', { type: 'text', inputmode: 'numeric', autocomplete: 'off', value: String(V.DEFAULT_TIME_LIMIT) });
  el.continuous = h('select', {},
    h('option', { value: '' }, 'Off (one file)'),
    h('option', { value: 'true' }, 'Rolling: keep the newest files'),
    h('option', { value: 'false' }, 'Until the file count is reached'));
  el.fileCount = h('input', { type: 'text', inputmode: 'numeric', autocomplete: 'off', value: '10' });
  el.fileSize = h('input', { type: 'text', inputmode: 'numeric', autocomplete: 'off', value: '104857600' });
  el.session = h('input', { type: 'text', inputmode: 'numeric', autocomplete: 'off', value: '86400' });
  let pathEdited = false;
  const defaultPath = () => `/var/captures/${el.name.value || 'capture'}.cap`;
  el.filePath.value = defaultPath();
  el.filePath.addEventListener('input', () => { pathEdited = true; });
  el.name.addEventListener('input', () => { if (!pathEdited) { el.filePath.value = defaultPath(); validate('filePath'); } });

  const filters = h('div', { class: 'filter-rows', role: 'group', 'aria-label': 'Filters' });
  const filterRows = [];
  const addFilter = () => {
    const i = filterRows.length;
    const f = {
      protocol: h('select', {}, h('option', { value: 'Any' }, 'Any'), h('option', { value: 'TCP' }, 'TCP'), h('option', { value: 'UDP' }, 'UDP')),
      localIPAddress: h('input', { type: 'text', autocomplete: 'off', placeholder: '10.0.0.4' }),
      localPort: h('input', { type: 'text', autocomplete: 'off', placeholder: '80-85' }),
      remoteIPAddress: h('input', { type: 'text', autocomplete: 'off', placeholder: '10.0.0.1-10.0.0.255' }),
      remotePort: h('input', { type: 'text', autocomplete: 'off', placeholder: '80;443' }),
    };
    const legend = `Filter ${i + 1}`;
    const removeBtn = h('button', { type: 'button', class: 'btn link', 'aria-label': `Remove filter ${i + 1}` }, 'Remove');
    const box = h('fieldset', { class: 'filter-row' },
      h('legend', {}, legend),
      field('Protocol', f.protocol, { name: `filters[${i}].protocol` }),
      field('Local IP address', f.localIPAddress, { name: `filters[${i}].localIPAddress` }),
      field('Local port', f.localPort, { name: `filters[${i}].localPort` }),
      field('Remote IP address', f.remoteIPAddress, { name: `filters[${i}].remoteIPAddress` }),
      field('Remote port', f.remotePort, { name: `filters[${i}].remotePort` }),
      removeBtn);
    const entry = { f, box };
    removeBtn.addEventListener('click', () => {
      const k = filterRows.indexOf(entry);
      filterRows.splice(k, 1);
      box.remove();
      renumber();
      addFilterBtn.focus();
    });
    for (const [k, input] of Object.entries(f)) {
      if (k !== 'protocol') input.addEventListener('input', () => validateFilter(entry, k));
    }
    filterRows.push(entry);
    filters.append(box);
    f.protocol.focus();
  };
  const renumber = () => filterRows.forEach((r, k) => {
    r.box.querySelector('legend').textContent = `Filter ${k + 1}`;
    r.box.querySelector('button').setAttribute('aria-label', `Remove filter ${k + 1}`);
  });
  const validateFilter = (entry, k) => {
    const idx = filterRows.indexOf(entry);
    const kind = k.endsWith('Port') ? 'port' : 'address';
    const msg = V.filterValue(entry.f[k].value, kind, `properties.filters[${idx}].${k}`);
    showError(entry.f[k], msg);
    return !msg;
  };
  const addFilterBtn = h('button', { type: 'button', class: 'btn', id: 'add-filter', onclick: addFilter }, '+ Add filter');

  const storageFields = h('div', { class: 'field-group' });
  const fileFields = h('div', { class: 'field-group' });
  const vmssFields = h('div', { class: 'field-group' });
  const instanceBox = h('fieldset', { class: 'choice instances', hidden: true });
  let instanceChecks = [];
  const loadInstances = async () => {
    instanceChecks = [];
    instanceBox.hidden = true;
    const ss = el.targetType.value === 'AzureVMSS' && inv.scaleSets.find((m) => m.id === el.target.value);
    const link = ss && ss.properties && ss.properties.instancesLink;
    if (!link) { vmssFields.hidden = el.targetType.value !== 'AzureVMSS'; return; }
    try {
      const instances = await list(link);
      instanceChecks = instances.map((vm) => {
        const cb = h('input', { type: 'checkbox', checked: true, value: vm.instanceId });
        const p = vm.properties || {};
        return { cb, label: h('label', { class: 'check' }, cb, ` ${vm.instanceId}`, p.hostname ? ` (${p.hostname}${p.agentStatus && p.agentStatus !== 'Connected' ? `, agent ${p.agentStatus}` : ''})` : '') };
      });
      set(instanceBox, h('legend', {}, 'Instances to capture'), instanceChecks.map((i) => i.label),
        h('p', { class: 'hint' }, 'Unchecked instances are excluded; instances registered later are included unless you pick a subset.'));
      instanceBox.hidden = instanceChecks.length === 0;
      vmssFields.hidden = instanceChecks.length > 0;
    } catch {
      vmssFields.hidden = false;
    }
  };
  const continuousFields = h('div', { class: 'field-group' });
  const targetField = field('Target virtual machine', el.target, { name: 'target' });
  const targetTextField = field('Target (resource id)', el.targetText, { name: 'targetText', hint: 'This server does not list its machines: give the machine\'s resource id.' });
  const okBtn = h('button', { type: 'submit', class: 'btn primary' }, 'OK');
  const cancelBtn = h('button', { type: 'button', class: 'btn', onclick: closeAdd }, 'Cancel');
  const storageHint = h('p', { class: 'hint', id: uid('sthint') });

  set(form,
    field('Subscription', el.sub, { name: 'subscription' }),
    field('Resource group', el.rg, { name: 'resourceGroup' }),
    field('Target type', el.targetType, { name: 'targetType' }),
    targetField, targetTextField,
    instanceBox,
    set(vmssFields,
      field('Instances to include', el.include, { name: 'include', hint: 'Instance ids separated by ";" (blank: every instance).' }),
      field('Instances to exclude', el.exclude, { name: 'exclude', hint: 'Instance ids separated by ";".' })),
    field('Packet capture name', el.name, { name: 'name' }),
    h('fieldset', { class: 'choice' },
      h('legend', {}, 'Capture location'),
      h('label', { class: 'check' }, el.useStorage, ' Storage account'),
      h('label', { class: 'check' }, el.useFile, ' File'),
      h('p', { class: 'field-error', id: 'location-error' })),
    set(storageFields, field('Storage account', el.account, { name: 'storageAccount' }), storageHint),
    set(fileFields, field('Local file path', el.filePath, { name: 'filePath', hint: 'On Linux: starts with /var/captures/ and ends in .cap.' })),
    field('Maximum bytes per packet', el.perPacket, { name: 'bytesToCapturePerPacket', hint: 'Blank: whole packets.' }),
    field('Maximum bytes per session', el.perSession, { name: 'totalBytesPerSession' }),
    field('Time limit (seconds)', el.timeLimit, { name: 'timeLimitInSeconds', hint: 'Default 18,000 (5 hours).' }),
    h('details', { class: 'continuous' },
      h('summary', {}, 'Continuous capture'),
      field('Mode', el.continuous, { name: 'continuousCapture' }),
      set(continuousFields,
        field('File count', el.fileCount, { name: 'fileCount' }),
        field('File size (bytes)', el.fileSize, { name: 'fileSizeInBytes' }),
        field('Session time limit (seconds)', el.session, { name: 'sessionTimeLimitInSeconds' }))),
    h('h3', {}, 'Filters'),
    h('p', { class: 'hint' }, 'Optional. Fields of one filter must all match; a packet matching any filter is captured. Values: single, range a-b, or list a;b.'),
    filters, addFilterBtn,
    h('div', { class: 'form-actions' }, okBtn, cancelBtn));

  let inv = { vms: [], scaleSets: [], accounts: [], missing: false };
  const machines = () => (el.targetType.value === 'AzureVMSS' ? inv.scaleSets : inv.vms);
  const refreshTargets = () => {
    const rg = el.rg.value;
    const list_ = machines().filter((m) => parseId(m.id).resourceGroup === rg);
    set(el.target, list_.length
      ? list_.map((m) => h('option', { value: m.id }, `${m.name} (${m.location}${m.properties && m.properties.agentStatus && m.properties.agentStatus !== 'Connected' ? `, agent ${m.properties.agentStatus}` : ''})`))
      : h('option', { value: '' }, el.targetType.value === 'AzureVMSS' ? 'No registered scale set here' : 'No registered machine here'));
    targetField.querySelector('label').textContent = el.targetType.value === 'AzureVMSS' ? 'Target scale set' : 'Target virtual machine';
    validate('target');
    loadInstances();
  };
  const refreshGroups = () => {
    const groups = [...new Set([...inv.vms, ...inv.scaleSets].map((m) => parseId(m.id).resourceGroup))].sort();
    const keep = el.rg.value;
    set(el.rg, groups.length ? groups.map((g) => h('option', { value: g, selected: g === keep ? true : null }, g)) : h('option', { value: '' }, 'No registered machine'));
    refreshTargets();
  };
  const refreshAccounts = () => {
    set(el.account, inv.accounts.length
      ? inv.accounts.map((a) => {
        const premium = a.sku && a.sku.tier === 'Premium';
        return h('option', { value: a.id, disabled: premium ? true : null }, premium ? `${a.name} (premium: not supported for packet captures)` : a.name);
      })
      : h('option', { value: '' }, 'No registered storage account'));
    const firstOk = inv.accounts.find((a) => !(a.sku && a.sku.tier === 'Premium'));
    if (firstOk) el.account.value = firstOk.id;
    storageHint.textContent = inv.accounts.some((a) => a.sku && a.sku.tier === 'Premium')
      ? 'Premium storage accounts are shown disabled: packet captures cannot be stored in them.' : '';
  };
  const loadInventory = async () => {
    banner.replaceChildren(h('p', { role: 'status' }, 'Loading machines and storage accounts…'));
    try {
      inv = await inventory(el.sub.value);
      banner.replaceChildren();
    } catch (e) {
      banner.replaceChildren(h('p', { class: 'alert', role: 'alert' }, e.readable || e.message));
    }
    targetField.hidden = inv.missing;
    targetTextField.hidden = !inv.missing;
    refreshGroups();
    refreshAccounts();
  };
  const toggles = () => {
    storageFields.hidden = !el.useStorage.checked;
    fileFields.hidden = !el.useFile.checked;
    vmssFields.hidden = el.targetType.value !== 'AzureVMSS' || instanceChecks.length > 0;
    instanceBox.hidden = el.targetType.value !== 'AzureVMSS' || instanceChecks.length === 0;
    continuousFields.hidden = el.continuous.value === '';
    el.timeLimit.disabled = el.continuous.value !== '';
  };

  /** Checks one field as the API would; true when valid. */
  function validate(which) {
    let msg = null;
    let control = el[which];
    switch (which) {
      case 'name': msg = V.captureName(el.name.value); break;
      case 'filePath':
        if (el.useFile.checked) msg = V.capturePath(el.filePath.value, `properties.storageLocation.${el.continuous.value ? 'localPath' : 'filePath'}`);
        break;
      case 'perPacket': msg = V.integer(el.perPacket.value, 'properties.bytesToCapturePerPacket', V.MAX_U32); break;
      case 'perSession': msg = V.integer(el.perSession.value, 'properties.totalBytesPerSession', V.MAX_U32); break;
      case 'timeLimit': msg = el.continuous.value ? null : V.integer(el.timeLimit.value, 'properties.timeLimitInSeconds', V.DEFAULT_TIME_LIMIT); break;
      case 'fileCount':
        if (el.continuous.value) {
          msg = V.integer(el.fileCount.value, 'properties.captureSettings.fileCount', V.MAX_FILE_COUNT);
          if (!msg && el.fileCount.value.trim() !== '' && Number(el.fileCount.value) < 1) msg = `'properties.captureSettings.fileCount' must be between 1 and ${V.MAX_FILE_COUNT}.`;
        }
        break;
      case 'session':
        if (el.continuous.value) msg = V.integer(el.session.value, 'properties.captureSettings.sessionTimeLimitInSeconds', V.MAX_SESSION_LIMIT);
        break;
      case 'target':
        if (inv.missing) {
          control = el.targetText;
          msg = /^\/subscriptions\/[^/]+\/resourceGroups\/[^/]+\/providers\/Microsoft\.Compute\/virtualMachine(ScaleSet)?s\/[^/]+/i.test(el.targetText.value.trim()) ? null : 'Give the target machine\'s resource id.';
        } else if (!el.target.value) msg = 'Select the target machine (its agent must be registered).';
        else if (el.targetType.value === 'AzureVMSS' && instanceChecks.length && !instanceChecks.some((i) => i.cb.checked)) msg = 'Select at least one instance of the scale set.';
        break;
      case 'account':
        if (el.useStorage.checked && !el.account.value) msg = 'Select a storage account (register one with capture-api storage-accounts add).';
        break;
      case 'location': {
        const e = document.getElementById('location-error');
        const m = el.useStorage.checked || el.useFile.checked ? '' : "'properties.storageLocation' is required: give storageId, filePath or both.";
        e.textContent = m;
        return !m;
      }
      default: return true;
    }
    if (control) showError(control, msg);
    return !msg;
  }

  for (const k of ['name', 'filePath', 'perPacket', 'perSession', 'timeLimit', 'fileCount', 'session']) {
    el[k].addEventListener('input', () => validate(k));
  }
  el.targetText.addEventListener('input', () => validate('target'));
  el.sub.addEventListener('change', loadInventory);
  el.rg.addEventListener('change', refreshTargets);
  el.targetType.addEventListener('change', () => { toggles(); refreshTargets(); });
  el.target.addEventListener('change', () => { validate('target'); loadInstances(); });
  el.account.addEventListener('change', () => validate('account'));
  for (const k of ['useStorage', 'useFile']) el[k].addEventListener('change', () => { toggles(); validate('location'); validate('filePath'); validate('account'); });
  el.continuous.addEventListener('change', () => { toggles(); validate('timeLimit'); validate('filePath'); });
  toggles();
  el.sub.focus();
  await loadInventory();

  const bodyOf = () => {
    const props = {};
    const targetId = inv.missing ? el.targetText.value.trim() : el.target.value;
    props.target = targetId;
    if (el.targetType.value === 'AzureVMSS') {
      props.targetType = 'AzureVMSS';
      const ids = (s) => s.split(/[;,\s]+/).map((x) => x.trim()).filter(Boolean);
      let include = ids(el.include.value);
      let exclude = ids(el.exclude.value);
      if (instanceChecks.length) {
        const on = instanceChecks.filter((i) => i.cb.checked).map((i) => i.cb.value);
        const off = instanceChecks.filter((i) => !i.cb.checked).map((i) => i.cb.value);
        include = off.length && on.length <= off.length ? on : [];
        exclude = off.length && on.length > off.length ? off : [];
      }
      if (include.length || exclude.length) props.scope = { include, exclude };
    }
    const loc = {};
    if (el.useStorage.checked) loc.storageId = el.account.value;
    if (el.useFile.checked) loc[el.continuous.value ? 'localPath' : 'filePath'] = el.filePath.value;
    props.storageLocation = loc;
    if (el.perPacket.value.trim()) props.bytesToCapturePerPacket = Number(el.perPacket.value);
    if (el.perSession.value.trim()) props.totalBytesPerSession = Number(el.perSession.value);
    if (el.continuous.value) {
      props.continuousCapture = el.continuous.value === 'true';
      const cs = {};
      if (el.fileCount.value.trim()) cs.fileCount = Number(el.fileCount.value);
      if (el.fileSize.value.trim()) cs.fileSizeInBytes = Number(el.fileSize.value);
      if (el.session.value.trim()) cs.sessionTimeLimitInSeconds = Number(el.session.value);
      props.captureSettings = cs;
    } else if (el.timeLimit.value.trim()) {
      props.timeLimitInSeconds = Number(el.timeLimit.value);
    }
    props.filters = filterRows.map(({ f }) => {
      const out = { protocol: f.protocol.value };
      for (const k of ['localIPAddress', 'localPort', 'remoteIPAddress', 'remotePort']) {
        if (f[k].value.trim()) out[k] = f[k].value.trim();
      }
      return out;
    });
    return { properties: props };
  };

  /** The control an API error's target names. */
  const controlFor = (target, code) => {
    if (!target) return code === 'InvalidResourceName' ? el.name : null;
    const m = /^properties\.filters\[(\d+)\]\.(\w+)$/.exec(target);
    if (m && filterRows[Number(m[1])]) return filterRows[Number(m[1])].f[m[2]] || null;
    const map = {
      'properties.storageLocation.filePath': el.filePath,
      'properties.storageLocation.localPath': el.filePath,
      'properties.storageLocation.storageId': el.account,
      'properties.bytesToCapturePerPacket': el.perPacket,
      'properties.totalBytesPerSession': el.perSession,
      'properties.timeLimitInSeconds': el.timeLimit,
      'properties.target': inv.missing ? el.targetText : el.target,
      'properties.captureSettings.fileCount': el.fileCount,
      'properties.captureSettings.fileSizeInBytes': el.fileSize,
      'properties.captureSettings.sessionTimeLimitInSeconds': el.session,
      'properties.scope.include': el.include,
      'properties.scope.exclude': el.exclude,
    };
    return map[target] || null;
  };

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const checks = ['target', 'name', 'location', 'filePath', 'account', 'perPacket', 'perSession', 'timeLimit', 'fileCount', 'session'].map(validate);
    const filterChecks = filterRows.flatMap((entry) => ['localIPAddress', 'localPort', 'remoteIPAddress', 'remotePort'].map((k) => validateFilter(entry, k)));
    if (![...checks, ...filterChecks].every(Boolean)) {
      banner.replaceChildren(h('p', { class: 'alert', role: 'alert' }, 'Correct the highlighted fields.'));
      const first = form.querySelector('[aria-invalid="true"]');
      if (first) first.focus();
      return;
    }
    okBtn.disabled = true;
    cancelBtn.disabled = true;
    const progress = h('p', { role: 'status', class: 'progress' });
    banner.replaceChildren(progress);
    const sub = el.sub.value;
    const body = bodyOf();
    const name = el.name.value;
    try {
      // The target's region, then that region's network watcher (created as the portal does).
      const targetId = body.properties.target;
      let region = ([...inv.vms, ...inv.scaleSets].find((m) => m.id.toLowerCase() === targetId.toLowerCase()) || {}).location;
      if (!region) {
        progress.textContent = 'Reading the target machine…';
        const vm = await get(versioned(targetId, COMPUTE_VERSION));
        region = vm.body && vm.body.location;
      }
      progress.textContent = `Finding the network watcher of ${region}…`;
      const watchers = await list(versioned(`/subscriptions/${sub}/providers/Microsoft.Network/networkWatchers`));
      let watcher = watchers.find((w) => regionKey(w.location) === regionKey(region));
      if (!watcher) {
        const wid = `/subscriptions/${sub}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_${regionKey(region)}`;
        progress.textContent = `Creating the network watcher NetworkWatcher_${regionKey(region)} (resource group NetworkWatcherRG)…`;
        const r = await put(versioned(wid), { location: region });
        watcher = r.body;
        const op = r.headers.get('azure-asyncoperation');
        if (op) await waitOperation(op);
      }
      const id = `${watcher.id}/packetCaptures/${name}`;
      progress.textContent = `Creating the packet capture ${name}…`;
      const r = await put(versioned(id), body);
      const op = r.headers.get('azure-asyncoperation');
      if (op) {
        await waitOperation(op, (st) => {
          progress.textContent = `Creating the packet capture ${name}: ${st === 'InProgress' ? 'waiting for the machine\'s agent to start it…' : st}`;
        });
      }
      toast(`Packet capture ${name} created.`);
      closeAdd();
      soon(0);
    } catch (err) {
      okBtn.disabled = false;
      cancelBtn.disabled = false;
      if (err.status === 403) denied(sub, 'write', err);
      const control = controlFor(err.target, err.code);
      if (control) showError(control, err.message);
      banner.replaceChildren(h('div', { class: 'alert', role: 'alert' },
        h('strong', {}, err.code ? `${err.code}: ` : 'Error: '), err.readable || err.message));
      (control || banner).focus?.();
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Details

async function renderDetails(id) {
  const key = captureKey(id);
  currentView = () => renderDetails(id);
  let c = state.captures.get(key);
  if (!c) {
    try {
      const r = await get(versioned(id));
      const p = parseId(id);
      const wid = id.split('/packetCaptures/')[0];
      const w = (await get(versioned(wid))).body;
      c = shapeCapture(r.body, w || { name: p.types[0] ? p.types[0][1] : '', id: wid, location: '' });
      state.captures.set(key, c);
      await queryStatus(c);
    } catch (e) {
      set(main, h('p', {}, h('a', { href: '#/' }, '← Packet captures')),
        h('p', { class: 'alert', role: 'alert' }, e.status === 404 ? 'This packet capture does not exist (any more).' : (e.readable || e.message)));
      return;
    }
  }
  document.title = `${c.name} · Packet capture`;
  const s = c.status || {};
  const p = c.props;
  const st = statusOf(c);
  const stopWhy = permission(c.sub, 'stop');
  const delWhy = permission(c.sub, 'delete');
  const loc = p.storageLocation || {};
  const dl = (pairs) => h('dl', { class: 'params' }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  const filters = p.filters || [];
  const files = s.continuousCaptureFiles || null;
  const singleSize = s.packetsCaptured != null && s.bytesCaptured != null ? 24 + s.bytesCaptured + 16 * s.packetsCaptured : null;
  // The packet viewer survives the page's refreshes (what it shows is the user's doing).
  let viewer = viewerOf.key === key ? viewerOf.box : null;
  const fresh = !viewer;
  if (fresh) {
    viewer = h('section', { class: 'card', 'aria-labelledby': 'viewer-title' });
    viewerOf = { key, box: viewer };
  }
  const focused = document.activeElement && document.activeElement.id;
  const scrolled = window.scrollY;
  set(main,
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, '← Packet captures')),
    h('div', { class: 'page-head' },
      h('h1', {}, c.name, ' ', statusBadge(st)),
      h('div', { class: 'toolbar' },
        h('button', {
          type: 'button', class: 'btn', id: 'details-stop',
          'aria-disabled': st !== 'Running' || stopWhy ? 'true' : null,
          title: stopWhy || (st !== 'Running' ? 'Only a running capture can be stopped.' : null),
          onclick: () => { if (st === 'Running' && !stopWhy) stopCapture(c); },
        }, 'Stop'),
        h('button', { type: 'button', class: 'btn', id: 'details-download', onclick: () => downloadCapture(c) }, 'Download'),
        h('button', {
          type: 'button', class: 'btn danger', id: 'details-delete',
          'aria-disabled': delWhy ? 'true' : null, title: delWhy,
          onclick: (e) => deleteCapture(c, e.currentTarget),
        }, 'Delete'))),
    h('div', { class: 'details-grid' },
      h('section', { class: 'card', 'aria-labelledby': 'params-title' },
        h('h2', { id: 'params-title' }, 'Parameters'),
        dl([
          ['Target', p.target],
          ['Target type', p.targetType],
          ['Scope', p.scope && ((p.scope.include || []).length || (p.scope.exclude || []).length)
            ? `include ${(p.scope.include || []).join(', ') || 'all'}; exclude ${(p.scope.exclude || []).join(', ') || 'none'}` : null],
          ['Subscription', c.sub], ['Resource group', c.rg], ['Network watcher', c.watcher], ['Region', c.location],
          ['Local file', loc.filePath || loc.localPath], ['Storage account', loc.storageId], ['Blob', loc.storagePath],
          ['Bytes per packet', p.bytesToCapturePerPacket ? count(p.bytesToCapturePerPacket) : 'whole packets'],
          ['Bytes per session', count(p.totalBytesPerSession)],
          ['Time limit', p.continuousCapture == null ? `${count(p.timeLimitInSeconds)} s` : null],
          ['Continuous capture', p.continuousCapture == null ? null : (p.continuousCapture ? 'rolling (keeps the newest files)' : 'until the file count is reached')],
          ['Files', p.captureSettings ? `${p.captureSettings.fileCount ?? '–'} of ${bytes(p.captureSettings.fileSizeInBytes)}; session ${count(p.captureSettings.sessionTimeLimitInSeconds)} s` : null],
          ['Provisioning state', p.provisioningState],
        ]),
        h('h3', {}, 'Filters'),
        filters.length
          ? h('table', { class: 'mini' },
            h('thead', {}, h('tr', {}, ['Protocol', 'Local IP', 'Local port', 'Remote IP', 'Remote port'].map((x) => h('th', { scope: 'col' }, x)))),
            h('tbody', {}, filters.map((f) => h('tr', {}, [f.protocol, f.localIPAddress, f.localPort, f.remoteIPAddress, f.remotePort].map((x) => h('td', {}, x || 'any'))))))
          : h('p', {}, 'None: every packet.')),
      h('section', { class: 'card', 'aria-labelledby': 'status-title' },
        h('h2', { id: 'status-title' }, 'Status'),
        dl([
          ['Status', st],
          ['Packets', count(s.packetsCaptured)], ['Bytes', bytes(s.bytesCaptured)], ['Kernel drops', count(s.kernelDrops)],
          ['Duration', duration(durationOf(c))],
        ]),
        h('h3', {}, 'Timeline'),
        h('ol', { class: 'timeline' },
          h('li', {}, 'Created', p.provisioningState ? ` (${p.provisioningState})` : ''),
          s.captureStartTime ? h('li', {}, 'Started ', time(s.captureStartTime)) : h('li', {}, 'Not started yet'),
          FINAL.has(st) ? h('li', {}, st === 'Error' ? 'Ended with an error' : 'Stopped', s.stopReason ? ` (${s.stopReason})` : '',
            s.captureStopTime ? [' ', time(s.captureStopTime)]
              : c.seenStopAt ? [' ', time(new Date(c.seenStopAt).toISOString())] : '') : null),
        (s.packetCaptureError || []).length || s.errorMessage || c.statusError
          ? h('div', { class: 'alert', role: 'alert' }, h('h3', {}, 'Errors'),
            h('p', {}, (s.packetCaptureError || []).join(', ')), s.errorMessage ? h('p', {}, s.errorMessage) : null,
            c.statusError ? h('p', {}, c.statusError) : null)
          : null,
        h('h3', {}, 'Throughput'),
        chart(c)),
      h('section', { class: 'card wide', 'aria-labelledby': 'files-title' },
        h('h2', { id: 'files-title' }, 'Files'),
        files
          ? h('table', { class: 'mini' },
            h('thead', {}, h('tr', {}, ['#', 'State', 'Size', 'Packets', 'First packet', 'Last packet', 'Where', 'File'].map((x) => h('th', { scope: 'col' }, x)))),
            h('tbody', {}, files.map((f) => h('tr', {},
              h('td', {}, f.index), h('td', {}, f.state), h('td', { class: 'num' }, bytes(f.sizeInBytes)), h('td', { class: 'num' }, count(f.packets)),
              h('td', {}, time(f.firstPacketTime)), h('td', {}, time(f.lastPacketTime)),
              h('td', { class: 'output' }, [f.localPath, f.blobUrl, f.message].filter(Boolean).join(' · ')),
              h('td', {}, h('button', { type: 'button', class: 'btn link', onclick: () => downloadFile(c, f.index) }, `Download file ${f.index}`))))))
          : h('ul', {}, (s.captureFiles || []).map((f) => h('li', {}, h('code', {}, f),
            singleSize !== null ? ` (${bytes(singleSize)})` : '')),
          !(s.captureFiles || []).length ? h('li', {}, 'No file yet.') : null)),
      viewer));
  if (fresh) renderViewer(viewer, c);
  window.scrollTo(0, scrolled);
  if (focused) {
    const again = document.getElementById(focused);
    if (again) again.focus({ preventScroll: true });
  }
}

let viewerOf = { key: null, box: null };

/** A small SVG chart of packets/s and bytes/s from the counters seen while the page was open. */
function chart(c) {
  const hst = c.history;
  if (hst.length < 2) {
    return h('p', { class: 'hint' }, 'The chart fills in while the console watches a running capture.');
  }
  const rates = [];
  for (let i = 1; i < hst.length; i += 1) {
    const dt = (hst[i].t - hst[i - 1].t) / 1000;
    if (dt <= 0) continue;
    rates.push({ t: hst[i].t, pps: Math.max(0, (hst[i].packets - hst[i - 1].packets) / dt), bps: Math.max(0, (hst[i].bytes - hst[i - 1].bytes) / dt) });
  }
  const W = 320; const H = 90;
  const t0 = rates[0].t; const t1 = rates[rates.length - 1].t || t0 + 1;
  const line = (key, cls) => {
    const max = Math.max(1, ...rates.map((r) => r[key]));
    const pts = rates.map((r) => `${((r.t - t0) / Math.max(1, t1 - t0)) * W},${H - (r[key] / max) * (H - 6) - 3}`).join(' ');
    return h('svg:polyline', { points: pts, class: cls, fill: 'none' });
  };
  const maxP = Math.max(...rates.map((r) => r.pps));
  const maxB = Math.max(...rates.map((r) => r.bps));
  return h('figure', { class: 'chart' },
    h('svg:svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `Packets per second (peak ${maxP.toFixed(1)}) and bytes per second (peak ${bytes(Math.round(maxB))}/s)` },
      h('svg:line', { x1: 0, y1: H - 1, x2: W, y2: H - 1, class: 'axis' }),
      line('pps', 'pps'), line('bps', 'bps')),
    h('figcaption', {}, h('span', { class: 'key pps' }, 'packets/s'), ` peak ${maxP.toFixed(1)} · `,
      h('span', { class: 'key bps' }, 'bytes/s'), ` peak ${bytes(Math.round(maxB))}/s`));
}

// ---------------------------------------------------------------------------------------------
// The packet viewer

function renderViewer(box, c) {
  const out = h('div', { class: 'viewer-out' });
  const fileId = uid('pcapfile');
  const fileInput = h('input', { type: 'file', id: fileId, accept: '.cap,.pcap,application/vnd.tcpdump.pcap' });
  fileInput.addEventListener('change', async () => {
    const f = fileInput.files && fileInput.files[0];
    if (f) showPackets(out, await f.arrayBuffer(), f.name);
  });
  const load = h('button', {
    type: 'button', class: 'btn', id: 'view-packets',
    onclick: async () => {
      set(out, h('p', { role: 'status' }, 'Fetching the capture file…'));
      try {
        const f = await fetchCaptureFile(c);
        if (f.link) {
          // In a storage account (another origin): the machine's copy, when it kept one.
          try {
            const buf = await fetchContent(c);
            state.downloads.set(captureKey(c.id), buf);
            showPackets(out, buf, `${c.name}.cap`);
          } catch {
            set(out, h('p', {}, 'This capture is in a storage account and its machine kept no copy: download it, then open it here with the file picker.'));
          }
          return;
        }
        showPackets(out, f.buffer, `${c.name}.cap`);
      } catch (e) {
        set(out, h('p', { class: 'alert', role: 'alert' }, `Cannot fetch the file: ${e.readable || e.message}`));
      }
    },
  }, 'Show the first packets');
  set(box,
    h('h2', { id: 'viewer-title' }, 'Packets'),
    h('div', { class: 'toolbar' }, load,
      h('span', { class: 'or' }, 'or'),
      h('label', { for: fileId, class: 'file-label' }, 'open a .cap file from this computer'), fileInput),
    out);
  const cached = state.downloads.get(captureKey(c.id));
  if (cached) showPackets(out, cached, `${c.name}.cap`);
}

function showPackets(out, buffer, name) {
  let r;
  try {
    r = parsePcap(buffer, 200);
  } catch (e) {
    if (!(e instanceof PcapError)) throw e;
    set(out, h('p', { class: 'alert', role: 'alert' }, `${name}: ${e.message}`));
    return;
  }
  const ports = (p) => (p.srcPort !== undefined ? `${p.srcPort} → ${p.dstPort}` : '');
  set(out,
    h('p', {}, `${name}: ${count(r.total)} packets (${r.linktype}, ${bytes(buffer.byteLength)})`,
      r.total > r.packets.length ? `; the first ${r.packets.length} are shown` : '', '. ',
      'For anything more, open the file in Wireshark.'),
    r.message ? h('p', { class: 'alert', role: 'alert' }, r.message) : null,
    r.packets.length
      ? h('div', { class: 'table-wrap' }, h('table', { class: 'packets', 'aria-label': 'Packets' },
        h('thead', {}, h('tr', {}, ['No.', 'Time (s)', 'Source', 'Destination', 'Protocol', 'Ports', 'Length', 'TCP flags', 'Info']
          .map((x) => h('th', { scope: 'col' }, x)))),
        h('tbody', {}, r.packets.map((p) => h('tr', {},
          h('td', { class: 'num' }, p.number),
          h('td', { class: 'num' }, p.relative.toFixed(6)),
          h('td', {}, p.src || ''), h('td', {}, p.dst || ''),
          h('td', {}, p.protocol), h('td', {}, ports(p)),
          h('td', { class: 'num' }, p.length),
          h('td', {}, p.flags || ''),
          h('td', { class: 'info' }, p.info || ''))))))
      : h('p', {}, 'The file holds no packets.'));
}

// ---------------------------------------------------------------------------------------------
// Start

function renderUser(session) {
  if (!session) { userBox.replaceChildren(); return; }
  if (session.kind === 'none') { userBox.replaceChildren(h('span', { class: 'who' }, 'Authentication is disabled on this server')); return; }
  userBox.replaceChildren(
    h('span', { class: 'who', title: session.oid || '' }, session.user),
    h('button', {
      type: 'button', class: 'btn', id: 'sign-out',
      onclick: async () => {
        clearTimeout(state.pollTimer);
        await auth.signOut();
        state.captures.clear();
        state.permissions.clear();
        state.loaded = false;
        signInMessage = 'You are signed out.';
        renderSignIn();
      },
    }, 'Sign out'));
}

function start() {
  renderUser(auth.currentSession());
  route();
  if (auth.currentSession()) soon(0);
}

auth.onSessionChange(renderUser);
auth.onExpired((message) => {
  clearTimeout(state.pollTimer);
  signInMessage = message;
  renderSignIn();
});
window.addEventListener('hashchange', route);
document.addEventListener('visibilitychange', () => { if (!document.hidden && auth.currentSession()) soon(0); });
setInterval(() => {
  // Durations of running captures tick between polls.
  if (!document.querySelector('.menu, .overlay') && currentView === renderList) {
    for (const tr of document.querySelectorAll('tr[data-status="Running"]')) {
      const c = state.captures.get(tr.dataset.capture);
      const cell = tr.children[6];
      if (c && cell) cell.textContent = duration(durationOf(c));
    }
  }
}, 1000);

(async () => {
  const r = await auth.init();
  const config = await auth.loadConfig();
  if (config && (config.authDisabled || config.mode === 'none')) auth.useNoAuthentication();
  if (r.error) signInMessage = r.error;
  if (r.signinLink) {
    try {
      await auth.signIn({ signin: r.signinLink });
      return;
    } catch (e) {
      signInMessage = e.message;
    }
  }
  start();
})();

// For the tests and the curious: the console's version of the API.
export const apiVersion = NETWORK_VERSION;
