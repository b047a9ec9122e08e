// A real OpenID Connect provider for e2e_oidc.rs: panva's oidc-provider (npm), installed by
// scripts/idp-tools.sh. One client `ci` (secret `ci-secret`) gets JWT access tokens by
// client_credentials, audience `bulkhead`, with the role bindings given on the command line in
// the `bulkhead_roles` claim. resource=urn:bulkhead:rs asks for RS256, anything else ES256.
// Usage: node idp.mjs PORT BINDING...   (listens on 127.0.0.1:PORT, prints "idp ready")
import Provider from 'oidc-provider';
import { generateKeyPairSync } from 'node:crypto';

const [port, roles] = [Number(process.argv[2]), process.argv.slice(3)];
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
Object.assign(ec, { kid: 'idp-es256', alg: 'ES256', use: 'sig' });
Object.assign(rsa, { kid: 'idp-rs256', alg: 'RS256', use: 'sig' });

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: 'ci', client_secret: 'ci-secret', grant_types: ['client_credentials'],
    redirect_uris: [], response_types: [],
  }],
  jwks: { keys: [rsa, ec] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:bulkhead:es',
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => ({
        scope: 'nodes',
        audience: 'bulkhead',
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: resource === 'urn:bulkhead:rs' ? 'RS256' : 'ES256' } },
      }),
    },
  },
  extraTokenClaims: () => ({ bulkhead_roles: roles }),
});
provider.listen(port, '127.0.0.1', () => console.log('idp ready'));
