/**
 * The bench dataset's patched copies (bench/lib/patch-mint.ts) must be
 * certificates the engine reads: a template whose serial has its top bit
 * set is DER-encoded with a leading zero byte, which the patch must keep
 * minimal (it once made every copy of such a template a malformed INTEGER,
 * stored without metadata and refused at start-up).
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { localCaIssuer } from '../src/adapters/issuers/local-ca.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { parseStoredCertificate, serializeStoredCertificate } from '../src/engine/stored.js';
import { keys } from '../src/storage-keys.js';
import { patchedUnit, template } from '../bench/lib/patch-mint.js';
import { testLeafKey } from './helpers/scripted-issuer.js';

describe('bench dataset: patched copies', () => {
  it('parse with their own name and serial, whether the template serial has its top bit set or not', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'certstate-patch-'));
    try {
      await mkdir(path.join(dir, 'certificates'));
      const ca = localCaIssuer({ leafKey: testLeafKey(), leafValidityMs: 90 * 86_400_000 });
      const context = { signal: new AbortController().signal, logger: pino({ level: 'silent' }), storage: memoryStorage(), now: Date.now };
      const seen = { high: 0, low: 0 };
      for (let i = 10; i < 100 && (seen.high < 2 || seen.low < 2); i++) {
        const name = `t${i}.bench.test`;
        const bundle = await ca.issue({ names: [name] }, context);
        const unit = serializeStoredCertificate(bundle, { issuerId: ca.id }, Date.now());
        const high = /^[89A-F]/.test(parseStoredCertificate(keys.certificate(name), unit).meta.serial);
        if (seen[high ? 'high' : 'low'] >= 2) continue;
        seen[high ? 'high' : 'low']++;
        await writeFile(path.join(dir, keys.certificate(name)), unit);
        const t = await template(dir, name);
        for (const j of [11, 57, 99]) {
          const copy = `t${j}.bench.test`;
          const { meta } = parseStoredCertificate(keys.certificate(copy), patchedUnit(t, copy, j), { checkKey: false });
          assert.deepEqual(meta.names, [copy]);
          assert.ok(meta.serial.endsWith(j.toString(16).toUpperCase().padStart(8, '0')), `${meta.serial} carries the index ${j}`);
        }
      }
      assert.deepEqual(seen, { high: 2, low: 2 }, 'templates of both kinds were tried');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
