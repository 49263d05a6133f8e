/**
 * Growing the bench dataset past what RSA signing can mint in minutes: names
 * from `patchedFrom` on are copies of a properly minted certificate of a name
 * of the same length, with the name (subject and SAN) and the serial number
 * patched in place in the leaf's DER. Same length, so no DER length changes:
 * the result is a well-formed certificate of the same size, unique
 * fingerprint, covering its own name — whose CA signature no longer verifies.
 * The engine never verifies its own leaf's signature (the client does), so
 * for start-up, memory and serving-from-memory benches such a name costs what
 * a minted one costs; a TLS client that verifies would refuse it. Roughly
 * 30 µs a name instead of ~3 ms (a million names: a minute, not an hour).
 */
import { X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { serializeStoredCertificate } from '../../src/engine/stored.js';
import { keys } from '../../src/storage-keys.js';

export interface Template {
  unit: { certificatePem: string; privateKeyPem: string; issuerId: string; storedAt: number };
  leafDer: Buffer;
  /** The rest of the PEM after the leaf (the chain). */
  chainPem: string;
  nameOffsets: number[];
  serialOffset: number;
  serialLength: number;
}

const LEAF = /^-----BEGIN CERTIFICATE-----\n([^-]+)-----END CERTIFICATE-----\n?/;

export async function template(dir: string, name: string): Promise<Template> {
  const unit = JSON.parse(await readFile(path.join(dir, keys.certificate(name)), 'utf8')) as Template['unit'];
  const match = LEAF.exec(unit.certificatePem);
  if (!match) throw new Error(`patch-mint: no leaf PEM in ${name}`);
  const leafDer = Buffer.from(match[1]!.replace(/\s+/g, ''), 'base64');
  const nameOffsets: number[] = [];
  for (let at = leafDer.indexOf(name); at !== -1; at = leafDer.indexOf(name, at + 1)) nameOffsets.push(at);
  if (nameOffsets.length === 0) throw new Error(`patch-mint: ${name} not found in its certificate`);
  const serial = Buffer.from(new X509Certificate(leafDer).serialNumber.padStart(2, '0'), 'hex');
  // The serial is the first INTEGER of the TBS after the version: its first occurrence.
  const serialOffset = leafDer.indexOf(serial);
  if (serialOffset === -1 || serial.length < 8) throw new Error('patch-mint: serial not found');
  return { unit, leafDer, chainPem: unit.certificatePem.slice(match[0].length), nameOffsets, serialOffset, serialLength: serial.length };
}

function pem(der: Buffer): string {
  const b64 = der.toString('base64');
  let out = '-----BEGIN CERTIFICATE-----\n';
  for (let i = 0; i < b64.length; i += 64) out += `${b64.slice(i, i + 64)}\n`;
  return `${out}-----END CERTIFICATE-----\n`;
}

/**
 * Write units for names `from`..`to` (exclusive) of `nameOf`, each patched
 * from the minted unit of `templateNameOf(length)` (a name of the same length).
 */
export async function patchMint(dir: string, from: number, to: number, nameOf: (i: number) => string, templateFor: (name: string) => string): Promise<void> {
  const templates = new Map<string, Template>();
  const batch = 128;
  for (let i = from; i < to; i += batch) {
    const writes: Array<Promise<void>> = [];
    for (let j = i; j < Math.min(to, i + batch); j++) {
      const name = nameOf(j);
      const source = templateFor(name);
      let t = templates.get(source);
      if (!t) templates.set(source, (t = await template(dir, source)));
      writes.push(writeFile(path.join(dir, keys.certificate(name)), patchedUnit(t, name, j), { mode: 0o600 }));
    }
    await Promise.all(writes);
  }
}

/**
 * The unit of `name` (index `j`: its serial) patched from template `t`, serialised as the engine stores it
 * (the stored metadata computed from the patched certificate, ~50 µs).
 */
export function patchedUnit(t: Template, name: string, j: number): string {
  const der = Buffer.from(t.leafDer);
  for (const at of t.nameOffsets) der.write(name, at, 'latin1');
  // A unique positive serial: the index in the last 4 bytes. The first byte stays minimal DER: below 0x80
  // (and not 0) without a leading zero byte; with one (the template's serial has its top bit set:
  // `serialNumber` leaves that zero byte out, so it sits just before the offset) at 0x80 or above.
  der.writeUInt32BE(j, t.serialOffset + t.serialLength - 4);
  const padded = der[t.serialOffset - 1] === 0 && der[t.serialOffset - 2] === t.serialLength + 1;
  der[t.serialOffset] = padded ? der[t.serialOffset]! | 0x80 : (der[t.serialOffset]! & 0x7f) | 0x01;
  const unit = serializeStoredCertificate({ certificatePem: pem(der) + t.chainPem, privateKeyPem: t.unit.privateKeyPem }, t.unit, t.unit.storedAt);
  if (!unit.includes('"meta"')) throw new Error(`patch-mint: the certificate patched for ${name} does not parse`);
  return unit;
}
