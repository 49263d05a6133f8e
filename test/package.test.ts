/**
 * The package as npm users get it: `npm pack` (which builds through
 * `prepack`), the tarball's contents, then an install of that tarball into a
 * fresh project outside the checkout and four consumers run under plain Node
 * (no tsx) — ESM, CommonJS `require()`, and TypeScript (`module: nodenext`,
 * checked with the repository's TypeScript) compiled to CommonJS and to ESM.
 * Each serves a certificate from the local CA through `tlsOptions()` over a
 * real TLS connection that verifies against `localCaCertificate(storage)`.
 *
 * The install is offline: `npm ci --offline` with a lock file made from the
 * repository's (the package's production dependencies, exactly as locked),
 * so every tarball comes from the npm cache that the repository's own
 * `npm ci` filled. Optional peers (ioredis, pg) are deliberately absent.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const exec = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

interface LockEntry {
  version?: string;
  dev?: boolean;
  devOptional?: boolean;
  [key: string]: unknown;
}

/** The consumers' shared body: given the module (`m`) and its `certstate/redis` entry, serve over TLS and report. */
const BODY = `
  const tls = require_('node:tls');
  const storage = m.memoryStorage();
  const engine = m.createCertEngine({ storage, issuers: [m.localCaIssuer()], names: [NAME] });
  await engine.start();
  const server = tls.createServer({ ...engine.tlsOptions() }, (socket) => socket.end('hello over TLS'));
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const ca = await m.localCaCertificate(storage);
  const reply = await new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port: server.address().port, servername: NAME, ca }, () => {
      const cn = socket.getPeerCertificate().subject.CN;
      let text = '';
      socket.on('data', (chunk) => (text += chunk)).on('end', () => resolve({ cn, authorized: socket.authorized, text }));
    });
    socket.on('error', reject);
  });
  server.close();
  await engine.stop();
  let typo;
  try { m.createCertEngine({ issuers: [m.localCaIssuer()], name: [NAME] }); } catch (error) { typo = { config: error instanceof m.ConfigError, base: error instanceof m.CertstateError, message: error.message }; }
  // A missing optional peer: the factory works, start() says what to install.
  let peer;
  const peerEngine = m.createCertEngine({ storage: redis.redisStorage({ url: 'redis://127.0.0.1:1' }), issuers: [m.localCaIssuer()], names: [NAME] });
  try { await peerEngine.start(); peer = 'started'; } catch (error) { peer = { config: error instanceof m.ConfigError, message: error.message }; }
  console.log(JSON.stringify({ reply, typo, peer, exports: Object.keys(m).length }));
`;

const CONSUMERS = {
  /** Plain ESM. */
  'esm.mjs': `import * as m from 'certstate';
import * as redis from 'certstate/redis';
import { createRequire } from 'node:module';
const require_ = createRequire(import.meta.url);
const NAME = 'esm.localhost';
${BODY}`,
  /** Plain CommonJS; also checks that require() and import() give the very same classes (no dual-package hazard). */
  'cjs.cjs': `const m = require('certstate');
const redis = require('certstate/redis');
require('certstate/postgres');
const require_ = require;
const NAME = 'cjs.localhost';
(async () => {
  const viaImport = await import('certstate');
  if (viaImport.CertstateError !== m.CertstateError || viaImport.createCertEngine !== m.createCertEngine) throw new Error('require() and import() loaded two copies');
  ${BODY}
})().catch((error) => { console.error(error); process.exit(1); });`,
} as const;

/** TypeScript consumers: typed use of the API, and a typo the types must catch. Compiled by the repository's tsc. */
const TS_BODY = (name: string) => `
const storage = memoryStorage();
const options: CertEngineOptions = { storage, issuers: [localCaIssuer()], names: [${JSON.stringify(name)}] };
// @ts-expect-error \`name\` is not an option (the types must know the options; unused if they were \`any\`)
const typo: CertEngineOptions = { issuers: [localCaIssuer()], name: ['x.localhost'] };
void typo;
async function main(): Promise<void> {
  const engine: CertEngine = createCertEngine(options);
  await engine.start();
  const server = tls.createServer({ ...engine.tlsOptions() }, (socket) => socket.end('hello over TLS'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const ca: string = await localCaCertificate(storage);
  const cn = await new Promise<string>((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, servername: ${JSON.stringify(name)}, ca }, () => {
      resolve(String(socket.getPeerCertificate().subject.CN));
      socket.end();
    });
    socket.on('error', reject);
  });
  server.close();
  await engine.stop();
  const error: CertstateError = new ConfigError('typed');
  console.log(JSON.stringify({ cn, code: error.code }));
}
`;

