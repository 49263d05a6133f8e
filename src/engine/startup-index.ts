/**
 * The start-up index (issue 14: a million names): what the start-up scan
 * needs to put every name to sleep, in one file read instead of one read per
 * stored certificate, for storages that keep one (`Storage.startupIndex`:
 * file storage).
 *
 * **A cache, never the truth.** Each line pairs a name's certificate
 * metadata with the *version* of the stored value it was read from (file
 * storage: size, inode, modification and change times). A line is only ever
 * made from a read that saw both together (a bulk read, a versioned read,
 * or a line of an earlier index), so every line is a true fact about some
 * version of the file; the index is stale, never wrong. It is used for one
 * decision only — a name with no room for an actor sleeps on it, marked
 * unverified like metadata stored beside a certificate (stored-meta.ts):
 * serving and waking parse the stored certificate first, as ever.
 *
 * **Staleness is caught.** After start-up (in the background, not delaying
 * serving) every name that sleeps on an index line has its file's current
 * version compared with the line's, from one directory listing and a `stat`
 * per file; a name whose file changed or went is read and parsed (today's
 * read) and wakes from what was parsed, so an earlier-expiring certificate
 * put there by an operator or another process while this one was down is
 * renewed on time. Names added since are not in the index and are read as
 * before; names removed are not written again.
 *
 * **Written** after that check, then at most every `writeIntervalMs` while
 * names changed, and at `stop()` (lines it can make without reading), by
 * the storage atomically (temp file + rename): processes sharing the
 * directory need no lock, the last writer wins, and any of their indexes is
 * merely stale. Only with more names than `maxLiveActors` (below that every
 * name gets an actor, which reads its certificate anyway).
 *
 * **Hostile or corrupt** (not JSON, another format version, truncated, over
 * the size bound, a name or field that is not exactly the schema, a name
 * twice): ignored whole, with one warning, and the full read used. Names in
 * it are never made into paths; only names the engine manages are looked up.
 */
import { certificateCoversName } from '../certs.js';
import { safeError } from '../safe-error.js';
import { keys, nameFromCertificateKey } from '../storage-keys.js';
import type { CertificateMeta, StartupIndexStorage } from '../types.js';
import type { EngineCore } from './core.js';
import type { Loads } from './loads.js';
import { certificateNames, type NameRecord } from './name-record.js';
import type { Residency } from './residency.js';
import { BadIndex, checkHeader, endOf, indexEnd, indexHeader, indexLine, MAX_LINE, parseEntry, type IndexEntry } from './startup-index-format.js';
import { isFromIndex, isUnverified, markFromIndex, markVerified, metaDifferences, noteStoredVersion, storedVersionOf } from './stored-meta.js';
import { parseStoredCertificate, storedUnitAgrees } from './stored.js';

/** Options of the start-up index (`CertEngineOptions.startupIndex`). */
export interface StartupIndexOptions {
  /** At most this often (ms) the index is written again while names changed (default 10 minutes; ≥ 60,000). */
  writeIntervalMs?: number;
}

const DEFAULT_WRITE_INTERVAL_MS = 10 * 60_000;
/** Size bound: this many bytes per managed name (a line is ~350 B; a certificate of many names is longer), plus 1 MiB. */
const BYTES_PER_NAME = 4096;
/** Reads in flight for the check after start-up and for lines the writer must read. */
const READS = 8;
const YIELD_EVERY = 2048;

export class StartupIndex {
  readonly #core: EngineCore;
  readonly #residency: Residency;
  readonly #loads: Loads;
  readonly #store: StartupIndexStorage;
  readonly #writeIntervalMs: number;
  /** Names put to sleep on a line of the index: checked against their files after start-up. */
  #slept: NameRecord[] = [];
  #used = false;
  #started = false;
  #timer: ReturnType<EngineCore['clock']['setTimeout']> | undefined;
  #writing: Promise<void> | undefined;
  /** Lines written last time (a change in what could be written asks for a write). */
  #written = -1;
  /** What this start-up did with the index (counted; also for a debugger: the engine does not expose it). */
  readonly stats = { fromIndex: 0, changed: 0, checked: 0, writes: 0, ignored: '' };

