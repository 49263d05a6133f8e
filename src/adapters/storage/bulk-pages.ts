/**
 * `Storage.entries` for the shared storages, page by page: PostgreSQL by key
 * order (keyset pages, one query each: no cursor held open between
 * batches), Redis by SCAN pages whose values come back in one pipelined
 * round trip. Each page is bounded, so a million keys are never one reply.
 */

/** Keys and values after `after` in key order, at most `limit` (PostgreSQL). */
export type KeysetPage = (after: string, limit: number) => Promise<Array<{ key: string; value: string }>>;

const PAGE = 1000;

/** Every row under the prefix, by key order, one bounded query per batch. */
export async function* keysetEntries(page: KeysetPage): AsyncGenerator<Array<readonly [string, string]>> {
  let after = '';
  for (;;) {
    const rows = await page(after, PAGE);
    if (rows.length > 0) yield rows.map((row) => [row.key, row.value] as const);
    if (rows.length < PAGE) return;
    after = rows[rows.length - 1]!.key;
  }
}

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
