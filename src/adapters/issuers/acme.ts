/**
 * `acmeIssuer()`: certificates from an ACME CA (Let's Encrypt, ZeroSSL,
 * Google Trust Services, a private CA, Pebble in tests).
 *
 * Built on acme-client's low-level `Client` (for JWS, EAB and key
 * authorizations), not on `auto()`, because the statechart's attempt must own
 * the flow: `auto()` takes no AbortSignal, no `profile`, no `replaces`, polls
 * from 5 s, and retries on its own. Here one `issue()` call is one attempt:
 *
 *   account (stored, registered once under a lock)
 *   → newOrder (profile, replaces)
 *   → authorizations (valid ones skipped) → present a challenge per pending one
 *   → tell the CA → poll (first poll after ~20 ms, doubling, honouring Retry-After)
 *   → challenge material removed (always, even on failure or abort)
 *   → finalize with a CSR naming exactly the order's identifiers → poll
 *   → download (preferred chain among alternates) → verify key and names.
 *
 * Every failure is a typed error (`AcmeRateLimitedError`, `ChallengeFailedError`,
 * `AccountError`, `AcmeNetworkError`/`AcmeTimeoutError`, `AcmeError`) carrying
 * the CA's problem type as `problemType`, its `detail`, and `retryAfter` (epoch ms)
 * when the CA sent `Retry-After`: the engine's backoff uses it as a floor.
 * Nothing here retries a failed attempt; that is the statechart's job.
 */
import { createPrivateKey, type KeyObject } from 'node:crypto';
import https from 'node:https';
import type { Client } from 'acme-client';
import { loadAcmeClient } from './acme-client-module.js';
import type { CertificateBundle, CertificateMeta, IssueContext, IssueRequest, Issuer, Logger, RenewalInfo, Storage } from '../../types.js';
import { AccountError, AcmeError, ConfigError, IssuanceError } from '../../errors.js';
import { withDecodedKey } from '../../certs/decoded-keys.js';
import { checkKeys, optionKeys } from '../../option-keys.js';
import type { DnsProvider } from '../challenges/dns-01.js';
import { acmeHttpRequest, installTransport, internalsOf, type AcmeResponse, type TransportOptions } from './acme-http.js';
import { ACME_ERROR, errorFromResponse, isObject, objectBody, parseRetryAfter, sanitize } from './acme-problems.js';
import { accountIdFor, ensureAccount, type AcmeAccount } from './acme-account.js';
import { KEY_TYPES, createCsrPem, generateLeafKey, verifyIssued, type AcmeKeyType } from './acme-certificate.js';
import { NoncePool } from './acme-nonces.js';
import { AcmeOrderFlow, type AcmeChallengeType, type AcmeDirectory, type AcmeOrder } from './acme-order.js';

export type { AcmeKeyType } from './acme-certificate.js';
export type { AcmeChallengeType } from './acme-order.js';

// ─── Well-known directories ────────────────────────────────────────────────

/** Let's Encrypt production. Rate-limited: test against staging first. */
export const LETS_ENCRYPT_PRODUCTION = 'https://acme-v02.api.letsencrypt.org/directory';
/** Let's Encrypt staging: untrusted certificates, generous rate limits. */
export const LETS_ENCRYPT_STAGING = 'https://acme-staging-v02.api.letsencrypt.org/directory';
/** ZeroSSL (requires External Account Binding). */
export const ZEROSSL = 'https://acme.zerossl.com/v2/DV90';
/** Google Trust Services production (requires External Account Binding). */
export const GOOGLE_TRUST_SERVICES = 'https://dv.acme-v02.api.pki.goog/directory';
/** Google Trust Services staging (requires External Account Binding). */
export const GOOGLE_TRUST_SERVICES_STAGING = 'https://dv.acme-v02.test-api.pki.goog/directory';

// ─── Options ───────────────────────────────────────────────────────────────

/** External Account Binding credentials (RFC 8555 §7.3.4), from the CA's dashboard. */
export interface ExternalAccountBinding {
  /** Key identifier. */
  kid: string;
  /** HMAC key, base64url. Never logged or put in error messages. */
  hmacKey: string;
}

