/** `certstate diagram`: the lifecycle statechart as Mermaid or SVG, offline. */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { lifecycleStates, toMermaid, toSvg } from '../../admin/diagram.js';
import { certificateMachine } from '../../machines/certificate.js';
import { oneOf, parse } from '../args.js';
import { ExitCode, usageError } from '../exit-codes.js';
import type { CliIo } from '../io.js';

export const USAGE = `Usage: certstate diagram [--format mermaid|svg] [--highlight STATE] [--out FILE]

Prints the certificate lifecycle statechart, drawn from the machine itself.

  --format mermaid|svg    Mermaid stateDiagram-v2 text (default) or a self-contained SVG
  --highlight STATE       svg: mark STATE as current (${lifecycleStates(certificateMachine).join(', ')})
  --out FILE              write to FILE instead of stdout`;

export async function run(argv: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, { format: { type: 'string' }, highlight: { type: 'string' }, out: { type: 'string' } }, USAGE);
  if (positionals.length) throw usageError(`diagram takes no arguments\n${USAGE}`);
  const format = oneOf(values.format, ['mermaid', 'svg'] as const, '--format', 'mermaid');
  if (values.highlight !== undefined) {
    if (format !== 'svg') throw usageError('--highlight needs --format svg');
    if (!lifecycleStates(certificateMachine).includes(values.highlight)) throw usageError(`--highlight must be one of ${lifecycleStates(certificateMachine).join(', ')}`);
  }
  const text = format === 'svg' ? toSvg(certificateMachine, values.highlight ? { highlight: values.highlight } : {}) : toMermaid(certificateMachine);
  if (values.out) await writeFile(path.resolve(io.cwd, values.out), text);
  else io.stdout.write(text);
  return ExitCode.OK;
}
