// A misbehaving OpenID Connect provider on 127.0.0.1 for doorwatch's
// negative tests: it signs everyone in as "mallory" of doorwatch-admins, at
// once, and in some modes hands out an ID token the console must refuse.
//
//   node rogue-idp.mjs --port 0 --mode MODE --client-id ID
//
// MODE:
//   ok            a valid ID token (so a test can show the console accepts
//                 this IdP when it behaves)
//   wrong-nonce   the ID token's nonce is not the one the client sent
//   expired       iat two hours ago, exp one hour ago
//   other-issuer  iss is http://127.0.0.1:1/not-the-issuer
//   userinfo-groups  a valid ID token without groups; only /userinfo (with
//                 an access token this IdP issued) says them
//
// Endpoints: /.well-known/openid-configuration, /jwks, /authorize (302 back
// to redirect_uri with code and state, no login page), /token (any client
// secret, basic or post; checks the code and, when a code_challenge was
// sent, the PKCE verifier), /userinfo.
//
// Prints `rogue idp listening on http://127.0.0.1:PORT` once ready and runs
// until SIGTERM or SIGINT.

import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { parseArgs } from 'node:util';

import * as jose from 'jose';

const MODES = ['ok', 'wrong-nonce', 'expired', 'other-issuer', 'userinfo-groups'];

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    mode: { type: 'string', default: 'ok' },
    'client-id': { type: 'string' },
  },
  strict: true,
});
if (!MODES.includes(args.mode) || !args['client-id']) {
  process.stderr.write(`rogue-idp.mjs: --client-id is required and --mode one of ${MODES.join(', ')}\n`);
  process.exit(2);
}
const clientId = args['client-id'];

const kid = randomBytes(8).toString('hex');
const { privateKey, publicKey } = await jose.generateKeyPair('RS256', { extractable: true });
const jwks = { keys: [{ ...(await jose.exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' }] };

const codes = new Map(); // code -> { nonce, codeChallenge }
const accessTokens = new Set();
const random = () => randomBytes(16).toString('base64url');

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 64 * 1024) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

async function idToken(issuer, nonce) {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    sub: 'mallory',
    name: 'Mallory Rogue',
    email: 'mallory@campus.test',
    groups: ['doorwatch-admins'],
  };
  if (args.mode === 'userinfo-groups') delete claims.groups;
  let iss = issuer;
  let iat = now;
  let exp = now + 300;
  if (args.mode === 'wrong-nonce') nonce = `not-${nonce ?? 'sent'}-${random()}`;
  if (args.mode === 'expired') [iat, exp] = [now - 7200, now - 3600];
  if (args.mode === 'other-issuer') iss = 'http://127.0.0.1:1/not-the-issuer';
  if (nonce !== undefined) claims.nonce = nonce;
  return new jose.SignJWT(claims)
    .setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' })
    .setIssuer(iss)
    .setAudience(clientId)
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .sign(privateKey);
}

async function handle(req, res, issuer) {
  const url = new URL(req.url, issuer);
  switch (url.pathname) {
    case '/.well-known/openid-configuration':
      return json(res, 200, {
        issuer,
        authorization_endpoint: `${issuer}/authorize`,
        token_endpoint: `${issuer}/token`,
        jwks_uri: `${issuer}/jwks`,
        userinfo_endpoint: `${issuer}/userinfo`,
        response_types_supported: ['code'],
        subject_types_supported: ['public'],
        id_token_signing_alg_values_supported: ['RS256'],
        scopes_supported: ['openid', 'profile', 'email', 'groups'],
        token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
        code_challenge_methods_supported: ['S256'],
        grant_types_supported: ['authorization_code'],
        claims_supported: ['sub', 'name', 'email', 'groups', 'nonce'],
      });
    case '/jwks':
      return json(res, 200, jwks);
    case '/authorize': {
      const q = url.searchParams;
      let target;
      try {
        target = new URL(q.get('redirect_uri') ?? '');
      } catch {
        return json(res, 400, { error: 'invalid_request', error_description: 'redirect_uri missing or invalid' });
      }
      if (q.get('client_id') !== clientId) {
        return json(res, 400, { error: 'invalid_client', error_description: 'unknown client_id' });
      }
      const code = random();
      codes.set(code, { nonce: q.get('nonce') ?? undefined, codeChallenge: q.get('code_challenge') ?? undefined });
      target.searchParams.set('code', code);
      if (q.has('state')) target.searchParams.set('state', q.get('state'));
      res.writeHead(302, { location: target.href, 'cache-control': 'no-store' });
      return res.end();
    }
    case '/token': {
      if (req.method !== 'POST') return json(res, 405, { error: 'invalid_request' });
      const form = await readForm(req);
      const entry = codes.get(form.get('code') ?? '');
      codes.delete(form.get('code') ?? '');
      if (form.get('grant_type') !== 'authorization_code' || !entry) {
        return json(res, 400, { error: 'invalid_grant', error_description: 'unknown or used code' });
      }
      if (entry.codeChallenge) {
        const verifier = form.get('code_verifier') ?? '';
        if (createHash('sha256').update(verifier).digest('base64url') !== entry.codeChallenge) {
          return json(res, 400, { error: 'invalid_grant', error_description: 'PKCE verification failed' });
        }
      }
      const accessToken = random();
      accessTokens.add(accessToken);
      return json(res, 200, {
        access_token: accessToken,
        token_type: 'Bearer',
        expires_in: 300,
        scope: 'openid profile email groups',
        id_token: await idToken(issuer, entry.nonce),
      });
    }
    case '/userinfo': {
      const bearer = (req.headers.authorization ?? '').replace(/^Bearer /, '');
      if (!accessTokens.has(bearer)) return json(res, 401, { error: 'invalid_token' });
      return json(res, 200, { sub: 'mallory', name: 'Mallory Rogue', email: 'mallory@campus.test', groups: ['doorwatch-admins'] });
    }
    default:
      return json(res, 404, { error: 'not_found' });
  }
}

const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(args.port), '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;
server.on('request', (req, res) => {
  handle(req, res, issuer).catch((err) => {
    process.stderr.write(`rogue idp: ${err.stack}\n`);
    if (!res.headersSent) json(res, 500, { error: 'server_error' });
  });
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}

process.stdout.write(`rogue idp listening on ${issuer}\n`);
