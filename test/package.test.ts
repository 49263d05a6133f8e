/**
 * The published shape: `npm run build` (tsconfig.build.json) compiles, with
 * declaration files, and the compiled entry point works under plain Node
 * (no tsx): a user's `import { createCertEngine } from 'certstate'`.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));

describe('the compiled package', () => {
  it('builds with declarations, and the built entry serves a certificate under plain node', { timeout: 180_000 }, async () => {
    // Inside the checkout, so that the build's imports of xstate, pino… resolve from node_modules.
    const outDir = path.join(root, '.test-artifacts', `build-${process.pid}`);
    await mkdir(path.dirname(outDir), { recursive: true });
    try {
      await run(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', outDir], { cwd: root });
      for (const file of ['index.js', 'index.d.ts', 'adapters/storage/redis.d.ts', 'adapters/storage/postgres.js', 'cli/main.js']) {
        assert.ok(existsSync(path.join(outDir, file)), `${file} built`);
      }
      const script = `
        const m = await import(${JSON.stringify(path.join(outDir, 'index.js'))});
        const engine = m.createCertEngine({ storage: m.memoryStorage(), issuers: [m.localCaIssuer()], names: ['built.localhost'] });
        await engine.start();
        const served = await engine.getCertificate('built.localhost');
        console.log(JSON.stringify({ names: served.meta.names, state: engine.statusOf('built.localhost').state, exports: Object.keys(m).length }));
        await engine.stop();
      `;
      const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: root, timeout: 60_000 });
      const result = JSON.parse(stdout.trim().split('\n').at(-1)!) as { names: string[]; state: string; exports: number };
      assert.deepEqual(result.names, ['built.localhost']);
      assert.equal(result.state, 'valid');
      assert.ok(result.exports > 20, `the entry exports the public API (${result.exports} names)`);
    } finally {
      await rm(outDir, { recursive: true, force: true });
    }
  });
});
