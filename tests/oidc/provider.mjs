// A real OpenID Connect provider (oidc-provider 8) on 127.0.0.1 for
// doorwatch's end-to-end tests. One confidential client (client_secret_basic
// or client_secret_post), authorization code flow with PKCE (S256) required,
// scopes `openid profile email groups`, and the `groups`, `name` and `email`
// claims in the ID token.
//
//   node provider.mjs --port 0 --client-id ID --client-secret SECRET \
//     --redirect-uri URI [--redirect-uri URI ...] \
//     --post-logout-redirect-uri URI [--id-token-ttl SECONDS]
//
// Prints `oidc provider listening on http://127.0.0.1:PORT` once ready and
// runs until SIGTERM or SIGINT.
//
// Users: ada (doorwatch-admins), alice (doorwatch-analysts), victor
// (doorwatch-viewers), nobody (no groups). Any password is accepted; an
// unknown user name is refused on the login page.
//
// Pages (selectors the browser driver's `login` macro uses):
//   login:   form#login with input[name=login], input[name=password],
//            button#login-submit; a refused user shows #login-error
//   consent: form#consent with button#consent-continue ("Continue")
//   logout:  /session/end?client_id=..&post_logout_redirect_uri=..
//            signs out at once (the confirmation form submits itself) and
//            redirects to post_logout_redirect_uri; without script, click
//            button#logout-confirm
//
// No page loads anything from elsewhere (no web fonts, no CDN).

import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { parseArgs } from 'node:util';

import * as jose from 'jose';
import Provider, { errors } from 'oidc-provider';
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    'redirect-uri': { type: 'string', multiple: true },
    'post-logout-redirect-uri': { type: 'string', multiple: true },
    'id-token-ttl': { type: 'string', default: '3600' },
  },
  strict: true,
});

function fail(message) {
  process.stderr.write(`provider.mjs: ${message}\n`);
  process.exit(2);
}

if (!args['client-id'] || !args['client-secret'] || !args['redirect-uri']?.length) {
  fail('--client-id, --client-secret and --redirect-uri are required');
}
const idTokenTtl = Number(args['id-token-ttl']);
if (!Number.isInteger(idTokenTtl) || idTokenTtl <= 0) fail('--id-token-ttl must be a positive integer');

const USERS = {
  ada: { name: 'Ada Admin', groups: ['doorwatch-admins'] },
  alice: { name: 'Alice Analyst', groups: ['doorwatch-analysts'] },
  victor: { name: 'Victor Viewer', groups: ['doorwatch-viewers'] },
  nobody: { name: 'Nobody Member', groups: [] },
};

function account(id) {
  const user = Object.hasOwn(USERS, id) ? USERS[id] : undefined;
  if (!user) return undefined;
  return {
    accountId: id,
    async claims() {
      return { sub: id, name: user.name, email: `${id}@campus.test`, groups: user.groups };
    },
  };
}

// ---- tiny HTML pages --------------------------------------------------------

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body, script) {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escape(title)}</title>
<link rel="icon" href="data:,">
<style>body{font-family:sans-serif;max-width:24rem;margin:3rem auto}input,button{display:block;box-sizing:border-box;width:100%;margin:.5rem 0;padding:.4rem}#login-error{color:#b00}</style>
</head>
<body>
<h1>${escape(title)}</h1>
${body}
${script ? `<script>${script}</script>` : ''}
</body>
</html>`;
}

function loginPage(uid, clientId, error) {
  return page('Sign in to the campus IdP', `
<p>Signing in to <b>${escape(clientId)}</b>.</p>
${error ? `<p id="login-error" role="alert">${escape(error)}</p>` : ''}
<form id="login" method="post" action="/interaction/${escape(uid)}/login" autocomplete="off">
<input name="login" placeholder="user name" autofocus required>
<input name="password" type="password" placeholder="any password">
<button id="login-submit" type="submit">Sign in</button>
</form>
<form method="post" action="/interaction/${escape(uid)}/abort"><button id="login-abort" type="submit">Cancel</button></form>`);
}

function consentPage(uid, clientId, scopes) {
  return page('Authorize', `
<p><b>${escape(clientId)}</b> asks for: ${escape(scopes.join(' '))}</p>
<form id="consent" method="post" action="/interaction/${escape(uid)}/confirm">
<button id="consent-continue" type="submit">Continue</button>
</form>
<form method="post" action="/interaction/${escape(uid)}/abort"><button id="consent-abort" type="submit">Deny</button></form>`);
}

// The logout confirmation submits itself with logout=yes, so an RP-initiated
// logout ends the session without a click. The inline script is allowed by
// a hash in this page's own CSP.
const AUTO_SUBMIT = "document.getElementById('op.logoutForm').submit();";
const AUTO_SUBMIT_CSP = `default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-${createHash('sha256').update(AUTO_SUBMIT).digest('base64')}'`;

