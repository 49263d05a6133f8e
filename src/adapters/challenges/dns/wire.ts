/**
 * DNS messages on the wire, through `dns-packet` (the most used DNS codec on
 * npm, one small dependency). What the library does not do is done here, in
 * as few bytes as possible:
 *
 * - RFC 2136 deletes one RR with class NONE (254); dns-packet only knows the
 *   classes IN, CS, CH, HS and ANY and would write 0. The encoded packet's
 *   class field of each such record is rewritten after encoding.
 * - The offset where each record starts (TSIG signs and verifies the message
 *   up to its last record): dns-packet's record decoders report `.bytes`,
 *   which its type declarations do not mention.
 *
 * Every name that goes into a message passes `dnsName` first: dns-packet
 * writes labels without checking their length, so a 64-octet label would
 * corrupt the message instead of being refused.
 */
import { randomInt } from 'node:crypto';
import dnsPacket from 'dns-packet';
import { DnsServerError } from '../../../errors.js';

/** The parts of dns-packet we use that its type declarations leave out. */
interface DnsPacketCodecs {
  name: { encode(name: string): Buffer; encodingLength(name: string): number };
  question: { decode(buf: Buffer, offset: number): unknown; encodingLength(q: dnsPacket.Question): number } & { decode: { bytes: number } };
  answer: { decode(buf: Buffer, offset: number): unknown } & { decode: { bytes: number } };
}
const codecs = dnsPacket as unknown as DnsPacketCodecs;

/** A decoded message. */
export type DnsMessage = dnsPacket.DecodedPacket;
/** One resource record of a decoded message. */
export type DnsRecord = dnsPacket.Answer;

export const OPCODE_QUERY = 0;
export const OPCODE_UPDATE = 5;
const CLASS_NONE = 254;
const HEADER_BYTES = 12;

const RCODES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED', 'YXDOMAIN', 'YXRRSET', 'NXRRSET', 'NOTAUTH', 'NOTZONE'];

/** The RCODE name of a decoded message's header (`RCODE_<n>` for unassigned ones). */
export function rcodeOf(message: DnsMessage): string {
  const code = (message.flags ?? 0) & 0xf;
  return RCODES[code] ?? `RCODE_${code}`;
}

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/**
 * `name` lowercased, without a trailing dot, if it is a DNS host name we
 * will put into a message (labels of letters, digits, `-` and `_`, each 1–63
 * octets, at most 253 in all); otherwise `undefined`. A-labels (`xn--…`)
 * pass; anything else non-ASCII does not.
 */
export function dnsName(name: string): string | undefined {
  if (typeof name !== 'string') return undefined;
  const n = name.toLowerCase().replace(/\.$/, '');
  if (n.length === 0 || n.length > 253) return undefined;
  return n.split('.').every((label) => LABEL.test(label)) ? n : undefined;
}

/** A fresh random message ID: a spoofed answer must guess it. */
export function messageId(): number {
  return randomInt(0, 0x10000);
}

/** A query for `type` records at `name`. `recursionDesired` is off when asking an authoritative server. */
export function encodeQuery(id: number, name: string, type: dnsPacket.RecordType, recursionDesired: boolean): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id,
    flags: recursionDesired ? dnsPacket.RECURSION_DESIRED : 0,
    questions: [{ type, name, class: 'IN' }],
  });
}

/** One change of an RFC 2136 update: add a TXT value, or delete exactly that value. */
export interface TxtChange {
  op: 'add' | 'delete';
  name: string;
  value: string;
  /** TTL of an added record, seconds. */
  ttl: number;
}

/**
 * An RFC 2136 UPDATE of `zone`: no prerequisites, the changes in the update
 * section (§2.5.1 add an RR: class IN; §2.5.4 delete an RR from an RRset:
 * class NONE, TTL 0, the exact RDATA).
 */
export function encodeUpdate(id: number, zone: string, changes: readonly TxtChange[]): Buffer {
  const records: dnsPacket.TxtAnswer[] = changes.map((c) => ({ type: 'TXT', name: c.name, class: 'IN', ttl: c.op === 'add' ? c.ttl : 0, data: [c.value] }));
  const message = dnsPacket.encode({
    type: 'query',
    id,
    flags: OPCODE_UPDATE << 11,
    questions: [{ type: 'SOA', name: zone, class: 'IN' }],
    authorities: records,
  });
  // Records are written in order without compression: walk to each delete and set its class.
  let offset = HEADER_BYTES + codecs.question.encodingLength({ type: 'SOA', name: zone });
  for (const [i, change] of changes.entries()) {
    const nameBytes = codecs.name.encodingLength(change.name);
    if (change.op === 'delete') message.writeUInt16BE(CLASS_NONE, offset + nameBytes + 2);
    offset += nameBytes + 8 + 2 + txtRdataLength(records[i]!.data as string[]);
  }
  return message;
}

function txtRdataLength(strings: string[]): number {
  return strings.reduce((sum, s) => sum + Buffer.byteLength(s) + 1, 0);
}

/** A name in canonical wire form (RFC 4034 §6.2: lowercase, uncompressed), as TSIG signs it. */
export function canonicalName(name: string): Buffer {
  return codecs.name.encode(name.toLowerCase());
}

/**
 * Decode a message from `server`, refusing what cannot be ours: undecodable
 * bytes, a query instead of an answer, another ID, another question.
 */
export function decodeAnswer(bytes: Buffer, expect: { id: number; name: string; type: string }, server: string): DnsMessage {
  let message: DnsMessage;
  try {
    message = dnsPacket.decode(bytes);
  } catch (error) {
    throw new DnsServerError(`malformed DNS message from ${server}: ${error instanceof Error ? error.message : String(error)}`, { code: 'ERR_DNS_MALFORMED', server });
  }
  const question = message.questions?.[0];
  if (!message.flag_qr || message.id !== expect.id) {
    throw new DnsServerError(`DNS message from ${server} is not the answer to our request`, { code: 'ERR_DNS_MALFORMED', server });
  }
  // Servers may omit the question in some error answers (FORMERR, NOTIMP); when present it must be ours.
  if (question && (question.name.toLowerCase() !== expect.name.toLowerCase() || question.type !== expect.type)) {
    throw new DnsServerError(`DNS answer from ${server} is for another question`, { code: 'ERR_DNS_MALFORMED', server });
  }
  return message;
}

/** The byte offset where the last record of the message starts (its TSIG record, when signed). */
export function lastRecordOffset(bytes: Buffer): number {
  const count = (at: number) => bytes.readUInt16BE(at);
  const [qd, an, ns, ar] = [count(4), count(6), count(8), count(10)];
  if (ar === 0) throw new Error('no additional record');
  let offset = HEADER_BYTES;
  for (let i = 0; i < qd; i++) {
    codecs.question.decode(bytes, offset);
    offset += codecs.question.decode.bytes;
  }
  for (let i = 0; i < an + ns + ar - 1; i++) {
    codecs.answer.decode(bytes, offset);
    offset += codecs.answer.decode.bytes;
  }
  return offset;
}

/** TXT values of `name` in the answer section, each record's strings joined (RFC 7208 §3.3 style). */
export function txtValues(message: DnsMessage, name: string): string[] {
  const values: string[] = [];
  for (const record of message.answers ?? []) {
    if (record.type !== 'TXT' || record.name.toLowerCase() !== name.toLowerCase()) continue;
    const data = Array.isArray(record.data) ? record.data : [record.data];
    values.push(data.map((d) => (Buffer.isBuffer(d) ? d.toString('utf8') : String(d))).join(''));
  }
  return values;
}
