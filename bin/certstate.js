#!/usr/bin/env node
// The `certstate` command. In a checkout (src/ present) it runs the TypeScript
// sources through tsx, registered in this process, so the CLI is always the
// code you are looking at, with no build step. Installed from npm (no src/),
// it runs the compiled dist/cli/main.js and needs no tsx.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const source = new URL('../src/cli/main.ts', import.meta.url);
const compiled = new URL('../dist/cli/main.js', import.meta.url);

let entry = compiled;
if (existsSync(fileURLToPath(source)) && process.env.CERTSTATE_CLI_COMPILED !== '1') {
  const { register } = await import('tsx/esm/api');
  register();
  entry = source;
}
const { main } = await import(entry.href);
const code = await main(process.argv.slice(2));
process.exitCode = code;
// Exit on our own once work is done; if a stray handle (a driver's socket)
// would keep the process alive, leave anyway after a grace period.
setTimeout(() => process.exit(code), 2000).unref();
