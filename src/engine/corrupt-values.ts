/**
 * Stored values that cannot be used — not UTF-8, truncated, foreign JSON, a
 * certificate of another name, a key that does not match its certificate —
 * count as absent for obtaining, and each is reported ONCE: the read that
 * finds it warns; the attempt's re-read of the same key, a reload, or the
 * handshake that finds the key mismatched do not warn again until the key
 * holds a usable value (read back, or stored by us) and goes bad again.
 */
import { CorruptStorageError } from '../errors.js';
import { safeError } from '../safe-error.js';
import type { Logger, Storage } from '../types.js';

/** Keys remembered as reported: bounded, oldest forgotten first (a forgotten key may warn once more). */
const MAX_REMEMBERED = 10_000;

export class CorruptValues {
  readonly #logger: Logger;
  readonly #reported = new Set<string>();

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  /** A value at `key` cannot be used: warn, unless this key's bad value was reported already. */
  report(key: string, name: string, error: unknown, message = 'ignoring a stored value that cannot be used (counts as absent)'): void {
    if (this.#reported.has(key)) {
      this.#logger.debug({ name, key, err: safeError(error) }, `${message} (reported before)`);
      return;
    }
    this.#reported.add(key);
    if (this.#reported.size > MAX_REMEMBERED) this.#reported.delete(this.#reported.values().next().value!);
    this.#logger.warn({ name, key, err: safeError(error) }, message);
  }

  /** `key` holds a usable value now (read back, or stored by us): a later bad value is reported again. */
  usable(key: string): void {
    this.#reported.delete(key);
  }

  /**
   * `storage.load(key)`, with a value the storage itself cannot decode (file
   * storage refuses bytes that are not UTF-8 with `CorruptStorageError`)
   * counted as absent and reported. Other errors (unreachable storage) propagate.
   */
  async load(storage: Storage, key: string, name: string): Promise<string | undefined> {
    try {
      return await storage.load(key);
    } catch (error) {
      if (!(error instanceof CorruptStorageError)) throw error;
      this.report(key, name, error);
      return undefined;
    }
  }
}
