/**
 * What the admin surface shows of a name: `NameStatus` as plain, bounded,
 * JSON-safe data whose text fields are strings. `status()` is trusted for its
 * shape, not its values: an issuer's error may carry a non-string `name`, a
 * megabyte message or a BigInt code, and one such value must neither break
 * `JSON.stringify` nor blank a row of the page.
 */
import type { ErrorInfo, NameStatus } from '../types.js';
import type { TransitionRecord } from './history.js';

/** One name as the page, `status.json` and the SSE stream show it. */
export interface NameView extends NameStatus {
  history: TransitionRecord[];
}

/** Longest string of any field not bounded more tightly below. */
const MAX_STRING = 4096;
/** Nesting, array and key bounds of fields the view does not know by name. */
const MAX_DEPTH = 6;
const MAX_ITEMS = 100;
const MAX_KEYS = 50;

/** `value` as text: strings as they are, anything else through `String()` (never throws), clipped to `max`. */
export function text(value: unknown, max = MAX_STRING): string {
  let out: string;
  if (typeof value === 'string') out = value;
  else if (value === undefined || value === null) out = '';
  else {
    try {
      out = typeof value === 'object' ? JSON.stringify(value) ?? String(value) : String(value);
    } catch {
      out = Object.prototype.toString.call(value);
    }
  }
  return out.length > max ? `${out.slice(0, max)}…` : out;
}

/** A time (ms since epoch) a `Date` can hold, else `undefined`. */
export function time(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) && Math.abs(value) <= 8.64e15 ? value : undefined;
}

/** The parts of an error worth showing, each a bounded string. */
export function briefError(error: Partial<ErrorInfo> | undefined): NonNullable<TransitionRecord['error']> {
  const e = (error ?? {}) as Record<string, unknown>;
  return {
    type: text(e.type, 100) || 'Error',
    message: text(e.message, 2000),
    ...(e.code !== undefined && e.code !== null ? { code: text(e.code, 200) } : {}),
    ...(e.problemType !== undefined && e.problemType !== null ? { problemType: text(e.problemType, 200) } : {}),
    ...(e.detail !== undefined && e.detail !== null ? { detail: text(e.detail, 2000) } : {}),
  };
}

/**
 * A name's view. Fields the view does not know by name (added to
 * `NameStatus` later) are kept as bounded plain data.
 */
export function nameView(status: NameStatus, history: TransitionRecord[]): NameView {
  const view = plain(status, 0) as Record<string, unknown>;
  view.name = text(status.name, 300);
  view.state = text(status.state, 100);
  view.managed = status.managed === true;
  if (Array.isArray(status.names)) view.names = status.names.slice(0, MAX_ITEMS).map((n) => text(n, 300));
  else delete view.names;
  view.attempts = typeof status.attempts === 'number' && Number.isFinite(status.attempts) ? status.attempts : 0;
  setTime(view, 'renewAt', status.renewAt);
  setTime(view, 'nextAttemptAt', status.nextAttemptAt);
  if (status.lastError !== undefined && status.lastError !== null) {
    const e = status.lastError as Partial<ErrorInfo>;
    const last: Record<string, unknown> = { ...(plain(e, 1) as object), ...briefError(e) };
    setTime(last, 'at', e.at);
    setTime(last, 'retryAfter', e.retryAfter);
    view.lastError = last;
  }
  const cert = status.certificate as Partial<NonNullable<NameStatus['certificate']>> | undefined;
  if (cert !== undefined && cert !== null) {
    const shown: Record<string, unknown> = { ...(plain(cert, 1) as object) };
    for (const key of ['fingerprint', 'serial', 'issuer', 'issuerId'] as const) shown[key] = text(cert[key], key === 'issuer' ? 1000 : 300);
    shown.names = Array.isArray(cert.names) ? cert.names.slice(0, MAX_ITEMS).map((n) => text(n, 300)) : [];
    setTime(shown, 'notBefore', cert.notBefore);
    setTime(shown, 'notAfter', cert.notAfter);
    view.certificate = shown;
  }
  view.history = history;
  return view as unknown as NameView;
}

function setTime(target: Record<string, unknown>, key: string, value: unknown): void {
  const t = time(value);
  if (t === undefined) delete target[key];
  else target[key] = t;
}

/** A JSON-safe, bounded copy: strings clipped, non-finite numbers dropped, anything else as text. */
function plain(value: unknown, depth: number): unknown {
  switch (typeof value) {
    case 'string':
      return text(value);
    case 'number':
      return Number.isFinite(value) ? value : null;
    case 'boolean':
      return value;
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined;
    case 'bigint':
      return text(value);
  }
  if (value === null) return null;
  if (depth >= MAX_DEPTH) return text(value, 200);
  if (Array.isArray(value)) return value.slice(0, MAX_ITEMS).map((item) => plain(item, depth + 1) ?? null);
  const out: Record<string, unknown> = {};
  let keys: string[];
  try {
    keys = Object.keys(value as object).slice(0, MAX_KEYS);
  } catch {
    return text(value, 200);
  }
  for (const key of keys) {
    let item: unknown;
    try {
      item = (value as Record<string, unknown>)[key];
    } catch {
      continue; // a getter that throws is not data
    }
    const copy = plain(item, depth + 1);
    if (copy !== undefined) out[key] = copy;
  }
  return out;
}
