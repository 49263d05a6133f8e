/**
 * certstate's metrics in an application's prom-client registry: the same
 * families, help texts and values as the admin handler's `/metrics` for the
 * same engine state (counters, gauges, the wait histogram), in both of
 * prom-client's formats; no name clash goes unnoticed; unregister cleans up.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { Registry } from 'prom-client';
import { createAdminHandler } from '../src/admin/handler.js';
import { registerPromClient } from '../src/admin/prom-client.js';
import { memoryStorage } from '../src/adapters/storage/memory.js';
import { ManualClock } from '../src/clock.js';
import { createCertEngine } from '../src/engine/engine.js';
import { ConfigError } from '../src/errors.js';
import { perNameIssuer, request } from './helpers/browser.js';
import { installTestCa } from './helpers/scripted-issuer.js';

/** HELP/TYPE lines and samples of an exposition, blank lines (prom-client separates families with one) left out. */
function lines(text: string): string[] {
  return text.split('\n').filter((line) => line !== '');
}

async function until(predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('prom-client bridge', () => {
  it('a registry shows exactly what /metrics shows for the same engine state', async () => {
    const storage = memoryStorage();
    await installTestCa(storage);
    const clock = new ManualClock(Date.now());
    const issuer = perNameIssuer();
    issuer.outcomes.set('bad.example', { kind: 'fail', message: 'CA refused' });
    issuer.outcomes.set('slow.example', { kind: 'hang' });
    const engine = createCertEngine({
      storage,
      clock,
      issuers: [issuer],
      names: ['ok.example', 'bad.example', 'slow.example'],
      handshakeTimeout: 2_000,
      timing: { backoffInitialMs: 3_600_000, backoffJitter: 0 },
    });
    const handler = createAdminHandler(engine, { issuerIds: [issuer.id] });
    const registry = new Registry();
    const bridge = registerPromClient(engine, registry, { collector: handler.metrics });
    const http = await import('node:http');
    const server = http.createServer(handler).listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    try {
      await engine.start();
      await until(() => engine.status().every((s) => s.state !== 'loading') && engine.status().find((s) => s.name === 'bad.example')?.state === 'failed-backoff');
      await until(() => engine.status().find((s) => s.name === 'ok.example')?.state === 'valid');
      // Something in every family: an immediate handshake, a held one that times out after 2 s, a refused one.
      await engine.getCertificate('ok.example');
      const held = engine.getCertificate('slow.example').catch((e: Error) => e);
      await new Promise((r) => setImmediate(r));
      clock.advance(2_000);
      assert.equal(((await held) as Error).name, 'HandshakeTimeoutError');
      await assert.rejects(engine.getCertificate('unknown.example'));

      const { port } = server.address() as import('node:net').AddressInfo;
      const fromHandler = lines((await request(`http://127.0.0.1:${port}/metrics`)).body);
      const fromRegistry = lines(await registry.metrics());
      assert.deepEqual(fromRegistry, fromHandler);
      // Not vacuous: every kind of family, with values that moved.
      for (const needle of [
        '# TYPE certstate_names gauge',
        'certstate_names{state="valid"} 1',
        'certstate_names{state="failed-backoff"} 1',
        'certstate_names{state="obtaining"} 1',
        '# TYPE certstate_issuance_attempts_total counter',
        'certstate_issuance_attempts_total{issuer="per-name",result="failure",error_type="IssuanceError"} 1',
        'certstate_handshakes_total{answer="failed"} 2',
        '# TYPE certstate_handshake_wait_seconds histogram',
        'certstate_handshake_wait_seconds_bucket{le="2.5"} 1',
        'certstate_handshake_wait_seconds_sum 2',
        '# TYPE certstate_live_actors gauge',
        'certstate_admin_streams_dropped_total 0',
      ]) {
        assert.ok(fromRegistry.includes(needle), `registry output has ${JSON.stringify(needle)}:\n${fromRegistry.join('\n')}`);
      }
      assert.deepEqual(bridge.names, [...new Set(fromHandler.filter((l) => l.startsWith('# TYPE ')).map((l) => l.split(' ')[2]))]);

      // Scraped again after a change: the registry follows the engine, not a copy made at registration.
      await engine.forceRenew('ok.example');
      const again = lines(await registry.metrics());
      assert.ok(again.includes('certstate_issuance_attempts_total{issuer="per-name",result="success",error_type=""} 2'), again.join('\n'));
      assert.deepEqual(again, lines((await request(`http://127.0.0.1:${port}/metrics`)).body));

      // JSON too (what prom-client's cluster aggregation reads).
      const json = await registry.getMetricsAsJSON();
      const names = json.find((m) => m.name === 'certstate_names')!;
      assert.equal(names.type, 'gauge');
      assert.deepEqual(names.values.find((v) => v.labels.state === 'failed-backoff')?.value, 1);
    } finally {
      bridge.unregister();
      handler.close();
      await new Promise((r) => server.close(r));
      await engine.stop();
    }
    assert.equal(await registry.metrics(), '\n', 'unregister removed every certstate metric');
  });

  it('works in an OpenMetrics registry, refuses a name clash atomically, and a collector of its own counts from registration', async () => {
    const storage = memoryStorage();
    await installTestCa(storage);
    const issuer = perNameIssuer();
    const engine = createCertEngine({ storage, issuers: [issuer], names: ['om.example'] });
    const open = new Registry<typeof Registry.OPENMETRICS_CONTENT_TYPE>();
    open.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
    const bridge = registerPromClient(engine, open, { issuerIds: [issuer.id] });
    try {
      await engine.start();
      await until(() => engine.status()[0]?.state === 'valid');
      const text = await open.metrics();
      assert.match(text, /^# TYPE certstate_issuance_attempts counter$/m);
      assert.match(text, /^certstate_issuance_attempts_total\{issuer="per-name",result="success",error_type=""\} 1$/m);
      assert.match(text, /^certstate_names\{state="valid"\} 1$/m);
      assert.match(text, /# EOF\n$/);

      const clash = new Registry();
      const { Gauge } = await import('prom-client');
      new Gauge({ name: 'certstate_live_actors', help: 'the application has one already', registers: [clash] });
      assert.throws(() => registerPromClient(engine, clash), ConfigError);
      assert.deepEqual((await clash.getMetricsAsJSON()).map((m) => m.name), ['certstate_live_actors'], 'nothing of ours left behind');
      assert.throws(() => registerPromClient(engine, {} as never), ConfigError);
    } finally {
      bridge.unregister();
      bridge.unregister();
      await engine.stop();
    }
  });

  it('the README example is examples/prom-client.ts, and it runs', async () => {
    const root = join(import.meta.dirname, '..');
    const readme = await readFile(join(root, 'README.md'), 'utf8');
    const block = /<!-- example:prom-client[^>]*-->\n```ts\n([\s\S]*?)```/.exec(readme)?.[1];
    assert.ok(block, 'README has the prom-client block');
    assert.equal(block, await readFile(join(root, 'examples/prom-client.ts'), 'utf8'));
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'examples/prom-client.ts'], { cwd: root, timeout: 60_000 });
    assert.match(stdout, /^# TYPE certstate_names gauge$/m);
    assert.match(stdout, /^certstate_names\{state="valid"\} 1$/m);
  });
});
