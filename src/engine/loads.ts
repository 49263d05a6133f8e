/**
 * Loads: reading a name's stored certificate and failure record, bounded (at
 * most 64 reads at once, a handshake's or an operator's ahead of background
 * ones) and abortable (after `stop()` a queued read never reaches storage).
 *
 * The key is not parsed here (10× cheaper: 100,000 names are read at start);
 * OpenSSL checks it when the context is built, and a refused pair is replaced.
 * Values that cannot be used (bytes that are not UTF-8, truncated or foreign
 * JSON, another name's certificate) count as absent, reported once
 * (corrupt-values.ts), never a stuck name.
 *
 * The start-up scan may take a certificate's metadata as stored beside it
 * (`fromStored` with `trustMeta`: no certificate parsed, for names put to
 * sleep). Such metadata is checked before it is acted on: an actor's first
 * load and a reload of the key material (the only ways to a TLS context)
 * parse the certificate, and where it disagrees the parsed values win and it
 * is reported (stored-meta.ts).
 */
import { certificateCoversName } from '../certs.js';
import { CorruptStorageError } from '../errors.js';
import type { LoadedState } from '../machines/certificate.js';
import type { CertificateBundle, CertificateMeta } from '../types.js';
import { safeError } from '../safe-error.js';
import { keys } from '../storage-keys.js';
import type { EngineCore } from './core.js';
import { Limiter } from './limiter.js';
import type { MaterialCache } from './material-cache.js';
import type { NameRecord } from './name-record.js';
import { isFromIndex, isUnverified, markVerified, metaDifferences, noteStoredVersion, storedVersionOf } from './stored-meta.js';
import { parseFailureRecord, parseStoredCertificate, readStoredCertificate } from './stored.js';

/** Reads in flight at once: 100k names at start must not open 100k files (EMFILE). */
const MAX_READS = 64;

/**
 * Who a read is for, which decides its place in the queue and what it may do
 * to the material cache: `urgent` (a handshake, an operator, an actor's own
 * load) goes first and caches the PEMs it read; `background` (the start-up
 * scan, a storage resync) waits its turn and caches them only while there is
 * room, never evicting what handshakes use.
 */
export type ReadMode = 'urgent' | 'background';

export class Loads {
  readonly #core: EngineCore;
  readonly #materials: MaterialCache;
  readonly #limiter = new Limiter(MAX_READS);
  /** The names the certificate stored under a name must cover (all of a group's). */
  readonly #namesOf: (name: string) => readonly string[];

  constructor(core: EngineCore, materials: MaterialCache, namesOf: (name: string) => readonly string[] = (name) => [name]) {
    this.#core = core;
    this.#materials = materials;
    this.#namesOf = namesOf;
  }

  /**
   * The actor's load: what a storage read already found (the scan, a wake
   * from sleep) or why it failed (the chart's retry reads again later), else a read.
   */
  load(record: NameRecord): Promise<LoadedState> {
    const preloaded = record.preloaded;
    const mode = record.urgent ? 'urgent' : 'background';
    if (preloaded) {
      record.preloaded = undefined;
      if ('readError' in preloaded) return Promise.reject(preloaded.readError);
      // Metadata taken from storage unparsed: the certificate is read and parsed before the actor runs on it.
      if (isUnverified(preloaded.certificate)) {
        return this.read(record.name, { mode, cache: true }).then((loaded) => {
          const same = this.#verify(record.name, preloaded.certificate!, loaded.certificate);
          // The same certificate: the renewal time it slept on stands (drawn, or an ARI window's: read afresh, it
          // would be drawn again from the lifetime, and a name woken by its ARI time would go back to sleep).
          return same && preloaded.renewAt !== undefined ? { ...loaded, renewAt: preloaded.renewAt } : loaded;
        });
      }
      return Promise.resolve(preloaded);
    }
    return this.read(record.name, { mode, cache: true });
  }

  /**
   * Read a name's certificate unit and failure record, bounded.
   * `skipFailure`: a listing showed there is no failure record. `cache`
   * overrides the mode's caching (an actor's load keeps what it read).
   */
  read(name: string, options: { mode: ReadMode; skipFailure?: boolean; cache?: boolean }): Promise<LoadedState> {
    const urgent = options.mode === 'urgent';
    return this.#core.track(this.#limiter.run(() => this.#read(name, options.skipFailure ?? false, options.cache ?? urgent), { urgent, signal: this.#core.signal }));
  }