/** Options of `acmeIssuer`. */
export interface AcmeIssuerOptions {
  /** The CA's directory URL, e.g. `LETS_ENCRYPT_STAGING`. */
  directoryUrl: string;
  /** Contact email for the account (expiry and incident notices). */
  email?: string;
  /** You agree to the CA's terms of service. Must be `true`. */
  agreeToTerms: boolean;
  /** EAB credentials, for CAs that require them (ZeroSSL, Google). */
  externalAccountBinding?: ExternalAccountBinding;
  /** ACME profile (e.g. `tlsserver`, `shortlived`); sent only if the directory lists it. `IssueRequest.profile` overrides it. */
  profile?: string;
  /** Leaf key algorithm. Default `P-256`. */
  keyType?: AcmeKeyType;
  /**
   * Challenge types in order of preference. Default `['http-01', 'tls-alpn-01']`,
   * plus `dns-01` last when a `dnsProvider` is given. Wildcard names always use `dns-01`
   * (with the `dnsProvider`), whatever this list says.
   */
  challenges?: AcmeChallengeType[];
  /** Publishes DNS-01 TXT records; required for `dns-01` and wildcard names. */
  dnsProvider?: DnsProvider;
  /**
   * PEM root(s) trusted for the CA's HTTPS API, *instead of* Node's default
   * roots (a private CA, Pebble). Only this issuer's requests use them.
   */
  caBundle?: string | string[];
  /** Preferred chain: the issuer common name of the chain's top certificate (e.g. `ISRG Root X1`). */
  preferredChain?: string;
  /**
   * First poll after telling the CA, ms. Default 20; then doubling up to `pollMaxMs`.
   * An order polls twice (authorization, then order after finalizing), so against a
   * fast CA this floor is most of the on-demand latency: 5 took Pebble's first
   * handshake from ~62 to ~35 ms (BENCHMARKS.md), at the price of about four more
   * requests per order to a slow one. When this process's HTTP-01 handler answers
   * the CA's fetch of the token, the authorization is looked at 5 ms after that
   * fetch instead, if that is sooner (the schedule is otherwise unchanged).
   */
  pollInitialMs?: number;
  /** Longest interval between polls, ms (a CA's `Retry-After` can ask for longer). Default 5000. */
  pollMaxMs?: number;
  /** Give up waiting for an authorization or order after this long, ms. Default 120 000. */
  pollTimeoutMs?: number;
  /** Timeout of each HTTP request to the CA, ms. Default 30 000. */
  requestTimeoutMs?: number;
  /** `badNonce` retries per request (each with the nonce from the error response). Default 20. */
  maxBadNonceRetries?: number;
}

// ─── Small helpers ─────────────────────────────────────────────────────────

const USER_AGENT = `certstate/0.1 acme-client/5.4.0 node/${process.version}`;
/** How long a fetched directory is trusted before it is fetched again. */
const DIRECTORY_TTL_MS = 12 * 60 * 60 * 1000;

const OPTION_KEYS = optionKeys<AcmeIssuerOptions>({
  directoryUrl: true, email: true, agreeToTerms: true, externalAccountBinding: true, profile: true, keyType: true, challenges: true,
  dnsProvider: true, caBundle: true, preferredChain: true, pollInitialMs: true, pollMaxMs: true, pollTimeoutMs: true, requestTimeoutMs: true, maxBadNonceRetries: true,
});

function validateOptions(o: AcmeIssuerOptions): void {
  if (typeof o !== 'object' || o === null) throw new ConfigError('acmeIssuer needs an options object: { directoryUrl, email, agreeToTerms: true }');
  checkKeys(o, OPTION_KEYS, 'acmeIssuer');
  if (o.agreeToTerms !== true) throw new ConfigError('acmeIssuer: agreeToTerms must be true (you must accept the CA\'s terms of service)');
  let url: URL;
  try {
    url = new URL(o.directoryUrl);
  } catch {
    throw new ConfigError(`acmeIssuer: directoryUrl is not a URL`);
  }
  // RFC 8555 §6.1: HTTPS only. Plain HTTP is allowed to loopback, for local stubs.
  const loopback = ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) throw new ConfigError('acmeIssuer: directoryUrl must be https');
  if (o.email !== undefined && !/^[^\s@,;<>]+@[^\s@,;<>]+$/.test(o.email)) throw new ConfigError('acmeIssuer: email is not a plain address');
  if (o.keyType !== undefined && !KEY_TYPES.includes(o.keyType)) throw new ConfigError(`acmeIssuer: keyType must be one of ${KEY_TYPES.join(', ')}`);
  const eab = o.externalAccountBinding;
  if (eab !== undefined && (typeof eab.kid !== 'string' || !eab.kid || typeof eab.hmacKey !== 'string' || !/^[A-Za-z0-9_\-+/=]+$/.test(eab.hmacKey))) {
    // Deliberately not echoing the values: the HMAC key is a secret.
    throw new ConfigError('acmeIssuer: externalAccountBinding needs a kid and a base64url hmacKey');
  }
  for (const type of o.challenges ?? []) {
    if (!['http-01', 'tls-alpn-01', 'dns-01'].includes(type)) throw new ConfigError(`acmeIssuer: unknown challenge type ${JSON.stringify(type)}`);
  }
  if (o.challenges?.length === 0) throw new ConfigError('acmeIssuer: challenges must not be empty');
  if (o.challenges?.includes('dns-01') && !o.dnsProvider) throw new ConfigError('acmeIssuer: dns-01 needs a dnsProvider');
  for (const key of ['pollInitialMs', 'pollMaxMs', 'pollTimeoutMs', 'requestTimeoutMs', 'maxBadNonceRetries'] as const) {
    const v = o[key];
    if (v !== undefined && !(Number.isFinite(v) && v >= 0)) throw new ConfigError(`acmeIssuer: ${key} must be a non-negative number`);
  }
}

