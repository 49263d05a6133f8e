/**
 * Every logged error goes through one safe serializer: `{ type, message, code }`,
 * credentials in URLs masked, nothing else an error object carries (request
 * headers, a `cause`, an EAB key) ever reaches a log line.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { localCaIssuer } from '../src/adapters/issuers/local-ca.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { createCertEngine } from '../src/engine/engine.js';
import { safeError, withSafeErrors } from '../src/safe-error.js';
import type { Issuer } from '../src/types.js';
import { captureLogs } from './helpers/log-capture.js';
import { interceptStorage } from './helpers/storage-wrap.js';

const SECRET = 'S3CRET-do-not-log';

/** An error as a driver or an HTTP client may throw it: secrets in fields, a cause and a connection string. */
function leakyError(): Error {
  const error = new Error(`connect redis://admin:${SECRET}@10.0.0.1:6379 failed`) as Error & Record<string, unknown>;
  error.name = 'LeakyError';
  error.code = 'ECONNREFUSED';
  error.headers = { authorization: `Bearer ${SECRET}` };
  error.privateKeyPem = `-----BEGIN PRIVATE KEY-----${SECRET}`;
  error.cause = new Error(`cause with ${SECRET}`);
  return error;
}

const capture = () => captureLogs('debug');

describe('safe error serializer', () => {
  it('keeps type, message and code; masks URL credentials; drops every other field', () => {
    const safe = safeError(leakyError());
    assert.deepEqual({ ...safe }, { name: 'LeakyError', type: 'LeakyError', message: 'connect redis://***@10.0.0.1:6379 failed', code: 'ECONNREFUSED' });
    assert.equal(safeError(safe), safe, 'serializing twice changes nothing');
    assert.equal(safeError('plain text').message, 'plain text');
    assert.ok(safeError(new Error('x'.repeat(100_000))).message.length <= 2_000, 'a huge message is cut');
  });

  it("the engine's logger serializes any `err` safely, even one an issuer logs raw", async () => {
    const { logger, text } = capture();
    const ca = localCaIssuer();
    const issuer: Issuer = {
      id: 'leaky',
      async issue(request, context) {
        context.logger.warn({ err: leakyError() }, 'issuer logs a raw error');
        return ca.issue(request, context);
      },
    };
    const engine = createCertEngine({ storage: memoryStorage(), issuers: [issuer], names: ['leak.localhost'], logger });
    await engine.start();
    await engine.getCertificate('leak.localhost');
    await engine.stop();
    assert.match(text(), /issuer logs a raw error/);
    assert.match(text(), /"type":"LeakyError"/);
    assert.ok(!text().includes(SECRET), `no secret in the log:\n${text()}`);
  });

  it('errors from storage on the attempt path are logged without their secrets', async () => {
    const { logger, text } = capture();
    const inner = memoryStorage();
    const storage = interceptStorage(inner, {});
    // The attempt clears the failure record after a success; a failing delete is logged.
    storage.delete = async () => {
      throw leakyError();
    };
    const engine = createCertEngine({ storage, issuers: [localCaIssuer()], names: ['leak2.localhost'], logger });
    await engine.start();
    await engine.getCertificate('leak2.localhost');
    await engine.stop();
    assert.match(text(), /could not clear the failure record/);
    assert.ok(!text().includes(SECRET), `no secret in the log:\n${text()}`);
  });

  it('withSafeErrors keeps the user logger level', () => {
    const user = pino({ level: 'error' });
    assert.equal(withSafeErrors(user).level, 'error');
  });

  it('no source file logs an `err` that did not go through safeError', () => {
    const offenders: string[] = [];
    const walk = (dir: string) => {
      for (const entry of readdirSync(dir)) {
        const path = join(dir, entry);
        if (statSync(path).isDirectory()) walk(path);
        else if (path.endsWith('.ts')) {
          readFileSync(path, 'utf8')
            .split('\n')
            .forEach((line, i) => {
              if (/\berr: (?!safeError\b)/.test(line) && /logger|log\b/.test(line)) offenders.push(`${path}:${i + 1}: ${line.trim()}`);
            });
        }
      }
    };
    walk(new URL('../src', import.meta.url).pathname);
    assert.deepEqual(offenders, []);
  });
});
