/**
 * Test helper: a real ACME CA (Debian's Pebble 2.4) plus its fake DNS server
 * (`pebble-challtestsrv`), each started on free loopback ports for one test
 * file and always stopped again.
 *
 * Why this shape:
 * - Pebble 2.4 from Debian ships no TLS files for its own HTTPS listener, so we
 *   make a throw-away CA + leaf for 127.0.0.1/localhost with `openssl`, once
 *   per process; `caBundlePem` is what an ACME client must trust.
 * - Pebble's VA dials the ports in its config (`httpPort`/`tlsPort`) on the
 *   address DNS gives it. challtestsrv answers every A query with 127.0.0.1 and
 *   (with `-defaultIPv6 ""`) no AAAA, because the VA asks AAAA first and dials
 *   the first address it gets. So the test's own servers on 127.0.0.1 are what
 *   gets validated; challtestsrv's own challenge responders stay off.
 * - Processes are killed through their own handles (never by name), on
 *   `stop()` and on process exit, so a crashed test leaves nothing behind.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtemp, writeFile, readFile } from 'node:fs/promises';
import { rmSync, accessSync, constants as fsConstants } from 'node:fs';
import https from 'node:https';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** Options for `startPebble`. */
export interface StartPebbleOptions {
  /** Port Pebble's VA dials for HTTP-01 (where the test's HTTP server listens). Default: an unused free port. */
  httpPort?: number;
  /** Port Pebble's VA dials for TLS-ALPN-01 (where the test's TLS server listens). Default: an unused free port. */
  tlsPort?: number;
  /** Lifetime of issued certificates, in seconds (Pebble's `certificateValidityPeriod`). */
  certificateValidityPeriod?: number;
  /** Require External Account Binding for new accounts. */
  externalAccountBindingRequired?: boolean;
  /** EAB MAC keys by key id (base64url HMAC keys), as Pebble's config takes them. */
  externalAccountMACKeys?: Record<string, string>;
  /** Percentage of good nonces Pebble rejects as `badNonce` (`PEBBLE_WFE_NONCEREJECT`). Default 0. */
  nonceReject?: number;
  /** Percentage of orders that reuse a valid authorization (`PEBBLE_AUTHZREUSE`). Default 0, so every order validates. */
  authzReuse?: number;
  /** Number of alternate root chains (`PEBBLE_ALTERNATE_ROOTS`). Default 0. */
  alternateRoots?: number;
  /** Extra environment for Pebble. */
  env?: Record<string, string>;
  /** DNS server Pebble's VA resolves through (`host:port`), instead of challtestsrv: e.g. a test's BIND. */
  dnsServer?: string;
}

/** Control of the running `pebble-challtestsrv` (its management HTTP API). */
export interface ChallTestSrv {
  /** Management API base URL, e.g. `http://127.0.0.1:8055`. */
  readonly url: string;
  /** Add a TXT record value for `host` (trailing dot optional). */
  setTxt(host: string, value: string): Promise<void>;
  /** Remove every TXT record of `host`. */
  clearTxt(host: string): Promise<void>;
  /** Answer A queries for `host` with `addresses`. */
  addA(host: string, addresses: string[]): Promise<void>;
  /** Back to the default A answer for `host`. */
  clearA(host: string): Promise<void>;
  /** Answer every query for `host` with SERVFAIL. */
  setServfail(host: string): Promise<void>;
  /** Stop answering SERVFAIL for `host`. */
  clearServfail(host: string): Promise<void>;
}

/** A running Pebble + challtestsrv pair. */
export interface PebbleHandle {
  /** ACME directory URL. */
  readonly directoryUrl: string;
  /** Pebble's management API base URL (HTTPS, same listener CA). */
  readonly managementUrl: string;
  /** PEM of the CA that signed Pebble's own HTTPS listener: trust it for ACME requests. */
  readonly caBundlePem: string;
  /** Pebble's issuance root (index 0 or an alternate root), PEM. Regenerated on every Pebble start. */
  rootsPem(index?: number): Promise<string>;
  /** Pebble's issuing intermediate (index 0 or an alternate), PEM. */
  intermediatesPem(index?: number): Promise<string>;
  /** The fake DNS server Pebble resolves through. */
  readonly challtestsrv: ChallTestSrv;
  /** Orders created so far (from Pebble's `Added order` log lines). */
  orderCount(): number;
  /** Accounts registered so far (from Pebble's `There are now N accounts` log lines). */
  accountCount(): number;
  /** Everything Pebble and challtestsrv printed so far. */
  logs(): string;
  /** Kill both processes and wait for them to exit. Idempotent. */
  stop(): Promise<void>;
}

