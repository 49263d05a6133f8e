/**
 * A local development CA: issues leaf certificates for any name from a CA
 * kept in the engine's storage, so `npm start` and tests get working TLS with
 * no network. Trust it by adding `localCaCertificate()` to a client's `ca`.
 *
 * Certificates are assembled with node-forge, but keys are generated and the
 * signature computed by node:crypto: forge's JavaScript RSA takes ~50 ms per
 * 2048-bit signature against ~1 ms natively, and key generation is threaded.
 * forge 1.4 can only encode RSA public keys, so leaf and CA keys are RSA.
 */
import { X509Certificate, createPrivateKey, createPublicKey, generateKeyPair, KeyObject, randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import type Forge from 'node-forge';
import { forgePublicKey, loadForge, signCertificate } from '../forge.js';
import { ipAddressBytes } from '../../ip.js';
import { derToPem } from '../../pem.js';
import { ConfigError, CorruptStorageError, IssuanceError } from '../../errors.js';
import { keys } from '../../storage-keys.js';
import { safeError } from '../../safe-error.js';
import { checkKeys, optionKeys } from '../../option-keys.js';
import type { CertificateBundle, IssueContext, IssueRequest, Issuer, Logger, Storage } from '../../types.js';

const generateKeyPairAsync = promisify(generateKeyPair);

/** Options of {@link localCaIssuer}. */
export interface LocalCaOptions {
  /**
   * Which CA in storage to use (`local-ca/<caId>.json`); also the issuer id's suffix
   * (`local-ca:<caId>`). Letters, digits, `.`, `_` and `-`. Default `default`.
   */
  caId?: string;
  /** Common name of the CA certificate when it is created (ignored for an existing CA). Default `certstate local CA`. */
  commonName?: string;
  /** Validity of the CA certificate when it is created, in days. Default 3650. */
  caValidityDays?: number;
  /** Validity of each leaf certificate, in ms. Default 7 days; short values (e.g. 30 000) suit renewal tests. */
  leafValidityMs?: number;
  /** RSA modulus length of generated keys (CA and leaves), 2048–8192. Default 2048. */
  keyBits?: number;
  /**
   * Reuse this RSA private key for every leaf instead of generating one per
   * certificate (tests, key pinning): saves the RSA key generation (~100 ms
   * idle, several hundred under load) that dominates an issuance. Default: a fresh key per certificate.
   */
  leafKey?: KeyObject;
}

interface Settings {
  caId: string;
  commonName: string;
  caValidityDays: number;
  leafValidityMs: number;
  keyBits: number;
}

/** A CA ready to sign: its PEM, its key, and what a leaf copies from it. */
interface Authority {
  certificatePem: string;
  key: KeyObject;
  subject: Forge.pki.CertificateField[];
  /** Subject key identifier, as a forge binary string (the leaves' AKI). */
  keyIdentifier: string;
  notAfter: number;
}

const DAY_MS = 86_400_000;
/** Leaves are back-dated a little so that clients with a slow clock accept them. */
const LEAF_BACKDATE_MS = 60_000;
const CA_BACKDATE_MS = 3_600_000;
/** Creating a CA takes well under a second; the lease only needs to outlive that. */
const CA_LOCK_TTL_MS = 60_000;
const KEY_SEGMENT = /^[A-Za-z0-9._-]+$/;

/**
 * Create a local-CA issuer. The CA is created in `context.storage` on first
 * use (under a storage lock, so engines sharing storage create one CA), then
 * loaded once per issuer instance and storage and cached in memory.
 *
 * @throws ConfigError for invalid options
 */
const OPTION_KEYS = optionKeys<LocalCaOptions>({ caId: true, commonName: true, caValidityDays: true, leafValidityMs: true, keyBits: true, leafKey: true });

export function localCaIssuer(options: LocalCaOptions = {}): Issuer {
  checkKeys(options, OPTION_KEYS, 'localCaIssuer');
  const settings = resolveSettings(options);
  const fixedKeys = options.leafKey === undefined ? undefined : fixedLeafKeys(options.leafKey);
  // Per storage, in case one issuer object is handed to engines with different storages.
  const authorities = new WeakMap<Storage, Promise<Authority>>();

  function authorityFor(context: IssueContext): Promise<Authority> {
    let authority = authorities.get(context.storage);
    if (authority === undefined) {
      authority = loadOrCreateAuthority(context.storage, settings, context.now, context.logger);
      authorities.set(context.storage, authority);
      // A failure (storage down, lock timeout) must not stick: the next attempt retries.
      authority.catch(() => authorities.delete(context.storage));
    }
    return authority;
  }

  return {
    id: `local-ca:${settings.caId}`,
    challenges: [], // signs directly: nothing for the engine's servers to answer
    async issue(request: IssueRequest, context: IssueContext): Promise<CertificateBundle> {
      const { signal } = context;
      signal.throwIfAborted();
      const names = checkNames(request.names);
      // The CA load and the leaf key generation are independent: overlap them.
      const [authority, leafKeys] = await untilAborted(
        Promise.all([authorityFor(context), fixedKeys ?? generateKeyPairAsync('rsa', { modulusLength: settings.keyBits })]),
        signal,
      );
      signal.throwIfAborted();
      const notBefore = context.now() - LEAF_BACKDATE_MS;
      if (authority.notAfter <= notBefore) {
        throw new IssuanceError(
          `local CA ${settings.caId} expired at ${new Date(authority.notAfter).toISOString()}; delete ${keys.localCa(settings.caId)} to create a new one`,
          { code: 'ERR_LOCAL_CA_EXPIRED' },
        );
      }
      const leafDer = buildLeaf(names, leafKeys.publicKey, authority, notBefore, settings.leafValidityMs);
      return {
        certificatePem: derToPem(leafDer) + authority.certificatePem,
        // PKCS#1 rather than PKCS#8: parseCertificateBundle reads traditional keys ~3× faster.
        privateKeyPem: leafKeys.privateKey.export({ type: 'pkcs1', format: 'pem' }) as string,
      };
    },
  };
}

/**
 * The PEM certificate of a local CA, to trust it in clients (`ca: [pem]`).
 * Creates the CA with default options when `storage` has none yet.
 *
 * @param storage the storage the engine uses
 * @param caId which CA (default `default`)
 */
export async function localCaCertificate(storage: Storage, caId = 'default'): Promise<string> {
  const settings = resolveSettings({ caId });
  return (await loadOrCreateAuthority(storage, settings, Date.now)).certificatePem;
}

/** The `leafKey` option as a key pair, checked when the issuer is created rather than at each issuance. */
function fixedLeafKeys(privateKey: KeyObject): { publicKey: KeyObject; privateKey: KeyObject } {
  if (!(privateKey instanceof KeyObject) || privateKey.type !== 'private' || privateKey.asymmetricKeyType !== 'rsa') {
    throw new ConfigError('localCaIssuer: leafKey must be an RSA private KeyObject');
  }
  return { publicKey: createPublicKey(privateKey), privateKey };
}

// ─── Options ───────────────────────────────────────────────────────────────

function resolveSettings(options: LocalCaOptions): Settings {
  const settings: Settings = {
    caId: options.caId ?? 'default',
    commonName: options.commonName ?? 'certstate local CA',
    caValidityDays: options.caValidityDays ?? 3650,
    leafValidityMs: options.leafValidityMs ?? 7 * DAY_MS,
    keyBits: options.keyBits ?? 2048,
  };
  if (!KEY_SEGMENT.test(settings.caId) || settings.caId === '.' || settings.caId === '..') {
    throw new ConfigError(`localCaIssuer: caId must be letters, digits, ".", "_" or "-", got ${JSON.stringify(settings.caId)}`);
  }
  // X.520 caps a common name at 64 characters.
  if (typeof settings.commonName !== 'string' || settings.commonName.length === 0 || settings.commonName.length > 64) {
    throw new ConfigError('localCaIssuer: commonName must be 1 to 64 characters');
  }
  if (!(settings.caValidityDays > 0 && settings.caValidityDays <= 36_500)) {
    throw new ConfigError('localCaIssuer: caValidityDays must be between 0 and 36500');
  }
  if (!(Number.isFinite(settings.leafValidityMs) && settings.leafValidityMs >= 1000)) {
    throw new ConfigError('localCaIssuer: leafValidityMs must be at least 1000');
  }
  if (!(Number.isInteger(settings.keyBits) && settings.keyBits >= 2048 && settings.keyBits <= 8192)) {
    throw new ConfigError('localCaIssuer: keyBits must be an integer from 2048 to 8192');
  }
  return settings;
}

const DNS_NAME = /^(\*\.)?[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*$/i;

/** Names as they go into the SAN: deduplicated, each a DNS name (optionally `*.`-prefixed) or an IP literal. */
function checkNames(names: readonly string[]): string[] {
  if (!Array.isArray(names) || names.length === 0) {
    throw new IssuanceError('local CA: at least one name is required', { code: 'ERR_INVALID_NAME' });
  }
  const seen = new Set<string>();
  for (const name of names) {
    const valid =
      typeof name === 'string' && name.length <= 253 && (ipAddressBytes(name) !== undefined || DNS_NAME.test(name));
    if (!valid) {
      throw new IssuanceError(`local CA: cannot issue for ${JSON.stringify(String(name).slice(0, 100))}`, {
        code: 'ERR_INVALID_NAME',
      });
    }
    seen.add(name.toLowerCase());
  }
  return [...seen];
}

// ─── The CA in storage ─────────────────────────────────────────────────────

/** Lock guarding CA creation; storage-keys.ts has no entry for it, so it follows its `locks/...` pattern. */
function caLockKey(caId: string): string {
  return `locks/local-ca/${caId}`;
}

async function loadOrCreateAuthority(
  storage: Storage,
  settings: Settings,
  now: () => number,
  logger?: Logger,
): Promise<Authority> {
  const key = keys.localCa(settings.caId);
  const stored = await storage.load(key);
  if (stored !== undefined) return decodeAuthority(key, stored);

  const lockKey = caLockKey(settings.caId);
  const lock = await storage.lock(lockKey, CA_LOCK_TTL_MS);
  try {
    // Whoever held the lock before us may have created it meanwhile.
    const again = await storage.load(key);
    if (again !== undefined) return decodeAuthority(key, again);
    const created = await createAuthority(settings, now());
    await storage.store(key, JSON.stringify(created), { fence: { lockKey, token: lock.fencingToken } });
    logger?.info({ caId: settings.caId }, 'created local CA');
    return decodeAuthority(key, JSON.stringify(created));
  } finally {
    // A failed release only delays the next creator by the lease; it must not turn success into failure.
    await lock.release().catch((error: unknown) => logger?.warn({ err: safeError(error), lockKey }, 'local CA lock release failed'));
  }
}

async function createAuthority(settings: Settings, now: number): Promise<CertificateBundle> {
  const { publicKey, privateKey } = await generateKeyPairAsync('rsa', { modulusLength: settings.keyBits });
  const cert = loadForge().pki.createCertificate();
  cert.publicKey = forgePublicKey(publicKey);
  cert.serialNumber = randomSerialHex();
  cert.validity.notBefore = new Date(now - CA_BACKDATE_MS);
  cert.validity.notAfter = new Date(now + settings.caValidityDays * DAY_MS);
  const subject = [{ name: 'commonName', value: settings.commonName }];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', critical: true, cA: true, pathLenConstraint: 0 },
    { name: 'keyUsage', critical: true, keyCertSign: true, cRLSign: true, digitalSignature: true },
    { name: 'subjectKeyIdentifier' },
    // Self-signed, so `true` (forge: "this certificate's own key id") is the right authority key id.
    { name: 'authorityKeyIdentifier', keyIdentifier: true },
  ]);
  return {
    certificatePem: derToPem(signCertificate(cert, privateKey)),
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  };
}

