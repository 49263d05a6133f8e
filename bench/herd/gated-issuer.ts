/**
 * An issuer whose attempts the bench ends at a moment of its choosing, so
 * "time from the attempt's end" has an exact start: `settle()` resolves (with
 * a certificate minted in advance, so no signing happens inside the timed
 * window) or rejects the attempt in flight.
 */
import { IssuanceError } from '../../src/errors.js';
import type { CertificateBundle, IssueContext, IssueRequest, Issuer } from '../../src/types.js';

export interface GatedIssuer extends Issuer {
  /** `issue()` calls so far: the issuance attempts that reached the CA. */
  readonly calls: number;
  /** Resolves once an attempt is waiting to be settled. */
  untilPending(timeoutMs?: number): Promise<void>;
  /** End the pending attempt: with `bundle`, or with a CA error. Returns `performance.now()` just before. */
  settle(outcome: { bundle: CertificateBundle } | { error: string }): number;
}

export function gatedIssuer(id = 'bench:gated'): GatedIssuer {
  let calls = 0;
  let pending: { resolve(b: CertificateBundle): void; reject(e: unknown): void } | undefined;
  let onPending: (() => void) | undefined;
  return {
    id,
    get calls() {
      return calls;
    },
    issue(_request: IssueRequest, context: IssueContext): Promise<CertificateBundle> {
      calls++;
      return new Promise<CertificateBundle>((resolve, reject) => {
        pending = { resolve, reject };
        context.signal.addEventListener('abort', () => reject(context.signal.reason), { once: true });
        onPending?.();
      });
    },
    untilPending(timeoutMs = 30_000) {
      if (pending) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('gated issuer: no attempt reached the issuer')), timeoutMs);
        onPending = () => {
          clearTimeout(timer);
          onPending = undefined;
          resolve();
        };
      });
    },
    settle(outcome) {
      const p = pending;
      if (!p) throw new Error('gated issuer: no attempt to settle');
      pending = undefined;
      const at = performance.now();
      if ('bundle' in outcome) p.resolve(outcome.bundle);
      else p.reject(new IssuanceError(outcome.error, { code: 'ERR_BENCH_CA_DOWN' }));
      return at;
    },
  };
}
