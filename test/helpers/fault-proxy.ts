/**
 * Test helper: a small fault-injecting HTTPS proxy in front of an ACME CA
 * (Pebble), for what Pebble 2.4 cannot do by itself: 429 and 503 with
 * `Retry-After`, an ARI `renewalInfo` endpoint with chosen windows, `409
 * alreadyReplaced` for orders carrying `replaces`, and orders stuck in
 * `processing`.
 *
 * How it stays a faithful ACME server:
 * - It listens with its own TLS certificate for 127.0.0.1 (a throw-away CA
 *   made with openssl; clients trust it through `caBundlePem`).
 * - Requests are forwarded unchanged, *with the proxy's Host header*. Pebble
 *   builds every URL it returns (directory, Location, order, authorization,
 *   finalize and certificate URLs, account `kid`s) from the request's Host, and
 *   checks a JWS's `url` header against it, so clients talk to the proxy
 *   throughout and their signatures stay valid. As a second line, any
 *   upstream origin in headers or JSON bodies is rewritten to the proxy's.
 * - A faked answer (429, 503, 409) carries a fresh `Replay-Nonce` from the
 *   upstream, as a real CA's error would.
 *
 * Every request is logged with its decoded JWS payload (`replaces` is read
 * from there), the status returned, and whether a fault produced it.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** A canned HTTP answer. */
export interface FakeAnswer {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
}

/** One request as the proxy saw it. */
export interface ProxiedRequest {
  method: string;
  path: string;
  /** Decoded JWS payload of a POST (undefined for POST-as-GET and GET). */
  payload?: Record<string, unknown>;
  /** Status returned to the client. */
  status: number;
  /** Date.now() when the request arrived. */
  at: number;
  /** Which fault answered or altered it, if any. */
  fault?: string;
}

/** An ARI answer for a certificate id, or `undefined` for a 404. */
export type AriResponder = (certId: string) => FakeAnswer | undefined;

export interface FaultProxy {
  /** The directory URL to give the ACME client. */
  readonly directoryUrl: string;
  /** The proxy's origin, e.g. `https://127.0.0.1:1234`. */
  readonly origin: string;
  /** PEM of the CA that signed the proxy's own certificate: the client's `caBundle`. */
  readonly caBundlePem: string;
  /** Every request so far. */
  readonly requests: ProxiedRequest[];
  /** The newOrder requests so far. */
  orders(): ProxiedRequest[];
  /** The ARI requests so far (GET renewalInfo/<certId>), with the id as `path`'s last segment. */
  ariRequests(): ProxiedRequest[];
  /** Answer the next `times` (default: every) newOrder with 429 and this `Retry-After`. */
  rateLimitOrders(retryAfter: string, times?: number): void;
  /** Answer the next `times` (default: every) newOrder with 503 and this `Retry-After`. */
  unavailableOrders(retryAfter: string | undefined, times?: number): void;
  /** Answer every newOrder that carries `replaces` with 409 `alreadyReplaced`. */
  alreadyReplaced(): void;
  /** Report every order as `processing` (no certificate URL), however far it really got. */
  stuckInProcessing(): void;
  /** How to answer ARI requests (default: 404 for every certificate). */
  setAri(responder: AriResponder | undefined): void;
  /** Remove every fault (ARI included). */
  clear(): void;
  close(): Promise<void>;
}

export interface FaultProxyOptions {
  /** The upstream directory URL (Pebble's). */
  upstreamDirectoryUrl: string;
  /** PEM the upstream's HTTPS listener chains to. */
  upstreamCaPem: string;
  /** Add a `renewalInfo` (RFC 9773) endpoint to the directory. Default true. */
  ari?: boolean;
}

// ─── The proxy's own TLS certificate (once per process) ───────────────────

let listenerPems: Promise<{ caPem: string; certPem: string; keyPem: string }> | undefined;

