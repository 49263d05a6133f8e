/**
 * Key material side table: fingerprint → PEMs and the `SecureContext` built
 * from them. The statechart's context only ever holds the fingerprint, so the
 * inspector, events and logs never see a key. The `SecureContext` is built
 * once per certificate, on first use, and reused by every handshake.
 */
import type { SecureContext } from 'node:tls';
import { buildSecureContext } from '../certs.js';
import type { CertificateBundle } from '../types.js';

interface Material {
  bundle: CertificateBundle;
  secureContext?: SecureContext;
}

export class MaterialCache {
  #byFingerprint = new Map<string, Material>();

  /** Remember a certificate's PEMs (idempotent). */
  put(fingerprint: string, bundle: CertificateBundle): void {
    if (!this.#byFingerprint.has(fingerprint)) this.#byFingerprint.set(fingerprint, { bundle });
  }

  has(fingerprint: string): boolean {
    return this.#byFingerprint.has(fingerprint);
  }

  /** The PEMs of a certificate, if known. */
  bundle(fingerprint: string): CertificateBundle | undefined {
    return this.#byFingerprint.get(fingerprint)?.bundle;
  }

  /** The `SecureContext` of a certificate, built on first use. */
  secureContext(fingerprint: string): SecureContext | undefined {
    const material = this.#byFingerprint.get(fingerprint);
    if (!material) return undefined;
    return (material.secureContext ??= buildSecureContext(material.bundle));
  }

  /** Forget a certificate that no name uses any more. */
  delete(fingerprint: string): void {
    this.#byFingerprint.delete(fingerprint);
  }

  get size(): number {
    return this.#byFingerprint.size;
  }
}
