/** Errors of storage backends: I/O, corrupt values, keys, fencing and leases. */
import { CertstateError } from './base.js';

/** A storage key outside the allowed alphabet or shape. */
export class InvalidKeyError extends CertstateError {
  constructor(key: string, reason: string) {
    super(`invalid storage key ${JSON.stringify(key.slice(0, 200))}: ${reason}`, { code: 'ERR_INVALID_KEY' });
  }
}

/** A storage backend failed (I/O, connection). */
export class StorageError extends CertstateError {
  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(message, { code: options?.code ?? 'ERR_STORAGE', cause: options?.cause });
  }
}

/** A stored value could not be parsed; treated as absent. */
export class CorruptStorageError extends StorageError {
  constructor(key: string, reason: string, cause?: unknown) {
    super(`corrupt stored value at ${key}: ${reason}`, { code: 'ERR_STORAGE_CORRUPT', cause });
  }
}

/** A write presented a fencing token that is no longer the newest. */
export class FencingError extends StorageError {
  constructor(lockKey: string, token: number) {
    super(`write refused: fencing token ${token} for ${lockKey} is stale`, { code: 'ERR_FENCED' });
  }
}

/** The lease of a held lock was lost. */
export class LockLostError extends StorageError {
  constructor(lockKey: string) {
    super(`lock ${lockKey} was lost`, { code: 'ERR_LOCK_LOST' });
  }
}

/**
 * Codes of our own storage failing us: unreachable (`ERR_STORAGE`), timing
 * out (`ERR_STORAGE_TIMEOUT`), or our lock taken over by another process
 * (`ERR_FENCED`, `ERR_LOCK_LOST`). None is the CA's verdict on the name: an
 * attempt that ends with one is retried soon, not counted as a failed
 * attempt, and not recorded for the cluster.
 */
export function isStorageFault(code: string | undefined): boolean {
  return code === 'ERR_STORAGE' || code === 'ERR_STORAGE_TIMEOUT' || code === 'ERR_FENCED' || code === 'ERR_LOCK_LOST';
}