// ─── The issuer ────────────────────────────────────────────────────────────

/** An `Issuer` backed by an ACME CA. */
export interface AcmeIssuer extends Issuer {
  /** The directory URL this issuer orders from. */
  readonly directoryUrl: string;
}

/**
 * Create an ACME issuer. Throws `ConfigError` for bad options (including
 * `agreeToTerms` not being `true`).
 *
 * @example
 * acmeIssuer({ directoryUrl: LETS_ENCRYPT_STAGING, email: 'ops@example.com', agreeToTerms: true })
 */
export function acmeIssuer(options: AcmeIssuerOptions): AcmeIssuer {
  validateOptions(options);
  const directoryUrl = options.directoryUrl;
  const id = `acme:${directoryUrl}`;
  const eab = options.externalAccountBinding ? { ...options.externalAccountBinding } : undefined;
  const challenges: AcmeChallengeType[] = options.challenges ?? ['http-01', 'tls-alpn-01', ...(options.dnsProvider ? (['dns-01'] as const) : [])];
  const keyType = options.keyType ?? 'P-256';
  const pollInitialMs = options.pollInitialMs ?? 20;
  const pollMaxMs = Math.max(options.pollMaxMs ?? 5000, pollInitialMs);
  const pollTimeoutMs = options.pollTimeoutMs ?? 120_000;
  const requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
  const maxBadNonceRetries = options.maxBadNonceRetries ?? 20;
  const accountId = accountIdFor(directoryUrl, options.email);
  const flowSettings = {
    challenges, pollInitialMs, pollMaxMs, pollTimeoutMs,
    ...(options.dnsProvider ? { dnsProvider: options.dnsProvider } : {}),
    ...(options.profile !== undefined ? { profile: options.profile } : {}),
    ...(options.preferredChain !== undefined ? { preferredChain: options.preferredChain } : {}),
  };
  // One keep-alive pool per issuer: after the first attempt, requests skip the
  // TCP+TLS handshake. `ca` applies to this agent only, never to the process.
  const agent = new https.Agent({ keepAlive: true, maxSockets: 16, ...(options.caBundle ? { ca: options.caBundle } : {}) });

  let directory: { value: AcmeDirectory; fetchedAt: number } | undefined;
  /** Accounts already loaded, per storage: saves a storage read per attempt. */
  const accounts = new WeakMap<Storage, AcmeAccount>();
  /** Replay nonces from every answer, for the next signed request of any attempt (acme-nonces.ts). */
  const nonces = new NoncePool();
  /** Account keys decoded once, by PEM (see `signingKeyOf`). */
  const signingKeys = new Map<string, { key: KeyObject; jwk: unknown }>();

  /**
   * The account key decoded, and its JWK. acme-client signs with the key it
   * was given: as PEM, OpenSSL decodes it again for every signed request
   * (~1 ms each with OpenSSL 3, eight or more per order, all while an
   * on-demand handshake waits). Kept for the few keys this issuer signs with.
   */
  async function signingKeyOf(keyPem: string): Promise<{ key: KeyObject; jwk: unknown }> {
    let entry = signingKeys.get(keyPem);
    if (entry === undefined) {
      const key = createPrivateKey(keyPem);
      entry = { key, jwk: (await loadAcmeClient()).crypto.getJwk(key as unknown as string) };
      if (signingKeys.size >= 4) signingKeys.delete(signingKeys.keys().next().value!);
      signingKeys.set(keyPem, entry);
    }
    return entry;
  }

  const transportFor = (signal: AbortSignal): TransportOptions => ({ agent, signal, timeoutMs: requestTimeoutMs, userAgent: USER_AGENT });

  async function getDirectory(t: TransportOptions, now: () => number): Promise<AcmeDirectory> {
    if (directory && Date.now() - directory.fetchedAt < DIRECTORY_TTL_MS) return directory.value;
    const res = await acmeHttpRequest(directoryUrl, 'get', {}, t);
    if (res.status !== 200) throw errorFromResponse(res, 'directory', now());
    const value = objectBody(res, 'directory') as AcmeDirectory;
    if (typeof value.newAccount !== 'string' || typeof value.newOrder !== 'string' || typeof value.newNonce !== 'string') {
      throw new AcmeError('ACME directory lacks newAccount, newNonce or newOrder', { code: 'ERR_ACME_MALFORMED_RESPONSE' });
    }
    directory = { value, fetchedAt: Date.now() };
    return value;
  }

  /** An acme-client `Client` for one attempt, on our transport, with the directory pre-loaded. */
  async function makeClient(keyPem: string, accountUrl: string | undefined, t: TransportOptions, dir: AcmeDirectory): Promise<Client> {
    const { Client } = await loadAcmeClient();
    const client = new Client({
      directoryUrl,
      accountKey: keyPem,
      ...(accountUrl ? { accountUrl } : {}),
      ...(eab ? { externalAccountBinding: eab } : {}),
    });
    installTransport(client, t, { maxBadNonceRetries, nonces });
    const { http } = internalsOf(client);
    const signing = await signingKeyOf(keyPem);
    http.accountKey = signing.key;
    http.jwk = signing.jwk;
    http.directoryCache = dir;
    http.directoryTimestamp = Math.floor(Date.now() / 1000);
    return client;
  }

  async function register(keyPem: string, t: TransportOptions, dir: AcmeDirectory, now: () => number): Promise<string> {
    const client = await makeClient(keyPem, undefined, t, dir);
    const payload: Record<string, unknown> = { termsOfServiceAgreed: true };
    if (options.email) payload.contact = [`mailto:${options.email}`];
    const res = await internalsOf(client).api.apiRequest(dir.newAccount!, payload, [], { includeJwsKid: false, includeExternalAccountBinding: !!eab });
    if (res.status !== 200 && res.status !== 201) throw errorFromResponse(res, 'account', now());
    const url = res.headers.location;
    if (!url) throw new AccountError('ACME newAccount answered without an account URL', { status: res.status });
    return url;
  }

  async function issue(request: IssueRequest, context: IssueContext): Promise<CertificateBundle> {
    const { signal, storage } = context;
    signal.throwIfAborted();
    const names = [...new Set(request.names.map((n) => n.toLowerCase()))];
    if (names.length === 0) throw new IssuanceError('acmeIssuer: no names to issue for', { code: 'ERR_NO_NAMES' });
    if (names.some((n) => n.startsWith('*.')) && !options.dnsProvider) {
      // Checked before ordering: an order we cannot complete still counts against the CA's limits.
      throw new IssuanceError('wildcard names need dns-01 with a dnsProvider', { code: 'ERR_WILDCARD_NEEDS_DNS01' });
    }
    const logger: Logger = context.logger.child({ issuer: id });
    const t = transportFor(signal);
    const dir = await getDirectory(t, context.now);
    if (dir.meta?.externalAccountRequired && !eab) {
      throw new AccountError(`${directoryUrl} requires External Account Binding: set externalAccountBinding { kid, hmacKey }`, { problemType: `${ACME_ERROR}externalAccountRequired` });
    }

    // The leaf key is generated while we talk to the CA (RSA-4096 takes a while).
    const leafKey = generateLeafKey(keyType);
    leafKey.catch(() => undefined);

    const accountOptions = {
      storage, id: accountId, directoryUrl, email: options.email, signal, logger, now: context.now,
      register: (keyPem: string) => register(keyPem, t, dir, context.now),
    };
    let account = accounts.get(storage) ?? (await ensureAccount(accountOptions));
    accounts.set(storage, account);
    let client = await makeClient(account.keyPem, account.url, t, dir);
    const flow = new AcmeOrderFlow(client, context, logger, dir, flowSettings);

    let order: AcmeOrder;
    try {
      order = await flow.newOrder(names, request);
    } catch (error) {
      if (!(error instanceof AcmeError) || error.problemType !== `${ACME_ERROR}accountDoesNotExist`) throw error;
      // The CA forgot our account (a reset staging CA, a restarted Pebble):
      // register the same key again, once, and retry the order.
      logger.warn({ accountUrl: account.url }, 'ACME account unknown to the CA; re-registering');
      account = await ensureAccount({ ...accountOptions, stale: account });
      accounts.set(storage, account);
      client = await makeClient(account.keyPem, account.url, t, dir);
      flow.client = client;
      order = await flow.newOrder(names, request);
    }

    if (order.status !== 'pending' && order.status !== 'ready') {
      throw new AcmeError(`ACME order is ${order.status}, expected pending or ready`, { code: 'ERR_ACME_ORDER_STATE' });
    }
    if (order.status === 'pending') await flow.authorize(order);

    const { key: leafPrivateKey, pem: keyPem } = await leafKey;
    const csrPem = createCsrPem(names[0]!, order.identifiers.map((i) => i.value.toLowerCase()), leafPrivateKey);
    signal.throwIfAborted();
    const done = await flow.finalize(order, csrPem);
    const chain = await flow.download(done.certificate!);
    verifyIssued(chain, leafPrivateKey, names);
    logger.info({ names, orderUrl: order.url }, 'ACME certificate issued');
    return withDecodedKey({ certificatePem: chain, privateKeyPem: keyPem }, leafPrivateKey);
  }

  /**
   * ARI (RFC 9773): the CA's suggested renewal window for `certificate`, or
   * `undefined` when the CA has no ARI, the certificate has no ARI id, or the
   * answer is not a valid window (start before end). `retryAfter` comes from
   * the CA's `Retry-After`, clamped to [1 min, 1 day].
   */
  async function renewalInfo(certificate: CertificateMeta, context: IssueContext): Promise<RenewalInfo | undefined> {
    if (!certificate.ariCertId) return undefined;
    const t = transportFor(context.signal);
    const dir = await getDirectory(t, context.now);
    if (typeof dir.renewalInfo !== 'string') return undefined;
    // An unauthenticated GET (RFC 9773 §4.2): no account, no nonce.
    const res = await acmeHttpRequest(`${dir.renewalInfo.replace(/\/+$/, '')}/${encodeURIComponent(certificate.ariCertId)}`, 'get', {}, t);
    if (res.status !== 200) throw errorFromResponse(res, 'renewalInfo', context.now());
    return parseRenewalInfo(res, context.now());
  }

  /** acme-client is imported here (engine.start()) or at the first request, never by `import 'certstate'`. */
  async function prepare(): Promise<void> {
    await loadAcmeClient().catch((cause: unknown) => Promise.reject(new ConfigError(`acmeIssuer: cannot load acme-client (${String(cause)})`)));
  }

  // What the engine's servers may be asked to answer (the engine decides from it whether tlsOptions() needs its ALPN callback).
  return { id, directoryUrl, issue, renewalInfo, prepare, challenges: Object.freeze([...challenges]) };
}

