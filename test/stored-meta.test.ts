/**
 * Certificate metadata stored beside the certificate (issue 14): the start-up
 * scan puts a name to sleep on it without parsing the certificate; nothing
 * is served or run on it before the certificate is parsed, and where they
 * disagree the parsed values win, reported once. Malformed or hostile
 * metadata means the certificate is parsed (one warning); units without
 * metadata (written before) load as before; a storage may hold both. On
 * memory and file storage.
 *
 * How "not parsed" is observed without instrumenting the parser: a unit
 * whose metadata is well-formed but whose certificate cannot be parsed at
 * all sleeps as `valid` (a parse would have counted it as absent), and a unit
 * whose metadata says another expiry shows that expiry while it sleeps.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileStorage } from '../src/adapters/storage/file.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { parseCertificateBundle } from '../src/certs.js';
import { createCertEngine, type CertEngine } from '../src/engine/engine.js';
import { readStoredMeta, storedMetaAgrees } from '../src/engine/stored-meta.js';
import { parseStoredCertificate, readStoredCertificate, serializeStoredCertificate, storedUnitAgrees } from '../src/engine/stored.js';
import { keys } from '../src/storage-keys.js';
import type { CertificateBundle, CertificateMeta, Storage } from '../src/types.js';
import { captureLogs, type CapturedLogs } from './helpers/log-capture.js';
import { installTestCa, scriptedIssuer, type ScriptedIssuer } from './helpers/scripted-issuer.js';

const DAY = 86_400_000;

/** A real certificate for `name` from the test CA, with its metadata as the engine computes it. */
async function issued(name: string): Promise<{ bundle: CertificateBundle; meta: CertificateMeta; unit: Record<string, unknown> }> {
  const ca = memoryStorage();
  await installTestCa(ca);
  const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
  const context = { signal: new AbortController().signal, logger: undefined as never, storage: ca, now: Date.now };
  const bundle = await issuer.issue({ names: [name] }, context);
  const meta = parseCertificateBundle(bundle, issuer.id, { checkKey: false });
  return { bundle, meta, unit: JSON.parse(serializeStoredCertificate(bundle, meta, Date.now())) as Record<string, unknown> };
}

/** The unit with its stored metadata changed (`undefined` for a field: removed). */
function withMeta(unit: Record<string, unknown>, change: Record<string, unknown>): string {
  const meta = { ...(unit.meta as Record<string, unknown>), ...change };
  for (const [k, v] of Object.entries(change)) if (v === undefined) delete meta[k];
  return JSON.stringify({ ...unit, meta });
}

function withoutMeta(unit: Record<string, unknown>): string {
  const { meta: _meta, ...rest } = unit;
  return JSON.stringify(rest);
}

/** Lines that warn about a stored value. */
function storedWarnings(logs: CapturedLogs): string[] {
  return logs.lines().filter((line) => {
    const entry = JSON.parse(line) as { level: number; msg: string };
    return entry.level >= 40 && /stored|corrupt/i.test(entry.msg);
  });
}

interface Started {
  engine: CertEngine;
  issuer: ScriptedIssuer;
  logs: CapturedLogs;
}

/** An engine managing `names` on `storage`, no room for live actors (every name the chart lets rest sleeps). */
async function start(storage: Storage, names: string[]): Promise<Started> {
  await installTestCa(storage);
  const logs = captureLogs('info');
  const issuer = scriptedIssuer({ mode: { kind: 'succeed' } });
  const engine = createCertEngine({ storage, issuers: [issuer], names, logger: logs.logger, maxLiveActors: 0, sessionTickets: false, storageCleaner: false, handshakeTimeout: 20_000 });
  await engine.start();
  return { engine, issuer, logs };
}

