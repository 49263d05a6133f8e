/**
 * TLS-ALPN-01 (RFC 8737) answered by the same TLS server that serves normal
 * traffic, in any process sharing the storage.
 *
 * How Node 20 runs the two callbacks (read from `lib/_tls_wrap.js` and checked
 * by experiment, see test/acme.test.ts):
 * - Both are called as methods of the server-side `TLSSocket`
 *   (`socket[kALPNCallback]({ servername, protocols })`, then
 *   `owner._SNICallback(servername, cb)`), so `this` is the same socket in
 *   both. That socket is the handle we pass state through: a symbol-keyed
 *   mark on sockets that negotiated `acme-tls/1` (it dies with the socket).
 * - With TLS 1.3 (Go's crypto/tls, under Pebble's and Boulder's validators,
 *   offers it; Pebble's VA is exercised in the tests) OpenSSL selects ALPN *before* the certificate callback that runs
 *   `SNICallback`, so by the time SNI runs we know whether this is a
 *   validation handshake, and the context SNI returns is the one presented.
 * - With TLS 1.2 the order is reversed (SNI first, then ALPN). The certificate
 *   is already chosen when we learn about `acme-tls/1`, so the ALPN callback
 *   refuses (fatal `no_application_protocol`) rather than negotiate
 *   `acme-tls/1` with a certificate that is not the challenge's. Keep TLS 1.3
 *   enabled (Node's default) on servers that answer TLS-ALPN-01.
 * - Node's SNI switch (`UseSNIContext` in src/crypto) does not replace the
 *   connection's certificates: it *adds* the SNI context's certificate in the
 *   slot of its key type. The challenge certificate is RSA; a server that also
 *   has a default ECDSA key/cert keeps offering that one to validators that
 *   prefer ECDSA. Servers answering TLS-ALPN-01 must have no default key/cert
 *   (everything through `SNICallback`); we warn once if one is set.
 * - `ALPNCallback` and `ALPNProtocols` cannot both be set, so the callback also
 *   does normal protocol selection: the first of `protocols` (server
 *   preference) that the client offers; `undefined` when none overlaps, which
 *   Node turns into a fatal `no_application_protocol` alert, exactly what it
 *   does for `ALPNProtocols` without overlap (RFC 7301 §3.2). Clients that
 *   send no ALPN extension never reach the callback.
 */
import tls from 'node:tls';
import type { Logger, Storage } from '../../types.js';
import { keys } from '../../storage-keys.js';
import { safeError } from '../../safe-error.js';
import { normalizeName } from '../../names.js';
import { buildTlsAlpn01Certificate, prepareTlsAlpn01Key, ACME_TLS_ALPN_PROTOCOL } from './tls-alpn-01-cert.js';

/** Node's SNI callback shape. */
export type SNICallback = (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void) => void;

/** Node's ALPN callback shape (`this` is the server-side `TLSSocket`). */
export type ALPNCallback = (this: tls.TLSSocket | undefined, info: { servername: string | false; protocols: string[] }) => string | undefined;

/** Options of `createTlsAlpnResponder`. */
export interface TlsAlpnResponderOptions {
  /**
   * Application protocols for normal clients, in server preference order.
   * Default `['http/1.1']`, right for `https.createServer`. Use
   * `['h2', 'http/1.1']` only for servers that speak HTTP/2 (e.g.
   * `http2.createSecureServer({ allowHTTP1: true, ALPNCallback })`): choosing
   * `h2` on an HTTP/1.1-only server breaks every browser.
   */
  protocols?: string[];
  /** Where to report challenge handshakes that could not be answered. */
  logger?: Pick<Logger, 'warn' | 'debug'>;
}

/** The cooperating pair to put in `tls.createServer` / `https.createServer` options. */
export interface TlsAlpnResponder {
  /** Set as the server's `ALPNCallback` (instead of `ALPNProtocols`). */
  ALPNCallback: ALPNCallback;
  /**
   * Wrap your `SNICallback` (or none: then normal handshakes use the server's
   * default context): `acme-tls/1` handshakes get the challenge certificate,
   * all others go to `sni`.
   */
  wrapSNICallback(sni?: SNICallback): SNICallback;
}

/**
 * Protocol selection as OpenSSL does it for `ALPNProtocols`: the first of
 * `protocols` (server preference) that the client offers; `undefined` (Node:
 * a fatal `no_application_protocol` alert) when none.
 */
export function chooseProtocol(protocols: readonly string[], offered: readonly string[]): string | undefined {
  for (const protocol of protocols) if (offered.includes(protocol)) return protocol;
  return undefined;
}

/** Challenge contexts kept for repeated validations (a CA validates from several vantage points). */
const CACHE_LIMIT = 256;

/**
 * Create the TLS-ALPN-01 responder for challenges stored at
 * `keys.tlsAlpn01(name)` by the ACME issuer.
 *
 * @example
 * const alpn = createTlsAlpnResponder(storage);
 * https.createServer({ ALPNCallback: alpn.ALPNCallback, SNICallback: alpn.wrapSNICallback(mySni) }, app);
 */
