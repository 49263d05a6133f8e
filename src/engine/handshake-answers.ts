/**
 * What a TLS client is told when the engine has no certificate for it, and
 * what a client that names no server gets: the last layer of
 * `engine.tlsOptions()`, between the engine's answer and Node.
 *
 * **Refusals are TLS alerts, not resets.** Node destroys the socket when an
 * `SNICallback` passes an error: the client sees the connection close with
 * no word (openssl: "unexpected eof"; curl: `SSL_ERROR_SYSCALL`). Answering
 * with *no context* instead lets OpenSSL go on with the server's default
 * context; with no default certificate (certstate's servers have none) it
 * ends the handshake with a fatal `handshake_failure` alert (40), which every
 * client reports as such. A server given a default `key`/`cert` of its own
 * presents that one instead, as Node does for names it does not know.
 * (`unrecognized_name` (112) cannot be sent: Node runs SNI in OpenSSL's
 * certificate callback, not its servername callback, the only place that
 * alert can be chosen.) Every refusal is counted in the engine's rejection
 * log (one line a minute at most, whatever the flood), and handed to
 * `onRefusal` for applications that want each one.
 *
 * **No SNI** (a health check by IP address): Node calls no SNI callback. A
 * TLS 1.3 client that offers ALPN reaches the ALPN callback before the
 * certificate is chosen, where `tlsSocket.setKeyCert()` (Node's documented
 * way) presents `defaultName`'s certificate, if it is in memory (if not, it
 * is read for the next client: the callback cannot wait). Other clients
 * without SNI get the server's default certificate or the alert.
 *
 * **The protocol: OpenSSL's or a JS callback** (`alpnMode`, the one place it
 * is decided). A JS `ALPNCallback` is a call from C++ into JS at every
 * handshake that offers ALPN, and Node forbids `ALPNProtocols` beside it. It
 * is needed only to mark TLS-ALPN-01 validations before SNI runs, and to
 * present `defaultName` to clients without SNI; otherwise the server gets
 * `ALPNProtocols`, the same choice made inside OpenSSL.
 */
import type { SecureContext, TLSSocket } from 'node:tls';
import { ACME_TLS_ALPN_PROTOCOL } from '../adapters/challenges/tls-alpn-01-cert.js';
import { chooseProtocol, type ALPNCallback, type SNICallback, type TlsAlpnResponder } from '../adapters/challenges/tls-alpn-01.js';
import { InvalidNameError, normalizeName } from '../names.js';
import type { Issuer } from '../types.js';

/** Options of `engine.tlsOptions()`. */
export interface TlsOptionsConfig {
  /**
   * Application protocols in server preference order (default
   * `['http/1.1']`; `['h2', 'http/1.1']` for `http2.createSecureServer`).
   */
  protocols?: string[];
  /**
   * Called for each refused handshake, after the client was answered with a
   * TLS alert: the engine's typed error (`NameNotAllowedError`,
   * `CertificateUnavailableError`, `HandshakeTimeoutError`, …) and the
   * client's SNI. The server's own `tlsClientError` then only sees OpenSSL's
   * generic error. certstate already logs refusals, rate-limited.
   */
  onRefusal?: (error: Error, servername: string) => void;
  /**
   * Answer TLS-ALPN-01 validations on this server (a JS `ALPNCallback`).
   * Default: whether any of the engine's issuers may use TLS-ALPN-01 (their
   * `challenges`; an issuer that does not say counts as yes). Set `true` on a
   * process whose own issuers do not use it when another process of the
   * cluster, ordering with TLS-ALPN-01, shares its address (the CA may reach
   * any of them); `false` to never answer it here.
   */
  tlsAlpn01?: boolean;
}

/**
 * What `engine.tlsOptions()` returns: spread it into `tls`/`https`/`http2`
 * server options. Protocol selection is either `ALPNCallback` or
 * `ALPNProtocols`, never both (see `alpnMode`).
 */
export type TlsCallbacks = { SNICallback: SNICallback } & ({ ALPNCallback: ALPNCallback; ALPNProtocols?: never } | { ALPNProtocols: string[]; ALPNCallback?: never });

/** What this layer needs from the engine. */
export interface HandshakeAnswerOptions extends Pick<TlsOptionsConfig, 'onRefusal'> {
  /** Where refusals are counted (the engine's rejection log). */
  rejections: { record(reason: string, input: string): void };
  /** The managed name served to clients that send no SNI. */
  defaultName?: string;
  /** `TlsOptionsConfig.protocols`, as the application gave them. */
  protocols?: readonly string[];
  /** `TlsOptionsConfig.tlsAlpn01`, as the application gave it. */
  tlsAlpn01?: boolean;
  /** `mayUseTlsAlpn01` of the engine's issuers. */
  issuersMayUseTlsAlpn01: boolean;
  /** Makes the TLS-ALPN-01 responder, only when `alpnMode` says this server answers it. */
  tlsAlpn01Responder(protocols: string[]): TlsAlpnResponder;
}

