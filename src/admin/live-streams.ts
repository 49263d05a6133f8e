/**
 * The admin page's Server-Sent Event streams, with a bound on what each may
 * hold. A client that stops reading makes every write queue in the server;
 * without a bound, one idle tab behind a stalled proxy buffers every update
 * for ever. Here each stream may queue at most its first frame (the snapshot,
 * whose size grows with the number of names) plus `maxBufferedBytes`; a write
 * that would pass that drops the stream instead. A dropped `EventSource`
 * reconnects by itself and starts again from a fresh snapshot, so nothing is
 * lost that the page needs.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

/** Options of {@link LiveStreams}. */
export interface LiveStreamsOptions {
  /** Most concurrent streams. */
  maxStreams: number;
  /** Bytes a stream may queue beyond its first frame before it is dropped. */
  maxBufferedBytes: number;
  /** Comment line interval that keeps proxies from closing idle streams, ms. */
  heartbeatMs: number;
  /** Called once per stream dropped for falling behind. */
  onDrop?: () => void;
}

const HEARTBEAT = Buffer.from(': keep-alive\n\n');

/** A set of live SSE responses: open, broadcast, drop the ones that fall behind, close. */
export class LiveStreams {
  readonly #options: LiveStreamsOptions;
  /** Each open stream with the most bytes it may queue. */
  readonly #streams = new Map<ServerResponse, number>();
  #heartbeat: NodeJS.Timeout | undefined;
  #dropped = 0;

  constructor(options: LiveStreamsOptions) {
    this.#options = options;
  }

  /** Streams open now. */
  get size(): number {
    return this.#streams.size;
  }

  /** Streams dropped so far for falling behind. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Room for another stream? */
  get full(): boolean {
    return this.#streams.size >= this.#options.maxStreams;
  }

  /** Start a stream on `res` (headers already written) with its first frame. */
  open(req: IncomingMessage, res: ServerResponse, first: string): void {
    const frame = Buffer.from(first);
    res.write(frame);
    this.#streams.set(res, frame.length + this.#options.maxBufferedBytes);
    this.#heartbeat ??= setInterval(() => this.#writeAll(HEARTBEAT), Math.min(this.#options.heartbeatMs, 2 ** 31 - 1)).unref();
    const done = () => this.#forget(res);
    req.on('close', done);
    res.on('close', done);
  }

  /** Send one event to every stream. */
  broadcast(event: string, data: unknown): void {
    if (this.#streams.size > 0) this.#writeAll(Buffer.from(sseFrame(event, data)));
  }

  /** End every stream and stop the heartbeat. */
  close(): void {
    for (const res of this.#streams.keys()) res.end();
    this.#streams.clear();
    this.#stopHeartbeat();
  }

  /** One encoding for all streams; a stream whose queue would pass its bound is dropped instead. */
  #writeAll(chunk: Buffer): void {
    for (const [res, limit] of this.#streams) {
      // writableLength: bytes queued in the response and its socket, not yet taken by the kernel.
      if (res.writableLength + chunk.length > limit) this.#drop(res);
      else res.write(chunk);
    }
  }

  #drop(res: ServerResponse): void {
    this.#forget(res);
    this.#dropped++;
    // destroy, not end: end() would wait to flush the very backlog we refuse to keep.
    res.destroy();
    this.#options.onDrop?.();
  }

  #forget(res: ServerResponse): void {
    this.#streams.delete(res);
    if (this.#streams.size === 0) this.#stopHeartbeat();
  }

  #stopHeartbeat(): void {
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
  }
}

/** One SSE frame. JSON never contains a raw line break, so one `data:` line suffices. */
export function sseFrame(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}
