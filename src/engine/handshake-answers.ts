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
 */
import type { SecureContext, TLSSocket } from 'node:tls';
import type { ALPNCallback, SNICallback, TlsAlpnResponder } from '../adapters/challenges/tls-alpn-01.js';
import { InvalidNameError, normalizeName } from '../names.js';

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
}

/** What `engine.tlsOptions()` returns: spread it into `tls`/`https`/`http2` server options. */
export interface TlsCallbacks {
  SNICallback: SNICallback;
  ALPNCallback: ALPNCallback;
}

/** What this layer needs from the engine. */
export interface HandshakeAnswerOptions extends Pick<TlsOptionsConfig, 'onRefusal'> {
  /** Where refusals are counted (the engine's rejection log). */
  rejections: { record(reason: string, input: string): void };
  /** The managed name served to clients that send no SNI. */
  defaultName?: string;
}

/**
 * The server callbacks: `serve` (the engine's answer for a server name),
 * behind the TLS-ALPN-01 responder, with refusals turned into alerts and
 * `defaultName` presented to clients without SNI.
 */
export function answerHandshakes(serve: SNICallback, alpn: TlsAlpnResponder, options: HandshakeAnswerOptions): TlsCallbacks {
  const defaultName = options.defaultName === undefined ? undefined : normalizeName(options.defaultName, { allowIp: true });
  const answer = alpn.wrapSNICallback(serve);

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
    return alpn.ALPNCallback.call(this, info);
  }

  return { SNICallback, ALPNCallback };
}

/** The refusal's kind in the log: its certstate `code` (stable per class), else its class name. */
function refusalReason(error: Error): string {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && code.length <= 64 ? code : error.name.slice(0, 64) || 'Error';
}
