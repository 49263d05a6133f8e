/**
 * TLS session tickets that resume on every process of a cluster: the
 * session-ticket keys (STEKs) live in storage, rotate on the engine's clock,
 * and the previous keys keep decrypting for an overlap window.
 *
 * One process adds the next key, under a storage lock, when the current one
 * takes over; the others read it. Each key is published one interval before
 * it starts encrypting, so every process already decrypts with it when the
 * first one switches (a process a little late still resumes the others'
 * tickets). Between rotations there is no storage traffic, and a handshake
 * only reads keys from memory.
 *
 * How the keys reach a server (see ticket-key-callback.ts for Node's part):
 * `serverOptions()` gives a fixed `sessionIdContext` (Node's default is a
 * hash of the process's argv: two processes started differently would refuse
 * each other's sessions) for `tls.createServer`; `attach(server)` — done by
 * the application at once, or by the SNI callback at the server's first full
 * handshake — makes the server ask these keys at every ticket from then on.
 *
 * Storage trouble never stops serving: until the cluster's keys are read,
 * and while storage is unreachable at a rotation, the process rotates keys of
 * its own (its tickets then resume on it alone) and tries storage again.
 */
import { randomBytes } from 'node:crypto';
import type tls from 'node:tls';
import { ConfigError, CorruptStorageError } from '../errors.js';
import { keys as storageKeys } from '../storage-keys.js';
import { safeError } from '../safe-error.js';
import type { Clock, Logger, Storage, TimerHandle } from '../types.js';
import { compileTicketKeys, installTicketKeyCallback, ticketKeyContext, type CompiledTicketKeys } from './ticket-key-callback.js';
import { parseTicketKeys, rotate, serializeTicketKeys, TICKET_KEY_BYTES, viewAt, type TicketKey, type TicketKeyView, type TicketSchedule } from './ticket-keys.js';
import { withStorageLock } from './storage-lock.js';

/** Session-ticket key management (`createCertEngine({ sessionTickets })`; `false` turns it off). */
export interface SessionTicketOptions {
  /**
   * How often a new key takes over encrypting tickets, ms. Default 43,200,000
   * (12 h, as Caddy); at least 60,000.
   */
  rotationIntervalMs?: number;
  /**
   * How long a key still decrypts (resumes sessions) after its successor took
   * over, ms. Default 43,200,000 (12 h). A ticket lives as long as the
   * server's `sessionTimeout` (Node's default: 300 s): keep this at least that long.
   */
  overlapMs?: number;
}

/** The server option `tlsOptions()` adds for session tickets. */
export interface SessionTicketServerOptions {
  /** The same on every process, so a session from one is accepted by the others. */
  sessionIdContext: string;
}

/** What the manager needs from the engine. */
export interface SessionTicketDeps {
  storage: Storage;
  clock: Clock;
  logger: Logger;
}

const HOUR = 3_600_000;
/** Same on every process of every certstate cluster: only the ticket keys tell clusters apart. */
export const SESSION_ID_CONTEXT = 'certstate';
/** Storage unreachable at a rotation: try again after this long (engine clock). */
const RETRY_MS = 60_000;
const LOCK_TTL_MS = 30_000;
/**
 * Longest wait for the rotation lock before reading what its holder wrote instead: a live
 * holder writes in milliseconds, and one that crashed must not hold up `start()` (the
 * retry a minute later finds its lease run out).
 */
const LOCK_WAIT_MS = 2_000;

/** Validate the options (ConfigError) and fill in the defaults. */
export function ticketSchedule(options: SessionTicketOptions = {}): TicketSchedule {
  const rotationIntervalMs = options.rotationIntervalMs ?? 12 * HOUR;
  const overlapMs = options.overlapMs ?? 12 * HOUR;
  if (!Number.isSafeInteger(rotationIntervalMs) || rotationIntervalMs < 60_000) throw new ConfigError('sessionTickets.rotationIntervalMs must be a whole number of ms ≥ 60,000');
  if (!Number.isSafeInteger(overlapMs) || overlapMs < 0) throw new ConfigError('sessionTickets.overlapMs must be a whole number of ms ≥ 0');
  return { rotationIntervalMs, overlapMs };
}

