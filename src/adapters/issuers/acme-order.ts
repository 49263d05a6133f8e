/**
 * The order part of one ACME attempt (RFC 8555 §7.4–7.5): newOrder (with
 * `profile` and `replaces`), authorizations, challenges presented through
 * storage or DNS and always withdrawn, fast polling that honours
 * `Retry-After`, finalization and the chain download.
 *
 * Polling starts after `pollInitialMs` (20 ms by default) and doubles: with
 * Pebble an authorization is valid ~10 ms after we respond, and a handshake
 * may be waiting on us, so acme-client's 5 s first poll is far too slow; with
 * Let's Encrypt (seconds) the doubling keeps us to a handful of requests.
 */
import net from 'node:net';
import type { Client } from 'acme-client';
import type { ChallengeType, IssueContext, IssueRequest, Logger } from '../../types.js';
import { AcmeError, ChallengeFailedError } from '../../errors.js';
import { keys } from '../../storage-keys.js';
import { safeError } from '../../safe-error.js';
import { watchFetch, type FetchWatch } from '../challenges/challenge-fetches.js';
import type { DnsProvider } from '../challenges/dns-01.js';
import { dns01RecordName } from '../challenges/dns-01.js';
import { abortError, internalsOf, type AcmeResponse } from './acme-http.js';
import { ACME_ERROR, asProblem, errorFromResponse, isObject, objectBody, parseRetryAfter, problemDetail, sanitize, type AcmeStep } from './acme-problems.js';
import { alternateLinks, choosePreferredChain, pemToBase64Url } from './acme-certificate.js';

/** Challenge types the issuer can answer. */
export type AcmeChallengeType = ChallengeType;

/** What the order flow needs from the issuer's options. */
export interface OrderFlowSettings {
  challenges: readonly AcmeChallengeType[];
  dnsProvider?: DnsProvider;
  profile?: string;
  preferredChain?: string;
  pollInitialMs: number;
  pollMaxMs: number;
  pollTimeoutMs: number;
}

// ─── Wire types (the parts of RFC 8555 objects we read) ────────────────────

export interface AcmeIdentifier {
  type: string;
  value: string;
}

export interface AcmeChallenge {
  type: string;
  url: string;
  status: string;
  token?: string;
  error?: unknown;
}

export interface AcmeAuthorization {
  url: string;
  identifier: AcmeIdentifier;
  status: string;
  wildcard?: boolean;
  challenges: AcmeChallenge[];
}

export interface AcmeOrder {
  url: string;
  status: string;
  identifiers: AcmeIdentifier[];
  authorizations: string[];
  finalize: string;
  certificate?: string;
  error?: unknown;
}

/** The directory fields we use (RFC 8555 §7.1.1, RFC 9773 `renewalInfo`, profiles). */
export interface AcmeDirectory {
  newAccount?: string;
  newNonce?: string;
  newOrder?: string;
  renewalInfo?: string;
  meta?: { externalAccountRequired?: boolean; termsOfService?: string; profiles?: Record<string, unknown> };
}

// ─── Polling ───────────────────────────────────────────────────────────────

/** Sleep `ms`, rejecting with the signal's reason if it aborts first. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(abortError(signal));
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError(signal));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * After the CA fetched our HTTP-01 token, how long before looking at the
 * authorization: a CA decides right after its fetches (Pebble's three
 * perspectives land within ~1 ms of each other).
 */
export const FETCH_GRACE_MS = 5;

/**
 * Sleep `ms`, or less: `FETCH_GRACE_MS` after `early` resolves, if that comes
 * first. True when it ended early. Rejects if `signal` aborts.
 */
function sleepOrEarly(ms: number, signal: AbortSignal, early: Promise<void>): Promise<boolean> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(abortError(signal));
    let settled = false;
    let grace: NodeJS.Timeout | undefined;
    const done = (value: boolean | Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(grace);
      signal.removeEventListener('abort', onAbort);
      if (value instanceof Error) reject(value);
      else resolve(value);
    };
    const onAbort = () => done(abortError(signal) as Error);
    const timer = setTimeout(() => done(false), ms);
    signal.addEventListener('abort', onAbort, { once: true });
    void early.then(() => {
      if (!settled) grace = setTimeout(() => done(true), FETCH_GRACE_MS);
    });
  });
}

// ─── The flow ──────────────────────────────────────────────────────────────

/**
 * One attempt's requests after the account: order, authorizations,
 * challenges, polling, finalization and download. Holds the account-bound
 * acme-client `Client` of this attempt.
 */
