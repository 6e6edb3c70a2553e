// A real, external OpenID provider for the console's external sign-in test
// (tests/tests/e2e/console_external.rs): panva's certified `oidc-provider`, on 127.0.0.1, with
// its own login and consent pages (real forms, through the provider's interaction API).
//
// Configured like Microsoft Entra ID for the console: one public client (no secret, PKCE S256
// required, authorization code + refresh token grants, the console's page as redirect URI), and
// the Entra-style scope `https://management.azure.com/user_impersonation` mapped to the resource
// `https://management.azure.com` (RFC 8707 resource indicators), whose access tokens are JWTs
// (ES256) with that audience. Refresh tokens rotate; revocation (RFC 7009) is on.
//
// Environment: PORT (required), REDIRECT_URI (the console's `B/`), CLIENT_ID, USERS (JSON:
// [{id, username, password, name}]). Prints `listening http://127.0.0.1:PORT` once ready, then
// one line per provider event worth seeing; exits when its standard input closes (the test ended).
import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider, { errors } from 'oidc-provider';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const PORT = Number(env('PORT'));
const ISSUER = `http://127.0.0.1:${PORT}`;
const REDIRECT_URI = env('REDIRECT_URI');
const CLIENT_ID = env('CLIENT_ID');
const USERS = JSON.parse(env('USERS'));
const ARM = 'https://management.azure.com';
const ARM_SCOPE = `${ARM}/user_impersonation`;
const PROVIDER_NAME = 'Test OpenID Provider';

const jwk = (type, options, alg) => ({
  ...generateKeyPairSync(type, options).privateKey.export({ format: 'jwk' }),
  kid: `${alg.toLowerCase()}-${randomBytes(6).toString('hex')}`,
  alg,
  use: 'sig',
});

const accounts = new Map(USERS.map((u) => [u.id, u]));

