/** `certstate status [--json]`: every stored name, its state, expiry and next action, read from storage. */
import { parse } from '../args.js';
import { isoSeconds, relative } from '../engine-run.js';
import { ExitCode } from '../exit-codes.js';
import type { CliIo } from '../io.js';
import { readStoredStatus, type StoredNameStatus } from '../stored-status.js';
import { STORAGE_OPTION, STORAGE_USAGE, withReadOnlyStorage } from './shared.js';

export const USAGE = `Usage: certstate status [--json] [--storage SPEC]

Lists every name in the storage: state, expiry and what happens next.
Read-only: nothing is renewed. States: valid, renewal-due, expired,
failed-backoff, no-certificate.

  --json                  print {"storage", "now", "names": [...]} instead of a table
${STORAGE_USAGE}`;

export async function run(argv: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, { ...STORAGE_OPTION, json: { type: 'boolean' } }, USAGE);
  if (positionals.length) return usage(io, `status takes no arguments`);
  return withReadOnlyStorage(io, values.storage, async (storage) => {
    const now = Date.now();
    const names = await readStoredStatus(storage, now);
    if (values.json) {
      io.stdout.write(`${JSON.stringify({ storage: storage.description, now, names }, null, 2)}\n`);
    } else if (names.length === 0) {
      io.stdout.write(`no certificates in ${storage.description}\n`);
    } else {
      io.stdout.write(table(names, now));
    }
    return ExitCode.OK;
  });
}

function usage(io: CliIo, message: string): number {
  io.stderr.write(`certstate: ${message}\n${USAGE}\n`);
  return ExitCode.USAGE;
}

function table(names: StoredNameStatus[], now: number): string {
  const rows = names.map((s) => [
    withOtherNames(s),
    s.state,
    s.certificate ? `${isoSeconds(s.certificate.notAfter)} (${relative(s.certificate.notAfter, now)})` : '-',
    nextAction(s, now),
    s.certificate?.issuerId ?? '-',
    s.lastError ? `${s.lastError.type}: ${oneLine(s.lastError.message)}` : s.corrupt ? `unreadable: ${oneLine(s.corrupt)}` : '',
  ]);
  const header = ['NAME', 'STATE', 'EXPIRES', 'NEXT', 'ISSUER', 'LAST ERROR'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return `${[line(header), ...rows.map(line)].join('\n')}\n`;
}

/** `example.com`, or `example.com (with *.example.com)` for a certificate of several names stored under its first. */
function withOtherNames(s: StoredNameStatus): string {
  const others = (s.certificate?.names ?? []).filter((n) => n.toLowerCase() !== s.name).map(oneLine);
  return others.length ? `${s.name} (with ${others.length > 3 ? `${others.slice(0, 3).join(', ')}, +${others.length - 3}` : others.join(', ')})` : s.name;
}

function nextAction(s: StoredNameStatus, now: number): string {
  const when = s.next.at === undefined || s.next.at <= now ? 'now' : relative(s.next.at, now);
  return `${s.next.action} ${when}`;
}

/** Error texts come from CAs: keep a table row one line, without control characters. */
function oneLine(text: string): string {
  // eslint-disable-next-line no-control-regex
  const clean = text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ');
  return clean.length > 120 ? `${clean.slice(0, 119)}…` : clean;
}
