/**
 * Three real processes sharing one storage (file, Redis, PostgreSQL): a TLS
 * session from process A resumes on B and C; through a key rotation it still
 * does (the overlap window); past the window it does not, anywhere; and no
 * key ever reaches a process's log. Each process runs its engine on a manual
 * clock that the test moves in all three alike.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { forkTs, type RpcChild } from '../bench/lib/children.js';
import { fileStorage } from '../src/adapters/storage/file.js';
import { parseTicketKeys } from '../src/engine/ticket-keys.js';
import { keys } from '../src/storage-keys.js';
import type { Storage } from '../src/types.js';
import { backendSkip, dropStorage, openNodeStorage, runId, storageFor } from './helpers/cluster-node.js';
import type { TicketNodeConfig } from './helpers/ticket-node.js';
import { connectResuming } from './helpers/tls.js';

const HOUR = 3_600_000;
const schedule = { rotationIntervalMs: 12 * HOUR, overlapMs: 6 * HOUR };

async function connect(port: number, session?: Buffer): Promise<{ reused: boolean; session: Buffer | undefined; from: string }> {
  const { reused, session: next, data } = await connectResuming(port, { session });
  return { reused, session: next, from: data };
}

/** Every way a stored key could be spelled in a log line. */
function spellings(raw: string): string[] {
  return parseTicketKeys('k', raw).flatMap(({ key }) =>
    [key, key.subarray(0, 16), key.subarray(16, 32), key.subarray(32)].flatMap((part) => [part.toString('hex'), part.toString('base64').slice(0, 20)]),
  );
}

type Backend = 'file' | 'redis' | 'postgres';

async function scenario(backend: Backend): Promise<void> {
  const run = runId();
  const dir = await mkdtemp(path.join(os.tmpdir(), `certstate-tickets-${run}-`));
  const storageConfig: TicketNodeConfig['storage'] = backend === 'file' ? { kind: 'file', dir: path.join(dir, 'data') } : storageFor(backend, run);
  const nodes: RpcChild[] = [];
  let reader: Storage | undefined;
  try {
    const startAt = Date.now();
    const ports: number[] = [];
    // Started one after the other: each a separate process with its own argv.
    for (const id of ['a', 'b', 'c']) {
      const node = forkTs(new URL('./helpers/ticket-node.ts', import.meta.url), [id]);
      nodes.push(node);
      const config: TicketNodeConfig = { storage: storageConfig, startAt, ...schedule, logFile: path.join(dir, `${id}.log`) };
      ports.push((await node.call<{ port: number }>('start', config, 60_000)).port);
    }
    const [a, b, c] = ports as [number, number, number];
    const advance = async (ms: number) => {
      for (const node of nodes) await node.call('advance', ms, 30_000);
    };

    const first = await connect(a);
    assert.equal(first.from, 'a');
    assert.equal(first.reused, false);
    assert.ok(first.session, 'A issued a ticket');
    for (const [port, id] of [[b, 'b'], [c, 'c']] as const) {
      const resumed = await connect(port, first.session);
      assert.equal(resumed.from, id);
      assert.equal(resumed.reused, true, `A's session resumes on ${id}`);
    }

    await advance(schedule.rotationIntervalMs);
    assert.equal((await connect(c, first.session)).reused, true, 'after a rotation, within the overlap: resumes');
    const second = await connect(b);
    assert.equal((await connect(a, second.session)).reused, true, "a ticket under the new key resumes on A");

    await advance(schedule.overlapMs);
    for (const port of ports) assert.equal((await connect(port, first.session)).reused, false, 'past the overlap: no process resumes it');
    assert.equal((await connect(c, second.session)).reused, true, 'the newer session still does');

    reader = backend === 'file' ? fileStorage(path.join(dir, 'data')) : await openNodeStorage(storageConfig as Exclude<TicketNodeConfig['storage'], { kind: 'file' }>, 'reader');
    const raw = await reader.load(keys.sessionTicketKeys);
    assert.ok(raw, 'the keys are in the shared storage');
    const secrets = spellings(raw);
    for (const id of ['a', 'b', 'c']) {
      const log = await readFile(path.join(dir, `${id}.log`), 'utf8');
      assert.match(log, /certificate state/, `${id} logged`);
      for (const secret of secrets) assert.ok(!log.includes(secret), `a session-ticket key reached ${id}'s log`);
    }
  } finally {
    await Promise.all(nodes.map(async (node) => {
      await node.call('stop', undefined, 15_000).catch(() => {});
      await node.close();
    }));
    await (reader as { close?(): Promise<void> } | undefined)?.close?.();
    if (backend !== 'file') await dropStorage(storageConfig as Exclude<TicketNodeConfig['storage'], { kind: 'file' }>).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }
}

describe('session tickets across three processes', () => {
  for (const backend of ['file', 'redis', 'postgres'] as const) {
    it(`${backend} storage: a session from A resumes on B and C, through a rotation, and nowhere past the overlap`, async (t) => {
      const skip = backend === 'file' ? false : await backendSkip(backend);
      if (skip) return t.skip(skip);
      await scenario(backend);
    });
  }
});
