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
  const { stdout } = await promisify(execFile)(process.execPath, ['--conditions=source', '--import', 'tsx', 'examples/quickstart.ts'], { cwd: root, timeout: 60_000 });
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