async function logoutSource(ctx, form) {
  const withYes = form.replace('</form>', '<input type="hidden" name="logout" value="yes"/><button id="logout-confirm" type="submit">Yes, sign me out</button></form>');
  ctx.set('Content-Security-Policy', AUTO_SUBMIT_CSP);
  ctx.body = page('Signing out', withYes, AUTO_SUBMIT);
}

async function postLogoutSuccessSource(ctx) {
  ctx.body = page('Signed out', '<p id="signed-out">You are signed out.</p>');
}

async function renderError(ctx, out) {
  ctx.type = 'html';
  ctx.body = page('Error', `<pre id="error">${escape(`${out.error}: ${out.error_description ?? ''}`)}</pre>`);
}

// ---- server -----------------------------------------------------------------

const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(args.port), '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signingKey = { ...(await jose.exportJWK(privateKey)), kid: randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  // The built-in in-memory store; a subclass, so it doesn't warn about it.
  adapter: class TestAdapter extends MemoryAdapter {},
  clients: [{
    client_id: args['client-id'],
    client_secret: args['client-secret'],
    redirect_uris: args['redirect-uri'],
    post_logout_redirect_uris: args['post-logout-redirect-uri'] ?? [],
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'client_secret_basic', // client_secret_post works too
    id_token_signed_response_alg: 'RS256',
  }],
  clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: { openid: ['sub'], profile: ['name'], email: ['email'], groups: ['groups'] },
  conformIdTokenClaims: false,
  findAccount: (ctx, id) => account(id),
  pkce: { methods: ['S256'], required: () => true },
  responseTypes: ['code'],
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: { enabled: true, logoutSource, postLogoutSuccessSource },
    userinfo: { enabled: true },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  renderError,
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    IdToken: idTokenTtl,
    Interaction: 3600,
    Session: 3600,
    Grant: 3600,
  },
});
provider.on('server_error', (ctx, err) => process.stderr.write(`server_error: ${err.stack}\n`));

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 64 * 1024) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

function sendHtml(res, html) {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

// GET  /interaction/UID          the login or consent page
// POST /interaction/UID/login    login=USER&password=ANY
// POST /interaction/UID/confirm  consent
// POST /interaction/UID/abort    access_denied back to the client
async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new errors.SessionNotFound('interaction mismatch');
  const { prompt, params, session } = details;

  if (req.method === 'GET' && !action) {
    if (prompt.name === 'login') return sendHtml(res, loginPage(uid, params.client_id));
    return sendHtml(res, consentPage(uid, params.client_id, String(params.scope ?? '').split(' ')));
  }
  if (req.method !== 'POST') {
    res.writeHead(405).end();
    return undefined;
  }
  if (action === 'login') {
    const form = await readForm(req);
    const user = form.get('login') ?? '';
    if (prompt.name !== 'login') throw new errors.InvalidRequest('not at the login prompt');
    if (!account(user)) return sendHtml(res, loginPage(uid, params.client_id, `unknown user ${JSON.stringify(user)}`));
    return provider.interactionFinished(req, res, { login: { accountId: user } }, { mergeWithLastSubmission: false });
  }
  if (action === 'confirm') {
    if (prompt.name !== 'consent') throw new errors.InvalidRequest('not at the consent prompt');
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    if (missing.missingResourceScopes) {
      for (const [indicator, scope] of Object.entries(missing.missingResourceScopes)) {
        grant.addResourceScope(indicator, scope.join(' '));
      }
    }
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  if (action === 'abort') {
    const result = { error: 'access_denied', error_description: 'End-User aborted interaction' };
    return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  }
  res.writeHead(404).end();
  return undefined;
}

const callback = provider.callback();
server.on('request', (req, res) => {
  const match = /^\/interaction\/([\w-]+)(?:\/(login|confirm|abort))?$/.exec(req.url.split('?')[0]);
  if (!match) return callback(req, res);
  return interaction(req, res, match[1], match[2]).catch((err) => {
    if (res.headersSent) return;
    res.writeHead(400, { 'content-type': 'text/html; charset=utf-8' });
    res.end(page('Error', `<pre id="error">${escape(err.message)}</pre>`));
  });
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}

process.stdout.write(`oidc provider listening on ${issuer}\n`);
