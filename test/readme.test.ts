/**
 * README examples are real code: the quickstart block in README.md is the
 * same as examples/quickstart.ts, and that file runs against the package.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { it } from 'node:test';
import { promisify } from 'node:util';

const root = join(import.meta.dirname, '..');

it('the README quickstart is examples/quickstart.ts, and it runs', async () => {
  const readme = await readFile(join(root, 'README.md'), 'utf8');
  const block = /<!-- example:quickstart[^>]*-->\n```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(block, 'README has the quickstart block');
  assert.equal(block, await readFile(join(root, 'examples/quickstart.ts'), 'utf8'));
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'examples/quickstart.ts'], { cwd: root, timeout: 60_000 });
  assert.match(stdout, /obtained app\.localhost, valid until \d{4}-/);
  assert.match(stdout, /app\.localhost: valid/);
});

it('README starts with the two commands a fresh machine needs', async () => {
  const readme = await readFile(join(root, 'README.md'), 'utf8');
  const firstBlock = /```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
  assert.match(firstBlock, /npm start/);
  assert.match(firstBlock, /npm test/);
  const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8'));
  assert.ok(pkg.scripts.start && pkg.scripts.test);
});

it('README\'s error table: one row per error class, with the code it really has, and every code certstate sets', async () => {
  const errors = await import('../src/errors.js');
  const e = errors;
  // How to make one of each (a new class without a row here and in the README fails below).
  const samples: Record<string, () => InstanceType<typeof errors.CertstateError>> = {
    ConfigError: () => new e.ConfigError('x'),
    InvalidNameError: () => new e.InvalidNameError('x', 'empty'),
    NameNotAllowedError: () => new e.NameNotAllowedError('x', 'r'),
    OnDemandRefusedError: () => new e.OnDemandRefusedError('x', 'denied'),
    CertificateUnavailableError: () => new e.CertificateUnavailableError('x', { type: 'AcmeError', message: 'm', code: 'ERR_ACME', problemType: 'urn:ietf:params:acme:error:connection', at: 0 }, 1),
    HandshakeTimeoutError: () => new e.HandshakeTimeoutError('x', 1),
    TooManyWaitersError: () => new e.TooManyWaitersError('x', 1),
    EngineStoppedError: () => new e.EngineStoppedError(),
    OperatorTimeoutError: () => new e.OperatorTimeoutError('x', 1),
    IssuanceError: () => new e.IssuanceError('x'),
    AllIssuersFailedError: () => new e.AllIssuersFailedError([]),
    IssuerOnHoldError: () => new e.IssuerOnHoldError('i', 0),
    InvalidCertificateError: () => new e.InvalidCertificateError('x'),
    UnusableCertificateError: () => new e.UnusableCertificateError('x', 'expired'),
    IssuanceFloorError: () => new e.IssuanceFloorError('n', 10, 1, 0),
    AttemptTimeoutError: () => new e.AttemptTimeoutError('n', 1),
    AcmeError: () => new e.AcmeError('x', { problemType: 'urn:ietf:params:acme:error:malformed' }),
    AcmeRateLimitedError: () => new e.AcmeRateLimitedError('x', { problemType: 'urn:ietf:params:acme:error:rateLimited' }),
    ChallengeFailedError: () => new e.ChallengeFailedError('x', 'http-01', 'x', { problemType: 'urn:ietf:params:acme:error:connection' }),
    AccountError: () => new e.AccountError('x'),
    AcmeNetworkError: () => new e.AcmeNetworkError('x'),
    AcmeTimeoutError: () => new e.AcmeTimeoutError('x'),
    StorageError: () => new e.StorageError('x'),
    CorruptStorageError: () => new e.CorruptStorageError('k', 'r'),
    FencingError: () => new e.FencingError('k', 1),
    LockLostError: () => new e.LockLostError('k'),
    InvalidKeyError: () => new e.InvalidKeyError('k', 'r'),
    DnsError: () => new e.DnsError('x'),
    DnsServerError: () => new e.DnsServerError('x'),
    DnsPropagationError: () => new e.DnsPropagationError('f', [], 1),
    DnsProviderError: () => new e.DnsProviderError('x'),
  };
  const classes = Object.entries(errors)
    .filter(([, value]) => typeof value === 'function' && value.prototype instanceof errors.CertstateError)
    .map(([name]) => name);
  assert.deepEqual(classes.filter((name) => !(name in samples)), [], 'every error class has a sample here and a row in the README');

  const readme = await readFile(join(root, 'README.md'), 'utf8');
  const table = /### Errors\n[\s\S]*?\n(\| error \|[\s\S]*?)\n\n/.exec(readme)?.[1];
  assert.ok(table, 'README has the error table');
  const rows = new Map(
    table
      .split('\n')
      .slice(2)
      .map((line) => line.split('|').map((cell) => cell.trim()))
      .map((cells) => [cells[1]!.replace(/`/g, ''), [...cells[2]!.matchAll(/`([A-Z0-9_]+)`/g)].map((m) => m[1]!)] as const),
  );
  assert.deepEqual([...rows.keys()].sort(), Object.keys(samples).sort(), 'one row per class');
  for (const [name, sample] of Object.entries(samples)) {
    const error = sample();
    assert.equal(error.name, name);
    assert.equal(error.code, rows.get(name)![0], `${name}: the README's first code is the class's own`);
    assert.doesNotMatch(error.code, /^urn:/, `${name}: a CA's URN is never the code`);
  }
  const unavailable = samples.CertificateUnavailableError!() as InstanceType<typeof errors.CertificateUnavailableError>;
  assert.deepEqual([unavailable.lastError.problemType, unavailable.nextAttemptAt, unavailable.retryAfter], ['urn:ietf:params:acme:error:connection', 1, 1]);

  // Every code the library sets (the CLI's own aside) is documented in the table or beside it.
  const documented = new Set([...rows.values()].flat());
  for (const extra of /`(ERR_[A-Z0-9_]+)`/g[Symbol.matchAll](readme.slice(readme.indexOf('### Errors')))) documented.add(extra[1]!);
  const { readdir } = await import('node:fs/promises');
  const sources = (await readdir(join(root, 'src'), { recursive: true })).filter((f) => f.endsWith('.ts') && !f.startsWith('cli'));
  for (const file of sources) {
    const text = await readFile(join(root, 'src', file), 'utf8');
    assert.doesNotMatch(text, /code: `[^`]*\$\{/, `${file} builds a code from text (a URN belongs in problemType)`);
    for (const [, code] of text.matchAll(/'(ERR_[A-Z0-9_]+)'/g)) assert.ok(documented.has(code!), `${code} (set in src/${file}) is not in the README's error table`);
  }
});
