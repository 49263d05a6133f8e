/**
 * A minimal, strict, bounds-checked DER reader: elements as (tag, content
 * range), children, the shortest-form length check DER requires, and the
 * only error it throws, `InvalidCertificateError`. `forge.asn1.fromDer`
 * would decode as fast, but it accepts BER (indefinite lengths), throws
 * untyped errors and hands back binary strings.
 */
import { InvalidCertificateError } from '../errors.js';

/** One DER element: `tag`, and its content at `der[start, end)`. */
export interface Element {
  tag: number;
  start: number;
  end: number;
}

export const SEQUENCE = 0x30;
export const SET = 0x31;
export const INTEGER = 0x02;
export const BIT_STRING = 0x03;
export const OCTET_STRING = 0x04;
export const NULL = 0x05;
export const OID = 0x06;
export const BOOLEAN = 0x01;

export function malformed(reason: string): never {
  throw new InvalidCertificateError(`malformed certificate DER: ${reason}`);
}

/** Read the element at `pos`, which must end by `limit`. */
export function readElement(der: Uint8Array, pos: number, limit: number): Element {
  if (pos + 2 > limit) malformed('truncated header');
  const tag = der[pos];
  if ((tag & 0x1f) === 0x1f) malformed('high tag number');
  let length = der[pos + 1];
  let start = pos + 2;
  if (length & 0x80) {
    const octets = length & 0x7f;
    // 0 is BER's indefinite length; more than 4 octets cannot describe a real certificate.
    if (octets === 0 || octets > 4) malformed('unsupported length encoding');
    if (start + octets > limit) malformed('truncated length');
    length = 0;
    for (let i = 0; i < octets; i++) length = length * 256 + der[start + i];
    start += octets;
  }
  const end = start + length;
  if (end > limit) malformed('element overruns its container');
  return { tag, start, end };
}

export function expectTag(element: Element, tag: number, what: string): Element {
  if (element.tag !== tag) malformed(`expected ${what}`);
  return element;
}

/** The elements inside a constructed element, in order (each read with `read`: DER's shortest lengths with `readCanonical`). */
export function children(der: Uint8Array, parent: Element, read = readElement): Element[] {
  const out: Element[] = [];
  for (let pos = parent.start; pos < parent.end; ) {
    const child = read(der, pos, parent.end);
    out.push(child);
    pos = child.end;
  }
  return out;
}

export function bytesEqual(der: Uint8Array, element: Element, expected: readonly number[]): boolean {
  if (element.end - element.start !== expected.length) return false;
  return expected.every((byte, i) => der[element.start + i] === byte);
}

/** Bytes of tag and length in the shortest form for `element`'s length. */
export function headerLength(element: Element): number {
  const length = element.end - element.start;
  return length < 0x80 ? 2 : length < 0x100 ? 3 : length < 0x10000 ? 4 : length < 0x1000000 ? 5 : 6;
}

/**
 * `readElement`, also refusing a length that is not in its shortest form
 * (X.690 §10.1). OpenSSL accepts those but re-encodes the outer layers, so
 * the SHA-256 of such input would not be the certificate's fingerprint.
 */
export function readCanonical(der: Uint8Array, pos: number, limit: number): Element {
  const element = readElement(der, pos, limit);
  if (element.start - pos !== headerLength(element)) malformed('length not in its shortest form');
  return element;
}

/** `children`, each in DER's shortest form. */
export function canonicalChildren(der: Uint8Array, parent: Element): Element[] {
  return children(der, parent, readCanonical);
}

/**
 * Walk a whole certificate as RFC 5280 §4.1 lays it out: serial, validity,
 * issuer name, SAN and AKI are read, the rest is checked for shape only (tags,

/** An OBJECT IDENTIFIER's content as OpenSSL accepts it: subidentifiers without 0x80 padding, the last one ended. */
export function checkOid(der: Uint8Array, oid: Element): void {
  if (oid.end === oid.start || der[oid.end - 1] & 0x80) malformed('invalid OBJECT IDENTIFIER');
  for (let i = oid.start; i < oid.end; i++) {
    if (der[i] === 0x80 && (i === oid.start || !(der[i - 1] & 0x80))) malformed('invalid OBJECT IDENTIFIER');
  }
}
