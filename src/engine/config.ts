/**
 * The options of `createCertEngine`, checked before anything is built: one
 * table row per option says what it accepts and what it defaults to (the
 * README's option table is checked against these rows). A mistake is a
 * `ConfigError` at construction — an unknown key names the nearest known one
 * (`name` → "did you mean `names`?"), a wrong value says what was expected —
 * never an option silently ignored in JavaScript. What needs I/O (loading a
 * storage driver) is checked by `start()` through `prepareAdapters`.
 */
import { ConfigError } from '../errors.js';
import { checkKeys } from '../option-keys.js';
import type { Issuer, Storage } from '../types.js';
import { allNames } from './managed-names.js';
import type { CertEngineOptions } from './options.js';

/** A check of one value; `path` names it in the message (e.g. `onDemand.askTimeoutMs`). Throws `ConfigError`. */
type Check = (value: unknown, path: string) => void;

/** One option: how its value is checked, and its default as the README states it. */
export interface OptionRow {
  check: Check;
  default: string;
}

const fail = (path: string, expected: string, value: unknown): never => {
  throw new ConfigError(`createCertEngine: \`${path}\` must be ${expected}, got ${describe(value)}`);
};

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);
const hasMethods = (value: unknown, methods: readonly string[]) => isObject(value) && methods.every((m) => typeof value[m] === 'function');

const positiveMs: Check = (v, path) => {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) fail(path, 'a positive number of ms', v);
};
const wholeAtLeast = (min: number): Check => (v, path) => {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) fail(path, `a whole number ≥ ${min}`, v);
};
const nonNegativeMs: Check = (v, path) => {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) fail(path, 'a number of ms ≥ 0', v);
};
const fraction = (includeZero: boolean): Check => (v, path) => {
  if (typeof v !== 'number' || !(includeZero ? v >= 0 : v > 0) || v >= 1) fail(path, `a number in ${includeZero ? '[0' : '(0'}, 1)`, v);
};
const boolean: Check = (v, path) => {
  if (typeof v !== 'boolean') fail(path, 'true or false', v);
};
const fn: Check = (v, path) => {
  if (typeof v !== 'function') fail(path, 'a function', v);
};
const methods = (names: readonly string[]): Check => (v, path) => {
  if (!hasMethods(v, names)) fail(path, `an object with ${names.map((n) => `${n}()`).join(', ')}`, v);
};

/** An object whose keys are all in `rows` (unknown ones get a suggestion), each value checked by its row. */
const objectOf = (rows: Record<string, Check>): Check => (v, path) => {
  if (!isObject(v)) fail(path, 'an object', v);
  checkKeys(v as Record<string, unknown>, Object.keys(rows), `createCertEngine: \`${path}\``);
  for (const [key, check] of Object.entries(rows)) {
    const value = (v as Record<string, unknown>)[key];
    if (value !== undefined) check(value, `${path}.${key}`);
  }
};

/** `false` (off), or an object of these options. */
const offOr = (rows: Record<string, Check>): Check => (v, path) => {
  if (v !== false) objectOf(rows)(v, path);
};

const TIMING: Record<string, Check> = {
  backoffInitialMs: positiveMs,
  backoffFactor: (v, path) => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 1) fail(path, 'a number ≥ 1', v);
  },
  backoffMaxMs: positiveMs,
  backoffJitter: fraction(true),
  renewRatio: fraction(false),
  shortLivedRenewRatio: fraction(false),
  shortLivedBelowMs: nonNegativeMs,
  renewJitter: fraction(true),
  storageRetryMs: positiveMs,
  clockSkewMs: nonNegativeMs,
  minRenewalIntervalMs: nonNegativeMs,
  maxOrdersPerWindow: wholeAtLeast(1),
  orderWindowMs: positiveMs,
};

const ON_DEMAND: Record<string, Check> = {
  decide: fn,
  ask: (v, path) => {
    let url: URL | undefined;
    try {
      url = typeof v === 'string' ? new URL(v) : undefined;
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) fail(path, 'an http:// or https:// URL', v);
  },
  askTimeoutMs: positiveMs,
  decideTimeoutMs: positiveMs,
  pauseAfterMs: positiveMs,
  cacheTtlMs: nonNegativeMs,
  negativeCacheTtlMs: nonNegativeMs,
  errorCacheTtlMs: nonNegativeMs,
  maxCacheEntries: wholeAtLeast(1),
  maxPendingDecisions: wholeAtLeast(1),
  rateLimit: objectOf({
    burst: wholeAtLeast(1),
    refillPerSecond: (v, path) => {
      if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) fail(path, 'a positive number', v);
    },
  }),
};

