/**
 * The reference: acme-client's `auto()` placing the same orders directly
 * against Pebble, with no engine, no storage, no TLS server in the way:
 * key + CSR, order, HTTP-01 (served from a Map), finalize, download.
 *
 * Its polling is set to what `acmeIssuer` uses (first poll after `pollInitialMs`,
 * 20 ms by default, doubling, capped at 5 s) so that the comparison is of the code, not of
 * acme-client's 5-second default backoff.
 */
import https from 'node:https';
import acme from 'acme-client';

export interface AutoRunner {
  /** Obtain a certificate for `name`; resolves with the time it took (ms). */
  order(name: string): Promise<number>;
  close(): void;
}

export async function autoRunner(directoryUrl: string, caBundlePem: string, tokens: Map<string, string>, pollInitialMs = 20): Promise<AutoRunner> {
  // acme-client's axios instance is module-global (DESIGN.md §7): this bench is its only user in this process.
  const agent = new https.Agent({ ca: caBundlePem, keepAlive: true, maxSockets: 16 });
  acme.axios.defaults.httpsAgent = agent;
  const client = new acme.Client({
    directoryUrl,
    accountKey: await acme.crypto.createPrivateEcdsaKey(),
    backoffAttempts: 12,
    backoffMin: pollInitialMs,
    backoffMax: 5000,
  });
  return {
    async order(name) {
      const t0 = performance.now();
      const [, csr] = await acme.crypto.createCsr({ commonName: name }, await acme.crypto.createPrivateEcdsaKey());
      await client.auto({
        csr,
        email: 'bench@example.com',
        termsOfServiceAgreed: true,
        challengePriority: ['http-01'],
        // Bench names do not resolve here: only Pebble (through challtestsrv) can reach the server.
        skipChallengeVerification: true,
        challengeCreateFn: async (_authz, challenge, keyAuthorization) => {
          tokens.set(challenge.token, keyAuthorization);
        },
        challengeRemoveFn: async (_authz, challenge) => {
          tokens.delete(challenge.token);
        },
      });
      return performance.now() - t0;
    },
    close() {
      agent.destroy();
    },
  };
}
