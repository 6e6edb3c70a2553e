// Sign-in: the OAuth 2.0 authorization code flow with PKCE (S256) as a public client, against
// the issuer that /console/config.json names (the server's built-in issuer, or an external
// OpenID provider). Tokens live in this tab only: in memory, and in sessionStorage so that a
// reload keeps the session; never in localStorage or a cookie.

const SESSION_KEY = 'capture-console.session';
const PENDING_KEY = 'capture-console.pending';

let config = null;
let endpoints = null;
let session = null;
let refreshing = null;
let refreshTimer = null;
const listeners = new Set();

/** Calls `f(session)` whenever the session changes (sign-in, refresh, sign-out, expiry). */
export function onSessionChange(f) { listeners.add(f); }
function changed() { for (const f of listeners) f(session); }

function b64url(bytes) {
  let s = '';
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function randomString(n = 32) {
  return b64url(crypto.getRandomValues(new Uint8Array(n)));
}

async function s256(verifier) {
  return b64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
}

/** The claims of a JWT (unverified: only for showing the user's name). */
function claims(jwt) {
  try {
    const part = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = decodeURIComponent([...atob(part)].map((c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`).join(''));
    return JSON.parse(json);
  } catch {
    return {};
  }
}

function save() {
  if (session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  else sessionStorage.removeItem(SESSION_KEY);
  scheduleRefresh();
  changed();
}

/** The console's sign-in configuration, or null when the server has none. */
export async function loadConfig() {
  if (config !== null) return config || null;
  try {
    const r = await fetch('/console/config.json', { cache: 'no-store', credentials: 'omit' });
    config = r.ok ? await r.json() : false;
  } catch {
    config = false;
  }
  return config || null;
}

function pick(obj, ...names) {
  for (const n of names) if (obj && obj[n]) return obj[n];
  return null;
}

/** The authorize, token and revocation endpoints: from the configuration, else discovery. */
async function getEndpoints() {
  if (endpoints) return endpoints;
  const c = await loadConfig();
  if (!c) throw new Error('This server has no sign-in configuration (/console/config.json).');
  let e = {
    authorize: pick(c, 'authorizationEndpoint', 'authorization_endpoint') || pick(c.endpoints, 'authorize', 'authorization', 'authorizationEndpoint', 'authorization_endpoint'),
    token: pick(c, 'tokenEndpoint', 'token_endpoint') || pick(c.endpoints, 'token', 'tokenEndpoint', 'token_endpoint'),
    revoke: pick(c, 'revocationEndpoint', 'revocation_endpoint', 'signOutEndpoint') || pick(c.endpoints, 'revocation', 'revoke', 'signOut', 'logout', 'revocationEndpoint', 'revocation_endpoint', 'end_session_endpoint'),
  };
  if (!e.authorize || !e.token || !e.revoke) {
    // The discovery document: for the endpoints the configuration does not give, and for the
    // revocation endpoint of sign-out.
    const authority = String(pick(c, 'authority', 'issuer') || '').replace(/\/$/, '');
    const url = pick(c, 'discoveryUrl', 'discovery', 'metadataUrl')
      || (authority ? `${authority}/.well-known/openid-configuration` : `${window.location.origin}/.well-known/openid-configuration`);
    let d = {};
    try {
      const r = await fetch(url, { credentials: 'omit' });
      if (r.ok) d = await r.json();
      else if (!e.authorize || !e.token) throw new Error(`The issuer's discovery document (${url}) answered ${r.status}.`);
    } catch (err) {
      if (!e.authorize || !e.token) throw err;
    }
    e = {
      authorize: e.authorize || d.authorization_endpoint,
      token: e.token || d.token_endpoint,
      revoke: e.revoke || d.revocation_endpoint || null,
      endSession: d.end_session_endpoint || null,
    };
  }
  endpoints = e;
  return e;
}

function scopes(c) {
  const s = pick(c, 'scopes', 'scope');
  if (Array.isArray(s)) return s.join(' ');
  return s || 'openid offline_access';
}

/** Where the issuer sends the browser back: the console's own page. */
export function redirectUri() {
  const c = config || {};
  return pick(c, 'redirectUri', 'redirect_uri') || `${window.location.origin}/`;
}

/**
 * Starts a sign-in: a fresh verifier, challenge, state and nonce, then the authorize page.
 * `extra` adds parameters (a one-time sign-in link's token).
 */
export async function signIn(extra = {}) {
  const c = await loadConfig();
  const e = await getEndpoints();
  const verifier = randomString(48);
  const state = randomString(24);
  const nonce = randomString(24);
  // The issuer expected to answer (RFC 9207: an answer naming another issuer is refused).
  const issuer = pick(c, 'authority', 'issuer');
  sessionStorage.setItem(PENDING_KEY, JSON.stringify({ verifier, state, nonce, issuer, at: Date.now(), back: window.location.hash }));
  const u = new URL(e.authorize, window.location.origin);
  const q = u.searchParams;
  q.set('response_type', 'code');
  q.set('client_id', pick(c, 'clientId', 'client_id'));
  q.set('redirect_uri', redirectUri());
  q.set('scope', scopes(c));
  q.set('state', state);
  q.set('nonce', nonce);
  q.set('code_challenge', await s256(verifier));
  q.set('code_challenge_method', 'S256');
  for (const [k, v] of Object.entries(extra)) q.set(k, v);
  window.location.assign(u.toString());
}

async function tokenRequest(params) {
  const e = await getEndpoints();
  const c = await loadConfig();
  const body = new URLSearchParams({ client_id: pick(c, 'clientId', 'client_id'), ...params });
  const r = await fetch(e.token, {
    method: 'POST', body, credentials: 'omit', cache: 'no-store',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' },
  });
  let json = {};
  try { json = await r.json(); } catch { /* not JSON */ }
  if (!r.ok || !json.access_token) {
    const why = json.error_description || (json.error && json.error.message) || json.error || `${r.status} ${r.statusText}`;
    throw new Error(typeof why === 'string' ? why : JSON.stringify(why));
  }
  return json;
}

function fromTokens(t, previous = {}) {
  const idClaims = t.id_token ? claims(t.id_token) : {};
  const at = claims(t.access_token);
  const expiresIn = Number(t.expires_in) || (at.exp ? at.exp - Date.now() / 1000 : 3600);
  return {
    kind: 'oauth',
    accessToken: t.access_token,
    refreshToken: t.refresh_token || previous.refreshToken || null,
    expiresAt: Date.now() + expiresIn * 1000,
    user: idClaims.name || idClaims.preferred_username || at.name || at.preferred_username || at.unique_name || previous.user || at.oid || 'signed in',
    oid: at.oid || idClaims.oid || previous.oid || null,
  };
}

/**
 * At page load: finishes a sign-in that the issuer redirected back to (code and state in the
 * query), or restores this tab's session. Answers {error} when a redirect carried an error.
 */
export async function init() {
  const params = new URLSearchParams(window.location.search);
  const clean = () => window.history.replaceState(null, '', `${window.location.pathname}${window.location.hash}`);
  if (params.has('code') || params.has('error')) {
    const pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) || 'null');
    sessionStorage.removeItem(PENDING_KEY);
    clean();
    if (params.has('error')) {
      return { error: params.get('error_description') || params.get('error') };
    }
    if (!pending || pending.state !== params.get('state')) {
      return { error: 'The sign-in answer does not match a sign-in started in this tab (state mismatch). Sign in again.' };
    }
    const trim = (u) => String(u || '').replace(/\/+$/, '');
    if (params.has('iss') && pending.issuer && trim(params.get('iss')) !== trim(pending.issuer)) {
      return { error: `The sign-in answer comes from ${params.get('iss')}, not from this console's issuer ${pending.issuer}. Sign in again.` };
    }
    if (Date.now() - pending.at > 10 * 60 * 1000) {
      return { error: 'The sign-in took too long. Sign in again.' };
    }
    try {
      const t = await tokenRequest({
        grant_type: 'authorization_code',
        code: params.get('code'),
        redirect_uri: redirectUri(),
        code_verifier: pending.verifier,
      });
      if (t.id_token) {
        const idc = claims(t.id_token);
        if (idc.nonce && idc.nonce !== pending.nonce) return { error: 'The ID token does not answer this sign-in (nonce mismatch). Sign in again.' };
      }
      session = fromTokens(t);
      save();
      if (pending.back) window.location.hash = pending.back;
      return {};
    } catch (e) {
      return { error: `Sign-in failed: ${e.message}` };
    }
  }
  if (params.has('signin')) {
    // A one-time sign-in link: the issuer redeems it in its authorize step.
    const token = params.get('signin');
    clean();
    return { signinLink: token };
  }
  try {
    session = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
  } catch {
    session = null;
  }
  if (session && session.kind === 'oauth' && session.expiresAt < Date.now() && !session.refreshToken) session = null;
  scheduleRefresh();
  return {};
}

/** Uses a bearer token given by hand (e.g. `capture-api token`), kept in this tab only. */
export function useToken(token) {
  const at = claims(token);
  session = {
    kind: 'token',
    accessToken: token.trim(),
    refreshToken: null,
    expiresAt: at.exp ? at.exp * 1000 : Date.now() + 3600 * 1000,
    user: at.name || at.preferred_username || at.appid || at.oid || 'token',
    oid: at.oid || null,
  };
  save();
}

/** A server with authentication disabled (`--auth-disabled`): no sign-in, no token. */
export function useNoAuthentication() {
  session = { kind: 'none', accessToken: null, refreshToken: null, expiresAt: Infinity, user: 'authentication disabled', oid: null };
  changed();
}

export function currentSession() { return session; }

async function refresh() {
  if (!session || !session.refreshToken) return;
  if (!refreshing) {
    const previous = session;
    refreshing = tokenRequest({ grant_type: 'refresh_token', refresh_token: previous.refreshToken })
      .then((t) => { session = fromTokens(t, previous); save(); })
      .catch((e) => { session = null; save(); sessionExpired(`Your session ended: ${e.message}`); })
      .finally(() => { refreshing = null; });
  }
  await refreshing;
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  if (!session || !session.refreshToken) return;
  // Two minutes before expiry (at least 5 s from now).
  const wait = Math.max(5000, session.expiresAt - Date.now() - 120000);
  refreshTimer = setTimeout(() => { refresh(); }, Math.min(wait, 2 ** 31 - 1));
}

/** The access token for the next request, refreshed first when it is about to expire. */
export async function accessToken() {
  if (!session) return null;
  if (session.refreshToken && session.expiresAt - Date.now() < 60000) await refresh();
  return session ? session.accessToken : null;
}

let expiredHandler = () => {};
export function onExpired(f) { expiredHandler = f; }
function sessionExpired(message) { expiredHandler(message); }

/** A 401 from the API: the session is over. */
export function onUnauthorized(message) {
  if (!session) return;
  session = null;
  save();
  sessionExpired(`Signed out: ${message}`);
}

/** Signs out: revokes the refresh token at the issuer, then forgets the session. */
export async function signOut() {
  const s = session;
  session = null;
  save();
  if (s && s.refreshToken) {
    try {
      const e = await getEndpoints();
      const c = await loadConfig();
      const form = { token: s.refreshToken, token_type_hint: 'refresh_token', refresh_token: s.refreshToken, client_id: pick(c, 'clientId', 'client_id') };
      const url = e.revoke || e.endSession;
      if (url) {
        await fetch(url, {
          method: 'POST', credentials: 'omit',
          headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams(form),
        });
      }
    } catch { /* the session is forgotten here whatever the issuer says */ }
  }
}
