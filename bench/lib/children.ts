/**
 * Running bench parts in their own process or thread, with TypeScript.
 *
 * - A **child process** is used when its CPU or memory is what we measure
 *   (a TLS server, an engine holding 100k names): `process.cpuUsage()` and
 *   RSS then count only that part, not the load client.
 * - A **worker thread** is used for load clients: cheap to start, and its CPU
 *   lands in the orchestrating process, never in the server's.
 *
 * Everything stops by itself: every call has a deadline, children exit when
 * their IPC channel closes (parent gone), and the parent kills what it
 * started (by handle) on exit.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { Worker } from 'node:worker_threads';

const children = new Set<ChildProcess>();
let hooked = false;

function killAll(): void {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

function installExitHook(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', killAll);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      killAll();
      process.exit(130);
    });
  }
}

interface Reply {
  id: number;
  ok: boolean;
  value?: unknown;
  error?: string;
}

export interface RpcChild {
  readonly pid: number;
  /** Send a request and wait for its reply (rejects after `timeoutMs`, or if the child dies). */
  call<T = unknown>(type: string, payload?: unknown, timeoutMs?: number): Promise<T>;
  /** Ask the child to exit, wait for it (SIGKILL after a grace period). */
  close(): Promise<void>;
}

/**
 * Fork `file` (a .ts module that calls `serveRpc`) under tsx with `args`.
 * Extra `nodeFlags` (e.g. `--max-old-space-size=4096`, `--cpu-prof`) go before the script.
 */
export function forkTs(file: string | URL, args: string[] = [], nodeFlags: string[] = []): RpcChild {
  installExitHook();
  const child = fork(file instanceof URL ? file.pathname : file, args, {
    execArgv: [...nodeFlags, '--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.add(child);
  let nextId = 1;
  const pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void; timer: NodeJS.Timeout }>();
  const failAll = (error: Error) => {
    for (const [id, p] of pending) {
      clearTimeout(p.timer);
      p.reject(error);
      pending.delete(id);
    }
  };
  child.on('message', (message: Reply) => {
    const p = pending.get(message.id);
    if (!p) return;
    pending.delete(message.id);
    clearTimeout(p.timer);
    if (message.ok) p.resolve(message.value);
    else p.reject(new Error(message.error ?? 'child call failed'));
  });
  const exited = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      failAll(new Error(`bench child ${String(file)} exited (${code ?? signal})`));
      resolve();
    }),
  );
  return {
    pid: child.pid ?? -1,
    call<T>(type: string, payload?: unknown, timeoutMs = 600_000): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        const id = nextId++;
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(new Error(`bench child: ${type} got no reply within ${timeoutMs} ms`));
        }, timeoutMs);
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
        child.send({ id, type, payload });
      });
    },
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.disconnect();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

type Handler = (payload: any) => unknown;

/** In a forked child: answer the parent's calls with `handlers`; exit when the parent goes away. */
export function serveRpc(handlers: Record<string, Handler>): void {
  if (!process.send) throw new Error('serveRpc: not a forked child (no IPC channel)');
  process.on('disconnect', () => process.exit(0));
  process.on('message', async (message: { id: number; type: string; payload: unknown }) => {
    const handler = handlers[message.type];
    let reply: Reply;
    try {
      if (!handler) throw new Error(`unknown call ${message.type}`);
      reply = { id: message.id, ok: true, value: await handler(message.payload) };
    } catch (error) {
      reply = { id: message.id, ok: false, error: error instanceof Error ? (error.stack ?? error.message) : String(error) };
    }
    process.send!(reply);
  });
}

/**
 * Start `file` (a .ts module) in a worker thread under tsx. tsx's `--import`
 * hook does not reach worker threads in Node 20, so the worker boots through
 * a tiny eval script that registers tsx first.
 */
export function startTsWorker(file: string | URL, workerData: unknown): Worker {
  const api = import.meta.resolve('tsx/esm/api');
  const url = file instanceof URL ? file.href : new URL(file, 'file://').href;
  const boot = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(url)}); });`;
  return new Worker(boot, { eval: true, workerData });
}

/** Run a worker to completion: resolves with its one result message; rejects on error or after `timeoutMs`. */
export function runWorker<T>(file: string | URL, workerData: unknown, timeoutMs: number): Promise<T> {
  const worker = startTsWorker(file, workerData);
  return new Promise<T>((resolve, reject) => {
    let result: T | undefined;
    let got = false;
    const timer = setTimeout(() => {
      void worker.terminate();
      reject(new Error(`worker ${String(file)} did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    worker.once('message', (message: T) => {
      result = message;
      got = true;
    });
    worker.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    worker.once('exit', (code) => {
      clearTimeout(timer);
      if (got) resolve(result as T);
      else reject(new Error(`worker ${String(file)} exited (${code}) without a result`));
    });
  });
}