const newKey = () => randomBytes(TICKET_KEY_BYTES);

/** See the module comment. Create one per engine; `start()` it with the engine. */
export class SessionTickets {
  readonly #deps: SessionTicketDeps;
  readonly #schedule: TicketSchedule;
  /** The keys in use: the cluster's once read, the process's own until then (or while storage is away). */
  #keys: TicketKey[];
  #view: TicketKeyView;
  #compiled: CompiledTicketKeys;
  #timer: TimerHandle | undefined;
  #syncing: Promise<void> | undefined;
  /** Storage failed: when to try again (engine clock). */
  #retryAt: number | undefined;
  /** Servers wired to these keys, with the context the callback went on; those without Node's callback get `setTicketKeys()` at every change. */
  readonly #attached = new WeakMap<tls.Server, object | undefined>();
  readonly #fallback = new Set<tls.Server>();
  readonly #stop = new AbortController();

  constructor(deps: SessionTicketDeps, options: SessionTicketOptions = {}) {
    this.#deps = deps;
    this.#schedule = ticketSchedule(options);
    this.#keys = rotate([], deps.clock.now(), this.#schedule, newKey);
    this.#view = viewAt(this.#keys, deps.clock.now(), this.#schedule);
    this.#compiled = compileTicketKeys(this.#view.encrypting, this.#view.decrypting);
  }

  /** Read (or create) the cluster's keys and follow their schedule. Never rejects: trouble is logged and retried. */
  start(): Promise<void> {
    return this.#sync();
  }

