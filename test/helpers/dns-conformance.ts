/**
 * The contract every `DnsProvider` must meet, as node:test cases (like
 * storage-conformance.ts for storages). It uses only the `DnsProvider`
 * interface plus what the fixture reads back from the backend itself (BIND,
 * a contract server's records), so any provider can run it:
 *
 *   runDnsProviderConformance('rfc2136', async () => fixture);
 *
 * Record names are unique per test (`_acme-challenge.<test>.<zone>`).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { describe, it } from 'node:test';
import pino from 'pino';
import { DnsError } from '../../src/errors.js';
import type { DnsProvider } from '../../src/adapters/challenges/dns-01.js';
import { within } from './storage-conformance.js';

/** A provider under test and the means to look behind it. */
export interface DnsProviderFixture {
  /** The provider under test. */
  provider: DnsProvider;
  /** A zone the provider may write to. */
  zone: string;
  /** TXT values the backend holds at `fqdn` now (read from the backend, not through the provider). */
  published(fqdn: string): Promise<string[]>;
  /** The same provider with wrong credentials: every write must fail. */
  withBadCredentials(): DnsProvider;
  /** The same provider pointed at a backend that accepts connections and never answers; its `requestTimeoutMs` is at most 1 s. */
  hanging(): DnsProvider;
  /** Credentials that must never appear in an error or a log line. */
  secrets: string[];
  /** What the providers of this fixture logged so far (their `logger` option). */
  logs(): string;
  /**
   * Why the backend cannot delete a value (acme-dns keeps the two newest and
   * has no delete): removals are then checked to leave the other values, not
   * to take their own.
   */
  cannotDelete?: string;
  cleanup?(): Promise<void>;
}

/** Everything a caller could see of an error: message, stack, fields, causes. */
function everythingIn(error: unknown): string {
  return `${inspect(error, { depth: 10, showHidden: true })}\n${error instanceof Error ? error.stack : ''}\n${JSON.stringify(error)}`;
}

function assertNoSecrets(text: string, secrets: string[], where: string): void {
  for (const secret of secrets) assert.ok(!text.includes(secret), `${where} contains a credential (${secret.slice(0, 3)}…)`);
}

/** A pino logger at debug level writing into a string: what a provider logged, for the secrets check. */
export function capturingLogger() {
  let text = '';
  return { logger: pino({ level: 'debug' }, { write: (line: string) => void (text += line) }), logs: () => text };
}

let counter = 0;

/** A value shaped like a real one (base64url of a SHA-256 digest: 43 characters). */
const value = () => randomBytes(32).toString('base64url');

