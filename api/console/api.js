// The console's client of the public ARM API: the bearer token, ARM errors, paging and
// long-running operations. Same origin: every URL is a path of this server.

import { accessToken, onUnauthorized } from './auth.js';

export const NETWORK_VERSION = '2026-03-01';
export const COMPUTE_VERSION = '2026-04-01';
export const STORAGE_VERSION = '2025-01-01';
export const SUBSCRIPTIONS_VERSION = '2022-12-01';

/** An ARM error: HTTP status, code, message and the field it names (target). */
export class ArmError extends Error {
  constructor(status, code, message, target) {
    super(message);
    this.status = status;
    this.code = code;
    this.target = target || null;
  }

  /** A sentence for people: the message, with what a 403 or 401 means here. */
  get readable() {
    if (this.status === 403) return `You do not have permission for this: ${this.message}`;
    if (this.status === 401) return `Your session is not valid any more (${this.message}). Sign in again.`;
    if (this.status === 0) return `The server cannot be reached: ${this.message}`;
    return this.message;
  }
}

/** Adds ?api-version= to a path unless it has one. */
export function versioned(path, version = NETWORK_VERSION) {
  if (/[?&]api-version=/i.test(path)) return path;
  return `${path}${path.includes('?') ? '&' : '?'}api-version=${version}`;
}

/** Only paths of this origin are followed (monitor URLs and nextLinks are absolute). */
function sameOrigin(url) {
  const u = new URL(url, window.location.origin);
  if (u.origin !== window.location.origin) {
    // A server behind a proxy may hand out its public URL: keep the path, use our origin.
    return `${u.pathname}${u.search}`;
  }
  return `${u.pathname}${u.search}`;
}

/**
 * One request. Resolves {status, headers, body} for 2xx; throws ArmError otherwise.
 * `raw` answers the Response itself (for downloads).
 */
export async function request(method, path, { body, accept, raw, signal } = {}) {
  const headers = { Accept: accept || 'application/json' };
  const token = await accessToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(sameOrigin(path), {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      signal, cache: 'no-store', credentials: 'omit',
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ArmError(0, 'NetworkError', e.message || String(e));
  }
  if (res.ok) {
    if (raw) return res;
    const text = await res.text();
    let json = null;
    if (text) {
      try { json = JSON.parse(text); } catch { json = text; }
    }
    return { status: res.status, headers: res.headers, body: json };
  }
  let code = `Http${res.status}`;
  let message = `${res.status} ${res.statusText}`;
  let target = null;
  try {
    const e = await res.json();
    if (e && e.error) {
      code = e.error.code || code;
      message = e.error.message || message;
      target = e.error.target || null;
    }
  } catch { /* not JSON */ }
  if (res.status === 401) onUnauthorized(message);
  throw new ArmError(res.status, code, message, target);
}

export const get = (path, opts) => request('GET', path, opts);
export const post = (path, opts) => request('POST', path, opts);
export const put = (path, body, opts) => request('PUT', path, { ...opts, body });
export const del = (path, opts) => request('DELETE', path, opts);

/** Every item of a list, following nextLink. */
export async function list(path) {
  const items = [];
  let next = path;
  for (let page = 0; next && page < 1000; page += 1) {
    const r = await get(next);
    items.push(...((r.body && r.body.value) || []));
    next = r.body && r.body.nextLink ? sameOrigin(r.body.nextLink) : null;
  }
  return items;
}

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

/**
 * Polls an Azure-AsyncOperation monitor until it ends; `progress(status)` at each poll.
 * Resolves the final body; a Failed or Canceled operation throws its error as an ArmError.
 */
export async function waitOperation(monitor, progress = () => {}, timeoutMs = 120000) {
  const deadline = Date.now() + timeoutMs;
  let delay = 500;
  for (;;) {
    const r = await get(monitor);
    const status = r.body && r.body.status;
    progress(status || 'InProgress', r.body);
    if (status === 'Succeeded') return r.body;
    if (status === 'Failed' || status === 'Canceled') {
      const e = (r.body && r.body.error) || {};
      throw new ArmError(200, e.code || status, e.message || `The operation ended ${status}.`, e.target);
    }
    if (Date.now() > deadline) throw new ArmError(0, 'Timeout', 'The operation did not end in time; it may still be running: see the list.');
    const retry = Number(r.headers.get('retry-after'));
    await sleep(Math.min(5000, retry > 0 ? Math.min(retry * 1000, delay) : delay));
    delay = Math.min(delay * 1.5, 3000);
  }
}

/** The parts of an ARM id: {subscription, resourceGroup, provider types…, name}. */
export function parseId(id) {
  const segs = id.split('/').filter(Boolean);
  const out = { id, types: [] };
  for (let i = 0; i + 1 < segs.length; i += 2) {
    const k = segs[i].toLowerCase();
    if (k === 'subscriptions') out.subscription = segs[i + 1];
    else if (k === 'resourcegroups') out.resourceGroup = segs[i + 1];
    else if (k === 'providers') { out.provider = segs[i + 1]; }
    else out.types.push([segs[i], segs[i + 1]]);
  }
  out.name = out.types.length ? out.types[out.types.length - 1][1] : '';
  return out;
}

/** Normalized region name: "East US" and "eastus" are one region. */
export function regionKey(location) {
  return String(location || '').toLowerCase().replace(/\s+/g, '');
}
