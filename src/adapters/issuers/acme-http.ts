/**
 * The HTTP transport under acme-client, per attempt.
 *
 * acme-client 5.4 sends every request through one module-global axios
 * instance whose retry settings live in `axios.defaults.acmeSettings`: five
 * retries on 429/5xx/network errors with waits of 5–25 s, no request timeout,
 * no AbortSignal, the process-wide TLS trust store, and, once retries run out
 * on a network error, a `TypeError` instead of the original error. Changing
 * those globals would change them for every other acme-client user in the
 * process, so instead each `Client` we create gets this transport installed
 * on *its own* `HttpClient` instance (`client.http.request`): plain
 * `node:https` with our agent (trusting `caBundle`), a per-request timeout,
 * the attempt's `AbortSignal`, a response size cap, and no retries at all, so
 * that backoff belongs to the statechart. acme-client still does what it is
 * good at: JWS signing, EAB, key authorizations, and retrying `badNonce` with
 * the nonce from the error response.
 *
 * acme-client is pinned at 5.4.0; the internals touched here
 * (`client.http.request`, `.getNonce`, `.maxBadNonceRetries`,
 * `.directoryCache`) are listed in `AcmeHttpInternals`.
 */
import http from 'node:http';
import https from 'node:https';
import type { Client } from 'acme-client';
import { AcmeNetworkError, AcmeTimeoutError } from '../../errors.js';
import { NoncePool } from './acme-nonces.js';

/** A response as acme-client expects it from axios. */
export interface AcmeResponse {
  status: number;
  /** Lower-case header names (Node's own convention, and axios'). */
  headers: Record<string, string | undefined>;
  /** Parsed JSON for JSON bodies, text otherwise (PEM chains). */
  data: unknown;
}

/** What acme-client passes to `HttpClient.request`. */
interface AcmeRequestOptions {
  headers?: Record<string, string>;
  data?: unknown;
}

/** The acme-client 5.4 `HttpClient` members we replace or set. */
export interface AcmeHttpInternals {
  request(url: string, method: string, opts?: AcmeRequestOptions): Promise<AcmeResponse>;
  getNonce(): Promise<string>;
  maxBadNonceRetries: number;
  /** The account key acme-client signs with (PEM as given; a `KeyObject` works too and is not decoded per signature). */
  accountKey: unknown;
  /** The account key's JWK, computed by acme-client at the first signature unless set. */
  jwk: unknown;
  directoryCache: unknown;
  directoryTimestamp: number;
}

/** The acme-client 5.4 `AcmeApi` member we call for status-checked requests. */
export interface AcmeApiInternals {
  /** Signed request; with `validStatusCodes = []` it never throws on an HTTP status. */
  apiRequest(url: string, payload: unknown, validStatusCodes: number[], opts?: { includeJwsKid?: boolean; includeExternalAccountBinding?: boolean }): Promise<AcmeResponse>;
  accountUrl: string | null;
}

/** Reach the acme-client internals of one `Client` instance. */
export function internalsOf(client: Client): { http: AcmeHttpInternals; api: AcmeApiInternals } {
  return client as unknown as { http: AcmeHttpInternals; api: AcmeApiInternals };
}

/** Transport settings of one attempt. */
export interface TransportOptions {
  /** Connection pool, carrying the trusted roots (`caBundle`). */
  agent: https.Agent;
  /** Per-request timeout (connect to last byte). */
  timeoutMs: number;
  /** The attempt's signal: aborts the request in flight. */
  signal: AbortSignal;
  /** `User-Agent` (RFC 8555 §6.1 asks clients to send one). */
  userAgent: string;
}

/** Largest response body accepted: a certificate chain is a few KB; anything near this is hostile. */
const MAX_BODY_BYTES = 1024 * 1024;