export class AcmeOrderFlow {
  constructor(
    /** Replaced when the account had to be registered again. */
    public client: Client,
    private readonly context: IssueContext,
    private readonly logger: Logger,
    private readonly dir: AcmeDirectory,
    private readonly settings: OrderFlowSettings,
  ) {}

  /** A signed POST (payload `null` = POST-as-GET); typed error unless the status is in `ok`. */
  async post(url: string, payload: unknown, ok: number[], step: AcmeStep): Promise<AcmeResponse> {
    this.context.signal.throwIfAborted();
    const res = await internalsOf(this.client).api.apiRequest(url, payload, []);
    if (!ok.includes(res.status)) throw errorFromResponse(res, step, this.context.now());
    return res;
  }

  async newOrder(names: string[], request: IssueRequest): Promise<AcmeOrder> {
    const dir = this.dir;
    const payload: Record<string, unknown> = {
      identifiers: names.map((value) => ({ type: net.isIP(value) ? 'ip' : 'dns', value })),
    };
    const profile = request.profile ?? this.settings.profile;
    if (profile !== undefined) {
      // Profiles are advertised in the directory; a CA without them may refuse the field.
      if (dir.meta?.profiles && profile in dir.meta.profiles) payload.profile = profile;
      else this.logger.warn({ profile }, 'the CA does not advertise this ACME profile; ordering without it');
    }
    // `replaces` (RFC 9773) only where the CA speaks ARI.
    if (request.replaces !== undefined && dir.renewalInfo) payload.replaces = request.replaces;
    try {
      return await this.createOrder(payload);
    } catch (error) {
      if (payload.replaces !== undefined && error instanceof AcmeError && error.problemType === `${ACME_ERROR}alreadyReplaced`) {
        // Another order already replaces that certificate (ours, lost in a
        // crash, or another process's): order once more without `replaces`.
        this.logger.warn({ replaces: payload.replaces }, 'certificate already replaced; ordering without replaces');
        delete payload.replaces;
        return await this.createOrder(payload);
      }
      throw error;
    }
  }

  private async createOrder(payload: Record<string, unknown>): Promise<AcmeOrder> {
    const res = await this.post(this.dir.newOrder!, payload, [201], 'order');
    const body = objectBody(res, 'order');
    const url = res.headers.location;
    if (!url || !Array.isArray(body.authorizations) || typeof body.finalize !== 'string' || !Array.isArray(body.identifiers)) {
      throw new AcmeError('ACME newOrder answer lacks location, authorizations, identifiers or finalize', { code: 'ERR_ACME_MALFORMED_RESPONSE' });
    }
    return { ...(body as unknown as AcmeOrder), url };
  }

  /** Get every authorization valid: present, respond, poll, and always clean up. */
  async authorize(order: AcmeOrder): Promise<void> {
    const authzs = await Promise.all(
      order.authorizations.map(async (url) => ({ ...(objectBody(await this.post(url, null, [200], 'authorization'), 'authorization') as unknown as AcmeAuthorization), url })),
    );
    for (const a of authzs) {
      if (!isObject(a.identifier) || typeof a.identifier.value !== 'string' || typeof a.status !== 'string' || !Array.isArray(a.challenges)) {
        throw new AcmeError('ACME authorization lacks identifier, status or challenges', { code: 'ERR_ACME_MALFORMED_RESPONSE' });
      }
      if (a.status !== 'valid' && a.status !== 'pending') {
        throw new ChallengeFailedError(a.identifier.value, undefined, `authorization for ${a.identifier.value} is ${sanitize(a.status, 40)}`);
      }
    }
    const pending = authzs.filter((a) => a.status === 'pending').map((authz) => ({ authz, challenge: this.pick(authz) }));
    if (pending.length === 0) return;

    // Siblings stop polling as soon as one authorization fails.
    const phase = new AbortController();
    const signal = AbortSignal.any([this.context.signal, phase.signal]);
    const cleanups: Array<() => Promise<void>> = [];
    const presenting = pending.map((p) => this.present(p.authz, p.challenge, cleanups));
    // Set up before the CA is told: its fetch may come before the answer to our POST.
    const watches = pending.map((p) => (p.challenge.type === 'http-01' ? watchFetch(p.challenge.token!) : undefined));
    try {
      await Promise.all(presenting);
      await Promise.all(pending.map((p) => this.post(p.challenge.url, {}, [200], 'challenge')));
      await Promise.all(
        pending.map((p, i) =>
          this.pollAuthorization(p.authz, p.challenge, signal, watches[i]).catch((error: unknown) => {
            phase.abort(error);
            throw error;
          }),
        ),
      );
    } finally {
      for (const watch of watches) watch?.cancel();
      // Wait for every `present` to settle first, so none writes after its cleanup ran.
      await Promise.allSettled(presenting);
      const results = await Promise.allSettled(cleanups.map((cleanup) => cleanup()));
      for (const r of results) if (r.status === 'rejected') this.logger.warn({ err: safeError(r.reason) }, 'removing ACME challenge material failed');
    }
  }

