/**
 * "The CA just fetched our HTTP-01 token": an in-process notice from the
 * HTTP-01 handler to the order waiting on that token's authorization.
 *
 * Why: after telling the CA to validate, the order polls the authorization
 * first after `pollInitialMs` (20 ms by default). A fast CA (Pebble, a CA on
 * the same network) has fetched the token and decided within a few ms of
 * that; an on-demand handshake waits the rest. When this process answered
 * the fetch, the order looks a moment later instead (one extra request at
 * most, the schedule otherwise unchanged). When another process of the
 * cluster answered it, nothing is noticed here and the schedule runs as
 * before.
 *
 * Only tokens someone waits for are kept; a fetch of any other token costs
 * one `Map` lookup.
 */

const watchers = new Map<string, Set<() => void>>();

/** A watch on one token: `fetched` resolves at the first answered fetch after `watchFetch`. */
export interface FetchWatch {
  readonly fetched: Promise<void>;
  /** Stop watching (idempotent); `fetched` then never resolves. */
  cancel(): void;
}

/** Watch for the CA's fetch of `token` (set it up before telling the CA to validate). */
export function watchFetch(token: string): FetchWatch {
  let notify!: () => void;
  const fetched = new Promise<void>((resolve) => (notify = resolve));
  let set = watchers.get(token);
  if (set === undefined) watchers.set(token, (set = new Set()));
  const watcher = () => {
    cancel();
    notify();
  };
  const cancel = () => {
    const current = watchers.get(token);
    if (current === undefined) return;
    current.delete(watcher);
    if (current.size === 0) watchers.delete(token);
  };
  set.add(watcher);
  return { fetched, cancel };
}

/** The HTTP-01 handler answered a fetch of `token` with its key authorization. */
export function noteFetched(token: string): void {
  const set = watchers.get(token);
  if (set === undefined) return;
  for (const watcher of [...set]) watcher();
}

/** Tokens watched now (for tests: nothing may stay behind). */
export function watchedTokens(): number {
  return watchers.size;
}