/** Parse and check a stored CA; anything wrong is reported, never silently replaced (clients trust the old one). */
function decodeAuthority(key: string, json: string): Authority {
  try {
    const value = JSON.parse(json) as Partial<CertificateBundle> | null;
    if (typeof value?.certificatePem !== 'string' || typeof value.privateKeyPem !== 'string') {
      throw new Error('certificatePem or privateKeyPem missing');
    }
    const x509 = new X509Certificate(value.certificatePem);
    const privateKey = createPrivateKey(value.privateKeyPem);
    if (!x509.ca) throw new Error('certificate is not a CA');
    if (!x509.checkPrivateKey(privateKey)) throw new Error('key does not match certificate');
    const forge = loadForge();
    const cert = forge.pki.certificateFromPem(value.certificatePem);
    const ski = cert.getExtension('subjectKeyIdentifier') as { subjectKeyIdentifier?: string } | undefined;
    return {
      certificatePem: x509.toString(),
      key: privateKey,
      subject: cert.subject.attributes,
      keyIdentifier:
        ski?.subjectKeyIdentifier !== undefined
          ? forge.util.hexToBytes(ski.subjectKeyIdentifier)
          : forge.pki.getPublicKeyFingerprint(cert.publicKey, { type: 'RSAPublicKey' }).getBytes(),
      notAfter: cert.validity.notAfter.getTime(),
    };
  } catch (error) {
    // Only our own reasons and parser errors reach the message; none of them echo the key.
    const reason = error instanceof Error ? error.message : String(error);
    throw new IssuanceError(`local CA unusable: ${reason}`, {
      code: 'ERR_LOCAL_CA_CORRUPT',
      cause: new CorruptStorageError(key, reason),
    });
  }
}