/** Every option of `createCertEngine`, with its check and default. Keep in step with `CertEngineOptions` (the type below makes a missing row a compile error). */
export const ENGINE_OPTIONS: { readonly [K in keyof CertEngineOptions]-?: OptionRow } = {
  storage: { check: methods(['load', 'store', 'delete', 'list', 'stat', 'lock']), default: "`fileStorage('./certstate-data')`" },
  issuers: {
    check: (v, path) => {
      if (!Array.isArray(v) || v.length === 0) fail(path, 'a non-empty array of issuers (e.g. acmeIssuer({...}) or localCaIssuer())', v);
      const ids = new Set<string>();
      (v as unknown[]).forEach((issuer, i) => {
        if (!isObject(issuer) || typeof issuer.id !== 'string' || typeof issuer.issue !== 'function') {
          fail(`${path}[${i}]`, 'an issuer: a string `id` and an `issue()` function', issuer);
        }
        const challenges = (issuer as { challenges?: unknown }).challenges;
        if (challenges !== undefined && !(Array.isArray(challenges) && challenges.every((c) => c === 'http-01' || c === 'tls-alpn-01' || c === 'dns-01'))) {
          fail(`${path}[${i}].challenges`, "absent, or an array of 'http-01', 'tls-alpn-01', 'dns-01'", challenges);
        }
        const id = (issuer as { id: string }).id;
        // Each CA's Retry-After is remembered per issuer id: two issuers with one id would share it.
        if (ids.has(id)) throw new ConfigError(`createCertEngine: \`${path}\` has two issuers with the id ${JSON.stringify(id)}`);
        ids.add(id);
      });
    },
    default: '— (required)',
  },
  names: {
    check: (v, path) => {
      const isName = (n: unknown) => typeof n === 'string';
      if (!Array.isArray(v) || !v.every((n) => isName(n) || (Array.isArray(n) && n.every(isName)))) {
        fail(path, 'an array of names: strings, or arrays of strings for one certificate with several names', v);
      }
    },
    default: '`[]`',
  },
  defaultName: {
    check: (v, path) => {
      if (typeof v !== 'string') fail(path, 'one of `names`', v);
    },
    default: '—',
  },
  onDemand: { check: objectOf(ON_DEMAND), default: 'off' },
  handshakeTimeout: { check: positiveMs, default: '30 000 ms' },
  operatorTimeout: { check: positiveMs, default: '300 000 ms' },
  attemptTimeout: { check: positiveMs, default: '600 000 ms' },
  maxWaitersPerName: { check: wholeAtLeast(1), default: '10 000' },
  maxWaiters: { check: wholeAtLeast(1), default: '100 000' },
  serveExpired: { check: boolean, default: '`false`' },
  logger: { check: methods(['info', 'warn', 'error', 'debug', 'child']), default: 'silent' },
  inspect: {
    check: (v, path) => {
      if (typeof v !== 'function' && !hasMethods(v, ['next'])) fail(path, 'a function or an observer with next()', v);
    },
    default: '—',
  },
  clock: { check: methods(['now', 'setTimeout', 'clearTimeout']), default: 'the real clock' },
  random: { check: fn, default: '`Math.random`' },
  timing: { check: objectOf(TIMING), default: 'see `defaultTimingPolicy`' },
  lockTtlMs: { check: positiveMs, default: '60 000 ms' },
  stopTimeoutMs: { check: positiveMs, default: '10 000 ms' },
  cacheCapacity: { check: wholeAtLeast(1), default: '10 000' },
  maxLiveActors: { check: wholeAtLeast(0), default: '1 000' },
  sessionTickets: { check: offOr({ rotationIntervalMs: wholeAtLeast(60_000), overlapMs: wholeAtLeast(0) }), default: 'on: `{ rotationIntervalMs: 12 h, overlapMs: 12 h }`' },
  storageCleaner: { check: offOr({ intervalMs: wholeAtLeast(60_000), gracePeriodMs: wholeAtLeast(0) }), default: 'on: `{ intervalMs: 24 h, gracePeriodMs: 14 days }`' },
  startupIndex: { check: offOr({ writeIntervalMs: wholeAtLeast(60_000) }), default: 'on (file storage, PostgreSQL): `{ writeIntervalMs: 10 min }`' },
};

/**
 * Check the options of `createCertEngine`: every key known, every value of
 * the expected shape, `issuers` present, `defaultName` one of `names`.
 * Throws `ConfigError` on the first mistake.
 */
export function checkEngineOptions(options: unknown): asserts options is CertEngineOptions {
  if (!isObject(options)) throw new ConfigError('createCertEngine needs an options object, e.g. { issuers: [localCaIssuer()], names: [...] }');
  checkKeys(options, Object.keys(ENGINE_OPTIONS), 'createCertEngine');
  if (options.issuers === undefined) ENGINE_OPTIONS.issuers.check(undefined, 'issuers');
  for (const [key, row] of Object.entries(ENGINE_OPTIONS) as [string, OptionRow][]) {
    if (options[key] !== undefined) row.check(options[key], key);
  }
  const { defaultName, names } = options as unknown as CertEngineOptions;
  if (defaultName !== undefined && !allNames(names ?? []).some((n) => n.toLowerCase().replace(/\.$/, '') === defaultName.toLowerCase().replace(/\.$/, ''))) {
    throw new ConfigError(`createCertEngine: \`defaultName\` ${JSON.stringify(defaultName)} must be one of \`names\` (it is obtained and renewed like them)`);
  }
}

/**
 * Load what the adapters need before the engine serves: the storage's driver
 * (`redisStorage({ url })` / `postgresStorage({ connectionString })`), so a
 * missing optional peer rejects `start()` with its `ConfigError` instead of
 * leaving every name in `failed-backoff`; an issuer's client library (acme-client),
 * so that it is not loaded by the import, nor inside an attempt holding a lock
 * (evaluating it blocks the event loop, lease renewals included). No connection is made.
 */
export async function prepareAdapters(storage: Storage, issuers: readonly Issuer[]): Promise<void> {
  await Promise.all([storage.prepare?.(), ...issuers.map((issuer) => issuer.prepare?.())]);
}
