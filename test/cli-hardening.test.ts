/**
 * The CLI (run in-process through `main(argv, io)`) against careless
 * operators and hostile surroundings:
 * - `export --out` leaves the key 0600 over an existing 0644 file, and never
 *   writes through a symbolic link;
 * - `serve` refuses an admin token that is set but empty or short;
 * - errors print as type and message only (no stack, credentials masked);
 * - read-only commands create no PostgreSQL table (`?table=` picks one), and
 *   `?prefix=` picks the Redis key prefix.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, lstat, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { main } from '../src/cli/main.js';
import type { CliIo } from '../src/cli/io.js';
import { StorageError } from '../src/errors.js';
import { POSTGRES_URL, purgeRedisPrefix, REDIS_URL, suiteCanRun, withPostgres, withRedis } from './helpers/backends.js';

const SECRET = 'S3CRET-do-not-print';

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run the CLI in this process with its own io. `stdoutWrite` replaces stdout's writer (to make it fail). */
async function cli(argv: string[], options: { cwd: string; env?: Record<string, string>; stdoutWrite?: (chunk: string | Uint8Array) => unknown }): Promise<Result> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = {
    stdout: { write: options.stdoutWrite ?? ((chunk) => (stdout += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'))) },
    stderr: { write: (chunk) => (stderr += chunk) },
    env: { ...options.env },
    cwd: options.cwd,
    stopRequested: () => Promise.resolve('SIGTERM'),
  };
  const code = await main(argv, io);
  return { code, stdout, stderr };
}

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'certstate-cli-hardening-'));
  const r = await cli(['obtain', 'key.example.test'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('export writes keys 0600, never through a link', () => {
  it('over an existing 0644 file: the file ends 0600 with the key inside', async () => {
    const out = path.join(dir, 'existing.pem');
    await writeFile(out, 'old contents\n');
    await chmod(out, 0o644);
    const r = await cli(['export', 'key.example.test', '--out', 'existing.pem'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await stat(out)).mode & 0o777, 0o600);
    assert.match(await readFile(out, 'utf8'), /-----BEGIN (RSA |EC )?PRIVATE KEY-----/);
    assert.deepEqual((await readdir(dir)).filter((f) => f.endsWith('.tmp')), [], 'no temp file left behind');
  });

  it('a symbolic link at --out is replaced by the key file; what it pointed to is untouched (and a dangling one is not created)', async () => {
    const victim = path.join(dir, 'victim.txt');
    await writeFile(victim, 'not a key\n');
    await chmod(victim, 0o644);
    await symlink(victim, path.join(dir, 'link.pem'));
    const r = await cli(['export', 'key.example.test', '--out', 'link.pem'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await readFile(victim, 'utf8'), 'not a key\n', 'the link target keeps its contents');
    assert.equal((await stat(victim)).mode & 0o777, 0o644);
    const out = await lstat(path.join(dir, 'link.pem'));
    assert.ok(out.isFile() && !out.isSymbolicLink(), 'the path now holds a file of its own');
    assert.equal(out.mode & 0o777, 0o600);

    const nowhere = path.join(dir, 'nowhere.pem');
    await symlink(nowhere, path.join(dir, 'dangling.pem'));
    const p12 = await cli(['export', 'key.example.test', '--format', 'p12', '--out', 'dangling.pem'], { cwd: dir, env: { CERTSTATE_EXPORT_PASSWORD: 'pw' } });
    assert.equal(p12.code, 0, p12.stderr);
    await assert.rejects(stat(nowhere), { code: 'ENOENT' }, 'nothing written where the dangling link pointed');
    assert.equal((await lstat(path.join(dir, 'dangling.pem'))).mode & 0o777, 0o600);
  });
});

describe('serve refuses a token that protects nothing', () => {
  it('set but empty, or short: usage error (exit 2) before anything is served', async () => {
    for (const token of ['', 'short']) {
      const r = await cli(['serve', '--demo', '--admin', '127.0.0.1:0'], { cwd: dir, env: { CERTSTATE_ADMIN_TOKEN: token } });
      assert.equal(r.code, 2, `token ${JSON.stringify(token)}: ${r.stderr}`);
      assert.match(r.stderr, /\$CERTSTATE_ADMIN_TOKEN: the admin token must be at least 16 characters/);
      assert.equal(r.stdout, '', 'no admin URL printed');
    }
    const other = await cli(['serve', '--demo', '--admin', '127.0.0.1:0', '--token-env', 'MY_TOKEN'], { cwd: dir, env: { MY_TOKEN: '' } });
    assert.equal(other.code, 2);
    assert.match(other.stderr, /\$MY_TOKEN: .*\(it is empty\)/);
    // A good one: serves, then stops (this io asks to stop at once).
    const ok = await cli(['serve', '--demo', '--admin', '127.0.0.1:0'], { cwd: dir, env: { CERTSTATE_ADMIN_TOKEN: 'a-good-token-0123456789' } });
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^admin: http:\/\/127\.0\.0\.1:\d+\/\?token=<\$CERTSTATE_ADMIN_TOKEN>$/m);
  });
});

describe('CLI errors print type and message only', () => {
  function leaky<E extends Error>(error: E): E {
    Object.assign(error, { headers: { authorization: `Bearer ${SECRET}` }, cause: new Error(`cause ${SECRET}`) });
    return error;
  }

  it('an unexpected error: no stack, credentials in URLs masked, no other field', async () => {
    const r = await cli(['diagram'], {
      cwd: dir,
      stdoutWrite: () => {
        throw leaky(new TypeError(`write to redis://admin:${SECRET}@10.0.0.1:6379 failed`));
      },
    });
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'certstate diagram: unexpected error: TypeError: write to redis://***@10.0.0.1:6379 failed\n');
  });

  it('an expected (certstate) error likewise', async () => {
    const r = await cli(['diagram'], {
      cwd: dir,
      stdoutWrite: () => {
        throw leaky(new StorageError(`postgres://certstate:${SECRET}@db/certs unreachable`));
      },
    });
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'certstate diagram: StorageError: postgres://***@db/certs unreachable\n');
  });
});