  /** Stop rotating (servers keep the keys they have) and wait for a storage step in flight. */
  async stop(): Promise<void> {
    this.#stop.abort();
    if (this.#timer !== undefined) this.#deps.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#syncing;
  }

  /**
   * Options for `tls.createServer`: the cluster's session id context. No
   * `ticketKeys`: a key handed over at creation would stay in a server that is
   * never attached and decrypt long after its window. Until attached, a server
   * has Node's random key, so its first handshake is full, and attaches it.
   */
  serverOptions(): SessionTicketServerOptions {
    return { sessionIdContext: SESSION_ID_CONTEXT };
  }

  /**
   * Make `server` encrypt and decrypt its session tickets with these keys
   * from now on, through every rotation (idempotent; again after
   * `server.setSecureContext()`, which replaces the context they were on).
   */
  attach(server: tls.Server): void {
    if (this.#isAttached(server)) return;
    this.#attached.set(server, ticketKeyContext(server));
    if (installTicketKeyCallback(server, () => this.#compiled)) return;
    if (typeof server.setTicketKeys !== 'function' || this.#fallback.has(server)) return;
    if (this.#fallback.size === 0) this.#deps.logger.warn('this Node offers one session-ticket key per server: keys rotate without an overlap window (tickets from before a rotation do not resume)');
    this.#fallback.add(server);
    server.once('close', () => this.#fallback.delete(server));
    server.setTicketKeys(this.#view.encrypting);
  }

  /** Wrap an SNI callback so that the server it runs for is attached at its first full handshake. */
  wrapSNICallback<F extends (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void) => void>(sni: F): F {
    const attach = (server: tls.Server) => this.attach(server);
    return function certstateTicketsSNICallback(this: unknown, servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void) {
      // Node calls it as a method of the server-side TLSSocket, whose `server` is the tls.Server.
      const server = (this as { server?: tls.Server } | undefined)?.server;
      if (server) attach(server);
      return sni.call(this, servername, cb);
    } as F;
  }

  #isAttached(server: tls.Server): boolean {
    return this.#attached.has(server) && this.#attached.get(server) === ticketKeyContext(server);
  }

  /** @internal For tests: resolves when no storage step is in flight. */
  async settled(): Promise<void> {
    while (this.#syncing) await this.#syncing;
  }

  /** Use `keys` from now on, and wake up at their next change (or the storage retry). */
  #use(keys: TicketKey[]): void {
    const now = this.#deps.clock.now();
    this.#keys = keys;
    this.#view = viewAt(keys, now, this.#schedule);
    this.#compiled = compileTicketKeys(this.#view.encrypting, this.#view.decrypting);
    for (const server of this.#fallback) server.setTicketKeys(this.#view.encrypting);
    this.#arm();
  }

  #arm(): void {
    if (this.#timer !== undefined) this.#deps.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    const changeAt = this.#view.nextChangeAt;
    const at = this.#retryAt === undefined ? changeAt : Math.min(this.#retryAt, changeAt ?? Infinity);
    if (at === undefined || this.#stop.signal.aborted) return;
    this.#timer = this.#deps.clock.setTimeout(() => {
      this.#timer = undefined;
      const retryDue = this.#retryAt !== undefined && this.#deps.clock.now() >= this.#retryAt;
      if (retryDue) this.#retryAt = undefined; // set again if the retry fails
      // Switch at once from memory; the storage step (a new next key, or the retry) follows.
      this.#use(this.#keys);
      if (this.#view.needsRotation || retryDue) void this.#sync();
    }, Math.max(0, at - this.#deps.clock.now()));
  }

  /** One storage step at a time: read the cluster's keys, and add the next key under the lock if none is published. */
  #sync(): Promise<void> {
    this.#syncing ??= this.#syncOnce().finally(() => {
      this.#syncing = undefined;
    });
    return this.#syncing;
  }

  async #syncOnce(): Promise<void> {
    if (this.#stop.signal.aborted) return;
    const { storage, clock, logger } = this.#deps;
    try {
      let stored = await this.#load();
      if (!stored || viewAt(stored, clock.now(), this.#schedule).needsRotation) {
        const written = await withStorageLock(storage, storageKeys.sessionTicketLock, { clock, logger, lockTtlMs: LOCK_TTL_MS }, { waitMs: LOCK_WAIT_MS, signal: this.#stop.signal }, async (fence) => {
          const current = await this.#load();
          // A set lost from storage is replaced by ours, so the tickets we issued still resume.
          const base = current ?? this.#keys;
          const next = rotate(base, clock.now(), this.#schedule, newKey);
          if (next === current) return current;
          await storage.store(storageKeys.sessionTicketKeys, serializeTicketKeys(next), { fence });
          logger.info({ keys: next.length, nextRotationAt: next.at(-1)!.activeFrom }, 'session-ticket keys rotated');
          return next;
        });
        // Its holder is writing the next key: read it once the lock is free.
        stored = written.ran ? written.value : await this.#load();
      }
      if (this.#stop.signal.aborted) return;
      if (!stored) throw new Error('no session-ticket keys in storage, and their lock is held (by a process that may have died)');
      // Not rotated when the lock stayed taken: look again in a minute (a dead holder's lease runs out).
      this.#retryAt = viewAt(stored, clock.now(), this.#schedule).needsRotation ? clock.now() + RETRY_MS : undefined;
      this.#use(stored);
    } catch (error) {
      if (this.#stop.signal.aborted) return;
      logger.warn({ err: safeError(error) }, 'session-ticket keys: cannot use the cluster\'s keys yet; rotating this process\'s own and trying again in a minute');
      this.#retryAt = clock.now() + RETRY_MS;
      this.#use(rotate(this.#keys, clock.now(), this.#schedule, newKey));
    }
  }

  /** The stored set, or undefined when absent or corrupt (logged; the next writer replaces it). */
  async #load(): Promise<TicketKey[] | undefined> {
    const raw = await this.#deps.storage.load(storageKeys.sessionTicketKeys);
    if (raw === undefined) return undefined;
    try {
      return parseTicketKeys(storageKeys.sessionTicketKeys, raw);
    } catch (error) {
      if (!(error instanceof CorruptStorageError)) throw error;
      this.#deps.logger.warn({ err: safeError(error) }, 'ignoring corrupt session-ticket keys; they will be replaced');
      return undefined;
    }
  }
}
