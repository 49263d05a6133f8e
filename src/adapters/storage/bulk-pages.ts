/**
 * `Storage.entries` for the shared storages, page by page: PostgreSQL by key
 * order (keyset pages, one query each: no cursor held open between
 * batches; the next page read while the caller works on this one), Redis
 * by SCAN pages whose values come back in one pipelined round trip. Each
 * page is bounded, so a million keys are never one reply.
 */

/**
 * One page of rows after the key `after` in key order, at most `limit` keys
 * looked at (PostgreSQL): the rows it gives, and the key to go on after
 * (undefined: that was the last page). A page may give fewer rows than it
 * looked at (a filtered one), even none.
 */
export type KeysetPage<R> = (after: string, limit: number) => Promise<{ rows: R[]; next: string | undefined }>;

/** Keys a page looks at. */
export const PAGE = 1000;
/** Bytes of values a page holds at most, unless one value is larger (then that value alone): PostgreSQL. */
export const PAGE_BYTES = 16 << 20;

/**
 * Every row under the prefix, by key order, one bounded page at a time.
 * The next page is asked for as soon as a page arrives, before its rows are
 * yielded: the database reads it while the caller works on this one (two
 * pages at most, one held and one in flight). Stopping early leaves the page
 * in flight to finish on its own (its rows are dropped, its failure ignored).
 */
export async function* keysetPages<R>(page: KeysetPage<R>): AsyncGenerator<R[]> {
  let ahead: ReturnType<KeysetPage<R>> | undefined = page('', PAGE);
  try {
    while (ahead) {
      const { rows, next }: Awaited<ReturnType<KeysetPage<R>>> = await ahead;
      ahead = next === undefined ? undefined : page(next, PAGE);
      if (rows.length > 0) yield rows;
    }
  } finally {
    ahead?.catch(() => {});
  }
}

/** The key to go on after, given the keys a page looked at. */
export const nextAfter = (keys: readonly string[], limit: number): string | undefined => (keys.length < limit ? undefined : keys[keys.length - 1]);

/**
 * Every key a SCAN walk finds (a key may come back more than once: yielded
 * once), with its value read in one pipelined round trip per page; keys gone
 * between SCAN and the read are skipped. `base` is stripped from Redis keys.
 */
export async function* scanEntries(
  scan: (cursor: string) => Promise<[string, string[]]>,
  values: (redisKeys: string[]) => Promise<Array<string | null>>,
  base: string,
): AsyncGenerator<Array<readonly [string, string]>> {
  const seen = new Set<string>();
  let cursor = '0';
  do {
    const [next, found] = await scan(cursor);
    const fresh = found.filter((k) => !seen.has(k));
    for (const k of fresh) seen.add(k);
    if (fresh.length > 0) {
      const read = await values(fresh);
      const batch: Array<readonly [string, string]> = [];
      fresh.forEach((k, i) => {
        const value = read[i];
        if (value !== null && value !== undefined) batch.push([k.slice(base.length), value]);
      });
      if (batch.length > 0) yield batch;
    }
    cursor = next;
  } while (cursor !== '0');
}
