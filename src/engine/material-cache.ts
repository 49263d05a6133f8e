/**
 * Key material side table: fingerprint → PEMs and the `SecureContext` built
 * from them. The statechart's context only ever holds the fingerprint, so the
 * inspector, events and logs never see a key. The `SecureContext` is built
 * once per certificate, on first use, and reused by every handshake.
 *
 * The PEMs are kept as bytes in a `Buffer`, outside V8's heap, and decoded
 * only when asked for (`bundle()`, a served certificate's PEM fields).
 * Handshakes need only the `SecureContext`; ~5 KB of PEM strings per cached
 * certificate (~50 MB at the default 10,000) in the heap made every full
 * handshake cost ~5 % more CPU, measured (BENCHMARKS.md, "Handshake CPU and
 * the heap"): V8's collector pays for live heap bytes, not for bytes
 * outside it.
 *
 * Bounded: beyond `capacity` certificates the least recently used is
 * forgotten (a `Map` keeps insertion order; a hit re-inserts its entry). An
 * evicted certificate is read from storage again at its next handshake.
 */
import type { SecureContext } from 'node:tls';
import { buildSecureContext } from '../certs.js';
import type { CertificateBundle } from '../types.js';

/**
 * A certificate's two PEMs in one buffer (UTF-8, lossless for any string a
 * `CertificateBundle` holds), decoded afresh on each read.
 */
export class PemBytes {
  readonly #bytes: Buffer;
  /** Where the private key's bytes start. */
  readonly #keyStart: number;

  constructor(bundle: CertificateBundle) {
    const certificate = Buffer.from(bundle.certificatePem, 'utf8');
    this.#bytes = Buffer.concat([certificate, Buffer.from(bundle.privateKeyPem, 'utf8')]);
    this.#keyStart = certificate.length;
  }

  certificatePem(): string {
    return this.#bytes.toString('utf8', 0, this.#keyStart);
  }

  privateKeyPem(): string {
    return this.#bytes.toString('utf8', this.#keyStart);
  }

  /** A fresh bundle of strings. */
  bundle(): CertificateBundle {
    return { certificatePem: this.certificatePem(), privateKeyPem: this.privateKeyPem() };
  }
}

interface Material {
  pems: PemBytes;
  secureContext?: SecureContext;
}

export class MaterialCache {
  readonly #byFingerprint = new Map<string, Material>();
  readonly #capacity: number;
  readonly #onBuildError: (fingerprint: string, error: unknown) => void;

  /**
   * @param capacity most certificates kept (least recently used evicted first)
   * @param onBuildError told when OpenSSL refuses a stored pair (e.g. a key that
   *   does not match its certificate); the entry is dropped
   */
  constructor(capacity = Infinity, onBuildError: (fingerprint: string, error: unknown) => void = () => {}) {
    this.#capacity = capacity;
    this.#onBuildError = onBuildError;
  }

  /** Remember a certificate's PEMs (idempotent; refreshes its recency). */
  put(fingerprint: string, bundle: CertificateBundle): void {
    const existing = this.#byFingerprint.get(fingerprint);
    this.#byFingerprint.delete(fingerprint);
    this.#byFingerprint.set(fingerprint, existing ?? { pems: new PemBytes(bundle) });
    if (this.#byFingerprint.size > this.#capacity) {
      const oldest = this.#byFingerprint.keys().next().value;
      if (oldest !== undefined && oldest !== fingerprint) this.#byFingerprint.delete(oldest);
    }
  }

  /**
   * Remember a certificate only if there is room (never evicting): a
   * background read must not push out what handshakes are using.
   */
  putIfRoom(fingerprint: string, bundle: CertificateBundle): void {
    if (this.#byFingerprint.size < this.#capacity && !this.#byFingerprint.has(fingerprint)) this.#byFingerprint.set(fingerprint, { pems: new PemBytes(bundle) });
  }

  has(fingerprint: string): boolean {
    return this.#byFingerprint.has(fingerprint);
  }

  /** The PEMs of a certificate, if in memory (decoded on each call: keep `pems()` to read them later). */
  bundle(fingerprint: string): CertificateBundle | undefined {
    return this.#byFingerprint.get(fingerprint)?.pems.bundle();
  }

  /** The PEMs of a certificate as bytes, if in memory: still readable after the entry is evicted. */
  pems(fingerprint: string): PemBytes | undefined {
    return this.#byFingerprint.get(fingerprint)?.pems;
  }

  /**
   * The `SecureContext` of a certificate, built on first use; undefined when
   * the certificate is not in memory or OpenSSL refuses it. A hit makes the
   * entry the most recently used (the handshake hot path: one Map delete + set).
   */
  secureContext(fingerprint: string): SecureContext | undefined {
    const material = this.#byFingerprint.get(fingerprint);
    if (material === undefined) return undefined;
    this.#byFingerprint.delete(fingerprint);
    this.#byFingerprint.set(fingerprint, material);
    if (material.secureContext !== undefined) return material.secureContext;
    try {
      return (material.secureContext = buildSecureContext(material.pems.bundle()));
    } catch (error) {
      this.#byFingerprint.delete(fingerprint);
      this.#onBuildError(fingerprint, error);
      return undefined;
    }
  }

  /** Forget a certificate that no name uses any more. */
  delete(fingerprint: string): void {
    this.#byFingerprint.delete(fingerprint);
  }

  get size(): number {
    return this.#byFingerprint.size;
  }

  get capacity(): number {
    return this.#capacity;
  }
}
