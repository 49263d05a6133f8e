/**
 * The start-up scan's fast path: when storage can list values in bulk
 * (`Storage.entries`), every stored certificate comes from one listing,
 * query or scan instead of one `load` per name. Each value found for a name
 * still waiting to be read is parsed as a read would parse it and handed to
 * residency (live or asleep); names it did not find are left to the
 * per-name reads (no certificate, or one stored since: the read says which).
 * Every YIELD_EVERY values (or batch, if larger) the event loop runs, so handshakes are answered meanwhile.
 */
import { safeError } from '../safe-error.js';
import { keys, nameFromCertificateKey } from '../storage-keys.js';
import type { LoadedState } from '../machines/certificate.js';
import type { EngineCore } from './core.js';
import type { Loads } from './loads.js';
import type { NameRecord } from './name-record.js';
import type { Residency } from './residency.js';

/** Values handled between turns of the event loop (a storage may hand over smaller batches: file storage's are 16). */
const YIELD_EVERY = 256;

/**
 * Read `records` through `storage.entries`. Returns the records it did not
 * hand to residency (all of them when the storage has no bulk read or the
 * listing failed: those are then read name by name).
 */
export async function bulkScan(core: EngineCore, residency: Residency, loads: Loads, records: NameRecord[], failures: Set<string> | undefined): Promise<NameRecord[]> {
  const storage = core.storage;
  if (typeof storage.entries !== 'function') return records;
  const waiting = new Map(records.map((r) => [r.name, r]));
  try {
    // Only the names still waiting are read (file storage; the others may read more, checked below).
    const only = (key: string) => waiting.has(nameFromCertificateKey(key) ?? '');
    let handled = 0;
    for await (const batch of storage.entries(keys.certificatesPrefix, { only })) {
      if (core.stopped) break;
      for (const [key, value, version] of batch) {
        const name = nameFromCertificateKey(key);
        const record = name === undefined ? undefined : waiting.get(name);
        if (!record) continue;
        waiting.delete(record.name);
        // Woken meanwhile by a handshake or an operator (its actor reads for itself), or dropped.
        if (record.actor || record.sleeping || residency.get(record.name) !== record) continue;
        const skipFailure = failures !== undefined && !failures.has(keys.failure(record.name));
        let loaded: LoadedState | { readError: unknown };
        try {
          // A name that will not get an actor now may sleep on its stored metadata (unparsed; checked before it is served or run).
          loaded = await loads.fromStored(record.name, value, skipFailure, !residency.roomForActor, version);
        } catch (readError) {
          loaded = { readError };
        }
        if (core.stopped || residency.get(record.name) !== record || record.actor || record.sleeping) continue;
        residency.restOrWake(record, loaded, skipFailure);
      }
      handled += batch.length;
      if (handled >= YIELD_EVERY) {
        handled = 0;
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
  } catch (error) {
    // The bulk read failed part way: what it did not hand over is read name by name.
    core.logger.warn({ err: safeError(error) }, 'bulk read of the stored certificates failed; reading them name by name');
  }
  return [...waiting.values()];
}
