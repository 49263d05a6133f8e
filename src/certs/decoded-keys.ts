/**
 * Private keys an issuer already holds decoded, handed over with the bundle
 * it returns, so that the attempt's check of the bundle (`parseCertificateBundle`:
 * does the key match the certificate?) does not decode the PEM again. OpenSSL 3
 * takes ~0.6–1 ms to decode a private key, and on the on-demand path a
 * handshake waits for it.
 *
 * Internal to the package (the ACME issuer sets it; an issuer of your own
 * simply has its PEM decoded). The key is still compared with the
 * certificate; it is used only while the bundle's PEM is the one it came with.
 */
import type { KeyObject } from 'node:crypto';
import type { CertificateBundle } from '../types.js';

const decoded = new WeakMap<CertificateBundle, { pem: string; key: KeyObject }>();

/** Remember that `key` is `bundle.privateKeyPem` decoded; returns the bundle. */
export function withDecodedKey<T extends CertificateBundle>(bundle: T, key: KeyObject): T {
  decoded.set(bundle, { pem: bundle.privateKeyPem, key });
  return bundle;
}

/** The decoded key of this bundle's PEM, if its issuer handed one over. */
export function decodedKeyOf(bundle: CertificateBundle): KeyObject | undefined {
  const entry = decoded.get(bundle);
  return entry !== undefined && entry.pem === bundle.privateKeyPem ? entry.key : undefined;
}
