/**
 * Command-line flags for the benches: `--name value` or `--name=value`, each
 * declared with a default so that `--help` can list them and a typo fails
 * loudly instead of silently running the default size.
 */

export type FlagSpec = Record<string, { default: number | string | boolean; help: string }>;

type Values<S extends FlagSpec> = { [K in keyof S]: S[K]['default'] extends number ? number : S[K]['default'] extends boolean ? boolean : string };

/** Parse `argv` against `spec`; prints usage and exits on `--help` or an unknown flag. */
export function parseFlags<S extends FlagSpec>(bench: string, spec: S, argv: string[] = process.argv.slice(2)): Values<S> {
  const values: Record<string, number | string | boolean> = {};
  for (const [key, flag] of Object.entries(spec)) values[key] = flag.default;
  const usage = () =>
    `usage: ${bench} ${Object.entries(spec)
      .map(([k, f]) => `[--${k} ${typeof f.default === 'boolean' ? '' : `<${f.default}>`}]`)
      .join(' ')}\n${Object.entries(spec)
      .map(([k, f]) => `  --${k.padEnd(18)} ${f.help} (default ${String(f.default)})`)
      .join('\n')}`;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') {
      console.log(usage());
      process.exit(0);
    }
    const match = /^--([a-z0-9-]+)(?:=(.*))?$/.exec(arg);
    const key = match?.[1];
    if (!match || key === undefined || !(key in spec)) {
      console.error(`${bench}: unknown argument ${JSON.stringify(arg)}\n${usage()}`);
      process.exit(2);
    }
    const kind = typeof spec[key]!.default;
    if (kind === 'boolean') {
      values[key] = match[2] === undefined ? true : match[2] !== 'false';
      continue;
    }
    const raw = match[2] ?? argv[++i];
    if (raw === undefined) {
      console.error(`${bench}: --${key} needs a value`);
      process.exit(2);
    }
    if (kind === 'number') {
      const n = Number(raw);
      if (!Number.isFinite(n) || n < 0) {
        console.error(`${bench}: --${key} must be a non-negative number, got ${JSON.stringify(raw)}`);
        process.exit(2);
      }
      values[key] = n;
    } else {
      values[key] = raw;
    }
  }
  return values as Values<S>;
}
