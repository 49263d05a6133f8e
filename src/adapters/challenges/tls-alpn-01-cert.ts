/**
 * The self-signed validation certificate of the ACME TLS-ALPN-01 challenge
 * (RFC 8737 §3; RFC 8738 §6 for IP identifiers), presented to the CA's
 * validator when it connects with ALPN `acme-tls/1`.
 *
 * Built with node-forge and signed by node:crypto (forge's JavaScript RSA
 * costs ~50 ms per signature; this runs while a handshake may be waiting).
 */
import { X509Certificate, createHash, generateKeyPair, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { forgePublicKey, loadForge, signCertificate } from '../forge.js';
import { ipAddressBytes } from '../../ip.js';
import { IssuanceError } from '../../errors.js';
import type { CertificateBundle } from '../../types.js';

/** ALPN protocol name of the TLS-ALPN-01 challenge. */
export const ACME_TLS_ALPN_PROTOCOL = 'acme-tls/1';

/** OID of the `id-pe-acmeIdentifier` extension carrying SHA-256(keyAuthorization). */
export const ACME_IDENTIFIER_OID = '1.3.6.1.5.5.7.1.31';

/** Options of {@link buildTlsAlpn01Certificate}. */
export interface TlsAlpn01CertificateOptions {
  /** RSA private key to certify; default: one key generated on first use and shared by every challenge certificate. */
  privateKey?: KeyObject;
  /** Current time, ms since epoch (default `Date.now()`). */
  now?: number;
}

/**
 * Build the TLS-ALPN-01 validation certificate for `name`: self-signed, with
 * a SAN holding only `name` (a dNSName, or an iPAddress for an IP literal)
 * and the critical `id-pe-acmeIdentifier` extension whose value is the DER
 * OCTET STRING of SHA-256(`keyAuthorization`).
 *
 * @throws IssuanceError when `name` is not a single DNS name or IP literal, or `keyAuthorization` is empty
 */
export function buildTlsAlpn01Certificate(
  name: string,
  keyAuthorization: string,
  options: TlsAlpn01CertificateOptions = {},
): CertificateBundle {
  if (typeof name !== 'string' || name.length === 0 || name.length > 253 || /[*\s/\\]/.test(name)) {
    // Wildcards cannot be validated with TLS-ALPN-01 (RFC 8737 §3).
    throw new IssuanceError(`tls-alpn-01: invalid identifier ${JSON.stringify(String(name).slice(0, 100))}`, {
      code: 'ERR_INVALID_NAME',
    });
  }
  if (typeof keyAuthorization !== 'string' || keyAuthorization.length === 0) {
    throw new IssuanceError('tls-alpn-01: empty key authorization', { code: 'ERR_TLS_ALPN_01' });
  }
  const privateKey = options.privateKey ?? sharedKey();
  if (privateKey.asymmetricKeyType !== 'rsa') {
    // forge 1.4 encodes only RSA public keys.
    throw new IssuanceError('tls-alpn-01: the private key must be RSA', { code: 'ERR_TLS_ALPN_01' });
  }
  const now = options.now ?? Date.now();
  const digest = createHash('sha256').update(keyAuthorization, 'utf8').digest();
  const ip = ipAddressBytes(name);

  const cert = loadForge().pki.createCertificate();
  cert.publicKey = forgePublicKey(privateKey);
  cert.serialNumber = `01${randomBytes(15).toString('hex')}`; // positive and minimal by construction
  cert.validity.notBefore = new Date(now - 3_600_000);
  cert.validity.notAfter = new Date(now + 7 * 86_400_000);
  const subject = name.length <= 64 ? [{ name: 'commonName', value: name }] : [];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    {
      name: 'subjectAltName',
      critical: subject.length === 0,
      altNames: [ip === undefined ? { type: 2, value: name } : { type: 7, value: ip.toString('binary') }],
    },
    // extnValue = DER(Authorization ::= OCTET STRING (SIZE (32))); forge wraps this in the extnValue OCTET STRING.
    { id: ACME_IDENTIFIER_OID, critical: true, value: `\x04\x20${digest.toString('binary')}` },
  ]);

  const der = signCertificate(cert, privateKey);

  return {
    certificatePem: new X509Certificate(der).toString(),
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  };
}

let shared: KeyObject | undefined;
let preparing: Promise<KeyObject> | undefined;
const generateKeyPairAsync = promisify(generateKeyPair);

/**
 * The validator only needs a handshake to complete with this certificate; the
 * key protects nothing, so one key serves every challenge and the RSA key
 * generation (~100 ms idle, several hundred under load) is paid once per
 * process rather than per validation.
 */
function sharedKey(): KeyObject {
  // Only when nobody called prepareTlsAlpn01Key(): generating here blocks the event loop.
  shared ??= generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  return shared;
}

/**
 * Generate the shared challenge key on libuv's thread pool, off the event
 * loop (idempotent). `createTlsAlpnResponder` starts it, and answers a
 * validation only once it is ready, so no handshake of the server is stalled
 * by a synchronous RSA key generation on the first TLS-ALPN-01 challenge.
 */
export function prepareTlsAlpn01Key(): Promise<void> {
  if (shared) return Promise.resolve();
  preparing ??= generateKeyPairAsync('rsa', { modulusLength: 2048 }).then(
    ({ privateKey }) => (shared ??= privateKey),
    (error: unknown) => {
      preparing = undefined;
      throw error;
    },
  );
  return preparing.then(() => undefined);
}
