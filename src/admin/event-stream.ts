/**
 * Engine events as an async iterator, on top of `engine.on(...)`:
 *
 *   for await (const event of engineEvents(engine, { signal })) log(event);
 *
 * The buffer between the engine and a slow consumer is bounded: when full,
 * the oldest events are dropped (counted in `dropped`), because the engine
 * must never wait for an observer.
 */
import type { CertEngineEvent, CertEngineEventOf, CertEngineEventType } from '../engine/events.js';

/**
 * The lifecycle event types, the default of {@link engineEvents}. `handshake`
 * is left out: the engine emits it only while someone listens (one event per
 * TLS handshake); ask for it with `types: ['handshake']`.
 */
export const ENGINE_EVENT_TYPES: readonly CertEngineEventType[] = [
  'state_changed',
  'cert_obtaining',
  'cert_obtained',
  'cert_renewed',
  'cert_failed',
  'cert_expired',
];

/** Options of {@link engineEvents}. */
export interface EngineEventsOptions<T extends CertEngineEventType> {
  /** Event types to receive (default: {@link ENGINE_EVENT_TYPES}). */
  types?: readonly T[];
  /** Ends the iteration (the loop exits normally). */
  signal?: AbortSignal;
  /** Most events buffered for a slow consumer (default 10,000). */
  bufferSize?: number;
}

/** An async iterator of engine events; `return()` (or `break`) unsubscribes. */
export interface EngineEventIterator<E> extends AsyncIterableIterator<E> {
  /** Events dropped because the consumer fell more than `bufferSize` behind. */
  readonly dropped: number;
}

/** Subscribe to engine events as an async iterator. */
export function engineEvents<T extends CertEngineEventType = CertEngineEventType>(
  engine: { on<K extends CertEngineEventType>(type: K, listener: (event: CertEngineEventOf<K>) => void): () => void },
  options: EngineEventsOptions<T> = {},
): EngineEventIterator<CertEngineEventOf<T>> {
  type E = CertEngineEventOf<T>;
  const limit = Math.max(1, options.bufferSize ?? 10_000);
  const buffer: E[] = [];
  let wake: ((result: IteratorResult<E>) => void) | undefined;
  let done = false;
  let dropped = 0;

  const push = (event: CertEngineEvent) => {
    if (done) return;
    if (wake) {
      const w = wake;
      wake = undefined;
      w({ value: event as E, done: false });
      return;
    }
    buffer.push(event as E);
    if (buffer.length > limit) {
      buffer.shift();
      dropped++;
    }
  };
  const types = options.types ?? (ENGINE_EVENT_TYPES as readonly T[]);
  const offs = types.map((type) => engine.on(type, push));

  const finish = (): IteratorResult<E> => {
    if (!done) {
      done = true;
      offs.forEach((off) => off());
      options.signal?.removeEventListener('abort', onAbort);
      buffer.length = 0;
    }
    if (wake) {
      const w = wake;
      wake = undefined;
      w({ value: undefined, done: true });
    }
    return { value: undefined, done: true };
  };
  const onAbort = () => finish();
  if (options.signal?.aborted) finish();
  else options.signal?.addEventListener('abort', onAbort, { once: true });

  const iterator: EngineEventIterator<E> = {
    get dropped() {
      return dropped;
    },
    next() {
      if (buffer.length) return Promise.resolve({ value: buffer.shift()!, done: false });
      if (done) return Promise.resolve({ value: undefined, done: true });
      return new Promise<IteratorResult<E>>((resolve) => (wake = resolve));
    },
    return() {
      return Promise.resolve(finish());
    },
    [Symbol.asyncIterator]() {
      return iterator;
    },
  };
  return iterator;
}
