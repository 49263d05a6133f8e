/**
 * Who may use the admin surface.
 *
 * - With a token: every request presents it (`Authorization: Bearer …`, or
 *   `?token=…` for the page and its EventSource, which cannot set headers).
 * - Without a token: the *peer* (the socket's remote address, never a header)
 *   must be a loopback address, so a server bound beyond loopback, or a
 *   handler mounted on a public server, answers no one else; and the `Host`
 *   header must name a loopback host (or one of `allowedHosts`), so a web page
 *   cannot reach the admin port through DNS rebinding (its requests would
 *   carry the attacker's host name). A peer the socket cannot name (a Unix
 *   socket, a destroyed connection) is refused: set a token there.
 * - Actions (POST) also need the `X-Certstate-Action` header, which a
 *   cross-site form cannot send and a cross-site `fetch` cannot send without a
 *   CORS preflight we never approve; and a present `Origin` or
 *   `Sec-Fetch-Site` must say same-origin.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import { ConfigError } from '../errors.js';

/** The header an action request must carry (any non-empty value). */
export const ACTION_HEADER = 'x-certstate-action';

/** A refusal: HTTP status and a short reason. */
export interface Refusal {
  status: 401 | 403;
  reason: string;
}

/** Shortest token accepted: 128 bits as hex, or as much entropy in other forms. */
export const MIN_TOKEN_LENGTH = 16;

/** Longest token accepted: a token is a secret, not a payload. */
const MAX_TOKEN_LENGTH = 4096;

/**
 * Refuse a token that cannot protect anything: empty, shorter than
 * {@link MIN_TOKEN_LENGTH}, or one a client could not present (whitespace and
 * control characters cannot travel in `Authorization: Bearer …`). `where`
 * names the place it was given, for the message. Throws `ConfigError`.
 */
export function assertValidToken(token: unknown, where: string): asserts token is string {
  if (typeof token !== 'string') throw new ConfigError(`${where}: the admin token must be a string`);
  if (token.length < MIN_TOKEN_LENGTH) {
    throw new ConfigError(`${where}: the admin token must be at least ${MIN_TOKEN_LENGTH} characters${token.length === 0 ? ' (it is empty)' : ''}`);
  }
  if (token.length > MAX_TOKEN_LENGTH) throw new ConfigError(`${where}: the admin token must be at most ${MAX_TOKEN_LENGTH} characters`);
  if (!/^[\x21-\x7e]+$/.test(token)) throw new ConfigError(`${where}: the admin token must be printable ASCII without spaces`);
}

/** True when `presented` equals `expected`, in time independent of where they differ. */
export function tokenEquals(presented: string, expected: string): boolean {
  // Digests first: timingSafeEqual needs equal lengths, and lengths must not leak either.
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

/** The token a request presents (bearer header first, then `?token=`), if any. */
export function presentedToken(req: IncomingMessage, url: URL): string | undefined {
  const header = req.headers.authorization;
  if (typeof header === 'string') {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (match) return match[1];
  }
  return url.searchParams.get('token') ?? undefined;
}

/** Is `hostname` (no port) a loopback name or address? */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h.endsWith('.localhost') || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h);
}

/**
 * Is `address` (a socket's `remoteAddress`) a loopback address? 127.0.0.0/8,
 * `::1`, and both in their IPv4-mapped IPv6 forms (`::ffff:127.0.0.1`, what a
 * dual-stack `::` listener reports for an IPv4 peer).
 */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (typeof address !== 'string' || isIP(address) === 0) return false;
  const a = address.toLowerCase();
  if (isIP(a) === 4) return a.startsWith('127.');
  if (a === '::1' || a === '0:0:0:0:0:0:0:1') return true;
  const mapped = /^(?:0{0,4}:){0,5}:?ffff:(.+)$/.exec(a)?.[1];
  if (mapped === undefined) return false;
  if (isIP(mapped) === 4) return mapped.startsWith('127.');
  // ::ffff:7f00:1 is ::ffff:127.0.0.1 written in hex
  return /^7f[0-9a-f]{2}:[0-9a-f]{1,4}$/.test(mapped);
}

/** The host name of a `Host` header, without port or brackets. */
export function hostnameOf(hostHeader: string | undefined): string | undefined {
  if (!hostHeader) return undefined;
  const m = /^(\[[^\]]+\]|[^:]+)(?::\d+)?$/.exec(hostHeader.trim());
  return m ? m[1]!.replace(/^\[|\]$/g, '').toLowerCase() : undefined;
}

/** Check a request for read access. Returns a refusal or `undefined` (allowed). */
export function checkAccess(req: IncomingMessage, url: URL, options: { token?: string; allowedHosts?: readonly string[] }): Refusal | undefined {
  if (options.token !== undefined) {
    const presented = presentedToken(req, url);
    if (presented === undefined || !tokenEquals(presented, options.token)) return { status: 401, reason: 'a valid token is required' };
    return undefined;
  }
  // The socket's own address: a header can say anything, the peer cannot.
  if (!isLoopbackAddress(req.socket?.remoteAddress)) {
    return { status: 403, reason: 'without a token, only loopback clients are served (set a token to serve beyond loopback)' };
  }
  const host = hostnameOf(req.headers.host);
  if (!host || !(isLoopbackHost(host) || (options.allowedHosts ?? []).some((h) => h.toLowerCase() === host))) {
    return { status: 403, reason: 'host not allowed (set a token to serve beyond loopback)' };
  }
  return undefined;
}

/** Extra checks for a state-changing request. Returns a refusal or `undefined` (allowed). */
export function checkAction(req: IncomingMessage): Refusal | undefined {
  const marker = req.headers[ACTION_HEADER];
  if (typeof marker !== 'string' || marker.length === 0) return { status: 403, reason: `actions need the ${ACTION_HEADER} header` };
  const site = req.headers['sec-fetch-site'];
  if (typeof site === 'string' && site !== 'same-origin' && site !== 'none') return { status: 403, reason: 'cross-site action refused' };
  const origin = req.headers.origin;
  if (typeof origin === 'string' && origin !== 'null') {
    let originHost: string | undefined;
    try {
      originHost = new URL(origin).host.toLowerCase();
    } catch {
      return { status: 403, reason: 'bad Origin' };
    }
    if (originHost !== (req.headers.host ?? '').toLowerCase()) return { status: 403, reason: 'cross-origin action refused' };
  } else if (origin === 'null') {
    return { status: 403, reason: 'opaque origin refused' };
  }
  return undefined;
}
