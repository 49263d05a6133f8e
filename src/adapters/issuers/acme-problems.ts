/**
 * Turning a CA's answer into a typed certstate error.
 *
 * An ACME error is an HTTP status plus a problem document (RFC 8555 §6.7,
 * RFC 7807) and maybe a `Retry-After`. The statechart needs three things from
 * it: what kind of failure (the error class), the CA's words (`code` = problem
 * type, `detail`), and the earliest next attempt (`retryAfter`, epoch ms).
 * CA text is treated as hostile: control characters are stripped and length
 * is capped before it reaches messages, logs and `status()`.
 */
import { AccountError, AcmeError, AcmeRateLimitedError, type AcmeErrorOptions } from '../../errors.js';
import type { AcmeResponse } from './acme-http.js';

/** An RFC 7807 problem document, as far as we read it. */
export interface AcmeProblem {
  type?: string;
  detail?: string;
  status?: number;
  subproblems?: Array<{ type?: string; detail?: string; identifier?: { type?: string; value?: string } }>;
}

/** Namespace of ACME problem types. */
export const ACME_ERROR = 'urn:ietf:params:acme:error:';

/** Problem types that say "your account is the problem". */
const ACCOUNT_PROBLEMS = new Set(
  ['accountDoesNotExist', 'externalAccountRequired', 'invalidContact', 'unsupportedContact', 'userActionRequired'].map((t) => ACME_ERROR + t),
);

/** Clean CA-provided text for messages: no control characters, bounded length. */
export function sanitize(text: unknown, max = 500): string | undefined {
  if (typeof text !== 'string') return undefined;
  // eslint-disable-next-line no-control-regex
  const clean = text.replace(/[\u0000-\u001f\u007f-\u009f]+/g, ' ').trim();
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}

/** Read a problem document out of anything (a body, a challenge's `error`). */
export function asProblem(data: unknown): AcmeProblem | undefined {
  if (typeof data !== 'object' || data === null) return undefined;
  const p = data as Record<string, unknown>;
  const problem: AcmeProblem = {};
  const type = sanitize(p.type, 200);
  if (type) problem.type = type;
  const detail = sanitize(p.detail);
  if (detail) problem.detail = detail;
  if (typeof p.status === 'number') problem.status = p.status;
  if (Array.isArray(p.subproblems)) {
    problem.subproblems = p.subproblems.slice(0, 20).map((s) => {
      const sp = (s ?? {}) as Record<string, unknown>;
      const id = (sp.identifier ?? {}) as Record<string, unknown>;
      return { type: sanitize(sp.type, 200), detail: sanitize(sp.detail), identifier: { type: sanitize(id.type, 20), value: sanitize(id.value, 260) } };
    });
  }
  return problem.type || problem.detail ? problem : undefined;
}

/** The problem's detail, with any per-identifier subproblems appended. */
export function problemDetail(problem: AcmeProblem | undefined): string | undefined {
  if (!problem) return undefined;
  const subs = (problem.subproblems ?? [])
    .map((s) => [s.identifier?.value, s.detail].filter(Boolean).join(': '))
    .filter((s) => s.length > 0);
  const parts = [problem.detail, ...subs].filter((s): s is string => !!s);
  return parts.length ? parts.join('; ') : undefined;
}

/**
 * `Retry-After` (delta-seconds or an HTTP date) as epoch ms, or `undefined`
 * when absent, unparsable or not in the future.
 */
export function parseRetryAfter(header: string | undefined, now: number): number | undefined {
  if (!header) return undefined;
  const value = header.trim();
  if (/^\d+$/.test(value)) {
    const seconds = Number(value);
    return Number.isSafeInteger(seconds) && seconds > 0 ? now + seconds * 1000 : undefined;
  }
  const date = Date.parse(value);
  return Number.isFinite(date) && date > now ? date : undefined;
}

/** Which step failed, for the message and for classification. */
export type AcmeStep = 'directory' | 'account' | 'order' | 'authorization' | 'challenge' | 'finalize' | 'certificate' | 'renewalInfo';

/**
 * The typed error for a failed ACME response: `AcmeRateLimitedError` for 429
 * or `rateLimited`, `AccountError` for account problems (and anything going
 * wrong while registering), `AcmeError` otherwise. 503 and 429 carry
 * `retryAfter`; so does any other answer that sent `Retry-After`.
 */
export function errorFromResponse(res: AcmeResponse, step: AcmeStep, now: number): AcmeError {
  const problem = asProblem(res.data);
  const detail = problemDetail(problem);
  const retryAfter = parseRetryAfter(res.headers['retry-after'], now);
  const options: AcmeErrorOptions = { status: res.status };
  if (problem?.type) options.problemType = problem.type;
  if (detail) options.detail = detail;
  if (retryAfter !== undefined) options.retryAfter = retryAfter;
  const message = `ACME ${step} failed: HTTP ${res.status}${problem?.type ? ` ${problem.type.replace(ACME_ERROR, '')}` : ''}${detail ? `: ${detail}` : ''}`;
  if (res.status === 429 || problem?.type === `${ACME_ERROR}rateLimited`) return new AcmeRateLimitedError(message, options);
  if (step === 'account' || (problem?.type !== undefined && ACCOUNT_PROBLEMS.has(problem.type))) return new AccountError(message, options);
  return new AcmeError(message, { ...options, ...(res.status === 503 ? { code: 'ERR_ACME_UNAVAILABLE' } : {}) });
}

/** Whether `value` is a non-null object (a parsed JSON object). */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

/** The JSON object of a response, or a typed error for anything else (a hostile or broken CA). */
export function objectBody(res: AcmeResponse, step: AcmeStep): Record<string, unknown> {
  if (!isObject(res.data)) throw new AcmeError(`ACME ${step}: the CA answered HTTP ${res.status} without a JSON object`, { code: 'ERR_ACME_MALFORMED_RESPONSE', status: res.status });
  return res.data;
}
