/**
 * A storage that behaves like `inner` except where a test intercepts it:
 * count, slow down, gate or fail `load` (and `store`), delegating the rest.
 * Methods are delegated explicitly: storages are class instances, whose
 * methods a spread would not copy.
 */
import type { Storage } from '../../src/types.js';

export interface Intercepts {
  description?: string;
  load?: (key: string, next: (key: string) => Promise<string | undefined>) => Promise<string | undefined>;
  store?: Storage['store'];
}

export function interceptStorage(inner: Storage, intercepts: Intercepts): Storage {
  return {
    description: intercepts.description ?? `intercepted ${inner.description}`,
    load: intercepts.load ? (key) => intercepts.load!(key, (k) => inner.load(k)) : (key) => inner.load(key),
    store: intercepts.store ?? ((k, v, o) => inner.store(k, v, o)),
    delete: (k, o) => inner.delete(k, o),
    list: (p) => inner.list(p),
    stat: (k) => inner.stat(k),
    lock: (k, t, o) => inner.lock(k, t, o),
  };
}

/** Intercepts `load` to count calls per key, and to keep track of how many run at once. */
export function countingStorage(inner: Storage, { delayMs = 0 } = {}): Storage & { loads: Map<string, number>; readonly maxActive: number; resetMaxActive(): void } {
  const loads = new Map<string, number>();
  let active = 0;
  let maxActive = 0;
  const storage = interceptStorage(inner, {
    description: 'counting',
    load: async (key, next) => {
      loads.set(key, (loads.get(key) ?? 0) + 1);
      active++;
      maxActive = Math.max(maxActive, active);
      try {
        if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
        return await next(key);
      } finally {
        active--;
      }
    },
  });
  const counted = Object.assign(storage, {
    loads,
    resetMaxActive() {
      maxActive = 0;
    },
  });
  // A getter, not a copied value: the count keeps moving.
  return Object.defineProperty(counted, 'maxActive', { get: () => maxActive, enumerable: true }) as typeof counted & { readonly maxActive: number };
}
