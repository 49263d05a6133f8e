/**
 * Who may use the admin surface.
 *
 * - With a token: every request presents it (`Authorization: Bearer …`, or
 *   `?token=…` for the page and its EventSource, which cannot set headers).
 * - Without a token (loopback only, see `serveAdmin`): the `Host` header must
 *   name a loopback host, so a web page cannot reach the admin port through
 *   DNS rebinding (its requests would carry the attacker's host name).
 * - Actions (POST) also need the `X-Certstate-Action` header, which a
 *   cross-site form cannot send and a cross-site `fetch` cannot send without a
 *   CORS preflight we never approve; and a present `Origin` or
 *   `Sec-Fetch-Site` must say same-origin.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/** The header an action request must carry (any non-empty value). */
export const ACTION_HEADER = 'x-certstate-action';

/** A refusal: HTTP status and a short reason. */
export interface Refusal {
  status: 401 | 403;
  reason: string;
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