/** Poll (bounded) until `done`. */
async function until(done: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500 && !done(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(done(), `timed out waiting for ${what}`);
}

const fileRoots: string[] = [];
after(async () => {
  for (const root of fileRoots) await rm(root, { recursive: true, force: true });
});

const backends: Array<[string, () => Promise<Storage>]> = [
  ['memory', async () => memoryStorage()],
  [
    'file',
    async () => {
      const root = await mkdtemp(path.join(tmpdir(), 'certstate-meta-'));
      fileRoots.push(root);
      return fileStorage(root);
    },
  ],
];

describe('stored certificate metadata: the format', () => {
  it('is written from the certificate itself, whatever metadata the caller passes', async () => {
    const { bundle, meta } = await issued('format.example.com');
    const unit = JSON.parse(serializeStoredCertificate(bundle, { issuerId: 'x' }, 1)) as { meta: unknown; issuerId: string; version: number };
    assert.equal(unit.version, 1, 'the same format version: older readers ignore the field');
    assert.equal(unit.issuerId, 'x');
    const read = readStoredMeta(unit.meta, 'x');
    assert.deepEqual(read, { ...meta, issuerId: 'x' });
    // Readers of the whole unit ignore it and parse the certificate.
    assert.deepEqual(parseStoredCertificate('k', withMeta(unit as never, { notAfter: 5 })).meta, { ...meta, issuerId: 'x' });
  });

  it("the start-up read of a unit with metadata keeps none of its PEMs (no key material from unchecked metadata); without metadata it parses and hands the bundle", async () => {
    const { bundle, meta } = await issued('pems.example.com');
    const raw = serializeStoredCertificate(bundle, { issuerId: 'x' }, 1);
    const trusted = readStoredCertificate('k', raw, () => assert.fail('the metadata is well-formed'));
    assert.equal(trusted.trusted, true);
    assert.deepEqual(Object.keys(trusted).sort(), ['meta', 'trusted'], 'metadata only: nothing that holds a PEM');
    assert.deepEqual(trusted.meta, { ...meta, issuerId: 'x' });
    const { meta: _stored, ...without } = JSON.parse(raw) as Record<string, unknown>;
    const parsed = readStoredCertificate('k', JSON.stringify(without), () => assert.fail('no metadata: nothing malformed'));
    assert.equal(parsed.trusted, false);
    assert.deepEqual(parsed.trusted === false && parsed.bundle, bundle);
  });

  it('agreement without a CertificateMeta made (the start-up index check): every field counts, and only exactly the schema agrees', async () => {
    const { bundle, meta } = await issued('agrees.example.com');
    const raw = serializeStoredCertificate(bundle, { issuerId: 'x' }, 1);
    const known = { ...meta, issuerId: 'x' };
    assert.ok(storedUnitAgrees(raw, known));
    const stored = (JSON.parse(raw) as { meta: Record<string, unknown> }).meta;
    const others: Array<[string, Partial<CertificateMeta>]> = [
      ['fingerprint', { fingerprint: meta.fingerprint.replace(/^../, meta.fingerprint.startsWith('00') ? '01' : '00') }],
      ['serial', { serial: `${meta.serial}0` }],
      ['names', { names: [...meta.names, 'other.example.com'] }],
      ['a name', { names: ['other.example.com'] }],
      ['notBefore', { notBefore: meta.notBefore + 1000 }],
      ['notAfter', { notAfter: meta.notAfter + 1000 }],
      ['issuer', { issuer: 'CN=other' }],
      ['issuerId', { issuerId: 'y' }],
      ['ariCertId', { ariCertId: 'AAAA.BBBB' }],
    ];
    for (const [what, change] of others) assert.equal(storedMetaAgrees(stored, 'x', { ...known, ...change }), false, `another ${what}`);
    assert.equal(storedMetaAgrees({ ...stored, extra: 1 }, 'x', known), false, 'not exactly the schema');
    assert.equal(storedUnitAgrees(raw.slice(0, -2), known), false, 'a truncated unit');
    const { meta: _stored, ...without } = JSON.parse(raw) as Record<string, unknown>;
    assert.equal(storedUnitAgrees(JSON.stringify(without), known), false, 'no metadata stored');
  });

  it('a certificate that cannot be parsed is stored without metadata', () => {
    const unit = JSON.parse(serializeStoredCertificate({ certificatePem: 'nope', privateKeyPem: 'nope' }, { issuerId: 'x' }, 1)) as Record<string, unknown>;
    assert.equal('meta' in unit, false);
  });

  it('anything but exactly the schema is refused', async () => {
    const { unit } = await issued('schema.example.com');
    const good = unit.meta as Record<string, unknown>;
    assert.ok(readStoredMeta(good, 'x'));
    assert.ok(readStoredMeta({ ...good, v: 1 }, 'x'), 'this version, said');
    const hostile: Array<[string, unknown]> = [
      ['not an object', 'meta'],
      ['an array', [good]],
      ['null', null],
      ['an extra field', { ...good, extra: 1 }],
      ['a __proto__ key', JSON.parse(`{"__proto__":{"polluted":1},${JSON.stringify(good).slice(1)}`)],
      ['no fingerprint', { ...good, fingerprint: undefined }],
      ['a short fingerprint', { ...good, fingerprint: 'AB:CD' }],
      ['a lower-case fingerprint', { ...good, fingerprint: (good.fingerprint as string).toLowerCase() }],
      ['a serial that is not hex', { ...good, serial: 'XYZ' }],
      ['names not an array', { ...good, names: 'schema.example.com' }],
      ['no names', { ...good, names: [] }],
      ['a name with a space', { ...good, names: ['a b.example.com'] }],
      ['an upper-case name', { ...good, names: ['SCHEMA.example.com'] }],
      ['a name that is not a string', { ...good, names: [7] }],
      ['too many names', { ...good, names: Array.from({ length: 1001 }, (_, i) => `n${i}.example.com`) }],
      ['notBefore a string', { ...good, notBefore: String(good.notBefore) }],
      ['notAfter not an integer', { ...good, notAfter: 1.5 }],
      ['notAfter before notBefore', { ...good, notAfter: (good.notBefore as number) - 1 }],
      ['an empty issuer', { ...good, issuer: '' }],
      ['a huge issuer', { ...good, issuer: 'x'.repeat(5000) }],
      ['an ARI id of the wrong shape', { ...good, ariCertId: 'no-dot' }],
      ['another version', { ...good, v: 2 }],
    ];
    for (const [label, value] of hostile) {
      const cleaned = value !== null && typeof value === 'object' && !Array.isArray(value) ? JSON.parse(JSON.stringify(value)) : value;
      // (JSON round trip: a field set to undefined is absent, as in stored JSON; the __proto__ key survives as an own key.)
      assert.equal(readStoredMeta(label === 'a __proto__ key' ? value : cleaned, 'x'), undefined, label);
    }
  });
});

for (const [label, open] of backends) {
  describe(`stored certificate metadata at start (${label})`, () => {
    it('a name sleeps on its stored metadata: the certificate is not parsed', async () => {
      const storage = await open();
      const name = 'unparsed.example.com';
      const { unit, meta } = await issued(name);
      // Metadata well-formed, certificate unreadable: only a scan that does not parse sleeps it as valid.
      await storage.store(keys.certificate(name), JSON.stringify({ ...unit, certificatePem: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n' }));
      const { engine, issuer, logs } = await start(storage, [name]);
      try {
        assert.equal(engine.stats.sleeping, 1, 'asleep');
        assert.equal(engine.statusOf(name)?.state, 'valid');
        assert.equal(engine.statusOf(name)?.certificate?.fingerprint, meta.fingerprint, 'on the stored metadata');
        assert.equal(issuer.calls, 0);
        // A handshake parses it first: it cannot be parsed, so it is not served; a new one is obtained.
        const served = await engine.getCertificate(name);
        assert.notEqual(served.meta.fingerprint, meta.fingerprint, 'never the certificate the metadata describes');
        assert.ok(served.meta.names.includes(name));
        assert.equal(issuer.calls, 1);
        assert.equal(storedWarnings(logs).length, 1, storedWarnings(logs).join(''));
      } finally {
        await engine.stop();
      }
    });

    it('metadata that disagrees with its certificate: the parsed values win when served, reported once', async () => {
      const storage = await open();
      const name = 'disagrees.example.com';
      const { unit, meta } = await issued(name);
      const wrongNotAfter = meta.notAfter + 7 * DAY;
      await storage.store(keys.certificate(name), withMeta(unit, { notAfter: wrongNotAfter }));
      const { engine, issuer, logs } = await start(storage, [name]);
      try {
        assert.equal(engine.stats.sleeping, 1);
        assert.equal(engine.statusOf(name)?.certificate?.notAfter, wrongNotAfter, 'asleep on the stored metadata (not parsed)');
        const served = await engine.getCertificate(name);
        assert.equal(served.meta.fingerprint, meta.fingerprint, 'the stored certificate');
        assert.equal(served.meta.notAfter, meta.notAfter, 'with its parsed expiry');
        await until(() => engine.statusOf(name)?.certificate?.notAfter === meta.notAfter, 'the parsed expiry in status');
        assert.equal(issuer.calls, 0, 'nothing ordered: the certificate is good');
        const warnings = storedWarnings(logs);
        assert.equal(warnings.length, 1, warnings.join(''));
        assert.match(warnings[0]!, /disagrees/);
      } finally {
        await engine.stop();
      }
    });

    it("metadata naming another certificate's fingerprint: that certificate is never served for the name", async () => {
      const storage = await open();
      const [a, b] = ['a.other.example.com', 'b.other.example.com'];
      const ua = await issued(a);
      const ub = await issued(b);
      // b without metadata: parsed, its key material cached. a's metadata claims b's fingerprint.
      await storage.store(keys.certificate(b), withoutMeta(ub.unit));
      await storage.store(keys.certificate(a), withMeta(ua.unit, { fingerprint: ub.meta.fingerprint }));
      const { engine, issuer } = await start(storage, [b, a]);
      try {
        const served = await engine.getCertificate(a);
        assert.equal(served.meta.fingerprint, ua.meta.fingerprint, "a's own certificate, parsed");
        assert.ok(served.meta.names.includes(a));
        assert.equal((await engine.getCertificate(b)).meta.fingerprint, ub.meta.fingerprint);
        assert.equal(issuer.calls, 0);
      } finally {
        await engine.stop();
      }
    });

    it('a name woken on wrong metadata runs on the parsed certificate (metadata says expired, the certificate is valid: no order)', async () => {
      const storage = await open();
      const name = 'woken.example.com';
      const { unit, meta } = await issued(name);
      // Expired by the metadata: the chart does not let it rest, so it gets an actor at once.
      await storage.store(keys.certificate(name), withMeta(unit, { notBefore: meta.notBefore - 100 * DAY, notAfter: meta.notBefore - 10 * DAY }));
      const { engine, issuer, logs } = await start(storage, [name]);
      try {
        await until(() => engine.statusOf(name)?.state === 'valid', 'valid');
        assert.equal(engine.statusOf(name)?.certificate?.notAfter, meta.notAfter, 'the parsed expiry');
        assert.equal((await engine.getCertificate(name)).meta.fingerprint, meta.fingerprint);
        assert.equal(issuer.calls, 0, 'no order on metadata that was wrong');
        assert.equal(storedWarnings(logs).length, 1, storedWarnings(logs).join(''));
      } finally {
        await engine.stop();
      }
    });

    it('malformed or hostile metadata: the certificate is parsed, with one warning', async () => {
      const shapes: Array<[string, (unit: Record<string, unknown>, meta: CertificateMeta) => string]> = [
        ['an extra field', (u, m) => withMeta(u, { notAfter: m.notAfter + DAY, extra: true })],
        ['a fingerprint of the wrong shape', (u, m) => withMeta(u, { notAfter: m.notAfter + DAY, fingerprint: 'zz' })],
        ['names not an array', (u, m) => withMeta(u, { notAfter: m.notAfter + DAY, names: 'x' })],
        ['a time as text', (u, m) => withMeta(u, { notAfter: String(m.notAfter + DAY) })],
        ['meta not an object', (u) => JSON.stringify({ ...u, meta: [1, 2] })],
      ];
      for (const [shape, make] of shapes) {
        const storage = await open();
        const name = 'hostile.example.com';
        const { unit, meta } = await issued(name);
        await storage.store(keys.certificate(name), make(unit, meta));
        const { engine, issuer, logs } = await start(storage, [name]);
        try {
          assert.equal(engine.statusOf(name)?.state, 'valid', shape);
          assert.equal(engine.statusOf(name)?.certificate?.notAfter, meta.notAfter, `${shape}: the parsed expiry, not the stored one`);
          assert.equal((await engine.getCertificate(name)).meta.fingerprint, meta.fingerprint, shape);
          assert.equal(issuer.calls, 0, shape);
          const warnings = storedWarnings(logs);
          assert.equal(warnings.length, 1, `${shape}: ${warnings.join('')}`);
          assert.match(warnings[0]!, /malformed stored certificate metadata/, shape);
        } finally {
          await engine.stop();
        }
      }
    });

    it('metadata computed by another version (its own `v`): the certificate is parsed, without a warning', async () => {
      const storage = await open();
      const name = 'version.example.com';
      const { unit, meta } = await issued(name);
      await storage.store(keys.certificate(name), withMeta(unit, { v: 2, notAfter: meta.notAfter + DAY }));
      const { engine, issuer, logs } = await start(storage, [name]);
      try {
        assert.equal(engine.statusOf(name)?.certificate?.notAfter, meta.notAfter, 'the parsed expiry, not the stored one');
        assert.equal((await engine.getCertificate(name)).meta.fingerprint, meta.fingerprint);
        assert.equal(issuer.calls, 0);
        assert.deepEqual(storedWarnings(logs), []);
      } finally {
        await engine.stop();
      }
    });

    it('units without metadata (written before) and with it, in one storage: every name valid, served its own certificate', async () => {
      const storage = await open();
      const names = Array.from({ length: 6 }, (_, i) => `mixed${i}.example.com`);
      const units = await Promise.all(names.map((n) => issued(n)));
      for (const [i, n] of names.entries()) await storage.store(keys.certificate(n), i % 2 === 0 ? withoutMeta(units[i]!.unit) : JSON.stringify(units[i]!.unit));
      const { engine, issuer, logs } = await start(storage, names);
      try {
        assert.equal(engine.stats.sleeping, names.length, 'all asleep');
        for (const [i, n] of names.entries()) {
          assert.equal(engine.statusOf(n)?.state, 'valid', n);
          assert.deepEqual(engine.statusOf(n)?.certificate, units[i]!.meta, `${n}: its metadata`);
          const served = await engine.getCertificate(n);
          assert.equal(served.meta.fingerprint, units[i]!.meta.fingerprint, n);
        }
        assert.equal(issuer.calls, 0);
        // Metadata that agrees with its certificate is checked by the handshake's read: no actor needed.
        assert.equal(engine.stats.sleeping, names.length, 'served without waking');
        assert.equal(engine.stats.liveActors, 0);
        assert.deepEqual(storedWarnings(logs), []);
      } finally {
        await engine.stop();
      }
    });
  });
}
