/**
 * TSIG (RFC 8945): HMAC-SHA256/512 signatures on DNS messages, for RFC 2136
 * updates. No DNS library on npm signs TSIG, so the MAC over the RFC's
 * canonical form is computed here, with node:crypto. test/dns-rfc2136.test.ts
 * checks both directions against BIND: BIND refuses a wrong MAC (BADSIG), and
 * we refuse BIND's answer when a proxy alters or strips its signature.
 *
 * A request is signed over: the message as sent without its TSIG record,
 * then the TSIG variables (key name, class ANY, TTL 0, algorithm name, time
 * signed, fudge, error, other data). The answer is verified over: the
 * request's MAC (length-prefixed), the answer without its TSIG record (and
 * with ARCOUNT one less), then the answer's TSIG variables. An answer that
 * is not signed, signed with another key, or signed outside the time window
 * is refused: it may not come from the server that holds our key.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import dnsPacket from 'dns-packet';
import { ConfigError, DnsServerError } from '../../../errors.js';
import { canonicalName, dnsName, lastRecordOffset } from './wire.js';

/** TSIG algorithms certstate signs with. */
export type TsigAlgorithm = 'hmac-sha256' | 'hmac-sha512';

/** A TSIG key as BIND's `tsig-keygen` prints it: `key "<name>" { algorithm <algorithm>; secret "<secret>"; };` */
export interface TsigKey {
  /** The key's name, exactly as the server knows it (e.g. `certstate-acme`). */
  name: string;
  /** `hmac-sha256` (default) or `hmac-sha512`. */
  algorithm?: TsigAlgorithm;
  /** The shared secret, base64 (as in the server's key file). */
  secret: string;
}

/** A validated key with its secret decoded. */
export interface PreparedTsigKey {
  readonly name: string;
  readonly algorithm: TsigAlgorithm;
  readonly secret: Buffer;
}

const TYPE_TSIG = 250;
const CLASS_ANY = 255;
/** Seconds of clock difference allowed between us and the server (RFC 8945 §10 recommends 300). */
export const TSIG_FUDGE_SECONDS = 300;
const DIGEST: Record<TsigAlgorithm, { hash: string; bytes: number }> = {
  'hmac-sha256': { hash: 'sha256', bytes: 32 },
  'hmac-sha512': { hash: 'sha512', bytes: 64 },
};
const TSIG_ERRORS: Record<number, string> = { 16: 'BADSIG', 17: 'BADKEY', 18: 'BADTIME', 22: 'BADTRUNC' };