const TS_CONSUMERS = {
  /** No "type": "module" in package.json: TypeScript emits require() calls. */
  'ts-cjs.ts': `import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { createCertEngine, localCaIssuer, localCaCertificate, memoryStorage, ConfigError, type CertEngine, type CertEngineOptions, type CertstateError } from 'certstate';
${TS_BODY('ts-cjs.localhost')}
main().catch((error: unknown) => { console.error(error); process.exit(1); });
`,
  'ts-esm.mts': `import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { createCertEngine, localCaIssuer, localCaCertificate, memoryStorage, ConfigError, type CertEngine, type CertEngineOptions, type CertstateError } from 'certstate';
${TS_BODY('ts-esm.localhost')}
await main();
`,
};

it('package-lock.json says what package.json says (a fresh clone\'s `npm install` has nothing to rewrite)', async () => {
  const pkg = JSON.parse(await readFile(path.join(root, 'package.json'), 'utf8')) as Record<string, unknown>;
  const lock = JSON.parse(await readFile(path.join(root, 'package-lock.json'), 'utf8')) as { name: string; version: string; packages: Record<string, Record<string, unknown>> };
  assert.deepEqual([lock.name, lock.version], [pkg.name, pkg.version]);
  const rootEntry = lock.packages['']!;
  for (const field of ['name', 'version', 'license', 'dependencies', 'devDependencies', 'peerDependencies', 'peerDependenciesMeta', 'bin', 'engines']) {
    assert.deepEqual(rootEntry[field], field === 'bin' ? binAsLocked(pkg.bin) : pkg[field], `package-lock.json's ${field} (npm install --package-lock-only rewrites it)`);
  }
});

