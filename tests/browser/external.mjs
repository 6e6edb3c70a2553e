// The console's sign-in at an external OpenID provider, in a real Chromium: the provider is
// panva's `oidc-provider` (tests/browser/oidc-provider.mjs), the server trusts it with
// `--oidc-issuer … --console-client-id …` (tests/tests/e2e/console_external.rs starts both).
// A person signs in at the provider's own login and consent pages, sees the captures list,
// the console refreshes its token at the provider, and signing out revokes the refresh token
// there. A second person, with no role assignment, sees an empty list rather than a blank page.
import { assert, axe, env, forceRefresh, launch, log, newPage, noProblems, step } from './lib.mjs';

const URL0 = env('CONSOLE_URL').replace(/\/$/, '');
const ISSUER = env('ISSUER');
const CLIENT_ID = env('CLIENT_ID');
const SUB = env('SUB');
const CAPTURE = env('CAPTURE_NAME');
const USER = JSON.parse(env('SIGNIN_USER')); // {id, username, password, name}: Reader of SUB
const STRANGER = JSON.parse(env('STRANGER_USER')); // the same, with no role assignment
const ARM = 'https://management.azure.com';
const ARM_SCOPE = `${ARM}/user_impersonation`;
const ISSUER_ORIGIN = new URL(ISSUER).origin;

const row = (page, name) => page.locator(`tr[data-capture$="/packetcaptures/${name.toLowerCase()}"]`);

function jwtParts(jwt) {
  const [h, p] = jwt.split('.').slice(0, 2).map((s) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8')));
  return { header: h, claims: p };
}

const session = (page) => page.evaluate(() => JSON.parse(sessionStorage.getItem('capture-console.session') || 'null'));

/** Requests the page sends to the provider (method, path and form), for checks. */
function recordProvider(page) {
  const seen = [];
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (u.origin !== ISSUER_ORIGIN) return;
    seen.push({ method: r.method(), path: u.pathname, query: u.searchParams, form: new URLSearchParams(r.postData() || '') });
  });
  return seen;
}

/** From the console's sign-in page to the console signed in, through the provider's pages. */
async function signInAtProvider(page, who, seen, { wrongPasswordFirst = false, checkPages = false } = {}) {
  await page.locator('#sign-in').click();
  await page.waitForURL((u) => u.origin === ISSUER_ORIGIN && u.pathname.startsWith('/interaction/'), { timeout: 15000 });
  const authorize = seen.find((r) => r.path === '/auth');
  assert(authorize, `the console went to the provider's authorization endpoint: ${JSON.stringify(seen.map((r) => r.path))}`);
  const q = authorize.query;
  assert(q.get('response_type') === 'code' && q.get('client_id') === CLIENT_ID && q.get('redirect_uri') === `${URL0}/`,
    `a code request of the console's client: ${q}`);
  assert(q.get('code_challenge_method') === 'S256' && /^[A-Za-z0-9_-]{43}$/.test(q.get('code_challenge') || '') && q.get('state') && q.get('nonce'),
    `PKCE S256, state and nonce: ${q}`);
  const scopes = (q.get('scope') || '').split(' ');
  for (const s of ['openid', 'offline_access', ARM_SCOPE]) assert(scopes.includes(s), `scope ${s} asked: ${q.get('scope')}`);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  assert(/Test OpenID Provider/.test(await page.title()), `the provider's own login page: ${await page.title()}`);
  if (checkPages) await axe(page, "the provider's login page");
  if (wrongPasswordFirst) {
    await page.getByLabel('User name').fill(who.username);
    await page.getByLabel('Password').fill(`${who.password}-wrong`);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'Wrong user name or password' }).waitFor();
    assert(new URL(page.url()).origin === ISSUER_ORIGIN, 'a wrong password stays at the provider');
  }
  await page.getByLabel('User name').fill(who.username);
  await page.getByLabel('Password').fill(who.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  // The provider asks for consent to the scopes (the first time for this person and client).
  await page.getByRole('heading', { name: 'Permissions requested' }).waitFor({ timeout: 10000 });
  const asked = await page.locator('main ul').textContent();
  assert(asked.includes(ARM_SCOPE), `the consent names the API's scope: ${asked}`);
  if (checkPages) await axe(page, "the provider's consent page");
  await page.getByRole('button', { name: 'Allow' }).click();
  await page.waitForURL((u) => u.origin === new URL(URL0).origin && u.pathname === '/' && !u.searchParams.has('code'), { timeout: 15000 })
    .catch(async (e) => { throw new Error(`not back at the console: ${page.url()}\n${await page.locator('body').innerText().catch(() => '')}\n${e.message}`); });
  await page.locator('#sign-out').waitFor({ timeout: 15000 });
  const code = seen.find((r) => r.path === '/token' && r.form.get('grant_type') === 'authorization_code');
  assert(code && code.form.get('code_verifier') && code.form.get('client_id') === CLIENT_ID && !code.form.get('client_secret'),
    'the code was redeemed at the provider as a public client, with the PKCE verifier');
}

