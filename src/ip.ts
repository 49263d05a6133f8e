/**
 * IP literals, the one place for them: canonical text (RFC 5952 for IPv6),
 * and the network-order bytes a certificate's SAN `iPAddress` holds, both
 * ways. Names, certificate parsing and coverage, the local CA, the ACME
 * issuer's CSR and check of what the CA issued all use these, so `::1`,
 * `0:0:0:0:0:0:0:1` and the bytes of either are one address.
 */
import { isIP } from 'node:net';

/**
 * Canonical text of an IP literal: IPv4 as given, IPv6 in RFC 5952 form
 * (lower case, longest zero run compressed, no IPv4 tail). Non-IP input, and
 * IPv6 with a zone id (`fe80::1%eth0`, not valid in certificates), is
 * returned as is.
 */
export function canonicalIp(ip: string): string {
  if (isIP(ip) !== 6) return ip;
  try {
    // The WHATWG URL serializer implements RFC 5952 compression.
    return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  } catch {
    return ip; // a zone id: not an address a certificate can name
  }
}

/**
 * Network-order bytes of an IP literal (4 or 16), as a SAN `iPAddress` holds
 * them; `undefined` when `ip` is not an IP literal (zone ids included).
 */
export function ipAddressBytes(ip: string): Buffer | undefined {
  const family = isIP(ip);
  if (family === 4) return Buffer.from(ip.split('.').map(Number));
  if (family !== 6 || ip.includes('%')) return undefined;
  // After canonicalisation: hex groups only (no dotted tail), at most one "::".
  const [head = '', tail] = canonicalIp(ip).split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros: string[] = Array(8 - headGroups.length - tailGroups.length).fill('0');
  const bytes = Buffer.alloc(16);
  [...headGroups, ...zeros, ...tailGroups].forEach((group, i) => bytes.writeUInt16BE(parseInt(group, 16), i * 2));
  return bytes;
}

/** The canonical text of SAN `iPAddress` bytes; `undefined` unless 4 or 16 bytes (8 or 32 are name-constraint ranges). */
export function ipFromBytes(bytes: Uint8Array): string | undefined {
  if (bytes.length === 4) return bytes.join('.');
  if (bytes.length !== 16) return undefined;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return canonicalIp(groups.join(':'));
}