  constructor(core: EngineCore, residency: Residency, loads: Loads, store: StartupIndexStorage, options: StartupIndexOptions = {}) {
    this.#core = core;
    this.#residency = residency;
    this.#loads = loads;
    this.#store = store;
    this.#writeIntervalMs = options.writeIntervalMs ?? DEFAULT_WRITE_INTERVAL_MS;
  }

  /**
   * Put to sleep, from the index, every name of `records` that has a line,
   * no failure record (`failures`: the listing of them) and no room for an
   * actor. Returns the names left to read. Once per engine (the start-up scan).
   */
  async apply(records: NameRecord[], failures: Set<string> | undefined): Promise<NameRecord[]> {
    if (this.#used || failures === undefined) return records;
    this.#used = true;
    const entries = await this.#read(records);
    if (!entries) return records;
    const residency = this.#residency;
    // The first names get actors (room under maxLiveActors), which read their certificates anyway.
    const budget = Math.max(0, this.#core.settings.maxLiveActors - residency.liveActors);
    const rest: NameRecord[] = records.slice(0, budget);
    for (let i = budget; i < records.length; i++) {
      const record = records[i]!;
      const entry = entries.get(record.name);
      if (
        !entry ||
        this.#core.stopped ||
        failures.has(keys.failure(record.name)) ||
        // A group that grew is read (and re-ordered), not slept on a certificate missing a name.
        !certificateNames(record).every((n) => certificateCoversName(entry.meta, n)) ||
        record.actor ||
        record.sleeping ||
        residency.get(record.name) !== record
      ) {
        rest.push(record);
        continue;
      }
      markFromIndex(entry.meta);
      noteStoredVersion(entry.meta, entry.version);
      residency.restOrWake(record, { certificate: entry.meta }, true);
      this.#slept.push(record);
      this.stats.fromIndex++;
      // Handshakes are answered between slices.
      if (this.stats.fromIndex % YIELD_EVERY === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    return rest;
  }

  /**
   * After start-up, in the background: the check of every name slept from
   * the index against its file's version (the changed ones read and woken
   * from what was parsed), then the first write, then the periodic ones.
   */
  afterStartup(): void {
    if (!this.#used || this.#started) return;
    this.#started = true;
    const run = async () => {
      await this.#check();
      await this.write(true);
    };
    this.#core
      .track(run())
      .catch((error: unknown) => {
        if (!this.#core.stopped) this.#core.logger.warn({ err: safeError(error) }, 'start-up index: checking or writing it failed; the next start reads what it cannot trust');
      })
      .finally(() => this.#schedule());
  }

  /**
   * Write the index from what the engine holds: a line for each managed name
   * whose metadata is known with its stored value's version; with `reread`,
   * the others are read (versioned) first. Concurrent calls share one write.
   */
  write(reread: boolean, records?: NameRecord[]): Promise<void> {
    this.#writing ??= this.#write(reread, records ?? [...this.#residency.records()]).finally(() => {
      this.#writing = undefined;
    });
    return this.#writing;
  }

  /**
   * `stop()`: write once more if names changed since the last write (no
   * reads: the engine is stopping; names changed since are read at the next
   * start). `records` is taken now, before the engine lets go of its names.
   */
  stop(): Promise<void> {
    if (this.#timer !== undefined) this.#core.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    if (!this.#used || this.#written < 0) return Promise.resolve();
    const records = [...this.#residency.records()];
    if (!this.#changed(records)) return Promise.resolve();
    const previous = this.#writing ?? Promise.resolve();
    return previous
      .catch(() => {})
      .then(() => this.#write(false, records))
      .catch((error: unknown) => this.#core.logger.warn({ err: safeError(error) }, 'start-up index: writing it at stop failed'));
  }

  /** The index's entries for managed names, or undefined (none, or ignored with one warning). */
  async #read(records: NameRecord[]): Promise<Map<string, IndexEntry> | undefined> {
    // Only names waiting to be read here are kept (a shared directory's index may hold others').
    const wanted = (name: string) => this.#residency.get(name)?.name === name;
    const entries = new Map<string, IndexEntry>();
    let header = false;
    let end: number | undefined;
    let count = 0;
    try {
      for await (const lines of this.#store.read(records.length * BYTES_PER_NAME + (1 << 20))) {
        for (const line of lines) {
          if (end !== undefined) throw new BadIndex('lines after its end');
          if (line.length > MAX_LINE) throw new BadIndex('a line is too long');
          let value: unknown;
          try {
            value = JSON.parse(line);
          } catch {
            throw new BadIndex(header ? `line ${count + 2} is not JSON` : 'not JSON');
          }
          if (!header) {
            checkHeader(value);
            header = true;
          } else if (!Array.isArray(value)) {
            end = endOf(value);
          } else {
            const [name, entry] = parseEntry(value);
            count++;
            if (!wanted(name)) continue;
            if (entries.has(name)) throw new BadIndex(`${name} is listed twice`);
            entries.set(name, entry);
          }
        }
        await new Promise((resolve) => setImmediate(resolve));
      }
      if (!header && end === undefined) return undefined; // no index yet: the full read, no warning
      if (end !== count) throw new BadIndex('truncated (its end is missing or does not count its lines)');
    } catch (error) {
      const reason = error instanceof BadIndex ? error.message : (safeError(error).message ?? String(error));
      this.stats.ignored = reason;
      this.#core.logger.warn({ storage: this.#core.storage.description, reason }, 'start-up index ignored: reading every stored certificate instead');
      return undefined;
    }
    return entries;
  }

  /**
   * Every name slept from the index: its file's version now against the line's; the changed
   * ones read (READS at a time) and, when they differ, woken from what was read. What it holds
   * besides the names is bounded: a bit per name seen in the listing, the names to read, and
   * the reads in flight (a restore from backup changes every file: all of them are read).
   */
  async #check(): Promise<void> {
    const slept = this.#slept;
    this.#slept = [];
    if (slept.length === 0) return;
    const onIndex = (record: NameRecord): CertificateMeta | undefined => {
      const meta = record.sleeping ? record.certificate : undefined;
      return isFromIndex(meta) && isUnverified(meta) ? meta : undefined;
    };
    // Names seen in the listing, a bit per slot (not a Set of a million records).
    let slots = 0;
    for (const record of slept) slots = Math.max(slots, record.slot + 1);
    const seen = new Uint8Array(slots);
    let checked = 0;
    const changed: NameRecord[] = [];
    for await (const batch of this.#store.versions(keys.certificatesPrefix)) {
      if (this.#core.stopped) return;
      for (const [key, version] of batch) {
        const record = this.#recordOfKey(key);
        const meta = record && onIndex(record);
        if (!record || !meta || record.slot >= slots || seen[record.slot] === 1) continue;
        seen[record.slot] = 1;
        checked++;
        if (storedVersionOf(meta) !== version) changed.push(record);
      }
    }
    // Names whose file is gone since the index (a listing does not show them).
    for (const record of slept) if (record.slot < slots && seen[record.slot] === 0 && onIndex(record)) changed.push(record);
    this.stats.checked = checked;
    this.stats.changed = changed.length;
    let next = 0;
    const worker = async () => {
      while (next < changed.length && !this.#core.stopped) await this.#reconcile(changed[next++]!, onIndex);
    };
    await Promise.all(Array.from({ length: READS }, worker));
  }

  /**
   * A name whose file changed since its index line: read, with the metadata stored beside its
   * certificate (as the bulk read at start-up takes it: unparsed, still unverified; parsed when
   * there is none); a different certificate (or none) wakes it from what was read.
   */
  async #reconcile(record: NameRecord, onIndex: (record: NameRecord) => CertificateMeta | undefined): Promise<void> {
    const read = await this.#core.track(this.#store.loadVersioned(keys.certificate(record.name)));
    const indexed = onIndex(record);
    if (!indexed || this.#core.stopped) return; // woken meanwhile: its actor read for itself
    // What a rewritten file or a moved ctime usually holds: the same certificate, known at this
    // version from now on; nothing made for it but the read (a restore from backup reads every file).
    if (read !== undefined && storedUnitAgrees(read.value, indexed)) return void noteStoredVersion(indexed, read.version);
    const loaded = read === undefined ? {} : await this.#loads.fromStored(record.name, read.value, true, true, read.version);
    const meta = onIndex(record);
    if (!meta || this.#core.stopped) return;
    if (loaded.certificate && metaDifferences(meta, loaded.certificate).length === 0) {
      // The same certificate in a rewritten file: it sleeps on, now known at the new version
      // (and checked against its certificate if that was parsed: stored without metadata).
      if (!isUnverified(loaded.certificate)) markVerified(meta);
      noteStoredVersion(meta, read!.version);
      return;
    }
    this.#core.logger.info({ name: record.name }, 'stored certificate changed since the start-up index: read again');
    this.#residency.adoptParsed(record, loaded);
  }

  async #write(reread: boolean, records: NameRecord[]): Promise<void> {
    let lines = 0;
    const toRead: NameRecord[] = [];
    const store = this.#store;
    const self = this;
    async function* generate(): AsyncGenerator<string[]> {
      yield [indexHeader(self.#core.clock.now())];
      let batch: string[] = [];
      for (const record of records) {
        const meta = metaOf(record);
        if (!record.managed || !meta) continue;
        const version = storedVersionOf(meta);
        if (version === undefined) {
          if (reread) toRead.push(record);
          continue;
        }
        batch.push(indexLine(record.name, version, meta));
        if (batch.length >= YIELD_EVERY) {
          lines += batch.length;
          yield batch;
          batch = [];
        }
      }
      // Names whose metadata is not known with a version (renewed, woken and parsed, read one by one): read now.
      let next = 0;
      const worker = async () => {
        while (next < toRead.length && !self.#core.stopped) {
          const line = await self.#lineFromStorage(toRead[next++]!);
          if (line) batch.push(line);
        }
      };
      await Promise.all(Array.from({ length: READS }, worker));
      lines += batch.length;
      batch.push(indexEnd(lines));
      yield batch;
    }
    await store.write(generate());
    this.#written = lines;
    this.stats.writes++;
  }

  /** A line for a name from a versioned read of its stored certificate (parsed); undefined when absent or unusable. */
  async #lineFromStorage(record: NameRecord): Promise<string | undefined> {
    const key = keys.certificate(record.name);
    try {
      const read = await this.#store.loadVersioned(key);
      if (!read) return undefined;
      const { meta } = parseStoredCertificate(key, read.value, { checkKey: false });
      if (!certificateNames(record).every((n) => certificateCoversName(meta, n))) return undefined;
      // What the engine holds is that certificate: known at this version from now on.
      const held = metaOf(record);
      if (held && metaDifferences(held, meta).length === 0) noteStoredVersion(held, read.version);
      return indexLine(record.name, read.version, meta);
    } catch {
      return undefined; // unusable here: the next start reads it one by one (and reports it)
    }
  }

  /** Whether the lines that could be written differ from the last write's. */
  #changed(records: Iterable<NameRecord>): boolean {
    let versioned = 0;
    for (const record of records) {
      const meta = metaOf(record);
      if (!record.managed || !meta) continue;
      if (storedVersionOf(meta) === undefined) return true;
      versioned++;
    }
    return versioned !== this.#written;
  }

  #schedule(): void {
    if (this.#core.stopped) return;
    this.#timer = this.#core.clock.setTimeout(() => {
      this.#timer = undefined;
      if (this.#core.stopped) return;
      const run = this.#changed(this.#residency.records()) ? this.write(true) : Promise.resolve();
      this.#core
        .track(run)
        .catch((error: unknown) => {
          if (!this.#core.stopped) this.#core.logger.warn({ err: safeError(error) }, 'start-up index: writing it failed');
        })
        .finally(() => this.#schedule());
    }, this.#writeIntervalMs);
  }

  #recordOfKey(key: string): NameRecord | undefined {
    const name = nameFromCertificateKey(key);
    const record = name === undefined ? undefined : this.#residency.get(name);
    return record?.name === name ? record : undefined;
  }
}

/** The certificate a name holds (asleep or live), metadata only. */
function metaOf(record: NameRecord): CertificateMeta | undefined {
  return record.certificate;
}