async function apiGet(path, token) {
  const r = await fetch(`${URL0}${path}`, { headers: { Authorization: `Bearer ${token}` } });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

async function tokenEndpoint(form) {
  const r = await fetch(`${ISSUER}/token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form),
  });
  return { status: r.status, body: await r.json() };
}

const browser = await launch();
const started = Date.now();
try {
  await step('the server names the external provider', async () => {
    const c = await (await fetch(`${URL0}/console/config.json`)).json();
    assert(c.mode === 'external' && c.authority === ISSUER && c.clientId === CLIENT_ID, `config.json: ${JSON.stringify(c)}`);
    assert(c.redirectUri === `${URL0}/`, `redirect URI ${c.redirectUri}`);
    const r = await fetch(`${URL0}/`);
    const csp = r.headers.get('content-security-policy');
    assert(csp.includes(`connect-src 'self' ${ISSUER_ORIGIN};`), `the CSP lets the page call the provider: ${csp}`);
    const d = await (await fetch(c.discoveryUrl)).json();
    assert(d.issuer === ISSUER && d.code_challenge_methods_supported.includes('S256') && d.revocation_endpoint,
      `the provider's discovery document: ${JSON.stringify(d)}`);
  });

  const { context, page } = await newPage(browser);
  const seen = recordProvider(page);
  let first;
  await step('sign in at the provider: login, consent, back to the console', async () => {
    await page.goto(`${URL0}/`);
    await page.locator('.signin').waitFor();
    // The page names the provider.
    const button = await page.locator('#sign-in').textContent();
    assert(button === `Sign in at ${new URL(ISSUER).host}`, `the sign-in button names the provider: ${button}`);
    await axe(page, 'sign-in page (external provider)');
    // An answer naming another issuer (RFC 9207, a mix-up) is refused before any token request.
    await page.locator('#sign-in').click();
    await page.waitForURL((u) => u.origin === ISSUER_ORIGIN, { timeout: 15000 });
    await page.goBack();
    await page.waitForURL((u) => u.origin === new URL(URL0).origin, { timeout: 15000 });
    const pending = await page.evaluate(() => JSON.parse(Object.keys(sessionStorage).map((k) => sessionStorage.getItem(k)).find((v) => v && v.includes('verifier')) || 'null'));
    assert(pending && pending.state, 'a sign-in is pending in this tab');
    const tokenRequests = seen.filter((r) => r.path === '/token').length;
    await page.goto(`${URL0}/?code=mixup&state=${pending.state}&iss=${encodeURIComponent('https://other-issuer.invalid')}`);
    await page.locator('.signin .alert').filter({ hasText: 'https://other-issuer.invalid' }).waitFor();
    assert(seen.filter((r) => r.path === '/token').length === tokenRequests, 'no token request for a mixed-up answer');
    seen.length = 0;
    await signInAtProvider(page, USER, seen, { wrongPasswordFirst: true, checkPages: true });
    await page.locator('#user .who').filter({ hasText: USER.name }).waitFor();
    first = await session(page);
    assert(first && first.kind === 'oauth' && first.refreshToken, `a session with a refresh token: ${JSON.stringify(first)}`);
    const { header, claims } = jwtParts(first.accessToken);
    log(`access token: ${JSON.stringify(header)} ${JSON.stringify(claims)}`);
    assert(header.alg === 'ES256' && header.kid, `signed with ES256: ${JSON.stringify(header)}`);
    assert(claims.iss === ISSUER && claims.aud === ARM && claims.sub === USER.id, `the provider's token for ARM: ${JSON.stringify(claims)}`);
    assert(claims.scope.split(' ').includes(ARM_SCOPE), `the token's scope: ${claims.scope}`);
    const stored = await page.evaluate(() => ({ local: localStorage.length, cookies: document.cookie }));
    assert(stored.local === 0 && stored.cookies === '', `tokens only in sessionStorage: ${JSON.stringify(stored)}`);
  });

  await step('the list shows the capture made through the API', async () => {
    await row(page, CAPTURE).waitFor({ timeout: 20000 });
    const target = await row(page, CAPTURE).textContent();
    assert(target.includes('vm1'), `the capture's row: ${target}`);
    await axe(page, 'captures list (external provider)');
    noProblems(page);
  });

  await step('the access token is refreshed at the provider', async () => {
    const before = await forceRefresh(page);
    const refreshed = seen.filter((r) => r.path === '/token' && r.form.get('grant_type') === 'refresh_token');
    assert(refreshed.length >= 1 && refreshed[0].form.get('refresh_token') === before.refreshToken && refreshed[0].form.get('client_id') === CLIENT_ID,
      'the refresh token went to the provider');
    const after = await session(page);
    assert(after.accessToken !== before.accessToken, 'a new access token');
    const { claims } = jwtParts(after.accessToken);
    assert(claims.aud === ARM && claims.sub === USER.id && claims.jti !== jwtParts(before.accessToken).claims.jti, `the new token: ${JSON.stringify(claims)}`);
    // The server takes the new token (checked with the provider's keys).
    const list = await apiGet(`/subscriptions/${SUB}/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw1/packetCaptures?api-version=2026-03-01`, after.accessToken);
    assert(list.status === 200 && list.body.value.some((c) => c.name === CAPTURE), `the API with the refreshed token: ${JSON.stringify(list)}`);
    await row(page, CAPTURE).waitFor({ timeout: 15000 });
    await page.locator('#user .who').filter({ hasText: USER.name }).waitFor();
    noProblems(page);
  });

  await step('sign out: the provider revokes the refresh token, the console forgets the session', async () => {
    const last = await session(page);
    await page.locator('#sign-out').click();
    await page.locator('.signin').getByText('You are signed out.').waitFor({ timeout: 10000 });
    assert(await session(page) === null, 'no session is left in the tab');
    const deadline = Date.now() + 5000;
    let revoke;
    while (!(revoke = seen.find((r) => r.path === '/token/revocation')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert(revoke && revoke.form.get('token') === last.refreshToken && revoke.form.get('client_id') === CLIENT_ID,
      'the refresh token was sent to the provider\'s revocation endpoint');
    // The provider no longer takes it.
    let answer;
    for (let i = 0; i < 50; i++) {
      answer = await tokenEndpoint({ grant_type: 'refresh_token', refresh_token: last.refreshToken, client_id: CLIENT_ID });
      if (answer.status !== 200) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert(answer.status === 400 && answer.body.error === 'invalid_grant', `the revoked refresh token at the provider: ${JSON.stringify(answer)}`);
    await page.reload();
    await page.locator('#sign-in').waitFor();
    assert(await page.locator('#sign-out').count() === 0, 'still signed out after a reload');
    await axe(page, 'signed out (external provider)');
    noProblems(page);
    await context.close();
  });

  await step('a person with no role assignment: an empty list, not a blank page', async () => {
    const { context: c2, page: p2 } = await newPage(browser);
    const seen2 = recordProvider(p2);
    await p2.goto(`${URL0}/`);
    await signInAtProvider(p2, STRANGER, seen2);
    await p2.locator('#user .who').filter({ hasText: STRANGER.name }).waitFor();
    await p2.getByRole('heading', { name: 'No packet captures yet' }).waitFor({ timeout: 15000 });
    assert(await row(p2, CAPTURE).count() === 0, 'the capture is not shown to a person without a role');
    const s = await session(p2);
    assert(jwtParts(s.accessToken).claims.sub === STRANGER.id, 'signed in as the second person');
    // The API agrees: no subscription, and the subscription's captures are a readable 403.
    const subs = await apiGet('/subscriptions?api-version=2022-12-01', s.accessToken);
    assert(subs.status === 200 && subs.body.value.length === 0, `no subscriptions: ${JSON.stringify(subs)}`);
    const denied = await apiGet(`/subscriptions/${SUB}/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw1/packetCaptures?api-version=2026-03-01`, s.accessToken);
    assert(denied.status === 403 && /does not have authorization/.test(denied.body.error.message), `a readable 403: ${JSON.stringify(denied)}`);
    await axe(p2, 'empty list (external provider, no role)');
    noProblems(p2);
    await c2.close();
  });
  log(`external sign-in test passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} finally {
  await browser.close();
}
