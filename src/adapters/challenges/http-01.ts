/**
 * HTTP-01 (RFC 8555 §8.3): answer `GET /.well-known/acme-challenge/<token>`
 * with the key authorization the ACME issuer stored at `keys.http01(token)`.
 *
 * Tokens live in the shared storage, so any process behind the same load
 * balancer can answer for an order another process placed. Everything that
 * is not a challenge request goes to `next` (your app, or a redirect to
 * HTTPS), or gets a 404.
 *
 * Works as:
 * - `http.createServer(handler)` (with `next` as the fallback),
 * - Express middleware: `app.use(handler)` (Express's `next()` is called for
 *   non-challenge requests),
 * - Fastify: `fastify.addHook('onRequest', (req, reply, done) => handler(req.raw, reply.raw, () => done()))`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Storage } from '../../types.js';
import { keys } from '../../storage-keys.js';
import { noteFetched } from './challenge-fetches.js';

/** What to do with requests that are not ACME challenges. */
export type HttpFallback = (req: IncomingMessage, res: ServerResponse) => void;

/** A Node `request` listener that is also Express-style middleware. */
export type HttpChallengeHandler = (req: IncomingMessage, res: ServerResponse, next?: (error?: unknown) => void) => void;

const PREFIX = '/.well-known/acme-challenge/';
/** ACME tokens are base64url (RFC 8555 §8.1: at least 128 bits of entropy). */
const TOKEN = /^[A-Za-z0-9_-]{1,256}$/;

/** The challenge token of a request target, or `undefined` if it is not a challenge path. */
export function challengeToken(url: string | undefined): string | undefined {
  if (!url) return undefined;
  let path = url;
  // Absolute-form request targets (`GET http://host/path`), as proxies send them.
  if (!path.startsWith('/')) {
    try {
      path = new URL(path).pathname;
    } catch {
      return undefined;
    }
  }
  const query = path.indexOf('?');
  if (query >= 0) path = path.slice(0, query);
  if (!path.startsWith(PREFIX)) return undefined;
  return path.slice(PREFIX.length);
}

function reply(res: ServerResponse, status: number, body: string): void {
  res.statusCode = status;
  res.setHeader('content-type', 'text/plain; charset=utf-8');
  res.setHeader('cache-control', 'no-store');
  res.setHeader('content-length', Buffer.byteLength(body));
  res.end(body);
}

/**
 * Create the HTTP-01 handler. `next` handles everything that is not a
 * challenge request (default: 404); an Express-style third argument given per
 * request takes precedence.
 */
export function createHttpChallengeHandler(storage: Storage, next?: HttpFallback): HttpChallengeHandler {
  return (req, res, middlewareNext) => {
    const token = challengeToken(req.url);
    const isChallenge = token !== undefined && (req.method === 'GET' || req.method === 'HEAD');
    if (!isChallenge) {
      if (middlewareNext) return middlewareNext();
      if (next) return next(req, res);
      return reply(res, 404, 'Not Found\n');
    }
    // Anything that is not a plausible token never reaches storage.
    if (!TOKEN.test(token)) return reply(res, 404, 'Not Found\n');
    storage.load(keys.http01(token)).then(
      (keyAuthorization) => {
        if (keyAuthorization === undefined) return reply(res, 404, 'Not Found\n');
        // Node sends no body for HEAD, but the length header stays right.
        reply(res, 200, keyAuthorization);
        // An order of this process waiting on this token looks at its authorization now (challenge-fetches.ts).
        noteFetched(token);
      },
      (error: unknown) => {
        // A token the storage refuses as a key (e.g. longer than a segment) is simply unknown.
        if ((error as { code?: unknown })?.code === 'ERR_INVALID_KEY') return reply(res, 404, 'Not Found\n');
        if (!res.headersSent) reply(res, 500, 'Internal Server Error\n');
      },
    );
  };
}
