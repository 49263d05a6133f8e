/**
 * Certificate inspection on node:crypto alone, by job (`src/certs/`):
 *
 * - `bundle.ts`: parse a certificate bundle into the key-free metadata the
 *   engine keeps (with OpenSSL, or from the leaf's DER alone), and the ARI
 *   certificate id;
 * - `coverage.ts`: whether a certificate covers a name;
 * - `tls-context.ts`: the `SecureContext` a TLS server presents;
 * - `fields.ts`, `der.ts`: a strict DER reader for what `X509Certificate`
 *   does not expose (AKI, the serial's bytes, SAN entries);
 * - `issuer-name.ts`: an issuer name printed as OpenSSL prints it.
 *
 * PEM and IP literals have their own modules (`src/pem.ts`, `src/ip.ts`).
 */
export { ariCertId, parseCertificateBundle, type ParseCertificateOptions } from './certs/bundle.js';
export { certificateCoversName } from './certs/coverage.js';
export { buildSecureContext } from './certs/tls-context.js';
export { splitPemChain } from './pem.js';
