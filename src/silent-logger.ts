/**
 * The logger an engine writes to when it is given none: it discards
 * everything. Not `pino({ level: 'silent' })`, whose import alone costs
 * ~40 ms of start-up in a process that logs nothing through it (an
 * application with logs passes its own pino logger).
 */
import type { Logger } from 'pino';

/** A pino-shaped logger that writes nothing; children are itself. */
export function silentLogger(): Logger {
  const discard = () => {};
  const logger = {
    level: 'silent',
    levels: { values: {}, labels: {} },
    fatal: discard,
    error: discard,
    warn: discard,
    info: discard,
    debug: discard,
    trace: discard,
    silent: discard,
    child: () => logger,
    bindings: () => ({}),
    setBindings: discard,
    isLevelEnabled: () => false,
    flush: (cb?: (err?: Error) => void) => cb?.(),
  };
  return logger as unknown as Logger;
}
