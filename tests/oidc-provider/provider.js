// A real OpenID provider for the controller's tests: the certified `oidc-provider` package on
// 127.0.0.1 (a free port), with one confidential client and a few users with group claims.
// There are no login pages: the interaction signs in the user named by `login_hint`
// (default "alice") and grants consent at once, so a test drives the whole flow over HTTP.
//
// `PUT /test/groups/<user>?groups=a,b` changes a user's groups claim (tests of the refresh).
// usage: node provider.js <redirect_uri> <client_id> <client_secret>
// prints one line `issuer <url>` on stdout once it listens.
import http from 'node:http';
import Provider from 'oidc-provider';

const [redirectUri, clientId, clientSecret] = process.argv.slice(2);
if (!redirectUri || !clientId || !clientSecret) {
  console.error('usage: node provider.js <redirect_uri> <client_id> <client_secret>');
  process.exit(2);
}

const USERS = {
  alice: { email: 'alice@example.com', name: 'Alice', groups: ['engineering', 'everyone'], amr: ['pwd', 'otp', 'mfa'] },
  bob: { email: 'bob@example.com', name: 'Bob', groups: ['sales'], amr: ['pwd'] },
  carol: { email: 'carol@example.com', name: 'Carol', groups: [], amr: ['pwd'] },
};

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUri.split(','),
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    pkce: { required: () => true },
    conformIdTokenClaims: false,
    claims: {
      // amr, acr and auth_time ride with the openid scope, so every ID token shows how and
      // when the user signed in (the controller records MFA from them).
      openid: ['sub', 'amr', 'acr', 'auth_time'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    scopes: ['openid', 'email', 'profile', 'groups'],
    features: { devInteractions: { enabled: false } },
    async findAccount(_ctx, id) {
      const user = USERS[id];
      if (!user) return undefined;
      return {
        accountId: id,
        async claims() {
          return { sub: id, email: user.email, email_verified: true, name: user.name, groups: user.groups };
        },
      };
    },
  });

  const callback = provider.callback();
  server.on('request', async (req, res) => {
    // Test control: `PUT /test/groups/<user>?groups=a,b` changes a user's group claim.
    if (req.url.startsWith('/test/groups/') && req.method === 'PUT') {
      const url = new URL(req.url, issuer);
      const user = USERS[url.pathname.split('/')[3]];
      if (!user) { res.statusCode = 404; res.end(); return; }
      user.groups = (url.searchParams.get('groups') || '').split(',').filter(Boolean);
      res.statusCode = 204;
      res.end();
      return;
    }
    if (req.url.startsWith('/interaction/')) {
      try {
        const details = await provider.interactionDetails(req, res);
        const { prompt, params, session } = details;
        if (prompt.name === 'login') {
          const accountId = params.login_hint || 'alice';
          const user = USERS[accountId];
          if (!user) {
            await provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'no such test user' }, { mergeWithLastSubmission: false });
            return;
          }
          await provider.interactionFinished(req, res, { login: { accountId, amr: user.amr } }, { mergeWithLastSubmission: false });
          return;
        }
        const grant = details.grantId
          ? await provider.Grant.find(details.grantId)
          : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
        if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
        if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
        const grantId = await grant.save();
        await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
      } catch (e) {
        res.statusCode = 500;
        res.end(String(e));
      }
      return;
    }
    callback(req, res);
  });
  process.stdout.write(`issuer ${issuer}\n`);
});
