/**
 * ACME certificate revocation (RFC 8555 §7.6), for `certstate revoke`.
 *
 * Signed with the ACME account stored for the certificate's directory when
 * there is one, else with the certificate's own private key (which RFC 8555
 * allows, and which works even when the account is lost). Uses the ACME
 * issuer's bounded transport (timeouts, nonce pool, private CA roots).
 */
import https from 'node:https';
import { Client } from 'acme-client';
import { acmeHttpRequest, installTransport, internalsOf, type TransportOptions } from '../adapters/issuers/acme-http.js';
import { errorFromResponse } from '../adapters/issuers/acme-problems.js';
import { pemToDer, splitPemChain } from '../pem.js';
import { AcmeError } from '../errors.js';
import type { CertificateBundle, Storage } from '../types.js';

/** Options of {@link revokeAcmeCertificate}. */
export interface AcmeRevokeOptions {
  directoryUrl: string;
  bundle: CertificateBundle;
  storage: Storage;
  /** RFC 5280 reason code (0 unspecified, 1 keyCompromise, 4 superseded, 5 cessationOfOperation). */
  reason?: number;
  /** PEM roots trusted for the CA's HTTPS API instead of Node's defaults (a private CA, Pebble). */
  caBundle?: string;
  timeoutMs?: number;
}

/** How the revocation request was signed. */
export type RevokedBy = 'account' | 'certificate-key';

/** Revoke a certificate at its ACME CA. Rejects with an `AcmeError` carrying the CA's problem. */
export async function revokeAcmeCertificate(options: AcmeRevokeOptions): Promise<RevokedBy> {
  const agent = new https.Agent({ keepAlive: false, ...(options.caBundle ? { ca: options.caBundle } : {}) });
  const signal = AbortSignal.timeout(options.timeoutMs ?? 30_000);
  const t: TransportOptions = { agent, signal, timeoutMs: options.timeoutMs ?? 30_000, userAgent: `certstate-cli node/${process.version}` };
  try {
    const dirRes = await acmeHttpRequest(options.directoryUrl, 'get', {}, t);
    if (dirRes.status !== 200) throw errorFromResponse(dirRes, 'directory', Date.now());
    const revokeUrl = (dirRes.data as { revokeCert?: unknown }).revokeCert;
    if (typeof revokeUrl !== 'string') throw new AcmeError('the ACME directory has no revokeCert endpoint', { code: 'ERR_ACME_NO_REVOKE' });

    const account = await findAccount(options.storage, options.directoryUrl);
    const client = new Client({
      directoryUrl: options.directoryUrl,
      accountKey: account?.keyPem ?? options.bundle.privateKeyPem,
      ...(account ? { accountUrl: account.url } : {}),
    });
    installTransport(client, t, { maxBadNonceRetries: 5 });
    const { http: httpClient, api } = internalsOf(client);
    httpClient.directoryCache = dirRes.data;
    httpClient.directoryTimestamp = Math.floor(Date.now() / 1000);

    const leaf = splitPemChain(options.bundle.certificatePem)[0];
    if (!leaf) throw new AcmeError('no certificate to revoke', { code: 'ERR_NO_CERTIFICATE' });
    const der = pemToDer(leaf);
    const payload = { certificate: der.toString('base64url'), ...(options.reason !== undefined ? { reason: options.reason } : {}) };
    // Without an account the request carries the certificate key's JWK instead of a `kid`.
    const res = await api.apiRequest(revokeUrl, payload, [], { includeJwsKid: account !== undefined });
    if (res.status !== 200) throw errorFromResponse(res, 'certificate', Date.now());
    return account ? 'account' : 'certificate-key';
  } finally {
    agent.destroy();
  }
}

/** The stored ACME account for a directory, if any (the newest when several emails registered). */
async function findAccount(storage: Storage, directoryUrl: string): Promise<{ url: string; keyPem: string } | undefined> {
  let best: { url: string; keyPem: string; createdAt: number } | undefined;
  for (const key of await storage.list('accounts/')) {
    try {
      const stored = JSON.parse((await storage.load(key)) ?? 'null') as { directoryUrl?: unknown; url?: unknown; keyPem?: unknown; createdAt?: unknown } | null;
      if (!stored || stored.directoryUrl !== directoryUrl || typeof stored.url !== 'string' || typeof stored.keyPem !== 'string') continue;
      const createdAt = typeof stored.createdAt === 'number' ? stored.createdAt : 0;
      if (!best || createdAt > best.createdAt) best = { url: stored.url, keyPem: stored.keyPem, createdAt };
    } catch {
      // an unreadable account is skipped; the certificate key still works
    }
  }
  return best && { url: best.url, keyPem: best.keyPem };
}
