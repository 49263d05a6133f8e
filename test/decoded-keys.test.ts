/**
 * A key its issuer already decoded (src/certs/decoded-keys.ts) spares the
 * attempt's check a second decode, and is still checked against the
 * certificate; a bundle whose PEM changed since is decoded afresh.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import pino from 'pino';
import { localCaIssuer } from '../src/adapters/issuers/local-ca.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { parseCertificateBundle } from '../src/certs.js';
import { decodedKeyOf, withDecodedKey } from '../src/certs/decoded-keys.js';
import { InvalidCertificateError } from '../src/errors.js';
import { testLeafKey } from './helpers/scripted-issuer.js';

const issue = () =>
  localCaIssuer({ leafKey: testLeafKey() }).issue({ names: ['decoded.example.com'] }, { storage: memoryStorage(), signal: new AbortController().signal, logger: pino({ level: 'silent' }), now: Date.now });

describe('decoded keys handed over with a bundle', () => {
  it('the handed-over key is the one compared with the certificate: a key that does not match is refused', async () => {
    const bundle = await issue();
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    withDecodedKey(bundle, other);
    assert.equal(decodedKeyOf(bundle), other);
    assert.throws(() => parseCertificateBundle(bundle, 'test'), (e: unknown) => e instanceof InvalidCertificateError && /does not match/.test(e.message));
    // The matching key, handed over: accepted, with the same metadata as a decode of the PEM gives.
    const plain = parseCertificateBundle({ ...bundle }, 'test');
    withDecodedKey(bundle, testLeafKey());
    assert.deepEqual(parseCertificateBundle(bundle, 'test'), plain);
  });

  it('is ignored once the bundle carries another PEM (decoded afresh)', async () => {
    const bundle = await issue();
    withDecodedKey(bundle, generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey);
    // The same key in another encoding: the PEM changed, so the (wrong) handed-over key no longer counts.
    const before = bundle.privateKeyPem;
    bundle.privateKeyPem = testLeafKey().export({ format: 'pem', type: before.includes('RSA PRIVATE KEY') ? 'pkcs8' : 'pkcs1' }).toString();
    assert.notEqual(bundle.privateKeyPem, before);
    assert.equal(decodedKeyOf(bundle), undefined);
    assert.equal(parseCertificateBundle(bundle, 'test').names[0], 'decoded.example.com');
  });
});