  /**
   * Read the certificate of a name the chart serves back into memory (after
   * cache eviction, or for a name woken from sleep): one read per name,
   * however many handshakes ask, ahead of background reads. `onDifferent` is
   * told when storage holds another certificate (another process renewed it).
   */
  reloadMaterial(record: NameRecord, onDifferent: (loaded: LoadedState, unverified: boolean) => void): Promise<void> {
    record.reloading ??= this.read(record.name, { mode: 'urgent' })
      .then(
        (loaded) => {
          const known = record.certificate;
          // Metadata taken from storage unparsed (the scan): the certificate just parsed must agree with it in every field.
          if (known !== undefined && isUnverified(known)) {
            if (!this.#verify(record.name, known, loaded.certificate)) onDifferent(loaded, true);
          } else if (loaded.certificate && loaded.certificate.fingerprint !== known?.fingerprint) onDifferent(loaded, false);
        },
        (error: unknown) => this.#core.logger.warn({ name: record.name, err: safeError(error) }, 'cannot read the certificate from storage'),
      )
      .finally(() => {
        record.reloading = undefined;
      });
    return record.reloading;
  }

  /** Keys of every stored failure record, or undefined when storage cannot list them (then each name looks for its own). */
  async listFailures(): Promise<Set<string> | undefined> {
    try {
      return new Set(await this.#core.track(this.#core.storage.list(keys.failuresPrefix)));
    } catch (error) {
      this.#core.logger.warn({ err: safeError(error) }, 'cannot list failure records; reading them name by name');
      return undefined;
    }
  }

  /**
   * What a bulk read (`Storage.entries`) found for a name: its stored unit,
   * parsed like a read's, and its failure record read unless `skipFailure`
   * (a listing showed none). Background: caches key material only while there is room.
   */
  async fromStored(name: string, unitRaw: string, skipFailure: boolean, trustMeta = false, version?: string): Promise<LoadedState> {
    let loaded: LoadedState;
    if (skipFailure) loaded = this.#parse(name, unitRaw, undefined, 0, false, trustMeta);
    else {
      const { storage, corrupt, storageClock } = this.#core;
      const [failureRaw, clockOffset] = await this.#core.track(Promise.all([corrupt.load(storage, keys.failure(name), name), storageClock.offset()]));
      loaded = this.#parse(name, unitRaw, failureRaw, clockOffset, false, trustMeta);
    }
    // The metadata is of exactly that value: the start-up index may record the pair.
    if (version !== undefined && loaded.certificate) noteStoredVersion(loaded.certificate, version);
    return loaded;
  }

  /**
   * Whether the certificate parsed from storage (`parsed`) agrees in every
   * field with the metadata the scan took unparsed (`stored`); when not, it
   * is reported once (the parsed values are what the caller goes on with).
   */
  #verify(name: string, stored: CertificateMeta, parsed: CertificateMeta | undefined): boolean {
    const differ = parsed === undefined ? ['certificate'] : metaDifferences(stored, parsed);
    if (differ.length === 0) {
      markVerified(stored);
      // Same certificate: the version it was first read at still describes it (what the start-up index records).
      const version = storedVersionOf(stored);
      if (version !== undefined && parsed) noteStoredVersion(parsed, version);
      return true;
    }
    const key = keys.certificate(name);
    // From the start-up index: the file changed since the index was written (a change, not corruption).
    if (isFromIndex(stored)) {
      this.#core.logger.debug({ name, differ }, 'stored certificate changed since the start-up index: the certificate as parsed is used');
      return false;
    }
    const error = new CorruptStorageError(key, `the stored certificate metadata disagrees with the certificate (${differ.join(', ')})`);
    this.#core.corrupt.report(key, name, error, 'stored certificate metadata disagrees with its certificate: the certificate as parsed is used');
    return false;
  }

  async #read(name: string, skipFailure: boolean, cache: boolean): Promise<LoadedState> {
    const { storage, corrupt } = this.#core;
    const [unitRaw, failureRaw, clockOffset] = await Promise.all([
      corrupt.load(storage, keys.certificate(name), name),
      skipFailure ? undefined : corrupt.load(storage, keys.failure(name), name),
      // Failure records carry times on the storage's clock: shifted to ours by the offset between them.
      skipFailure ? 0 : this.#core.storageClock.offset(),
    ]);
    return this.#parse(name, unitRaw, failureRaw, clockOffset, cache);
  }

  #parse(name: string, unitRaw: string | undefined, failureRaw: string | undefined, clockOffset: number, cache: boolean, trustMeta = false): LoadedState {
    const { corrupt } = this.#core;
    const unitKey = keys.certificate(name);
    const failureKey = keys.failure(name);
    const loaded: LoadedState = {};
    if (unitRaw !== undefined) {
      let badMeta = false;
      const unit = this.#parseOrReport(name, unitKey, () =>
        trustMeta
          ? readStoredCertificate(unitKey, unitRaw, (error) => {
              badMeta = true;
              corrupt.report(unitKey, name, error, 'ignoring malformed stored certificate metadata: the certificate is parsed instead');
            }, name)
          : parsed(parseStoredCertificate(unitKey, unitRaw, { checkKey: false })),
      );
      // A unit stored under the wrong name is not this name's certificate; nor one missing a name of its group (names added).
      if (unit && !this.#namesOf(name).every((n) => certificateCoversName(unit.meta, n))) {
        corrupt.report(unitKey, name, new CorruptStorageError(unitKey, 'the stored certificate does not cover its names'));
      } else if (unit) {
        // (Malformed metadata stays reported: the value is not usable as stored.)
        if (!badMeta) corrupt.usable(unitKey);
        // Key material only for a parsed certificate: no TLS context is built on unchecked metadata
        // (the first handshake reads and parses it: reloadMaterial).
        if (!unit.trusted) {
          if (cache) this.#materials.put(unit.meta.fingerprint, unit.bundle);
          else this.#materials.putIfRoom(unit.meta.fingerprint, unit.bundle);
        }
        loaded.certificate = unit.meta;
      }
    }
    if (failureRaw !== undefined) {
      const failure = this.#parseOrReport(name, failureKey, () => parseFailureRecord(failureKey, failureRaw, clockOffset));
      if (failure) {
        corrupt.usable(failureKey);
        loaded.failure = failure;
      }
    }
    return loaded;
  }

  #parseOrReport<T>(name: string, key: string, parse: () => T): T | undefined {
    try {
      return parse();
    } catch (error) {
      if (!(error instanceof CorruptStorageError)) throw error;
      this.#core.corrupt.report(key, name, error);
      return undefined;
    }
  }
}

/**
 * A parsed certificate as the start-up's read gives it. A literal, not a spread of the parse's
 * result: V8 gave every such spread hidden classes of its own (a map and descriptor array per
 * read, dead at once, in old space), as for the chart's memoised context (questions.ts).
 */
function parsed({ bundle, meta }: { bundle: CertificateBundle; meta: CertificateMeta }): { bundle: CertificateBundle; meta: CertificateMeta; trusted: false } {
  return { bundle, meta, trusted: false };
}
