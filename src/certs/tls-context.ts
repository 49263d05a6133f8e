/**
 * The `SecureContext` a TLS server presents for a certificate: built by
 * OpenSSL, which checks the pair; a key of another type than the
 * certificate's is refused here (OpenSSL would load it into a slot of its own).
 */
import tls from 'node:tls';
import { InvalidCertificateError } from '../errors.js';
import { pemBlock, pemToDer, splitPemChain } from '../pem.js';
import type { CertificateBundle } from '../types.js';
import { OID, SEQUENCE, children, expectTag, readElement, type Element } from './der.js';
import { subjectPublicKeyInfo } from './fields.js';

/**
 * Build the `SecureContext` a TLS server presents for a certificate. Costly
 * (it parses the chain and key in OpenSSL): build one per certificate and cache it.
 *
 * This is where a bundle parsed with `checkKey: false` has its key checked:
 * OpenSSL refuses a key of the certificate's type that does not match it
 * ("key values mismatch"). A key of another type (an EC key beside an RSA
 * certificate) OpenSSL loads without complaint into a slot of its own, and
 * every handshake then fails ("no suitable signature algorithm"); so the
 * key's type, read from its PEM label or PKCS#8 algorithm (no key parse), is
 * compared with the certificate's public key type here.
 *
 * @throws InvalidCertificateError when OpenSSL refuses the pair, or the key is not of the certificate's type
 */
export function buildSecureContext(bundle: CertificateBundle): tls.SecureContext {
  let context: tls.SecureContext;
  try {
    context = tls.createSecureContext({ cert: bundle.certificatePem, key: bundle.privateKeyPem });
  } catch (error) {
    // OpenSSL's messages ("key values mismatch", decoder errors) never echo the input.
    const reason = error instanceof Error ? error.message : String(error);
    throw new InvalidCertificateError(`cannot build a TLS context: ${reason}`);
  }
  const certificateKeyType = leafKeyType(bundle.certificatePem);
  const keyType = privateKeyType(bundle.privateKeyPem);
  if (certificateKeyType !== undefined && keyType !== undefined && keyType !== certificateKeyType) {
    throw new InvalidCertificateError(
      `cannot build a TLS context: the private key (${keyType}) does not match the certificate (${certificateKeyType})`,
    );
  }
  return context;
}

/** Key types by SubjectPublicKeyInfo / PrivateKeyInfo algorithm OID (content bytes, hex). RSASSA-PSS is left out: unknown, not compared. */
const KEY_TYPES = new Map([
  ['2a864886f70d010101', 'RSA'],
  ['2a8648ce3d0201', 'EC'],
  ['2b6570', 'Ed25519'],
  ['2b6571', 'Ed448'],
  ['2a8648ce380401', 'DSA'],
]);

/** The leaf's public key type, `undefined` when unknown or unreadable (OpenSSL has judged the certificate by then). */
function leafKeyType(certificatePem: string): string | undefined {
  try {
    const [leafPem] = splitPemChain(certificatePem);
    if (leafPem === undefined) return undefined;
    const der = pemToDer(leafPem);
    const publicKey = subjectPublicKeyInfo(der);
    return publicKey === undefined ? undefined : algorithmType(der, publicKey);
  } catch {
    return undefined;
  }
}

/** Key types by traditional PEM label; `PRIVATE KEY` (PKCS#8) names it in its algorithm OID instead. */
const KEY_LABELS: Record<string, string> = { 'RSA PRIVATE KEY': 'RSA', 'EC PRIVATE KEY': 'EC', 'DSA PRIVATE KEY': 'DSA' };

/** The private key's type from its PEM label, or for PKCS#8 from its algorithm OID; `undefined` when unknown. */
function privateKeyType(privateKeyPem: string): string | undefined {
  const block = pemBlock(privateKeyPem);
  if (block === undefined) return undefined;
  try {
    if (block.label !== 'PRIVATE KEY') return KEY_LABELS[block.label];
    // PrivateKeyInfo ::= SEQUENCE { version INTEGER, privateKeyAlgorithm AlgorithmIdentifier, … }
    const info = readElement(block.der, 0, block.der.length);
    const algorithm = children(block.der, info)[1];
    return algorithm === undefined ? undefined : algorithmType(block.der, algorithm, true);
  } catch {
    return undefined;
  } finally {
    block.der.fill(0);
  }
}

/** Type named by a SubjectPublicKeyInfo's (or, `bare`, an AlgorithmIdentifier's) algorithm OID. */
function algorithmType(der: Uint8Array, element: Element, bare = false): string | undefined {
  const algorithm = bare ? element : children(der, expectTag(element, SEQUENCE, 'SubjectPublicKeyInfo'))[0];
  const oid = algorithm === undefined ? undefined : children(der, expectTag(algorithm, SEQUENCE, 'AlgorithmIdentifier'))[0];
  if (oid === undefined || oid.tag !== OID) return undefined;
  return KEY_TYPES.get(Buffer.from(der.subarray(oid.start, oid.end)).toString('hex'));
}
