#!/usr/bin/env node
// The `certstate` command. In a checkout (src/ present, tsx installed) it runs
// the TypeScript sources through tsx, registered in this process, so the CLI
// is always the code you are looking at, with no build step. Installed from
// npm (only dist/ is published), it runs the compiled dist/cli/main.js and
// needs no tsx. CERTSTATE_CLI_COMPILED=1 forces the compiled entry.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const source = new URL('../src/cli/main.ts', import.meta.url);
const compiled = new URL('../dist/cli/main.js', import.meta.url);

async function entry() {
  if (process.env.CERTSTATE_CLI_COMPILED !== '1' && existsSync(fileURLToPath(source))) {
    try {
      const { register } = await import('tsx/esm/api');
      register();
      return source;
    } catch (error) {
      if (!existsSync(fileURLToPath(compiled))) throw error; // neither tsx nor a build: say why
    }
  }
  return compiled;
}

const { main } = await import((await entry()).href);
const code = await main(process.argv.slice(2));
process.exitCode = code;
// Exit on our own once the work is done; if a stray handle (a driver's
// socket) would keep the process alive, leave anyway after a grace period.
setTimeout(() => process.exit(code), 2000).unref();