  /** The preferred challenge this authorization offers; wildcards only take dns-01. */
  private pick(authz: AcmeAuthorization): AcmeChallenge {
    const allowed = authz.wildcard ? (['dns-01'] as const) : this.settings.challenges;
    for (const type of allowed) {
      if (type === 'dns-01' && !this.settings.dnsProvider) continue;
      // An IP identifier has no DNS name to put a TXT record under (RFC 8738): never DNS-01.
      if (type === 'dns-01' && authz.identifier.type === 'ip') continue;
      const challenge = authz.challenges?.find((c) => c.type === type);
      if (!challenge) continue;
      // The token ends up in a storage key, a DNS record and a URL path: only base64url (RFC 8555 §8.1).
      if (typeof challenge.url !== 'string' || typeof challenge.token !== 'string' || !/^[A-Za-z0-9_-]{1,200}$/.test(challenge.token)) {
        throw new AcmeError(`ACME ${type} challenge for ${authz.identifier.value} has no usable url or token`, { code: 'ERR_ACME_MALFORMED_RESPONSE' });
      }
      return challenge;
    }
    const offered = (authz.challenges ?? []).map((c) => c.type).join(', ');
    throw new ChallengeFailedError(authz.identifier.value, undefined, `no usable challenge for ${authz.identifier.value}: the CA offers [${offered}], we answer [${allowed.join(', ')}]`, { code: 'ERR_ACME_NO_USABLE_CHALLENGE' });
  }

  /** Publish one challenge's response; its cleanup is registered before anything is written. */
  private async present(authz: AcmeAuthorization, challenge: AcmeChallenge, cleanups: Array<() => Promise<void>>): Promise<void> {
    const { storage, signal } = this.context;
    const keyAuthorization = await this.client.getChallengeKeyAuthorization(challenge as never);
    const name = authz.identifier.value.toLowerCase();
    switch (challenge.type) {
      case 'http-01': {
        const key = keys.http01(challenge.token!);
        cleanups.push(() => storage.delete(key));
        await storage.store(key, keyAuthorization);
        return;
      }
      case 'tls-alpn-01': {
        // One record per name, not per token: fenced with the attempt's lock, so a holder that
        // lost its lock can neither replace nor remove the record of the one that took over.
        const key = keys.tlsAlpn01(name);
        const fence = this.context.fence;
        const options = fence ? { fence } : undefined;
        cleanups.push(() => storage.delete(key, options));
        await storage.store(key, keyAuthorization, options);
        return;
      }
      case 'dns-01': {
        const provider = this.settings.dnsProvider!;
        const fqdn = dns01RecordName(name);
        cleanups.push(() => provider.remove(fqdn, keyAuthorization));
        await provider.set(fqdn, keyAuthorization, { signal });
        await provider.waitForPropagation?.(fqdn, keyAuthorization, { signal });
        return;
      }
      default:
        throw new ChallengeFailedError(name, challenge.type, `cannot answer ${challenge.type}`, { code: 'ERR_ACME_NO_USABLE_CHALLENGE' });
    }
  }

  private async pollAuthorization(authz: AcmeAuthorization, challenge: AcmeChallenge, signal: AbortSignal, watch?: FetchWatch): Promise<void> {
    const name = authz.identifier.value;
    await this.poll(authz.url, 'authorization', signal, (body) => {
      const status = body.status;
      if (status === 'valid') return true;
      if (status === 'pending') return undefined;
      if (status === 'invalid') {
        const chs = Array.isArray(body.challenges) ? (body.challenges as AcmeChallenge[]) : [];
        const failed = chs.find((c) => c.url === challenge.url && c.error) ?? chs.find((c) => c.error);
        const problem = asProblem(failed?.error);
        const detail = problemDetail(problem);
        throw new ChallengeFailedError(name, failed?.type ?? challenge.type, `${challenge.type} validation of ${name} failed${detail ? `: ${detail}` : ''}`, {
          ...(problem?.type ? { problemType: problem.type } : {}),
          ...(detail ? { detail } : {}),
        });
      }
      throw new ChallengeFailedError(name, challenge.type, `authorization for ${name} became ${sanitize(String(status), 40)}`);
    }, undefined, watch?.fetched);
  }