// ─── Finding the binaries ─────────────────────────────────────────────────

export function findExecutable(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(path.delimiter)) {
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

// ─── Process bookkeeping: kill our children, by handle, whatever happens ──

const liveChildren = new Set<ChildProcess>();
const tempDirs = new Set<string>();
let exitHookInstalled = false;

function killAllNow(): void {
  for (const child of liveChildren) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
}

export function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // 'exit' handlers must be synchronous: SIGKILL each child we started and
  // remove the temp dirs holding the listener CA key.
  process.on('exit', killAllNow);
  // A signal (the test runner's timeout, Ctrl-C) skips 'exit': clean up, then
  // re-raise so the process still dies of the signal as it would have.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      killAllNow();
      process.kill(process.pid, signal);
    });
  }
}

function track(child: ChildProcess): void {
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
}

export async function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
  await exited;
  clearTimeout(timer);
}

// ─── TLS files for Pebble's own listener (once per process) ───────────────

interface ListenerFiles {
  dir: string;
  caPem: string;
  certFile: string;
  keyFile: string;
}

let listenerFiles: Promise<ListenerFiles> | undefined;

function makeListenerFiles(): Promise<ListenerFiles> {
  listenerFiles ??= (async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'certstate-pebble-'));
    tempDirs.add(dir);
    const f = (name: string) => path.join(dir, name);
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
    await execFileP('openssl', ['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '30', '-subj', '/CN=certstate test Pebble listener CA']);
    await execFileP('openssl', ['req', ...ec, '-keyout', f('leaf.key'), '-out', f('leaf.csr'), '-subj', '/CN=localhost']);
    await writeFile(f('leaf.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
    await execFileP('openssl', ['x509', '-req', '-in', f('leaf.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('leaf.pem'), '-days', '30', '-extfile', f('leaf.ext')]);
    return { dir, caPem: await readFile(f('ca.pem'), 'utf8'), certFile: f('leaf.pem'), keyFile: f('leaf.key') };
  })();
  return listenerFiles;
}

// ─── Small network helpers ────────────────────────────────────────────────

/** A loopback TCP port that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function httpsGet(url: string, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca, timeout: 2000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`timeout fetching ${url}`)));
    req.on('error', reject);
  });
}

function httpPost(url: string, body: unknown): Promise<void> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = http.request(url, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) }, timeout: 2000 }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`challtestsrv ${url} answered ${res.statusCode}`))));
    });
    req.on('timeout', () => req.destroy(new Error(`timeout posting to ${url}`)));
    req.on('error', reject);
    req.end(data);
  });
}

function dotted(host: string): string {
  return host.endsWith('.') ? host : `${host}.`;
}

export function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Spawn a tracked child whose stdout+stderr are appended to `log`. */
export function spawnLogged(file: string, args: string[], env: NodeJS.ProcessEnv, log: { text: string }): ChildProcess {
  const child = spawn(file, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  track(child);
  const append = (chunk: Buffer) => {
    log.text += chunk.toString('utf8');
  };
  child.stdout!.on('data', append);
  child.stderr!.on('data', append);
  // Never let the children hold the test process open.
  child.unref();
  (child.stdout as unknown as net.Socket).unref?.();
  (child.stderr as unknown as net.Socket).unref?.();
  return child;
}

/** Poll `ready()` every 20 ms until true; fail early if `child` exits. */
export async function waitReady(child: ChildProcess, what: string, ready: () => Promise<boolean>, log: { text: string }, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${what} exited early (${child.exitCode ?? child.signalCode}):\n${log.text}`);
    }
    if (await ready().catch(() => false)) return;
    await sleep(20);
  }
  throw new Error(`${what} not ready within ${timeoutMs} ms:\n${log.text}`);
}

// ─── startPebble ───────────────────────────────────────────────────────────

/**
 * Start challtestsrv, then Pebble resolving through it. Returns `undefined`
 * (after a loud SKIP warning) when Pebble is not installed, unless `CI` is
 * set, in which case it throws: CI must never silently skip real-ACME tests.
 */
export async function startPebble(options: StartPebbleOptions = {}): Promise<PebbleHandle | undefined> {
  const pebbleBin = findExecutable('pebble');
  const challBin = findExecutable('pebble-challtestsrv');
  if (!pebbleBin || !challBin) {
    const missing = [!pebbleBin && 'pebble', !challBin && 'pebble-challtestsrv'].filter(Boolean).join(' and ');
    if (process.env.CI) throw new Error(`${missing} not found on PATH; CI must install Debian's pebble package (apt-get install pebble)`);
    console.warn(`\n*** SKIP: ${missing} not installed; real-ACME tests are skipped. Install with: apt-get install pebble ***\n`);
    return undefined;
  }
  installExitHook();
  const files = await makeListenerFiles();

  const log = { text: '' };
  const children: ChildProcess[] = [];
  const stop = async () => {
    await Promise.all(children.map(killChild));
  };

  try {
    // challtestsrv: DNS + management only; its challenge responders stay off so
    // that our own servers answer the VA.
    const [dnsPort, chalMgmtPort] = [await freePort(), await freePort()];
    const chall = spawnLogged(
      challBin,
      ['-http01', '', '-https01', '', '-tlsalpn01', '', '-dns01', `127.0.0.1:${dnsPort}`, '-management', `127.0.0.1:${chalMgmtPort}`, '-defaultIPv4', '127.0.0.1', '-defaultIPv6', ''],
      process.env,
      log,
    );
    children.push(chall);
    await waitReady(chall, 'pebble-challtestsrv', () => canConnect(chalMgmtPort), log);

    const [listenPort, mgmtPort] = [await freePort(), await freePort()];
    const config = {
      pebble: {
        listenAddress: `127.0.0.1:${listenPort}`,
        managementListenAddress: `127.0.0.1:${mgmtPort}`,
        certificate: files.certFile,
        privateKey: files.keyFile,
        httpPort: options.httpPort ?? (await freePort()),
        tlsPort: options.tlsPort ?? (await freePort()),
        ocspResponderURL: '',
        externalAccountBindingRequired: options.externalAccountBindingRequired ?? false,
        ...(options.externalAccountMACKeys ? { externalAccountMACKeys: options.externalAccountMACKeys } : {}),
        ...(options.certificateValidityPeriod !== undefined ? { certificateValidityPeriod: options.certificateValidityPeriod } : {}),
      },
    };
    const configFile = path.join(files.dir, `pebble-${listenPort}.json`);
    await writeFile(configFile, JSON.stringify(config, null, 2));

    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PEBBLE_VA_NOSLEEP: '1',
      PEBBLE_WFE_NONCEREJECT: String(options.nonceReject ?? 0),
      PEBBLE_AUTHZREUSE: String(options.authzReuse ?? 0),
      ...(options.alternateRoots ? { PEBBLE_ALTERNATE_ROOTS: String(options.alternateRoots) } : {}),
      ...options.env,
    };
    const pebble = spawnLogged(pebbleBin, ['-config', configFile, '-dnsserver', options.dnsServer ?? `127.0.0.1:${dnsPort}`], env, log);
    children.push(pebble);

    const directoryUrl = `https://127.0.0.1:${listenPort}/dir`;
    const managementUrl = `https://127.0.0.1:${mgmtPort}`;
    await waitReady(pebble, 'pebble', async () => (await httpsGet(directoryUrl, files.caPem)).status === 200, log);

    const chalUrl = `http://127.0.0.1:${chalMgmtPort}`;
    const fetchPem = async (what: string, index: number) => {
      const res = await httpsGet(`${managementUrl}/${what}/${index}`, files.caPem);
      if (res.status !== 200) throw new Error(`pebble ${what}/${index}: HTTP ${res.status}`);
      return res.body;
    };
    const countMatches = (re: RegExp) => (log.text.match(re) ?? []).length;

    return {
      directoryUrl,
      managementUrl,
      caBundlePem: files.caPem,
      rootsPem: (index = 0) => fetchPem('roots', index),
      intermediatesPem: (index = 0) => fetchPem('intermediates', index),
      challtestsrv: {
        url: chalUrl,
        setTxt: (host, value) => httpPost(`${chalUrl}/set-txt`, { host: dotted(host), value }),
        clearTxt: (host) => httpPost(`${chalUrl}/clear-txt`, { host: dotted(host) }),
        addA: (host, addresses) => httpPost(`${chalUrl}/add-a`, { host: dotted(host), addresses }),
        clearA: (host) => httpPost(`${chalUrl}/clear-a`, { host: dotted(host) }),
        setServfail: (host) => httpPost(`${chalUrl}/set-servfail`, { host: dotted(host) }),
        clearServfail: (host) => httpPost(`${chalUrl}/clear-servfail`, { host: dotted(host) }),
      },
      orderCount: () => countMatches(/Added order "[^"]*" to the db/g),
      accountCount: () => {
        const all = [...log.text.matchAll(/There are now (\d+) accounts in memory/g)];
        return all.length === 0 ? 0 : Number(all[all.length - 1]![1]);
      },
      logs: () => log.text,
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