describe('read-only commands on PostgreSQL', async () => {
  if (!(await suiteCanRun('postgres', 'read-only commands on PostgreSQL'))) return;

  it('status on a fresh table name creates no table; obtain (a writer) does, and status then reads it', async () => {
    const table = `cs_ro_${process.pid}_${randomBytes(4).toString('hex')}`;
    const spec = `${POSTGRES_URL}${POSTGRES_URL.includes('?') ? '&' : '?'}table=${table}`;
    const exists = () => withPostgres(POSTGRES_URL, async (c) => (await c.query<{ t: string | null; l: string | null }>('SELECT to_regclass($1)::text AS t, to_regclass($2)::text AS l', [table, `${table}_locks`])).rows[0]!);
    try {
      for (const argv of [['status'], ['status', '--json'], ['export', 'pg.example.test'], ['revoke', 'pg.example.test']]) {
        const r = await cli([...argv, '--storage', spec], { cwd: dir });
        assert.ok(argv[0] === 'status' ? r.code === 0 : r.code === 3, `${argv.join(' ')} → ${r.code}: ${r.stderr}`);
      }
      assert.deepEqual(await exists(), { t: null, l: null }, 'read-only commands created no table');
      const status = await cli(['status', '--storage', spec], { cwd: dir });
      assert.match(status.stdout, new RegExp(`^no certificates in postgres:${table}$`, 'm'));

      const obtain = await cli(['obtain', 'pg.example.test', '--storage', spec], { cwd: dir });
      assert.equal(obtain.code, 0, obtain.stderr);
      assert.deepEqual(await exists(), { t: table, l: `${table}_locks` }, 'the writer created the tables it was told to');
      const listed = JSON.parse((await cli(['status', '--json', '--storage', spec], { cwd: dir })).stdout) as { storage: string; names: Array<{ name: string; state: string }> };
      assert.equal(listed.storage, `postgres:${table}`);
      assert.deepEqual(listed.names.map((n) => `${n.name}:${n.state}`), ['pg.example.test:valid']);
    } finally {
      // Only the tables this test created.
      await withPostgres(POSTGRES_URL, (c) => c.query(`DROP TABLE IF EXISTS ${table}, ${table}_locks, ${table}_index`));
    }
  });
});

describe('Redis key prefix from the storage URL', async () => {
  if (!(await suiteCanRun('redis', 'Redis key prefix from the storage URL'))) return;

  it('?prefix= puts every key under that prefix', async () => {
    const prefix = `cs-cli-${process.pid}-${randomBytes(4).toString('hex')}:`;
    const spec = `${REDIS_URL}${REDIS_URL.includes('?') ? '&' : '?'}prefix=${encodeURIComponent(prefix)}`;
    try {
      const r = await cli(['obtain', 'redis.example.test', '--storage', spec], { cwd: dir });
      assert.equal(r.code, 0, r.stderr);
      const keys = await withRedis(REDIS_URL, (c) => c.keys(`${prefix}*`));
      assert.ok(keys.some((k) => k.includes('redis.example.test')), `keys under ${prefix}: ${keys.join(', ')}`);
      const status = JSON.parse((await cli(['status', '--json', '--storage', spec], { cwd: dir })).stdout) as { names: Array<{ name: string }> };
      assert.deepEqual(status.names.map((n) => n.name), ['redis.example.test']);
    } finally {
      await withRedis(REDIS_URL, (c) => purgeRedisPrefix(c, prefix));
    }
  });
});
