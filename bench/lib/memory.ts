/**
 * Heap and RSS readings that mean something: taken after a full GC, so
 * garbage waiting to be collected does not count as memory in use.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let gcFn: (() => void) | undefined;

/** `global.gc`, enabled at run time so the benches need no `--expose-gc` flag. */
export function gc(): void {
  if (!gcFn) {
    const existing = (globalThis as { gc?: () => void }).gc;
    if (existing) gcFn = existing;
    else {
      setFlagsFromString('--expose-gc');
      gcFn = runInNewContext('gc') as () => void;
    }
  }
  // Twice: the first pass can leave weakly held objects for the second.
  gcFn();
  gcFn();
}

export interface MemoryReading {
  rssMb: number;
  heapUsedMb: number;
  externalMb: number;
}

const MB = 2 ** 20;

/** Memory in use after a full GC. */
export function memoryAfterGc(): MemoryReading {
  gc();
  const m = process.memoryUsage();
  return { rssMb: m.rss / MB, heapUsedMb: m.heapUsed / MB, externalMb: (m.external + m.arrayBuffers) / MB };
}
