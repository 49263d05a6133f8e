/**
 * `certstate serve --demo`: an engine that shows every part of the lifecycle
 * within minutes, with no network: a local CA issuing 3-minute certificates
 * (renewed live, every ~90 s), and one name whose "CA" refuses with an
 * ACME-style problem, to show failed-backoff, its error detail and "Retry now".
 */
import { localCaIssuer } from '../adapters/issuers/local-ca.js';
import { AcmeError } from '../errors.js';
import type { Issuer } from '../types.js';

/** Names the demo manages. */
export const DEMO_NAMES = ['demo.localhost', 'www.demo.localhost', 'api.demo.localhost', 'flaky.demo.localhost'];

/** The demo issuer: a local CA, except for `flaky.*` names, which it refuses. */
export function demoIssuer(): Issuer {
  const ca = localCaIssuer({ caId: 'demo', commonName: 'certstate demo CA', leafValidityMs: 3 * 60_000 });
  return {
    id: ca.id,
    async issue(request, context) {
      if (request.names.some((n) => n.startsWith('flaky.'))) {
        await new Promise((r) => setTimeout(r, 1500)); // long enough to watch the attempt in flight
        throw new AcmeError('authorization failed for flaky.demo.localhost', {
          problemType: 'urn:ietf:params:acme:error:connection',
          detail: 'demo CA: 127.0.0.1: Fetching http://flaky.demo.localhost/.well-known/acme-challenge/…: Connection refused',
          status: 403,
        });
      }
      return ca.issue(request, context);
    },
  };
}
