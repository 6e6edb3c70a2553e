// The console's state: what it knows (subscriptions, captures with their statuses, the caller's
// permissions), how it loads it from the public ARM API and polls it, and the view on screen.

import * as auth from './auth.js';
import { SUBSCRIPTIONS_VERSION, get, list, parseId, post, versioned } from './api.js';

const WRITE = 'Microsoft.Network/networkWatchers/packetCaptures/write';
const DELETE = 'Microsoft.Network/networkWatchers/packetCaptures/delete';
const STOP = 'Microsoft.Network/networkWatchers/packetCaptures/stop/action';
export const FINAL = new Set(['Stopped', 'Error']);
export const STATUSES = ['NotStarted', 'Running', 'Stopped', 'Error'];

export const state = {
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
  shown: 100, // rows of the list shown (PAGE_ROWS more at each "Show more")
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

export function captureKey(id) { return id.toLowerCase(); }

export function shapeCapture(c, watcher) {
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

/** The key of a scope's permissions: a subscription, or one of its resource groups. */
function scopeKey(sub, rg) { return rg ? `${sub}/${rg.toLowerCase()}` : sub; }

async function loadPermissions(sub, rg) {
  const key = scopeKey(sub, rg);
  if (state.permissions.has(key)) return;
  const where = rg ? `on the resource group ${rg} or its subscription` : 'on this subscription';
  const need = (action) => `You need the permission ${action} (a role such as Network Contributor or Owner) ${where}.`;
  // ARM's permissions of the caller at the scope (one entry per role assigned at or above it).
  // Should it fail, the actions stay enabled and a 403 explains itself.
  const scope = rg ? `/subscriptions/${sub}/resourceGroups/${encodeURIComponent(rg)}` : `/subscriptions/${sub}`;
  try {
    const r = await get(`${scope}/providers/Microsoft.Authorization/permissions?api-version=2022-04-01`);
    const perms = (r.body && r.body.value) || [];
    const allowed = (action) => perms.some((p) => (p.actions || []).some((a) => matches(a, action))
      && !(p.notActions || []).some((a) => matches(a, action)));
    const why = (action) => (allowed(action) ? null : need(action));
    state.permissions.set(key, { write: why(WRITE), delete: why(DELETE), stop: why(STOP) });
  } catch {
    state.permissions.set(key, { write: null, delete: null, stop: null });
  }
}

function matches(pattern, action) {
  const re = new RegExp(`^${pattern.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\/]/g, '\\$&')).join('.*')}$`, 'i');
  return re.test(action);
}

/** Remembers a 403 on an action at a capture's resource group, so that its buttons say why
 * they are disabled. */
export function denied(sub, rg, what, err) {
  const key = scopeKey(sub, rg);
  const p = state.permissions.get(key) || { write: null, delete: null, stop: null };
  p[what] = err.readable || err.message;
  state.permissions.set(key, p);
}

/** Why the caller may not do `what` in the resource group (or the subscription), or null. */
export function permission(sub, what, rg) {
  const p = (rg && state.permissions.get(scopeKey(sub, rg))) || state.permissions.get(sub);
  return p ? p[what] : null;
}

/** Subscriptions where the caller may create captures: at the subscription, or in one of its
 * resource groups. */
export function writableSubs() {
  return state.subs.filter((sub) => !permission(sub, 'write')
    || [...state.permissions.entries()].some(([k, p]) => k.startsWith(`${sub}/`) && !p.write));
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
    // Roles may be assigned at resource groups: their permissions too, for the rows' actions.
    const groups = [...new Set(watchers.map((w) => parseId(w.id).resourceGroup).filter(Boolean))];
    await pool(groups, 4, (rg) => loadPermissions(sub, rg));
    await pool(watchers, 4, async (w) => {
      try {
        // `$expand=status`: each capture with its queryStatus result, one request per watcher.
        const caps = await list(`${versioned(`${w.id}/packetCaptures`)}&$expand=status`);
        for (const c of caps) {
          const shaped = shapeCapture(c, w);
          if (shaped.props.captureStatus) applyStatus(shaped, shaped.props.captureStatus);
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
  state.problems = problems;
  state.loaded = true;
  state.loading = false;
}

export async function queryStatus(c) {
  try {
    const r = await post(versioned(`${c.id}/queryStatus`));
    applyStatus(c, r.body || {});
  } catch (e) {
    c.statusError = e.readable || e.message;
  }
}

/** Takes a capture's status (from queryStatus, or a list's `captureStatus`); counters of a
 * running capture go to its chart's history. */
function applyStatus(c, s) {
  const before = c.status ? c.status.packetCaptureStatus : null;
  c.status = s;
  c.statusError = null;
  if (s.packetCaptureStatus === 'Running' || (before && !FINAL.has(before))) {
    const last = c.history[c.history.length - 1];
    if (!last || last.packets !== (s.packetsCaptured || 0) || Date.now() - last.t > 1000) {
      c.history.push({ t: Date.now(), packets: s.packetsCaptured || 0, bytes: s.bytesCaptured || 0 });
    }
    if (c.history.length > 600) c.history.shift();
  }
  if (FINAL.has(s.packetCaptureStatus) && before && !FINAL.has(before)) c.seenStopAt = Date.now();
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
export function soon(ms = 300) {
  state.pollDelay = 2000;
  schedulePoll(ms);
}

let currentView = null;
/** The view on screen: `rerender` draws it again (after a poll or an action). */
export function setView(view) { currentView = view; }
export function isView(view) { return currentView === view; }
export function rerender() {
  if (document.querySelector('.menu') || document.querySelector('.overlay')) return;
  if (currentView) currentView();
}

export function statusOf(c) {
  if (c.status) return c.status.packetCaptureStatus || 'Unknown';
  if (c.props.provisioningState === 'Failed') return 'Error';
  return c.statusError ? 'Unknown' : 'Loading';
}

export function reasonOf(c) {
  const s = c.status || {};
  const errs = (s.packetCaptureError || []).join(', ');
  const parts = [];
  if (s.stopReason) parts.push(s.stopReason);
  if (errs) parts.push(errs);
  if (s.errorMessage) parts.push(s.errorMessage);
  if (c.statusError) parts.push(c.statusError);
  return parts.join(' · ');
}

export function durationOf(c) {
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

export function outputOf(c) {
  const loc = c.props.storageLocation || {};
  const parts = [];
  const path = loc.filePath || loc.localPath;
  if (path) parts.push(`File ${path}`);
  if (loc.storageId) parts.push(`Storage account ${parseId(loc.storageId).name}`);
  return parts.join(' + ');
}

export function targetName(c) {
  const t = c.props.target || '';
  const p = parseId(t);
  return p.types.map(([, n]) => n).join('/') || t;
}