/** Register the conformance tests for one provider. */
export function runDnsProviderConformance(label: string, makeFixture: () => Promise<DnsProviderFixture>): void {
  const withFixture = (fn: (f: DnsProviderFixture, name: string) => Promise<void>) => async () => {
    const fixture = await makeFixture();
    const name = `_acme-challenge.c${process.pid}-${++counter}.${fixture.zone}`;
    try {
      await fn(fixture, name);
      assertNoSecrets(fixture.logs(), fixture.secrets, `${label} logs`);
    } finally {
      await fixture.cleanup?.();
    }
  };
  const sorted = (values: string[]) => [...values].sort();

  describe(`DNS provider conformance: ${label}`, { timeout: 60_000 }, () => {
    /** After a removal: exactly `remaining` — or, for a backend that cannot delete, at least `remaining`. */
    const expectAfterRemoval = async (f: DnsProviderFixture, name: string, remaining: string[]) => {
      const published = sorted(await f.published(name));
      if (f.cannotDelete) for (const v of remaining) assert.ok(published.includes(v), `${v} still published (${f.cannotDelete})`);
      else assert.deepEqual(published, sorted(remaining));
    };

    it('two values at one name at once (apex + wildcard): both stand; each removal takes exactly its own', withFixture(async (f, name) => {
      const [apex, wildcard] = [value(), value()];
      await Promise.all([f.provider.set(name, apex), f.provider.set(name, wildcard)]);
      if (f.provider.waitForPropagation) await Promise.all([f.provider.waitForPropagation(name, apex), f.provider.waitForPropagation(name, wildcard)]);
      assert.deepEqual(sorted(await f.published(name)), sorted([apex, wildcard]));
      await f.provider.remove(name, apex);
      await expectAfterRemoval(f, name, [wildcard]);
      await f.provider.remove(name, wildcard);
      await expectAfterRemoval(f, name, []);
    }));

    it('set is idempotent: the same value twice stands once, and one removal takes it', withFixture(async (f, name) => {
      const v = value();
      await f.provider.set(name, v);
      await f.provider.set(name, v);
      assert.deepEqual(await f.published(name), [v]);
      await f.provider.remove(name, v);
      await expectAfterRemoval(f, name, []);
    }));

    it('removing a value that is not there resolves and leaves the others', withFixture(async (f, name) => {
      const kept = value();
      await f.provider.remove(name, value());
      await f.provider.set(name, kept);
      await f.provider.remove(name, value());
      assert.deepEqual(await f.published(name), [kept]);
      await f.provider.remove(name, kept);
    }));

    it('cleanup after a failed attempt: a value whose set or propagation was abandoned is still removed', withFixture(async (f, name) => {
      const [first, second] = [value(), value()];
      // Abandoned while waiting for propagation (the attempt failed elsewhere).
      await f.provider.set(name, first);
      const waiting = new AbortController();
      const wait = f.provider.waitForPropagation?.(name, value(), { signal: waiting.signal });
      waiting.abort(new Error('attempt abandoned'));
      await wait?.catch(() => undefined);
      // Abandoned while the write itself was in flight: it may or may not have landed.
      const writing = new AbortController();
      const set = f.provider.set(name, second, { signal: writing.signal });
      await Promise.resolve();
      writing.abort(new Error('attempt abandoned'));
      await set.catch(() => undefined);
      // The order flow's cleanup: no signal.
      await f.provider.remove(name, first);
      await f.provider.remove(name, second);
      await expectAfterRemoval(f, name, []);
    }));

    it('an aborted signal is honoured: nothing is written, and a hanging backend is let go at once', withFixture(async (f, name) => {
      const reason = new Error('stop now');
      await assert.rejects(f.provider.set(name, value(), { signal: AbortSignal.abort(reason) }), (e) => e === reason);
      assert.deepEqual(await f.published(name), []);
      const hanging = f.hanging();
      const controller = new AbortController();
      const started = Date.now();
      const v = value();
      const pending = hanging.set(name, v, { signal: controller.signal });
      setTimeout(() => controller.abort(reason), 100);
      await within(3000, assert.rejects(pending, (e) => e === reason), 'set on a hanging backend after abort');
      assert.ok(Date.now() - started < 2500);
      // Cleanup runs without a signal: it is bounded by the provider's own request timeout.
      if (!f.cannotDelete) await within(5000, assert.rejects(hanging.remove(name, v), (e) => e instanceof DnsError), 'remove on a hanging backend');
    }));

    it('no credentials in errors or logs: a refused write is a typed DnsError without them', withFixture(async (f, name) => {
      const bad = f.withBadCredentials();
      const v = value();
      const error = await bad.set(name, v).then(() => undefined, (e: unknown) => e);
      assert.ok(error instanceof DnsError, `a DnsError, got ${inspect(error)}`);
      assertNoSecrets(everythingIn(error), f.secrets, `${label} error`);
      const removal = await bad.remove(name, v).then(() => undefined, (e: unknown) => e);
      if (removal !== undefined) assertNoSecrets(everythingIn(removal), f.secrets, `${label} error`);
      assert.deepEqual(await f.published(name), []);
    }));
  });
}
