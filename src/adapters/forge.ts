/**
 * node-forge, loaded at its first use rather than at `import 'certstate'`:
 * evaluating it costs ~90 ms, and a process that only serves certificates
 * never builds one. Loaded synchronously (it is CommonJS, so `createRequire`
 * can) because the certificate builders that use it are synchronous.
 *
 * Also the one place that signs a forge-assembled certificate with
 * node:crypto (forge's JavaScript RSA takes ~50 ms per signature).
 */
import { createPublicKey, sign, type KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
import type Forge from 'node-forge';

let loaded: typeof Forge | undefined;

/** node-forge, required on first call. */
export function loadForge(): typeof Forge {
  loaded ??= createRequire(import.meta.url)('node-forge') as typeof Forge;
  return loaded;
}

/** The public half of a node:crypto RSA key (public or private) as forge's public key (forge 1.4 encodes only RSA). */
export function forgePublicKey(key: KeyObject): Forge.pki.rsa.PublicKey {
  const spki = (key.type === 'public' ? key : createPublicKey(key)).export({ type: 'spki', format: 'pem' }) as string;
  return loadForge().pki.publicKeyFromPem(spki) as Forge.pki.rsa.PublicKey;
}

/** What forge's `cert.sign` does, with the RSA signature computed natively (sha256WithRSAEncryption); returns the DER. */
export function signCertificate(cert: Forge.pki.Certificate, key: KeyObject): Buffer {
  const forge = loadForge();
  cert.signatureOid = cert.siginfo.algorithmOid = forge.pki.oids.sha256WithRSAEncryption;
  // getTBSCertificate exists at runtime but is missing from @types/node-forge.
  cert.tbsCertificate = (forge.pki as unknown as { getTBSCertificate(c: Forge.pki.Certificate): Forge.asn1.Asn1 }).getTBSCertificate(cert);
  const tbs = Buffer.from(forge.asn1.toDer(cert.tbsCertificate).getBytes(), 'binary');
  cert.signature = sign('sha256', tbs, key).toString('binary');
  return Buffer.from(forge.asn1.toDer(forge.pki.certificateToAsn1(cert)).getBytes(), 'binary');
}
