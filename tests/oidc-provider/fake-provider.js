// A deliberately broken OpenID provider for the controller's tests: discovery, a JWKS and a
// token endpoint that hands out crafted ID tokens, because a certified provider never makes
// bad ones. No npm dependencies. The test, acting as the browser, adds `mode=<attack>` to the
// authorization request; the code this returns carries the mode and the request's nonce.
//
// Test hooks: GET /test/counts says how often discovery and the JWKS were fetched (to
// check the controller caches them); POST /test/rotate makes a new signing key (published
// next to the old one, and used from then on) to check that an unknown key id refreshes the
// cached keys.
//
// modes: good, mixup (wrong `iss` response parameter), wrong_nonce, wrong_aud, wrong_iss, expired, unknown_kid, alg_none, bad_signature
// usage: node fake-provider.js <client_id>
// prints one line `issuer <url>` on stdout once it listens.
import http from 'node:http';
import crypto from 'node:crypto';

const [clientId] = process.argv.slice(2);
const first = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const other = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const publish = (pair, kid) => ({ ...pair.publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' });
const jwks = [publish(first, 'test-key')];
let signing = { privateKey: first.privateKey, kid: 'test-key' };
const counts = { discovery: 0, jwks: 0, token: 0 };

const b64 = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

function idToken(issuer, mode, nonce) {
  const now = Math.floor(Date.now() / 1000);
  const header = { alg: 'RS256', typ: 'JWT', kid: signing.kid };
  const claims = {
    iss: issuer, sub: 'mallory', aud: clientId, iat: now, exp: now + 300, nonce,
    email: 'mallory@example.com', name: 'Mallory', groups: ['engineering'],
  };
  let key = signing.privateKey;
  switch (mode) {
    case 'wrong_nonce': claims.nonce = 'not-the-nonce'; break;
    case 'wrong_aud': claims.aud = 'some-other-client'; break;
    case 'wrong_iss': claims.iss = 'http://127.0.0.1:9/evil'; break;
    case 'expired': claims.iat = now - 7200; claims.exp = now - 3600; break;
    case 'unknown_kid': header.kid = 'unknown-key'; key = other.privateKey; break;
    case 'bad_signature': key = other.privateKey; break;
    case 'alg_none': header.alg = 'none'; delete header.kid; break;
    default: break;
  }
  const input = `${b64(header)}.${b64(claims)}`;
  if (header.alg === 'none') return `${input}.`;
  const sig = crypto.sign('sha256', Buffer.from(input), key).toString('base64url');
  return `${input}.${sig}`;
}

const server = http.createServer((req, res) => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const url = new URL(req.url, issuer);
  const json = (status, body) => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(body));
  };
  if (url.pathname === '/test/counts') return json(200, counts);
  if (url.pathname === '/test/rotate' && req.method === 'POST') {
    const pair = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    const kid = `test-key-${jwks.length + 1}`;
    jwks.push(publish(pair, kid));
    signing = { privateKey: pair.privateKey, kid };
    return json(200, { kid });
  }
  if (url.pathname === '/.well-known/openid-configuration') {
    counts.discovery += 1;
    return json(200, {
      issuer,
      authorization_endpoint: `${issuer}/authorize`,
      token_endpoint: `${issuer}/token`,
      jwks_uri: `${issuer}/jwks`,
      response_types_supported: ['code'],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: ['RS256'],
      code_challenge_methods_supported: ['S256'],
      token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
    });
  }
  if (url.pathname === '/jwks') {
    counts.jwks += 1;
    return json(200, { keys: jwks });
  }
  if (url.pathname === '/authorize') {
    const q = url.searchParams;
    const code = b64({ mode: q.get('mode') || 'good', nonce: q.get('nonce') });
    const to = new URL(q.get('redirect_uri'));
    to.searchParams.set('code', code);
    to.searchParams.set('state', q.get('state'));
    // A mix-up attack: the response claims to come from another issuer (RFC 9207).
    if (q.get('mode') === 'mixup') to.searchParams.set('iss', 'http://127.0.0.1:9/evil');
    res.writeHead(303, { location: to.toString() });
    return res.end();
  }
  if (url.pathname === '/token' && req.method === 'POST') {
    counts.token += 1;
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      const form = new URLSearchParams(body);
      if (!form.get('code_verifier')) return json(400, { error: 'invalid_grant', error_description: 'PKCE verifier missing' });
      let code;
      try { code = JSON.parse(Buffer.from(form.get('code'), 'base64url').toString()); } catch { return json(400, { error: 'invalid_grant' }); }
      return json(200, {
        access_token: 'fake-access-token', token_type: 'Bearer', expires_in: 300,
        id_token: idToken(issuer, code.mode, code.nonce),
      });
    });
    return undefined;
  }
  return json(404, { error: 'not_found' });
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`issuer http://127.0.0.1:${server.address().port}\n`);
});
