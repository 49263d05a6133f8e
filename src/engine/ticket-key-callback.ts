/**
 * The one place certstate reaches past Node's public TLS API.
 *
 * Node's public API holds one session-ticket key per server (`ticketKeys`,
 * `server.setTicketKeys()`): only that key decrypts, so a rotation kills every
 * ticket issued before it. Several keys — a new one encrypting while the
 * previous ones still decrypt for an overlap window, as Caddy and Go's
 * crypto/tls do — need OpenSSL's ticket-key callback, which Node exposes only
 * on the server's internal `SecureContext` (`server._sharedCreds.context`:
 * `enableTicketKeyCallback()` and an `onticketkeycallback` property; Node's
 * own test-https-resume-after-renew.js uses them). Checked on Node 20–24 and
 * pinned by test/session-tickets-node.test.ts; where it is missing, the
 * engine falls back to `setTicketKeys()` (rotation without overlap) and says so.
 *
 * The contract (src/crypto/crypto_context.cc, `TicketKeyCallback`): called
 * with `(name, iv, encrypt)`, it returns an array read synchronously:
 * - encrypt: `[1, hmacKey, aesKey, name, iv]` (all 16-byte buffers);
 * - decrypt: `[1, hmacKey, aesKey]` to accept, `[2, …]` to accept and issue a
 *   fresh ticket, `[0, …]` for an unknown name (a full handshake follows; the
 *   two keys must still be 16-byte buffers or Node fails the handshake);
 * - encrypt with status 0: no ticket (TLS 1.3) or an empty one (TLS 1.2);
 * - anything else, or a throw, fails the handshake, and an encrypt answer
 *   without its five buffers aborts the process: the callback never throws.
 *
 * Only the server's own context matters: Node's SNI switch copies the SNI
 * context's certificate and key into the connection and keeps the server's
 * `SSL_CTX`, whose ticket keys encrypt and decrypt every ticket (TLS 1.2 and
 * 1.3). Keys set on per-certificate contexts are never used.
 */
import { randomFillSync } from 'node:crypto';
import type tls from 'node:tls';
import type { DecryptingKey } from './ticket-keys.js';

/** The arrays the callback answers with, built once per key change (no allocation per handshake; the IV slot is set per ticket). */
export interface CompiledTicketKeys {
  readonly encrypt: readonly unknown[];
  readonly decrypt: readonly { name: Buffer; answer: readonly unknown[] }[];
}

interface InternalContext {
  enableTicketKeyCallback?: () => void;
  onticketkeycallback?: (name: Buffer, iv: Buffer, encrypt: boolean) => readonly unknown[];
}

/**
 * "No such key" (decrypt: a full handshake follows) and "no ticket" (encrypt). Five 16-byte
 * parts in both cases: Node reads name and IV of an encrypt answer whatever its status, and
 * aborts the process on a missing buffer.
 */
const NONE: readonly unknown[] = [0, Buffer.alloc(16), Buffer.alloc(16), Buffer.alloc(16), Buffer.alloc(16)];

/** IVs drawn per CSPRNG call: one call per this many tickets (a full TLS 1.3 handshake issues two). */
const IV_BATCH = 256;

/**
 * Ticket IVs, each used once: 256 drawn from the CSPRNG at a time, handed out
 * as fixed 16-byte views and drawn afresh when all were used. One
 * `randomFillSync` per 256 tickets instead of one per ticket (~2 µs each,
 * twice per full handshake). Safe to reuse a view after the refill: Node
 * copies the IV out of the answer before the callback returns.
 */
export class TicketIvs {
  readonly #buffer = Buffer.alloc(16 * IV_BATCH);
  readonly #views = Array.from({ length: IV_BATCH }, (_, i) => this.#buffer.subarray(16 * i, 16 * i + 16));
  #next = IV_BATCH;

  /** The next unused IV. */
  take(): Buffer {
    if (this.#next === IV_BATCH) {
      randomFillSync(this.#buffer);
      this.#next = 0;
    }
    return this.#views[this.#next++]!;
  }
}

/** Build the callback's answers for one encrypting key and its decrypting keys. */
export function compileTicketKeys(encrypting: Buffer, decrypting: readonly DecryptingKey[]): CompiledTicketKeys {
  const parts = (key: Buffer) => ({ name: key.subarray(0, 16), hmac: key.subarray(16, 32), aes: key.subarray(32, 48) });
  const enc = parts(encrypting);
  // The IV slot is set per ticket (TicketIvs): Node copies name and IV out of the array before returning.
  const encrypt = [1, enc.hmac, enc.aes, enc.name, Buffer.alloc(16)];
  return {
    encrypt,
    decrypt: decrypting.map(({ key, renew }) => {
      const p = parts(key);
      return { name: p.name, answer: [renew ? 2 : 1, p.hmac, p.aes] };
    }),
  };
}

function internalContext(server: tls.Server): InternalContext | undefined {
  const context = (server as unknown as { _sharedCreds?: { context?: InternalContext } })._sharedCreds?.context;
  return typeof context?.enableTicketKeyCallback === 'function' ? context : undefined;
}

/**
 * The context whose ticket keys `server` uses now (undefined without Node's
 * hook). `server.setSecureContext()` replaces it: a callback installed on the
 * old one no longer applies.
 */
export function ticketKeyContext(server: tls.Server): object | undefined {
  return internalContext(server);
}

/** Whether this Node lets a server hold several ticket keys (see the file comment). */
export function supportsTicketKeyCallback(server: tls.Server): boolean {
  return internalContext(server) !== undefined;
}

/**
 * Let `keys()` (read at every ticket) encrypt and decrypt `server`'s session
 * tickets. Returns false, changing nothing, when this Node has no such hook.
 */
export function installTicketKeyCallback(server: tls.Server, keys: () => CompiledTicketKeys): boolean {
  const context = internalContext(server);
  if (!context) return false;
  const ivs = new TicketIvs();
  context.onticketkeycallback = (name, _iv, encrypt) => {
    try {
      const compiled = keys();
      if (encrypt) {
        (compiled.encrypt as unknown[])[4] = ivs.take();
        return compiled.encrypt;
      }
      for (const entry of compiled.decrypt) if (entry.name.equals(name)) return entry.answer;
      return NONE;
    } catch {
      // A throw here would fail the handshake (and surface as an uncaught exception): no ticket instead.
      return NONE;
    }
  };
  context.enableTicketKeyCallback!();
  return true;
}
