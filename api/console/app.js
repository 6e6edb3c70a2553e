// The console: routing, the sign-in view and the signed-in user, and the start.
// A client of the public ARM API only (see api.js), with the signed-in user's token (auth.js).

import * as auth from './auth.js';
import { NETWORK_VERSION } from './api.js';
import { closeMenus, duration, h, set, uid } from './ui.js';
import { durationOf, isView, setView, soon, state } from './model.js';
import { renderList } from './list.js';
import { openAdd } from './add.js';
import { renderDetails } from './details.js';

const main = document.getElementById('main');
const userBox = document.getElementById('user');

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

// ---------------------------------------------------------------------------------------------
// Sign-in view

let signInMessage = null;

/** The host (and port) of a URL, for naming an identity provider. */
function hostOf(url) {
  try { return new URL(url).host; } catch { return url; }
}

async function renderSignIn() {
  setView(null);
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
    }, config.mode === 'external' && config.authority ? `Sign in at ${hostOf(config.authority)}` : 'Sign in')
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
  if (!document.querySelector('.menu, .overlay') && isView(renderList)) {
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