const provider = new Provider(ISSUER, {
  clients: [{
    client_id: CLIENT_ID,
    client_name: 'Packet capture console',
    token_endpoint_auth_method: 'none',
    application_type: 'web',
    redirect_uris: [REDIRECT_URI],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    id_token_signed_response_alg: 'ES256',
  }],
  jwks: { keys: [jwk('ec', { namedCurve: 'P-256' }, 'ES256'), jwk('rsa', { modulusLength: 2048 }, 'RS256')] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'offline_access'],
  claims: { openid: ['sub'], profile: ['name', 'preferred_username'] },
  // The ID token carries the profile claims (as Entra's does), not only the userinfo endpoint.
  conformIdTokenClaims: false,
  // OpenID Connect Core 11 grants `offline_access` only with `prompt=consent`, which the console
  // does not send (Entra issues refresh tokens without it, and would show its consent page at
  // every sign-in). As Entra does, clients allowed the refresh_token grant get refresh tokens
  // (oidc-provider's documented way to do so for single-page applications).
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  async findAccount(_ctx, id) {
    const u = accounts.get(id);
    if (!u) return undefined;
    return { accountId: u.id, claims: async () => ({ sub: u.id, name: u.name, preferred_username: u.username }) };
  },
  // The console's origin (its redirect URI's) may call the token and revocation endpoints.
  clientBasedCORS: (_ctx, origin, client) => client.redirectUris.some((uri) => new URL(uri).origin === origin),
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { AccessToken: 600, AuthorizationCode: 60, IdToken: 600, RefreshToken: 3600, Grant: 3600, Interaction: 600, Session: 3600 },
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Entra-style: a scope `https://management.azure.com/…` asks for that resource.
      async defaultResource(ctx, _client, oneOf) {
        if (oneOf) return oneOf;
        const scopes = String(ctx.oidc.params.scope || '').split(' ');
        return scopes.some((s) => s.startsWith(`${ARM}/`)) ? ARM : undefined;
      },
      // The token endpoint issues tokens for the resource granted at the authorization step.
      useGrantedResource: async () => true,
      async getResourceServerInfo(_ctx, resourceIndicator) {
        if (resourceIndicator.replace(/\/$/, '') !== ARM) throw new errors.InvalidTarget();
        return {
          scope: ARM_SCOPE,
          audience: ARM,
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
});

for (const e of ['grant.success', 'grant.error', 'grant.revoked', 'revocation.error', 'server_error', 'authorization.error', 'interaction.ended']) {
  provider.on(e, (...args) => {
    const err = args.find((a) => a instanceof Error);
    console.log(`event ${e}${err ? `: ${err.message}${err.error_description ? ` (${err.error_description})` : ''}` : ''}`);
  });
}

// --- The login and consent pages -------------------------------------------------------------

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(res, status, title, body) {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  // The forms post here, and their answer may redirect to the client (form-action covers
  // redirects after a submission).
  res.setHeader('Content-Security-Policy', `default-src 'none'; form-action 'self' ${new URL(REDIRECT_URI).origin}; frame-ancestors 'none'; base-uri 'none'`);
  res.end(`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${escape(title)} · ${PROVIDER_NAME}</title></head>
<body>
<main>
<p>${PROVIDER_NAME}</p>
<h1>${escape(title)}</h1>
${body}
</main>
</body>
</html>`);
}

function loginPage(res, uid, clientName, { status = 200, message = null, username = '' } = {}) {
  page(res, status, 'Sign in', `
<p>to continue to ${escape(clientName)}</p>
${message ? `<p role="alert">${escape(message)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<p><label for="username">User name</label><br><input id="username" name="username" autocomplete="username" required value="${escape(username)}"></p>
<p><label for="password">Password</label><br><input id="password" name="password" type="password" autocomplete="current-password" required></p>
<p><button type="submit">Sign in</button></p>
</form>`);
}

function consentPage(res, uid, clientName, account, scopes) {
  page(res, 200, 'Permissions requested', `
<p>${escape(clientName)} asks, for ${escape(account.name)} (${escape(account.username)}):</p>
<ul>${scopes.map((s) => `<li>${escape(s)}</li>`).join('')}</ul>
<form method="post" action="/interaction/${escape(uid)}/consent">
<p><button type="submit" name="decision" value="allow">Allow</button> <button type="submit" name="decision" value="deny">Deny</button></p>
</form>`);
}

async function form(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 10000) throw new Error('form too large');
  }
  return Object.fromEntries(new URLSearchParams(body));
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new errors.SessionNotFound('interaction mismatch');
  const { prompt, params } = details;
  const client = await provider.Client.find(params.client_id);
  const clientName = client?.clientName || params.client_id;
  if (prompt.name === 'login') {
    if (req.method === 'GET' && !action) return loginPage(res, uid, clientName);
    if (req.method !== 'POST' || action !== 'login') return page(res, 400, 'Bad request', '<p>Sign in first.</p>');
    const { username = '', password = '' } = await form(req);
    const account = USERS.find((u) => u.username === username && u.password === password);
    if (!account) {
      console.log(`login refused for '${username}'`);
      return loginPage(res, uid, clientName, { status: 401, message: 'Wrong user name or password.', username });
    }
    console.log(`login ${account.username} (${account.id})`);
    return provider.interactionFinished(req, res, { login: { accountId: account.id } }, { mergeWithLastSubmission: false });
  }
  if (prompt.name === 'consent') {
    const account = accounts.get(details.session.accountId);
    const d = prompt.details;
    const asked = [
      ...(d.missingOIDCScope || []),
      ...Object.values(d.missingResourceScopes || {}).flat(),
    ];
    if (req.method === 'GET' && !action) {
      console.log(`consent asked of ${account.username}: ${JSON.stringify({ reasons: prompt.reasons, details: d })}`);
      return consentPage(res, uid, clientName, account, asked);
    }
    if (req.method !== 'POST' || action !== 'consent') return page(res, 400, 'Bad request', '<p>Answer the consent first.</p>');
    const { decision } = await form(req);
    if (decision !== 'allow') {
      return provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'The user refused the permissions.' }, { mergeWithLastSubmission: false });
    }
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(d.missingResourceScopes || {})) grant.addResourceScope(indicator, scopes.join(' '));
    const grantId = await grant.save();
    console.log(`consent ${account.username}: ${asked.join(' ')}`);
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  return page(res, 400, 'Bad request', `<p>Unknown prompt ${escape(prompt.name)}.</p>`);
}

const handle = provider.callback();
const server = createServer(async (req, res) => {
  const m = new URL(req.url, ISSUER).pathname.match(/^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|consent))?$/);
  if (!m) return handle(req, res);
  try {
    await interaction(req, res, m[1], m[2]);
  } catch (e) {
    console.log(`interaction error: ${e.message}`);
    if (!res.headersSent) page(res, 400, 'Sign-in failed', `<p>${escape(e.error_description || e.message)}</p>`);
  }
});
server.listen(PORT, '127.0.0.1', () => console.log(`listening ${ISSUER}`));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