// ─── Certificates ──────────────────────────────────────────────────────────

function buildLeaf(names: string[], publicKey: KeyObject, ca: Authority, notBefore: number, validityMs: number): Buffer {
  const cert = loadForge().pki.createCertificate();
  cert.publicKey = forgePublicKey(publicKey);
  cert.serialNumber = randomSerialHex();
  cert.validity.notBefore = new Date(notBefore);
  cert.validity.notAfter = new Date(notBefore + validityMs);
  // CN is capped at 64 characters; with no subject, RFC 5280 wants the SAN critical.
  const subject = names[0].length <= 64 ? [{ name: 'commonName', value: names[0] }] : [];
  cert.setSubject(subject);
  cert.setIssuer(ca.subject);
  cert.setExtensions([
    { name: 'basicConstraints', critical: true, cA: false },
    { name: 'keyUsage', critical: true, digitalSignature: true, keyEncipherment: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', critical: subject.length === 0, altNames: names.map(subjectAltName) },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: ca.keyIdentifier },
  ]);
  return signCertificate(cert, ca.key);
}

function subjectAltName(name: string): { type: number; value: string } {
  const ip = ipAddressBytes(name);
  // Bytes are passed as `value` rather than `ip`: forge's own IPv6 parser mishandles some forms (`::ffff:1.2.3.4`).
  return ip === undefined ? { type: 2, value: name } : { type: 7, value: ip.toString('binary') };
}

/** 16 random bytes as a positive, minimally encoded DER INTEGER (hex, as forge wants it). */
function randomSerialHex(): string {
  const bytes = randomBytes(16);
  if (bytes[0] === 0) bytes[0] = 1; // a leading 0x00 before a byte < 0x80 would not be minimal DER
  return (bytes[0] & 0x80 ? '00' : '') + bytes.toString('hex');
}

/** Settle with `promise`, or reject with the signal's reason as soon as it aborts. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}
