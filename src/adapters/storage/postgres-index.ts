/**
 * PostgreSQL storage's start-up index (`Storage.startupIndex`, see
 * src/engine/startup-index.ts): the engine's index lines kept in
 * `<table>_index`, and each value's *version*, so that a restart with a
 * million names reads one index instead of a million certificates.
 *
 * - **Version** of a value: its row version's `xmin` and `modified` (µs),
 *   read in the same statement as the value (`entries`, `loadVersioned`) or
 *   alone (`versions`, no value read: a page of keys costs what a listing
 *   costs). Every write of a row makes a new row version (a new `xmin`) and
 *   certificate writes stamp `modified` with the database clock, so a value
 *   rewritten, even with the same bytes, has another version.
 * - **Written** as a generation: chunks of ~1 MiB of whole lines (`seq` 1…n)
 *   under a new `gen` (the database clock in µs), then one statement marks it
 *   complete (`seq` 0) and removes every older generation. A reader takes the
 *   newest complete generation, so it sees the old index or the new one
 *   whole (a write cut short leaves an unmarked generation, removed by the
 *   next write); no lock, the newest writer wins, as with file storage.
 * - **Read** bounded: each chunk's size is checked in the server before it
 *   is sent (a chunk past what is left of `maxBytes` is refused unread), and
 *   its bytes must be UTF-8; either way `CorruptStorageError`, and the
 *   engine ignores the index (one warning) and reads in bulk.
 */
import { CorruptStorageError } from '../../errors.js';
import type { StartupIndexStorage } from '../../types.js';
import { keysetPages, nextAfter } from './bulk-pages.js';

/** One bounded query of the storage (`binary`: the result's text and bytea columns as PostgreSQL's binary format). */
export type IndexQuery = <R extends Record<string, unknown>>(what: string, text: string, values: unknown[], binary?: boolean) => Promise<R[]>;

/** The statements it needs (postgres-sql.ts). */
export interface IndexStatements {
  indexGeneration: string;
  indexChunk: string;
  indexComplete: string;
  indexCurrent: string;
  indexRead: string;
  versions: string;
  loadVersioned: string;
}

/** Bytes of lines per chunk row (whole lines: a longer line is a chunk of its own). */
const CHUNK_BYTES = 1 << 20;

const utf8 = new TextDecoder('utf-8', { fatal: true });

export function postgresStartupIndex(query: IndexQuery, sql: IndexStatements, likePrefix: (prefix: string) => string): StartupIndexStorage {
  return {
    async *read(maxBytes) {
      const [current] = await query<{ gen: string | null }>('index read', sql.indexCurrent, []);
      if (current?.gen == null) return;
      let seq = 0;
      let left = maxBytes;
      for (;;) {
        const [row] = await query<{ seq: number; size: number; chunk: Buffer | null }>('index read', sql.indexRead, [current.gen, seq, left]);
        if (!row) return;
        if (row.chunk === null) throw new CorruptStorageError('startup index', `the start-up index is larger than ${maxBytes} bytes`);
        left -= Number(row.size);
        seq = Number(row.seq);
        let text: string;
        try {
          text = utf8.decode(row.chunk);
        } catch {
          throw new CorruptStorageError('startup index', 'the start-up index is not valid UTF-8');
        }
        yield text.split('\n');
      }
    },

    async write(lines) {
      const [{ gen }] = await query<{ gen: string }>('index write', sql.indexGeneration, []);
      let seq = 0;
      let parts: string[] = [];
      let bytes = 0;
      const flush = async () => {
        if (parts.length === 0) return;
        await query('index write', sql.indexChunk, [gen, ++seq, Buffer.from(parts.join('\n'), 'utf8')]);
        parts = [];
        bytes = 0;
      };
      for await (const batch of lines) {
        for (const line of batch) {
          const size = Buffer.byteLength(line, 'utf8') + 1;
          if (bytes + size > CHUNK_BYTES) await flush();
          parts.push(line);
          bytes += size;
        }
      }
      await flush();
      await query('index write', sql.indexComplete, [gen]);
    },

    versions(prefix) {
      const pattern = likePrefix(prefix);
      return keysetPages(async (after, limit) => {
        const rows = await query<{ key: string; version: string }>(`versions ${prefix}`, sql.versions, [pattern, after, limit], true);
        return { rows: rows.map((row) => [row.key, row.version] as const), next: nextAfter(rows.map((row) => row.key), limit) };
      });
    },

    async loadVersioned(key) {
      const [row] = await query<{ value: string; version: string }>(`load ${key}`, sql.loadVersioned, [key], true);
      return row === undefined ? undefined : { value: row.value, version: row.version };
    },
  };
}
