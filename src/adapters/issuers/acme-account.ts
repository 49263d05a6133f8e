/**
 * ACME accounts in storage: registered once per (directory, email), reused by
 * every process sharing the storage, across restarts.
 *
 * Registration happens under `keys.accountLock(id)` and re-reads storage
 * after taking the lock: two processes (or two attempts in one process)
 * starting together register one account, not two. The account key is stored
 * through `Storage` (file storage keeps it 0600) and never logged.
 */
import { createHash, generateKeyPair } from 'node:crypto';
import { promisify } from 'node:util';
import type { Logger, Storage } from '../../types.js';
import { keys } from '../../storage-keys.js';
import { safeError } from '../../safe-error.js';

const generateKeyPairP = promisify(generateKeyPair);

/** An ACME account we can sign requests with. */
export interface AcmeAccount {
  /** The account URL (`kid`) the CA returned. */
  url: string;
  /** The account private key, PKCS#8 PEM. */
  keyPem: string;
}

/** What storage holds at `keys.account(id)`. */
interface StoredAccount extends AcmeAccount {
  version: 1;
  directoryUrl: string;
  email?: string;
  createdAt: number;
}

/** How long a registration may hold the account lock. */
const ACCOUNT_LOCK_TTL_MS = 60_000;

/**
 * Storage id of the account for a directory and email: a digest, so that the
 * key is short, fixed-alphabet, and does not spell out the email address.
 */
export function accountIdFor(directoryUrl: string, email: string | undefined): string {
  return createHash('sha256').update(`${directoryUrl}\n${email ?? ''}`).digest('hex').slice(0, 32);
}

/** A fresh account key: ECDSA P-256 (ES256), what Let's Encrypt recommends. */
export async function generateAccountKey(): Promise<string> {
  const { privateKey } = await generateKeyPairP('ec', { namedCurve: 'prime256v1' });
  return privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
}

/** Load the stored account, or `undefined` if absent or unreadable (then a new one is registered). */
export async function loadAccount(storage: Storage, id: string, logger: Logger): Promise<AcmeAccount | undefined> {
  const raw = await storage.load(keys.account(id));
  if (raw === undefined) return undefined;
  try {
    const parsed = JSON.parse(raw) as Partial<StoredAccount>;
    if (typeof parsed.url === 'string' && /^https?:\/\//.test(parsed.url) && typeof parsed.keyPem === 'string' && parsed.keyPem.includes('PRIVATE KEY')) {
      return { url: parsed.url, keyPem: parsed.keyPem };
    }
  } catch {
    // fall through: treated as absent
  }
  logger.warn({ key: keys.account(id) }, 'stored ACME account is unreadable; registering a new one');
  return undefined;
}

/** Inputs of `ensureAccount`. */
export interface EnsureAccountOptions {
  storage: Storage;
  id: string;
  directoryUrl: string;
  email?: string;
  signal: AbortSignal;
  logger: Logger;
  now(): number;
  /** Register (or look up) the account for `keyPem` at the CA; returns its URL. */
  register(keyPem: string): Promise<string>;
  /**
   * An account the CA no longer knows (`accountDoesNotExist`): register its
   * key again, unless another process already replaced it in storage.
   */
  stale?: AcmeAccount;
}

/** The stored account, registering it first (once, under the account lock) if needed. */
export async function ensureAccount(o: EnsureAccountOptions): Promise<AcmeAccount> {
  if (!o.stale) {
    const existing = await loadAccount(o.storage, o.id, o.logger);
    if (existing) return existing;
  }
  const lockKey = keys.accountLock(o.id);
  const lock = await o.storage.lock(lockKey, ACCOUNT_LOCK_TTL_MS, { signal: o.signal });
  try {
    // Whoever held the lock before us may have registered (or repaired) it.
    const current = await loadAccount(o.storage, o.id, o.logger);
    if (current && (!o.stale || current.url !== o.stale.url)) return current;
    o.signal.throwIfAborted();
    // Re-registering a stale account reuses its key: the CA answers with the
    // existing account if it still has it, or creates one.
    const keyPem = o.stale?.keyPem ?? current?.keyPem ?? (await generateAccountKey());
    const url = await o.register(keyPem);
    const stored: StoredAccount = { version: 1, directoryUrl: o.directoryUrl, url, keyPem, createdAt: o.now() };
    if (o.email !== undefined) stored.email = o.email;
    await o.storage.store(keys.account(o.id), JSON.stringify(stored), { fence: { lockKey, token: lock.fencingToken } });
    o.logger.info({ accountUrl: url }, o.stale ? 'ACME account re-registered' : 'ACME account registered');
    return { url, keyPem };
  } finally {
    await lock.release().catch((error: unknown) => o.logger.warn({ err: safeError(error) }, 'releasing the ACME account lock failed'));
  }
}