/** npm records bin paths without the leading `./`. */
function binAsLocked(bin: unknown): unknown {
  return bin && typeof bin === 'object' ? Object.fromEntries(Object.entries(bin).map(([k, v]) => [k, String(v).replace(/^\.\//, '')])) : bin;
}

describe('the published package', { timeout: 600_000 }, () => {
  let work: string;
  let project: string;
  let tarball: string;
  let files: string[];

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'certstate-package-'));
    // `npm pack` runs `prepack` (npm run build: dist/ from scratch) as publishing does.
    await exec(npm, ['pack', '--pack-destination', work, '--silent'], { cwd: root, timeout: 300_000 });
    const pkg = JSON.parse(await readFile(path.join(root, 'package.json'), 'utf8')) as { name: string; version: string; dependencies: Record<string, string>; peerDependencies: Record<string, string>; peerDependenciesMeta: Record<string, unknown>; bin: Record<string, string>; engines: Record<string, string> };
    tarball = path.join(work, `${pkg.name}-${pkg.version}.tgz`);
    files = (await exec('tar', ['-tzf', tarball])).stdout.split('\n').filter(Boolean).map((f) => f.replace(/^package\//, ''));

    // A consumer project outside the checkout (nothing resolves from the repository's node_modules).
    project = path.join(work, 'consumer');
    await mkdir(project);
    const dependency = `file:${tarball}`;
    const lock = JSON.parse(await readFile(path.join(root, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
    const packages: Record<string, LockEntry> = {
      '': { name: 'consumer', dependencies: { certstate: dependency } },
      'node_modules/certstate': {
        version: pkg.version,
        resolved: dependency,
        integrity: `sha512-${createHash('sha512').update(await readFile(tarball)).digest('base64')}`,
        dependencies: pkg.dependencies,
        peerDependencies: pkg.peerDependencies,
        peerDependenciesMeta: pkg.peerDependenciesMeta,
        bin: pkg.bin,
        engines: pkg.engines,
      },
    };
    for (const [where, entry] of Object.entries(lock.packages)) if (where && !entry.dev && !entry.devOptional) packages[where] = entry;
    await writeFile(path.join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, dependencies: { certstate: dependency } }, null, 2));
    await writeFile(path.join(project, 'package-lock.json'), JSON.stringify({ name: 'consumer', lockfileVersion: 3, requires: true, packages }, null, 2));
    try {
      await exec(npm, ['ci', '--offline', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: project, timeout: 180_000 });
    } catch (error) {
      const stderr = (error as { stderr?: string }).stderr ?? String(error);
      assert.fail(`installing the tarball offline failed (the npm cache is filled by the repository's own \`npm ci\`; run it first):\n${stderr}`);
    }
    for (const [file, source] of Object.entries({ ...CONSUMERS, ...TS_CONSUMERS })) await writeFile(path.join(project, file), source);
  });
  after(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('ships the build, the docs its README links to and the licence; no sources, source maps or source condition', async () => {
    for (const file of ['package.json', 'README.md', 'LICENSE', 'ARCHITECTURE.md', 'dist/index.js', 'dist/index.d.ts', 'dist/adapters/storage/redis.js', 'dist/adapters/storage/postgres.d.ts', 'dist/cli/main.js', 'bin/certstate.js']) {
      assert.ok(files.includes(file), `${file} is in the tarball`);
    }
    assert.deepEqual(files.filter((f) => f.endsWith('.map') || f.startsWith('src/') || f.startsWith('test/') || f.endsWith('.ts') && !f.endsWith('.d.ts')), []);
    const shipped = JSON.parse(await readFile(path.join(project, 'node_modules/certstate/package.json'), 'utf8')) as { exports: Record<string, unknown> };
    const leaves = (value: unknown): string[] => (typeof value === 'string' ? [value] : Object.values(value as object).flatMap(leaves));
    const targets = leaves(shipped.exports).map((t) => t.replace(/^\.\//, ''));
    for (const target of targets) assert.ok(files.includes(target), `export target ${target} is shipped`);
    assert.doesNotMatch(JSON.stringify(shipped.exports), /"source"/);
    // Every relative link of every shipped Markdown file resolves inside the tarball.
    for (const doc of files.filter((f) => f.endsWith('.md'))) {
      const text = await readFile(path.join(project, 'node_modules/certstate', doc), 'utf8');
      for (const [, link] of text.matchAll(/\]\(([^)#\s]+)(?:#[^)]*)?\)/g)) {
        if (/^[a-z]+:/.test(link!)) continue;
        const target = path.posix.normalize(path.posix.join(path.posix.dirname(doc), link!));
        assert.ok(files.includes(target) || files.some((f) => f.startsWith(`${target}/`)), `${doc} links to ${link}, which is not in the tarball`);
      }
    }
  });

  for (const file of Object.keys(CONSUMERS)) {
    it(`${file}: serves a local-CA certificate through tlsOptions() over TLS; a typo and a missing peer are ConfigErrors`, async () => {
      const { stdout } = await exec(process.execPath, [file], { cwd: project, timeout: 120_000 });
      const result = JSON.parse(stdout.trim().split('\n').at(-1)!) as {
        reply: { cn: string; authorized: boolean; text: string };
        typo: { config: boolean; base: boolean; message: string };
        peer: { config: boolean; message: string } | string;
        exports: number;
      };
      const name = file.startsWith('esm') ? 'esm.localhost' : 'cjs.localhost';
      assert.deepEqual(result.reply, { cn: name, authorized: true, text: 'hello over TLS' });
      assert.deepEqual({ ...result.typo, message: undefined }, { config: true, base: true, message: undefined });
      assert.match(result.typo.message, /did you mean `names`\?/);
      assert.ok(typeof result.peer === 'object' && result.peer.config, `start() without ioredis: ${JSON.stringify(result.peer)}`);
      assert.match(result.peer.message, /npm install ioredis/);
      assert.ok(result.exports > 20, `the entry exports the public API (${result.exports} names)`);
    });
  }

  it('the certstate command runs from the install (its bin link, the compiled CLI, no tsx)', async () => {
    const { stdout } = await exec(path.join(project, 'node_modules/.bin/certstate'), ['diagram', '--format', 'mermaid'], { cwd: project, timeout: 60_000 });
    assert.match(stdout, /stateDiagram/);
    assert.match(stdout, /failed-backoff|failed_backoff/);
  });

  it('TypeScript (module: nodenext) type-checks against the shipped declarations, compiles to CommonJS and to ESM, and both run', async () => {
    await writeFile(
      path.join(project, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          strict: true,
          outDir: 'out',
          // @types/node is the consumer's own dev dependency; here the repository's copy stands in for it.
          typeRoots: [path.join(root, 'node_modules/@types')],
          types: ['node'],
        },
        files: Object.keys(TS_CONSUMERS),
      }),
    );
    try {
      await exec(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', '.'], { cwd: project, timeout: 180_000 });
    } catch (error) {
      assert.fail(`tsc: ${(error as { stdout?: string }).stdout ?? String(error)}`);
    }
    const cjs = await readFile(path.join(project, 'out/ts-cjs.js'), 'utf8');
    assert.match(cjs, /require\("certstate"\)/, 'a CommonJS project: TypeScript emitted require()');
    for (const [file, name] of [['out/ts-cjs.js', 'ts-cjs.localhost'], ['out/ts-esm.mjs', 'ts-esm.localhost']] as const) {
      assert.ok(existsSync(path.join(project, file)), `${file} emitted`);
      const { stdout } = await exec(process.execPath, [file], { cwd: project, timeout: 120_000 });
      assert.deepEqual(JSON.parse(stdout.trim().split('\n').at(-1)!), { cn: name, code: 'ERR_CONFIG' });
    }
  });
});
