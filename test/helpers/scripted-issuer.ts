/**
 * A test issuer whose outcomes the test decides: each `issue()` call becomes a
 * pending attempt that the test settles (`succeed`, `fail`), or that settles
 * itself in `auto` mode. Successful attempts return real certificates from a
 * local CA (so the engine parses, stores and serves them for real), signed
 * with one shared leaf key to keep tests fast.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { localCaIssuer } from '../../src/adapters/issuers/local-ca.js';
import { IssuanceError } from '../../src/errors.js';
import type { CertificateBundle, IssueContext, IssueRequest, Issuer } from '../../src/types.js';

let sharedLeafKey: KeyObject | undefined;
/** One RSA key reused by every test leaf: key generation dominates issuance time otherwise. */
export function testLeafKey(): KeyObject {
  return (sharedLeafKey ??= generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey);
}

export type AutoOutcome =
  | { kind: 'succeed'; delayMs?: number }
  | { kind: 'fail'; delayMs?: number; retryAfter?: number; message?: string }
  | { kind: 'hang' };

interface Pending {
  request: IssueRequest;
  context: IssueContext;
  resolve(bundle: CertificateBundle): void;
  reject(error: unknown): void;
}

export interface ScriptedIssuer extends Issuer {
  /** Number of `issue()` calls so far. */
  readonly calls: number;
  /** Attempts in flight right now, and the most ever at once. */
  readonly inflight: number;
  readonly maxInflight: number;
  /** Requests seen, in order. */
  readonly requests: IssueRequest[];
  /** Settle mode for new calls: `manual` waits for succeed()/fail(). */
  mode: 'manual' | AutoOutcome;
  /** Settle the oldest pending attempt with a certificate (issued as if the CA's clock were `shiftMs` off ours). */
  succeed(shiftMs?: number): Promise<void>;
  /** Settle the oldest pending attempt with an error. */
  fail(message?: string, retryAfter?: number): void;
  /** Resolves when at least `n` attempts are pending. */
  untilPending(n?: number): Promise<void>;
  readonly pending: number;
}

/** Create a scripted issuer with leaves valid for `validityMs`. */
export function scriptedIssuer(options: { validityMs?: number; id?: string; mode?: ScriptedIssuer['mode'] } = {}): ScriptedIssuer {
  const ca = localCaIssuer({ leafValidityMs: options.validityMs ?? 90 * 86_400_000, leafKey: testLeafKey() });
  const pending: Pending[] = [];
  const requests: IssueRequest[] = [];
  const pendingWaiters: Array<{ n: number; resolve(): void }> = [];
  let calls = 0;
  let inflight = 0;
  let maxInflight = 0;
  let failures = 0;

  const notifyPending = () => {
    for (const w of [...pendingWaiters]) {
      if (pending.length >= w.n) {
        pendingWaiters.splice(pendingWaiters.indexOf(w), 1);
        w.resolve();
      }
    }
  };
  const take = () => {
    const p = pending.shift();
    if (!p) throw new Error('scripted issuer: no pending attempt');
    return p;
  };
  const failure = (message?: string, retryAfter?: number) =>
    new IssuanceError(message ?? `scripted failure #${++failures}`, { code: 'ERR_SCRIPTED', retryAfter });

  const issuer: ScriptedIssuer = {
    id: options.id ?? 'scripted',
    mode: options.mode ?? 'manual',
    get calls() {
      return calls;
    },
    get inflight() {
      return inflight;
    },
    get maxInflight() {
      return maxInflight;
    },
    get pending() {
      return pending.length;
    },
    requests,
    issue(request, context) {
      calls++;
      inflight++;
      maxInflight = Math.max(maxInflight, inflight);
      requests.push(request);
      const done = <T>(p: Promise<T>) => p.finally(() => inflight--);
      const mode = issuer.mode;
      if (mode === 'manual' || mode.kind === 'hang') {
        return done(
          new Promise<CertificateBundle>((resolve, reject) => {
            const entry: Pending = { request, context, resolve, reject };
            if (mode === 'manual') pending.push(entry);
            context.signal.addEventListener('abort', () => {
              const i = pending.indexOf(entry);
              if (i >= 0) pending.splice(i, 1);
              reject(context.signal.reason);
            });
            notifyPending();
          }),
        );
      }
      const settle = async () => {
        if (mode.delayMs) await new Promise((r) => setTimeout(r, mode.delayMs));
        if (mode.kind === 'fail') throw failure(mode.message, mode.retryAfter);
        return ca.issue(request, context);
      };
      return done(settle());
    },
    async succeed(shiftMs = 0) {
      const p = take();
      try {
        p.resolve(await ca.issue(p.request, shiftMs === 0 ? p.context : { ...p.context, now: () => p.context.now() + shiftMs }));
      } catch (error) {
        p.reject(error);
      }
    },
    fail(message, retryAfter) {
      take().reject(failure(message, retryAfter));
    },
    untilPending(n = 1) {
      if (pending.length >= n) return Promise.resolve();
      return new Promise<void>((resolve) => pendingWaiters.push({ n, resolve }));
    },
  };
  return issuer;
}

let templateCa: Promise<Array<[string, string]>> | undefined;
/**
 * Copy one process-wide test CA into `storage`, so each test storage does not
 * pay for generating a CA key (~100 ms) on its first issuance.
 */
export async function installTestCa(storage: import('../../src/types.js').Storage): Promise<void> {
  templateCa ??= (async () => {
    const { memoryStorage } = await import('../../src/adapters/storage/memory.js');
    const { localCaCertificate } = await import('../../src/adapters/issuers/local-ca.js');
    const template = memoryStorage();
    await localCaCertificate(template);
    const entries: Array<[string, string]> = [];
    for (const key of await template.list('local-ca/')) entries.push([key, (await template.load(key))!]);
    return entries;
  })();
  for (const [key, value] of await templateCa) await storage.store(key, value);
}

/**
 * `storage` (a fresh memory storage by default) with the test CA and a valid
 * certificate for each of `names`, issued at `clock.now()` by an engine that
 * is stopped again: what a process finds at start-up after another ran.
 */
export async function seededStorage(
  names: string[],
  clock: import('../../src/clock.js').ManualClock,
  storage?: import('../../src/types.js').Storage,
): Promise<import('../../src/types.js').Storage> {
  const { memoryStorage } = await import('../../src/adapters/storage/memory.js');
  const { createCertEngine } = await import('../../src/engine/engine.js');
  const seededInto = storage ?? memoryStorage();
  await installTestCa(seededInto);
  const seeder = createCertEngine({ storage: seededInto, issuers: [scriptedIssuer({ mode: { kind: 'succeed' } })], names, clock });
  await seeder.start();
  await Promise.all(names.map((n) => seeder.getCertificate(n)));
  await seeder.stop();
  return seededInto;
}
