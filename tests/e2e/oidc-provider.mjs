// A one-user OpenID Connect provider for the end-to-end run with Vaultwarden's SSO
// (tests/e2e/vaultwarden-cli.sh). It plays the company's identity provider that
// Vaultwarden sends the user to: one client (Vaultwarden), one fixed user whose email is
// verified, and no pages: every login and consent prompt is answered at once for that user,
// so a script can follow the whole redirect chain with curl.
//
// It uses the `oidc-provider` npm package, found in the directory OIDC_PROVIDER_DIR (where
// `npm install oidc-provider` was run), and is configured from the environment:
//   OIDC_PORT           port to listen on (127.0.0.1)
//   OIDC_CLIENT_ID      Vaultwarden's SSO_CLIENT_ID
//   OIDC_CLIENT_SECRET  Vaultwarden's SSO_CLIENT_SECRET
//   OIDC_REDIRECT_URI   Vaultwarden's callback, {DOMAIN}/identity/connect/oidc-signin
//   OIDC_USER_EMAIL     the one user's email (also its subject, in a stable form)
// It prints "oidc-provider listening on <issuer>" once it accepts connections.

import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import path from 'node:path';

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`oidc-provider: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

const providerDir = required('OIDC_PROVIDER_DIR');
const port = Number(required('OIDC_PORT'));
const clientId = required('OIDC_CLIENT_ID');
const clientSecret = required('OIDC_CLIENT_SECRET');
const redirectUri = required('OIDC_REDIRECT_URI');
const email = required('OIDC_USER_EMAIL');

// The package is installed outside this repository: resolve it from its install directory.
const require = createRequire(path.join(path.resolve(providerDir), 'package.json'));
const { default: Provider } = await import(require.resolve('oidc-provider'));

const issuer = `http://127.0.0.1:${port}`;
const accountId = `e2e-${email.toLowerCase()}`;

const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 })
  .privateKey.export({ format: 'jwk' });

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [{ ...signingKey, alg: 'RS256', use: 'sig', kid: 'e2e' }] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
  },
  async findAccount(_ctx, id) {
    if (id !== accountId) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email,
          email_verified: true,
          name: 'E2E User',
          preferred_username: email.split('@')[0],
        };
      },
    };
  },
  // Vaultwarden forwards the client's PKCE challenge; accept it but do not demand it.
  pkce: { required: () => false },
  features: { devInteractions: { enabled: false } },
  ttl: { AccessToken: 3600, AuthorizationCode: 60, Grant: 3600, IdToken: 3600, Interaction: 600, Session: 3600 },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
});

// Answers the login prompt with the fixed user and grants every requested scope and claim,
// so the consent prompt never shows either.
async function completeInteraction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId, clientId: details.params.client_id });
  grant.addOIDCScope(String(details.params.scope ?? 'openid'));
  grant.addOIDCClaims(['email', 'email_verified', 'name', 'preferred_username']);
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, {
    login: { accountId },
    consent: { grantId },
  }, { mergeWithLastSubmission: false });
}

const callback = provider.callback();
const server = createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    completeInteraction(req, res).catch((err) => {
      console.error('oidc-provider: interaction failed:', err);
      res.writeHead(500).end(String(err));
    });
    return;
  }
  callback(req, res);
});

provider.on('server_error', (_ctx, err) => console.error('oidc-provider: server error:', err));

server.listen(port, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