/** Check a key's fields and decode its secret. Throws `ConfigError` (never echoing the secret). */
export function prepareTsigKey(key: TsigKey): PreparedTsigKey {
  const name = dnsName(key?.name ?? '');
  if (!name) throw new ConfigError('TSIG key name must be a DNS name (e.g. "certstate-acme")');
  const algorithm = key.algorithm ?? 'hmac-sha256';
  if (!(algorithm in DIGEST)) throw new ConfigError(`TSIG algorithm must be hmac-sha256 or hmac-sha512, not ${JSON.stringify(String(algorithm)).slice(0, 40)}`);
  const text = typeof key.secret === 'string' ? key.secret.trim() : '';
  const secret = Buffer.from(text, 'base64');
  if (text.length === 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(text) || secret.length < 16) {
    throw new ConfigError(`TSIG key ${name}: secret must be base64 of at least 16 bytes (as tsig-keygen prints it)`);
  }
  return { name, algorithm, secret };
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

function u48(n: number): Buffer {
  const b = Buffer.alloc(6);
  b.writeUIntBE(n, 0, 6);
  return b;
}

/** The TSIG variables of RFC 8945 §4.3.3, in canonical form. */
function tsigVariables(key: PreparedTsigKey, timeSigned: number, fudge: number, error: number, other: Buffer): Buffer {
  const ttl = Buffer.alloc(4);
  return Buffer.concat([canonicalName(key.name), u16(CLASS_ANY), ttl, canonicalName(key.algorithm), u48(timeSigned), u16(fudge), u16(error), u16(other.length), other]);
}

function hmac(key: PreparedTsigKey, ...parts: Buffer[]): Buffer {
  const h = createHmac(DIGEST[key.algorithm].hash, key.secret);
  for (const part of parts) h.update(part);
  return h.digest();
}

/** `message` with its TSIG record appended (ARCOUNT + 1), and the MAC the answer's signature builds on. */
export function tsigSign(message: Buffer, key: PreparedTsigKey, nowSeconds: number): { message: Buffer; mac: Buffer } {
  const timeSigned = Math.floor(nowSeconds);
  const mac = hmac(key, message, tsigVariables(key, timeSigned, TSIG_FUDGE_SECONDS, 0, Buffer.alloc(0)));
  const originalId = message.readUInt16BE(0);
  const rdata = Buffer.concat([canonicalName(key.algorithm), u48(timeSigned), u16(TSIG_FUDGE_SECONDS), u16(mac.length), mac, u16(originalId), u16(0), u16(0)]);
  const record = Buffer.concat([canonicalName(key.name), u16(TYPE_TSIG), u16(CLASS_ANY), Buffer.alloc(4), u16(rdata.length), rdata]);
  const signed = Buffer.concat([message, record]);
  signed.writeUInt16BE(message.readUInt16BE(10) + 1, 10);
  return { message: signed, mac };
}

/** The TSIG record of a message, parsed (RFC 8945 §4.2). */
interface TsigRecord {
  offset: number;
  keyName: string;
  algorithm: string;
  timeSigned: number;
  fudge: number;
  mac: Buffer;
  originalId: number;
  error: number;
  other: Buffer;
}

function readTsigRecord(bytes: Buffer): TsigRecord | undefined {
  if (bytes.length < 12 || bytes.readUInt16BE(10) === 0) return undefined;
  const offset = lastRecordOffset(bytes);
  const record = dnsPacket.decode(bytes).additionals!.at(-1)!;
  if (record.type !== 'TSIG' && (record.type as string) !== 'UNKNOWN_250') return undefined;
  const rdata = (record as { data?: unknown }).data;
  if (!Buffer.isBuffer(rdata)) return undefined;
  const algorithm = nameAt(rdata, 0);
  let at = algorithm.bytes;
  const timeSigned = rdata.readUIntBE(at, 6);
  const fudge = rdata.readUInt16BE(at + 6);
  const macSize = rdata.readUInt16BE(at + 8);
  at += 10;
  const mac = rdata.subarray(at, at + macSize);
  at += macSize;
  const originalId = rdata.readUInt16BE(at);
  const error = rdata.readUInt16BE(at + 2);
  const otherLength = rdata.readUInt16BE(at + 4);
  const other = rdata.subarray(at + 6, at + 6 + otherLength);
  if (mac.length !== macSize || other.length !== otherLength) throw new RangeError('TSIG record truncated');
  return { offset, keyName: record.name.toLowerCase(), algorithm: algorithm.name, timeSigned, fudge, mac, originalId, error, other };
}

/** An uncompressed name inside RDATA (RFC 8945 §4.2 forbids compressing the algorithm name). */
function nameAt(buf: Buffer, start: number): { name: string; bytes: number } {
  const labels: string[] = [];
  let at = start;
  for (;;) {
    const length = buf.readUInt8(at);
    if (length === 0) break;
    if (length > 63 || at + 1 + length > buf.length) throw new RangeError('bad name in TSIG record');
    labels.push(buf.toString('latin1', at + 1, at + 1 + length).toLowerCase());
    at += 1 + length;
  }
  return { name: labels.join('.'), bytes: at + 1 - start };
}

/**
 * Check the answer to a request signed with `requestMac`. Throws
 * `DnsServerError`: `ERR_DNS_TSIG_REFUSED` (with the TSIG error, `BADSIG`,
 * `BADKEY`, `BADTIME`, …, as `rcode`) when the server refused our signature, `ERR_DNS_TSIG_UNSIGNED` / `ERR_DNS_TSIG_MISMATCH`
 * when its answer is not signed by our key.
 */
export function tsigVerify(answer: Buffer, key: PreparedTsigKey, requestMac: Buffer, nowSeconds: number, server: string): void {
  let tsig: TsigRecord | undefined;
  try {
    tsig = readTsigRecord(answer);
  } catch (error) {
    throw new DnsServerError(`malformed TSIG record from ${server}: ${error instanceof Error ? error.message : String(error)}`, { code: 'ERR_DNS_MALFORMED', server });
  }
  if (!tsig) throw new DnsServerError(`answer from ${server} is not TSIG-signed`, { code: 'ERR_DNS_TSIG_UNSIGNED', server });
  if (tsig.error !== 0) {
    const name = TSIG_ERRORS[tsig.error] ?? `ERROR_${tsig.error}`;
    const why =
      name === 'BADKEY' ? `the server does not know key ${key.name} with ${key.algorithm}`
      : name === 'BADSIG' ? `the server's secret for key ${key.name} differs from ours`
      : name === 'BADTIME' ? `our clock and the server's differ by more than ${TSIG_FUDGE_SECONDS} s`
      : 'the server refused our signature';
    throw new DnsServerError(`TSIG ${name} from ${server}: ${why}`, { code: 'ERR_DNS_TSIG_REFUSED', rcode: name, server });
  }
  if (tsig.keyName !== key.name || tsig.algorithm !== key.algorithm || tsig.mac.length !== DIGEST[key.algorithm].bytes) {
    throw new DnsServerError(`answer from ${server} is signed with another key or algorithm`, { code: 'ERR_DNS_TSIG_MISMATCH', server });
  }
  const unsigned = Buffer.from(answer.subarray(0, tsig.offset));
  unsigned.writeUInt16BE(tsig.originalId, 0);
  unsigned.writeUInt16BE(unsigned.readUInt16BE(10) - 1, 10);
  const expected = hmac(key, u16(requestMac.length), requestMac, unsigned, tsigVariables(key, tsig.timeSigned, tsig.fudge, tsig.error, tsig.other));
  if (!timingSafeEqual(expected, tsig.mac)) throw new DnsServerError(`answer from ${server} has a wrong TSIG MAC`, { code: 'ERR_DNS_TSIG_MISMATCH', server });
  if (Math.abs(nowSeconds - tsig.timeSigned) > tsig.fudge) {
    throw new DnsServerError(`answer from ${server} was signed ${Math.round(nowSeconds - tsig.timeSigned)} s from now, beyond its ${tsig.fudge} s fudge`, { code: 'ERR_DNS_TSIG_BADTIME', server });
  }
}
