/**
 * A pino logger that writes into memory, for tests that read what was logged
 * (that secrets never appear, that a line was written).
 */
import { Writable } from 'node:stream';
import { pino, type Level, type Logger } from 'pino';

export interface CapturedLogs {
  logger: Logger;
  /** Every line written so far (pino JSON, one per entry). */
  lines(): string[];
  /** All of it as one text. */
  text(): string;
}

export function captureLogs(level: Level = 'trace'): CapturedLogs {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      lines.push(String(chunk));
      done();
    },
  });
  return { logger: pino({ level }, stream), lines: () => lines, text: () => lines.join('') };
}
