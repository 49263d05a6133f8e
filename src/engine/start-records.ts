/**
 * `start()`'s records for the configured names, made a slice at a time. At
 * a million names making them is seconds of work: done in one stretch, no
 * handshake could be answered meanwhile (issue 14: any name served ≤ 1 s
 * after `start()`). Between slices the event loop runs, and a handshake for
 * a configured name whose record is not made yet makes it itself (`forHandshake`)
 * and is read at once, as for a name the scan has not reached.
 */
import type { EngineCore } from './core.js';
import type { NameRecord } from './name-record.js';
import type { Residency } from './residency.js';

/** Configured names given their records per turn of the event loop (~1–3 ms of work). */
const RECORDS_PER_SLICE = 4096;

/** Managed certificates by key → all their names when several (the engine's `#managed`). */
export type Configured = Map<string, readonly string[] | undefined>;

export class StartRecords {
  readonly #core: EngineCore;
  readonly #residency: Residency;
  /**
   * While records are being made: the configured names, the other names of
   * their groups (→ the group's key: a group's names and its wildcard are
   * found before its record is made), and whether storage is ready (false: it failed).
   */
  #making: { configured: Configured; others: Map<string, string>; ready: Promise<boolean> } | undefined;

  constructor(core: EngineCore, residency: Residency) {
    this.#core = core;
    this.#residency = residency;
  }

  /**
   * A record for each configured name, once `prepared` (the storage's
   * adapters) resolves; rejects as it does. `unheld`: the configured names
   * left without a managed record of their own (held on demand already).
   * Undefined when the engine stopped meanwhile.
   */
  async make(configured: Configured, prepared: Promise<void>): Promise<{ records: NameRecord[]; unheld: Configured } | undefined> {
    // One pass over the groups only (certificates of several names are few; a plain name costs a check).
    const others = new Map<string, string>();
    for (const [key, names] of configured) if (names) for (const name of names) if (name !== key) others.set(name, key);
    this.#making = {
      configured,
      others,
      ready: prepared.then(
        () => true,
        () => false,
      ),
    };
    const records: NameRecord[] = [];
    const unheld: Configured = new Map();
    try {
      await prepared;
      for (const [name, names] of configured) {
        const record = this.#residency.add(name, true, names);
        records.push(record);
        if (!record.managed) unheld.set(name, names);
        if (records.length % RECORDS_PER_SLICE === 0) {
          await new Promise((resolve) => setImmediate(resolve));
          if (this.#core.stopped) return undefined;
        }
      }
    } finally {
      this.#making = undefined;
    }
    return { records, unheld };
  }

  /**
   * A handshake for a configured name (or another name of its certificate,
   * or one its wildcard covers) while records are being made: its record, made now once
   * storage is ready (the loop then finds it made); undefined when there is
   * none to make (the handshake goes on as for an unknown name).
   */
  forHandshake(name: string): Promise<NameRecord | undefined> | undefined {
    const making = this.#making;
    if (making === undefined) return undefined;
    const { configured, others, ready } = making;
    const dot = name.indexOf('.');
    const wildcard = dot > 0 ? `*${name.slice(dot)}` : undefined;
    const keyOf = (n: string) => (configured.has(n) ? n : others.get(n));
    const key = keyOf(name) ?? (wildcard === undefined ? undefined : keyOf(wildcard));
    if (key === undefined) return undefined;
    return ready.then((isReady) => {
      if (!isReady || this.#core.stopped) return undefined;
      this.#residency.add(key, true, configured.get(key));
      return this.#residency.get(name) ?? this.#residency.managedWildcardFor(name);
    });
  }
}