/** Whether any of `issuers` may use TLS-ALPN-01: one that says nothing (`challenges` unset) may. */
export function mayUseTlsAlpn01(issuers: readonly Pick<Issuer, 'challenges'>[]): boolean {
  return issuers.some((issuer) => issuer.challenges === undefined || issuer.challenges.includes('tls-alpn-01'));
}

/** How a server on `tlsOptions()` chooses the application protocol, and whether it answers TLS-ALPN-01. */
export interface AlpnMode {
  /** `callback`: a JS `ALPNCallback`; `protocols`: Node's `ALPNProtocols`, chosen inside OpenSSL. */
  selection: 'callback' | 'protocols';
  /** The callback also answers TLS-ALPN-01 validations (`acme-tls/1`). */
  tlsAlpn01: boolean;
}

/**
 * The one decision about protocol selection. A JS callback only where it is
 * needed: TLS-ALPN-01 must be recognised before SNI runs, and `defaultName`
 * can only be presented from the ALPN callback (the one hook before the
 * certificate is chosen for a client without SNI). Both modes pick the
 * first of `protocols` the client offers and answer no overlap with a fatal
 * `no_application_protocol` alert; clients offering no ALPN get none.
 *
 * @param facts.tlsAlpn01 the application's `tlsOptions({ tlsAlpn01 })`, if it said
 * @param facts.issuersMayUseTlsAlpn01 `mayUseTlsAlpn01` of the engine's issuers
 *   (fixed when the engine is created, so each `tlsOptions()` call gets the same answer)
 */
export function alpnMode(facts: { tlsAlpn01?: boolean; issuersMayUseTlsAlpn01: boolean; defaultName: boolean }): AlpnMode {
  const tlsAlpn01 = facts.tlsAlpn01 ?? facts.issuersMayUseTlsAlpn01;
  return { selection: tlsAlpn01 || facts.defaultName ? 'callback' : 'protocols', tlsAlpn01 };
}

/** `TlsOptionsConfig.protocols` checked (a copy): `acme-tls/1` is not an application protocol, and an empty list would turn ALPN off in one mode but refuse every ALPN client in the other. */
export function checkProtocols(protocols: readonly string[] = ['http/1.1']): string[] {
  if (!Array.isArray(protocols) || protocols.length === 0 || !protocols.every((p) => typeof p === 'string' && p.length > 0 && p.length < 256)) {
    throw new TypeError('protocols must be a non-empty array of protocol names');
  }
  if (protocols.includes(ACME_TLS_ALPN_PROTOCOL)) throw new TypeError(`protocols must not include ${ACME_TLS_ALPN_PROTOCOL}`);
  return [...protocols];
}

/**
 * The server options: `serve` (the engine's answer for a server name),
 * behind the TLS-ALPN-01 responder when there is one, with refusals turned
 * into alerts and `defaultName` presented to clients without SNI; protocol
 * selection by `ALPNProtocols` when neither needs the JS callback.
 */
export function answerHandshakes(serve: SNICallback, options: HandshakeAnswerOptions): TlsCallbacks {
  const defaultName = options.defaultName === undefined ? undefined : normalizeName(options.defaultName, { allowIp: true });
  const protocols = checkProtocols(options.protocols);
  const mode = alpnMode({ tlsAlpn01: options.tlsAlpn01, issuersMayUseTlsAlpn01: options.issuersMayUseTlsAlpn01, defaultName: defaultName !== undefined });
  const tlsAlpn01 = mode.tlsAlpn01 ? options.tlsAlpn01Responder(protocols) : undefined;
  const answer = tlsAlpn01 ? tlsAlpn01.wrapSNICallback(serve) : serve;

  function SNICallback(this: TLSSocket | undefined, servername: string, cb: (err: Error | null, ctx?: SecureContext) => void): void {
    answer.call(this, servername, (error, context) => {
      if (!error) return cb(null, context);
      // Hostile names are already counted by name hygiene, under the rule that refused them.
      if (!(error instanceof InvalidNameError)) options.rejections.record(refusalReason(error), servername);
      options.onRefusal?.(error, servername);
      cb(null); // no context: OpenSSL ends the handshake with an alert (see above)
    });
  }

  function ALPNCallback(this: TLSSocket | undefined, info: { servername: string | false; protocols: string[] }): string | undefined {
    if (defaultName !== undefined && !info.servername && this) {
      let context: SecureContext | undefined;
      let inTime = true;
      // From memory, synchronously; otherwise the read it starts serves the next client.
      serve.call(undefined, defaultName, (error, ctx) => {
        if (inTime && !error) context = ctx;
      });
      inTime = false;
      if (context) this.setKeyCert(context);
    }
    return tlsAlpn01 ? tlsAlpn01.ALPNCallback.call(this, info) : chooseProtocol(protocols, info.protocols);
  }

  return mode.selection === 'protocols' ? { SNICallback, ALPNProtocols: protocols } : { SNICallback, ALPNCallback };
}

/** The refusal's kind in the log: its certstate `code` (stable per class), else its class name. */
function refusalReason(error: Error): string {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && code.length <= 64 ? code : error.name.slice(0, 64) || 'Error';
}