  /**
   * POST-as-GET `url` until `check` returns a value: first after
   * `firstWaitMs` (default `pollInitialMs`), then from `pollInitialMs`
   * doubling to `pollMaxMs`, never sooner than the CA's `Retry-After`,
   * never past `pollTimeoutMs`. With `early` (the CA fetched our token), the
   * first look comes `FETCH_GRACE_MS` after it if that is sooner; if that
   * look finds nothing, the schedule goes on as if it had not happened.
   */
  private async poll<T>(
    url: string,
    step: AcmeStep,
    signal: AbortSignal,
    check: (body: Record<string, unknown>) => T | undefined,
    firstWaitMs?: number,
    early?: Promise<void>,
  ): Promise<T> {
    const { pollInitialMs, pollMaxMs, pollTimeoutMs } = this.settings;
    const deadline = Date.now() + pollTimeoutMs;
    let delay = firstWaitMs ?? pollInitialMs;
    // After an immediate first look the backoff starts at pollInitialMs; otherwise it doubles on from there.
    let next = firstWaitMs === undefined ? pollInitialMs * 2 : pollInitialMs;
    let retryAt: number | undefined;
    for (;;) {
      const wait = Math.max(delay, retryAt === undefined ? 0 : retryAt - Date.now());
      if (Date.now() + wait > deadline) {
        throw new AcmeError(`ACME ${step} still not done after ${pollTimeoutMs} ms`, {
          code: 'ERR_ACME_POLL_TIMEOUT',
          ...(retryAt !== undefined ? { retryAfter: this.context.now() + (retryAt - Date.now()) } : {}),
        });
      }
      const dueAt = Date.now() + wait;
      // Only the first wait can end early; a Retry-After the CA sent is never cut short.
      const wokeEarly = early !== undefined && retryAt === undefined ? await sleepOrEarly(wait, signal, early) : (await sleep(wait, signal), false);
      early = undefined;
      const res = await this.post(url, null, [200], step);
      const result = check(objectBody(res, step));
      if (result !== undefined) return result;
      // Wall-clock time here (real sleeps), not the engine's possibly simulated clock.
      retryAt = parseRetryAfter(res.headers['retry-after'], Date.now());
      if (wokeEarly && dueAt > Date.now()) {
        // The early look found nothing: the first regular look stays where it was.
        delay = dueAt - Date.now();
        continue;
      }
      delay = Math.min(next, pollMaxMs);
      next = Math.min(next * 2, pollMaxMs);
    }
  }

  /** Finalize, then poll the order until it is valid. */
  async finalize(order: AcmeOrder, csrPem: string): Promise<AcmeOrder> {
    const res = await this.post(order.finalize, { csr: pemToBase64Url(csrPem) }, [200], 'finalize');
    const checkOrder = (body: Record<string, unknown>): AcmeOrder | undefined => {
      if (body.status === 'valid') {
        if (typeof body.certificate !== 'string') throw new AcmeError('ACME order is valid but has no certificate URL', { code: 'ERR_ACME_MALFORMED_RESPONSE' });
        return { ...(body as unknown as AcmeOrder), url: order.url };
      }
      if (body.status === 'processing' || body.status === 'ready') return undefined;
      const problem = asProblem(body.error);
      const detail = problemDetail(problem);
      throw new AcmeError(`ACME order became ${String(body.status)}${detail ? `: ${detail}` : ''}`, { code: 'ERR_ACME_ORDER_INVALID', ...(problem?.type ? { problemType: problem.type } : {}), ...(detail ? { detail } : {}) });
    };
    // A CA that answers `processing` usually issues within milliseconds (and LE within a second):
    // look once at once, as acme-client does, before the usual backoff.
    return checkOrder(objectBody(res, 'finalize')) ?? (await this.poll(order.url, 'order', this.context.signal, checkOrder, 0));
  }

  /** Download the chain, choosing among alternates when a preferred chain is set. */
  async download(certificateUrl: string): Promise<string> {
    const res = await this.post(certificateUrl, null, [200], 'certificate');
    if (typeof res.data !== 'string') throw new AcmeError('ACME certificate download did not return a PEM chain', { code: 'ERR_ACME_MALFORMED_RESPONSE' });
    const preferred = this.settings.preferredChain;
    if (!preferred) return res.data;
    const alternates = alternateLinks(res.headers.link, certificateUrl);
    if (alternates.length === 0) return res.data;
    const chains = [res.data];
    for (const url of alternates.slice(0, 5)) {
      const alt = await this.post(url, null, [200], 'certificate');
      if (typeof alt.data === 'string') chains.push(alt.data);
    }
    return choosePreferredChain(chains, preferred);
  }
}