/** ARI polling bounds (RFC 9773 §4.3: clients clamp the server's Retry-After). */
const ARI_RETRY_MIN_MS = 60_000;
const ARI_RETRY_MAX_MS = 86_400_000;

/** A `renewalInfo` answer as `RenewalInfo`, or `undefined` for an invalid window. */
export function parseRenewalInfo(res: AcmeResponse, now: number): RenewalInfo | undefined {
  if (!isObject(res.data) || !isObject(res.data.suggestedWindow)) return undefined;
  const { start, end } = res.data.suggestedWindow;
  const startMs = typeof start === 'string' ? Date.parse(start) : NaN;
  const endMs = typeof end === 'string' ? Date.parse(end) : NaN;
  // RFC 9773 §4.2: a window whose end is not after its start is invalid.
  if (!Number.isFinite(startMs) || !Number.isFinite(endMs) || endMs <= startMs) return undefined;
  const info: RenewalInfo = { start: startMs, end: endMs };
  const retryAt = parseRetryAfter(res.headers['retry-after'], now);
  if (retryAt !== undefined) info.retryAfter = now + Math.min(Math.max(retryAt - now, ARI_RETRY_MIN_MS), ARI_RETRY_MAX_MS);
  const explanation = sanitize(res.data.explanationURL, 2000);
  if (explanation && /^https?:\/\//.test(explanation)) info.explanationUrl = explanation;
  return info;
}