/** Turn `signal.reason` into something throwable (the signal's own reason, like `fetch`). */
export function abortError(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

/** One HTTP request to the CA: no retries, bounded in time and size, abortable. */
export function acmeHttpRequest(url: string, method: string, opts: AcmeRequestOptions, t: TransportOptions): Promise<AcmeResponse> {
  return new Promise<AcmeResponse>((resolve, reject) => {
    if (t.signal.aborted) return reject(abortError(t.signal));
    const target = new URL(url);
    const body = opts.data === undefined || opts.data === null ? undefined : Buffer.from(JSON.stringify(opts.data));
    const headers: Record<string, string> = {
      'user-agent': t.userAgent,
      // Certificates come as PEM chains, everything else as JSON.
      accept: 'application/pem-certificate-chain, application/json;q=0.9, */*;q=0.1',
    };
    if (body) {
      headers['content-type'] = 'application/jose+json';
      headers['content-length'] = String(body.length);
    }
    const where = `${method.toUpperCase()} ${target.origin}${target.pathname}`;
    const lib = target.protocol === 'http:' ? http : https;
    let settled = false;
    const fail = (error: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      t.signal.removeEventListener('abort', onAbort);
      req.destroy();
      reject(error);
    };
    const onAbort = () => fail(abortError(t.signal));
    const req = lib.request(
      target,
      { method: method.toUpperCase(), headers, ...(target.protocol === 'http:' ? {} : { agent: t.agent }) },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_BODY_BYTES) fail(new AcmeNetworkError(`${where}: response larger than ${MAX_BODY_BYTES} bytes`, { code: 'ERR_ACME_RESPONSE_TOO_LARGE' }));
          else chunks.push(chunk);
        });
        res.on('error', (error) => fail(networkError(error, where)));
        res.on('end', () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          t.signal.removeEventListener('abort', onAbort);
          const text = Buffer.concat(chunks).toString('utf8');
          const flat: Record<string, string | undefined> = {};
          for (const [name, value] of Object.entries(res.headers)) flat[name] = Array.isArray(value) ? value.join(', ') : value;
          resolve({ status: res.statusCode ?? 0, headers: flat, data: parseBody(text, flat['content-type']) });
        });
      },
    );
    // One timer from the first byte sent to the last byte received: a slow-loris
    // CA cannot hold an attempt (and the handshakes waiting on it) for longer.
    const timer = setTimeout(() => fail(new AcmeTimeoutError(`${where}: no complete response within ${t.timeoutMs} ms`)), t.timeoutMs);
    t.signal.addEventListener('abort', onAbort, { once: true });
    req.on('error', (error) => fail(t.signal.aborted ? abortError(t.signal) : networkError(error, where)));
    req.end(body);
  });
}

function parseBody(text: string, contentType: string | undefined): unknown {
  if (text.length === 0) return undefined;
  if (contentType && /json/i.test(contentType)) {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

function networkError(error: unknown, where: string): AcmeNetworkError {
  const e = error as NodeJS.ErrnoException;
  const code = typeof e?.code === 'string' ? e.code : undefined;
  const reason = code ?? (e instanceof Error ? e.message : String(error));
  if (code === 'ETIMEDOUT') return new AcmeTimeoutError(`${where}: ${reason}`, { cause: error });
  return new AcmeNetworkError(`${where}: ${reason}`, { cause: error });
}

/**
 * Install the transport on one acme-client `Client`, with a nonce pool: every
 * response's `Replay-Nonce` is kept and used for the next signed request
 * (RFC 8555 §7.2), instead of acme-client's extra HEAD per request. Pass the
 * issuer's pool to carry nonces over from one attempt to the next (default:
 * a pool of this client's own).
 */
export function installTransport(client: Client, t: TransportOptions, options: { maxBadNonceRetries: number; nonces?: NoncePool }): void {
  const { http: httpClient } = internalsOf(client);
  const nonces = options.nonces ?? new NoncePool();
  const fetchNonce = httpClient.getNonce.bind(httpClient);
  httpClient.request = async (url, method, opts = {}) => {
    const res = await acmeHttpRequest(url, method, opts, t);
    const nonce = res.headers['replay-nonce'];
    // A badNonce answer's nonce is consumed by acme-client's own retry.
    if (nonce && !(res.status === 400 && isProblem(res.data, 'badNonce'))) nonces.put(nonce);
    return res;
  };
  httpClient.getNonce = async () => nonces.take() ?? fetchNonce();
  // Pebble with PEBBLE_WFE_NONCEREJECT=50 rejects half of all good nonces; 5
  // retries (acme-client's default) fail about 1 request in 64. Bounded still.
  httpClient.maxBadNonceRetries = options.maxBadNonceRetries;
}

function isProblem(data: unknown, short: string): boolean {
  return typeof data === 'object' && data !== null && (data as { type?: unknown }).type === `urn:ietf:params:acme:error:${short}`;
}