export function createTlsAlpnResponder(storage: Storage, options: TlsAlpnResponderOptions = {}): TlsAlpnResponder {
  const protocols = [...(options.protocols ?? ['http/1.1'])];
  if (protocols.includes(ACME_TLS_ALPN_PROTOCOL)) throw new TypeError(`protocols must not include ${ACME_TLS_ALPN_PROTOCOL}`);
  // Per-socket marks are symbol-keyed properties, not WeakSets: every handshake
  // sets one, and weak collections cost the GC work per entry (ephemerons).
  /** On a socket whose ALPN callback chose acme-tls/1: its SNI answer is the challenge certificate. */
  const validating = Symbol('certstate.tlsAlpn01.validating');
  /** On a socket whose SNI already ran (TLS 1.2 order): too late to present a challenge certificate. */
  const sniDone = Symbol('certstate.tlsAlpn01.sniDone');
  type Marked = tls.TLSSocket & { [validating]?: boolean; [sniDone]?: boolean };
  /** `name \n keyAuthorization` → context; insertion-ordered Map as a small LRU. */
  const contexts = new Map<string, tls.SecureContext>();
  // The challenge certificate's RSA key, generated off the event loop before the first validation needs it.
  prepareTlsAlpn01Key().catch((error: unknown) => options.logger?.warn({ err: safeError(error) }, 'generating the tls-alpn-01 key failed; will retry on the first challenge'));

  function ALPNCallback(this: tls.TLSSocket | undefined, info: { servername: string | false; protocols: string[] }): string | undefined {
    if (info.protocols.includes(ACME_TLS_ALPN_PROTOCOL)) {
      // Without SNI, or after SNI already picked a certificate, we could only
      // present a wrong certificate: refuse the handshake instead.
      if (!this || !info.servername || (this as Marked)[sniDone]) return undefined;
      (this as Marked)[validating] = true;
      return ACME_TLS_ALPN_PROTOCOL;
    }
    return chooseProtocol(protocols, info.protocols);
  }

  function challengeContext(name: string, keyAuthorization: string): tls.SecureContext {
    const cacheKey = `${name}\n${keyAuthorization}`;
    let context = contexts.get(cacheKey);
    if (context) {
      contexts.delete(cacheKey);
    } else {
      const bundle = buildTlsAlpn01Certificate(name, keyAuthorization);
      context = tls.createSecureContext({ cert: bundle.certificatePem, key: bundle.privateKeyPem });
      if (contexts.size >= CACHE_LIMIT) contexts.delete(contexts.keys().next().value!);
    }
    contexts.set(cacheKey, context);
    return context;
  }

  function answerChallenge(servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void): void {
    let name: string;
    try {
      name = normalizeName(servername);
    } catch (error) {
      return cb(error as Error);
    }
    Promise.all([storage.load(keys.tlsAlpn01(name)), prepareTlsAlpn01Key()]).then(
      ([keyAuthorization]) => {
        if (keyAuthorization === undefined) {
          options.logger?.debug({ name }, 'tls-alpn-01 handshake for a name with no pending challenge');
          return cb(new Error(`no pending tls-alpn-01 challenge for ${name}`));
        }
        let context: tls.SecureContext;
        try {
          context = challengeContext(name, keyAuthorization);
        } catch (error) {
          options.logger?.warn({ name, err: safeError(error) }, 'building the tls-alpn-01 certificate failed');
          return cb(error as Error);
        }
        cb(null, context);
      },
      (error: unknown) => {
        options.logger?.warn({ name, err: safeError(error) }, 'loading the tls-alpn-01 challenge or its key failed');
        cb(error instanceof Error ? error : new Error(String(error)));
      },
    );
  }

  let warnedDefaultCert = false;
  /**
   * Node's SNI switch only adds the SNI context's certificate next to the
   * server's default one (one slot per key type), so a default ECDSA
   * certificate can shadow the RSA challenge certificate. Say so, once.
   */
  function warnIfDefaultCertificate(socket: tls.TLSSocket): void {
    if (warnedDefaultCert) return;
    const server = (socket as unknown as { server?: { cert?: unknown; pfx?: unknown } }).server;
    if (server && (server.cert || server.pfx)) {
      warnedDefaultCert = true;
      options.logger?.warn('tls-alpn-01 on a TLS server with a default certificate: validators may be shown the default certificate; remove key/cert from the server options');
    }
  }

  function wrapSNICallback(sni?: SNICallback): SNICallback {
    return function certstateSNICallback(this: tls.TLSSocket | undefined, servername, cb) {
      if (this && (this as Marked)[validating]) {
        (this as Marked)[validating] = false;
        warnIfDefaultCertificate(this);
        return answerChallenge(servername, cb);
      }
      if (this) (this as Marked)[sniDone] = true;
      if (sni) return sni.call(this, servername, cb);
      cb(null, undefined);
    };
  }

  return { ALPNCallback, wrapSNICallback };
}