function makeListenerPems() {
  listenerPems ??= (async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'certstate-fault-proxy-'));
    try {
      const f = (name: string) => path.join(dir, name);
      const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
      await execFileP('openssl', ['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=certstate test fault proxy CA']);
      await execFileP('openssl', ['req', ...ec, '-keyout', f('leaf.key'), '-out', f('leaf.csr'), '-subj', '/CN=127.0.0.1']);
      await writeFile(f('leaf.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
      await execFileP('openssl', ['x509', '-req', '-in', f('leaf.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('leaf.pem'), '-days', '2', '-extfile', f('leaf.ext')]);
      return { caPem: await readFile(f('ca.pem'), 'utf8'), certPem: await readFile(f('leaf.pem'), 'utf8'), keyPem: await readFile(f('leaf.key'), 'utf8') };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  })();
  return listenerPems;
}

// ─── The proxy ─────────────────────────────────────────────────────────────

const ACME = 'urn:ietf:params:acme:error:';
const ARI_PATH = '/renewal-info/';

function decodePayload(raw: Buffer): Record<string, unknown> | undefined {
  if (raw.length === 0) return undefined;
  try {
    const jws = JSON.parse(raw.toString('utf8')) as { payload?: string };
    if (!jws.payload) return undefined;
    const payload = JSON.parse(Buffer.from(jws.payload, 'base64url').toString('utf8')) as unknown;
    return typeof payload === 'object' && payload !== null ? (payload as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** Start a proxy in front of `upstreamDirectoryUrl`. */
export async function startFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  const pems = await makeListenerPems();
  const upstream = new URL(options.upstreamDirectoryUrl);
  const agent = new https.Agent({ keepAlive: true, ca: options.upstreamCaPem });
  const withAri = options.ari ?? true;
  const requests: ProxiedRequest[] = [];

  let newOrderPath = '';
  let newNoncePath = '';
  let rateLimit: { retryAfter: string; left: number } | undefined;
  let unavailable: { retryAfter: string | undefined; left: number } | undefined;
  let replacedFault = false;
  let stuck = false;
  let ari: AriResponder | undefined;
  /**
   * Bumped by every `setAri`/`clear`: the directory names a renewalInfo URL of
   * the current generation, so a request an engine of an earlier test still
   * had in flight (aborted when it stopped, handled here later) never reaches
   * a later test's responder.
   */
  let ariGeneration = 0;

  /** One request to the upstream, with the proxy's Host header. */
  function forward(method: string, pathAndQuery: string, headers: http.IncomingHttpHeaders, body: Buffer | undefined): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
    return new Promise((resolve, reject) => {
      const outHeaders: http.OutgoingHttpHeaders = { ...headers };
      delete outHeaders.connection;
      const req = https.request(
        { host: upstream.hostname, port: upstream.port, method, path: pathAndQuery, headers: outHeaders, agent, timeout: 10_000 },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 502, headers: res.headers, body: Buffer.concat(chunks) }));
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`upstream timeout ${method} ${pathAndQuery}`)));
      req.on('error', reject);
      req.end(body && body.length ? body : undefined);
    });
  }

  async function freshNonce(host: string): Promise<string | undefined> {
    if (!newNoncePath) return undefined;
    const res = await forward('HEAD', newNoncePath, { host }, undefined).catch(() => undefined);
    const nonce = res?.headers['replay-nonce'];
    return typeof nonce === 'string' ? nonce : undefined;
  }

  const server = https.createServer({ cert: pems.certPem, key: pems.keyPem }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      handle(req, res, Buffer.concat(chunks)).catch((error: unknown) => {
        if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`fault proxy: ${String(error)}`);
      });
    });
  });
  const sockets = new Set<net.Socket>();
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `https://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  const rewrite = (text: string) => text.split(upstream.origin).join(origin);

  async function handle(req: http.IncomingMessage, res: http.ServerResponse, body: Buffer): Promise<void> {
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    const pathname = url.replace(/\?.*$/, '');
    const host = req.headers.host ?? new URL(origin).host;
    const entry: ProxiedRequest = { method, path: pathname, status: 0, at: Date.now() };
    const payload = method === 'POST' ? decodePayload(body) : undefined;
    if (payload) entry.payload = payload;
    requests.push(entry);

    const fake = async (answer: FakeAnswer, fault: string) => {
      entry.fault = fault;
      entry.status = answer.status;
      const headers: Record<string, string> = { 'content-type': answer.status >= 400 ? 'application/problem+json' : 'application/json', 'cache-control': 'no-store', ...answer.headers };
      const nonce = await freshNonce(host);
      if (nonce) headers['replay-nonce'] = nonce;
      res.writeHead(answer.status, headers);
      res.end(answer.body === undefined ? '' : JSON.stringify(answer.body));
    };

    // ARI lives at the proxy (Pebble 2.4 has none).
    if (withAri && method === 'GET' && pathname.startsWith(ARI_PATH)) {
      const [generation, ...rest] = pathname.slice(ARI_PATH.length).split('/');
      const certId = decodeURIComponent(rest.join('/'));
      const answer = generation === String(ariGeneration) ? ari?.(certId) : undefined;
      return fake(answer ?? { status: 404, body: { type: `${ACME}malformed`, detail: 'no renewal information for this certificate' } }, answer ? 'ari' : 'ari-404');
    }

    if (method === 'POST' && pathname === newOrderPath) {
      if (rateLimit && rateLimit.left > 0) {
        rateLimit.left--;
        return fake({ status: 429, headers: { 'retry-after': rateLimit.retryAfter }, body: { type: `${ACME}rateLimited`, detail: 'too many new orders recently (fault proxy)' } }, '429');
      }
      if (unavailable && unavailable.left > 0) {
        unavailable.left--;
        return fake(
          { status: 503, ...(unavailable.retryAfter ? { headers: { 'retry-after': unavailable.retryAfter } } : {}), body: { type: `${ACME}serverInternal`, detail: 'service busy (fault proxy)' } },
          '503',
        );
      }
      if (replacedFault && payload && payload.replaces !== undefined) {
        return fake({ status: 409, body: { type: `${ACME}alreadyReplaced`, detail: `certificate ${String(payload.replaces)} has already been replaced (fault proxy)` } }, '409');
      }
    }

    const upstreamRes = await forward(method, url, req.headers, body);
    const headers: http.OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(upstreamRes.headers)) {
      if (value === undefined || name === 'content-length' || name === 'connection' || name === 'transfer-encoding' || name === 'keep-alive') continue;
      headers[name] = Array.isArray(value) ? value.map(rewrite) : rewrite(String(value));
    }
    let out = upstreamRes.body;
    const isJson = /json/i.test(String(upstreamRes.headers['content-type'] ?? ''));
    if (isJson && out.length > 0) {
      let text = rewrite(out.toString('utf8'));
      try {
        const doc = JSON.parse(text) as Record<string, unknown>;
        let changed = false;
        if (method === 'GET' && url === upstream.pathname && typeof doc.newOrder === 'string') {
          if (withAri) doc.renewalInfo = `${origin}${ARI_PATH}${ariGeneration}/`;
          changed = withAri;
        }
        // An order object (it has `finalize`): report it as still processing.
        if (stuck && typeof doc.finalize === 'string' && (doc.status === 'valid' || doc.status === 'processing')) {
          doc.status = 'processing';
          delete doc.certificate;
          entry.fault = 'processing';
          changed = true;
        }
        if (changed) text = JSON.stringify(doc);
      } catch {
        // not an object: pass through
      }
      out = Buffer.from(text, 'utf8');
    }
    entry.status = upstreamRes.status;
    headers['content-length'] = String(out.length);
    res.writeHead(upstreamRes.status, headers);
    res.end(method === 'HEAD' ? undefined : out);
  }

  // Learn the upstream's endpoint paths (through ourselves, so they are the proxy's).
  const dir = await forward('GET', upstream.pathname, { host: new URL(origin).host }, undefined);
  if (dir.status !== 200) throw new Error(`fault proxy: upstream directory answered ${dir.status}`);
  const doc = JSON.parse(dir.body.toString('utf8')) as { newOrder: string; newNonce: string };
  newOrderPath = new URL(doc.newOrder).pathname;
  newNoncePath = new URL(doc.newNonce).pathname;

  return {
    directoryUrl: `${origin}${upstream.pathname}`,
    origin,
    caBundlePem: pems.caPem,
    requests,
    orders: () => requests.filter((r) => r.method === 'POST' && r.path === newOrderPath),
    ariRequests: () => requests.filter((r) => r.method === 'GET' && r.path.startsWith(ARI_PATH)),
    rateLimitOrders: (retryAfter, times = Infinity) => void (rateLimit = { retryAfter, left: times }),
    unavailableOrders: (retryAfter, times = Infinity) => void (unavailable = { retryAfter, left: times }),
    alreadyReplaced: () => void (replacedFault = true),
    stuckInProcessing: () => void (stuck = true),
    setAri(responder) {
      ari = responder;
      ariGeneration++;
    },
    clear() {
      ariGeneration++;
      rateLimit = undefined;
      unavailable = undefined;
      replacedFault = false;
      stuck = false;
      ari = undefined;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        agent.destroy();
        server.close(() => resolve());
      }),
  };
}
