/**
 * Whether a certificate covers a name: DNS names and RFC 6125 wildcards, IP
 * literals by their canonical form.
 */
import { isIP } from 'node:net';
import { canonicalIp } from '../ip.js';
import type { CertificateMeta } from '../types.js';

/**
 * Whether a certificate covers `name` (case-insensitive, one trailing dot
 * ignored). Wildcards follow RFC 6125 §6.4.3: `*.example.com` covers exactly one
 * extra leftmost label (`a.example.com`), not `example.com` nor `a.b.example.com`;
 * a requested wildcard is covered only by the same wildcard. IP literals match
 * IP entries only, compared in canonical form (`0:0::1` is `::1`).
 */
export function certificateCoversName(meta: Pick<CertificateMeta, 'names'>, name: string): boolean {
  const wanted = normaliseName(name);
  if (wanted === '') return false;
  if (isIP(wanted) !== 0) {
    const ip = canonicalIp(wanted);
    return meta.names.some((entry) => isIP(entry) !== 0 && canonicalIp(entry) === ip);
  }
  const firstDot = wanted.indexOf('.');
  for (const entry of meta.names) {
    const san = normaliseName(entry);
    if (san === wanted) return true;
    if (san.startsWith('*.') && san.length > 2 && !san.includes('*', 1) && firstDot > 0) {
      const firstLabel = wanted.slice(0, firstDot);
      if (!firstLabel.includes('*') && wanted.slice(firstDot) === san.slice(1)) return true;
    }
  }
  return false;
}

function normaliseName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}
