/**
 * One DNS exchange with one server over UDP or TCP: a request out, the
 * matching answer back, bounded in time, size and sockets.
 *
 * Every socket is closed whatever happens (answer, timeout, abort, error).
 * Over UDP only a datagram from the server's address and port carrying our
 * message ID is taken; anything else is dropped unread. Over TCP the answer
 * is one length-prefixed message (at most 65,535 bytes by construction).
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { DnsServerError } from '../../../errors.js';

/** Where a DNS server listens. */
export interface DnsServerAddress {
  /** An IP address. */
  host: string;
  port: number;
}

/**
 * Parse `"192.0.2.1"`, `"192.0.2.1:5353"`, `"2001:db8::1"` or
 * `"[2001:db8::1]:5353"`. Only IP addresses: the servers that answer DNS
 * questions cannot themselves be found through DNS here.
 */
export function parseServerAddress(spec: string, defaultPort = 53): DnsServerAddress | undefined {
  if (typeof spec !== 'string') return undefined;
  let host = spec;
  let port = defaultPort;
  const bracketed = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(spec);
  if (bracketed) {
    host = bracketed[1]!;
    if (bracketed[2] !== undefined) port = Number(bracketed[2]);
  } else if (net.isIPv4(spec.split(':')[0]!) && spec.includes(':')) {
    const [h, p] = spec.split(':');
    host = h!;
    port = /^\d{1,5}$/.test(p!) ? Number(p) : NaN;
  }
  if (!net.isIP(host) || !Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  return { host, port };
}

/** `192.0.2.1:53` / `[2001:db8::1]:53`, for messages. */
export function formatServerAddress(server: DnsServerAddress): string {
  return net.isIPv6(server.host) ? `[${server.host}]:${server.port}` : `${server.host}:${server.port}`;
}

/** How one exchange runs. */
export interface ExchangeOptions {
  tcp: boolean;
  timeoutMs: number;
  signal?: AbortSignal | undefined;
}

/** The answer's bytes; rejects with `DnsServerError` (`ERR_DNS_TIMEOUT`, `ERR_DNS_NETWORK`) or the signal's reason. */
export function exchange(server: DnsServerAddress, request: Buffer, options: ExchangeOptions): Promise<Buffer> {
  return options.tcp ? exchangeTcp(server, request, options) : exchangeUdp(server, request, options);
}

/** Settle once: run `cleanup` and pass the outcome on, whatever came first. */
function settleOnce<T>(
  resolve: (value: T) => void,
  reject: (error: unknown) => void,
  server: DnsServerAddress,
  options: ExchangeOptions,
  cleanup: () => void,
): { done(value: T): void; fail(error: unknown): void } {
  let settled = false;
  const label = formatServerAddress(server);
  const finish = () => {
    settled = true;
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
    cleanup();
  };
  const outcome = {
    done(value: T) {
      if (settled) return;
      finish();
      resolve(value);
    },
    fail(error: unknown) {
      if (settled) return;
      finish();
      reject(error);
    },
  };
  const onAbort = () => outcome.fail(options.signal!.reason ?? new DOMException('aborted', 'AbortError'));
  const timer = setTimeout(
    () => outcome.fail(new DnsServerError(`DNS server ${label} did not answer within ${options.timeoutMs} ms`, { code: 'ERR_DNS_TIMEOUT', server: label })),
    options.timeoutMs,
  );
  options.signal?.addEventListener('abort', onAbort, { once: true });
  return outcome;
}

function networkError(server: DnsServerAddress, error: unknown): DnsServerError {
  const label = formatServerAddress(server);
  const code = (error as { code?: unknown }).code;
  return new DnsServerError(`DNS server ${label} unreachable${typeof code === 'string' ? ` (${code})` : ''}`, { code: 'ERR_DNS_NETWORK', server: label });
}

function exchangeUdp(server: DnsServerAddress, request: Buffer, options: ExchangeOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    if (options.signal?.aborted) return reject(options.signal.reason);
    const socket = dgram.createSocket(net.isIPv6(server.host) ? 'udp6' : 'udp4');
    const outcome = settleOnce(resolve, reject, server, options, () => socket.close());
    const id = request.readUInt16BE(0);
    socket.on('error', (error) => outcome.fail(networkError(server, error)));
    socket.on('message', (message, from) => {
      if (from.address !== server.host || from.port !== server.port || message.length < 12 || message.readUInt16BE(0) !== id) return;
      outcome.done(message);
    });
    socket.send(request, server.port, server.host, (error) => {
      if (error) outcome.fail(networkError(server, error));
    });
  });
}

function exchangeTcp(server: DnsServerAddress, request: Buffer, options: ExchangeOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    if (options.signal?.aborted) return reject(options.signal.reason);
    const socket = net.connect({ host: server.host, port: server.port });
    const outcome = settleOnce(resolve, reject, server, options, () => socket.destroy());
    const chunks: Buffer[] = [];
    let received = 0;
    socket.on('error', (error) => outcome.fail(networkError(server, error)));
    socket.on('connect', () => {
      const length = Buffer.alloc(2);
      length.writeUInt16BE(request.length);
      // Not end(): some servers drop a half-closed connection before answering.
      socket.write(Buffer.concat([length, request]));
    });
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      if (received < 2) return;
      const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      chunks.length = 0;
      chunks.push(all);
      const length = all.readUInt16BE(0);
      if (all.length >= 2 + length) outcome.done(all.subarray(2, 2 + length));
    });
    socket.on('end', () => outcome.fail(new DnsServerError(`DNS server ${formatServerAddress(server)} closed the connection before answering`, { code: 'ERR_DNS_NETWORK', server: formatServerAddress(server) })));
  });
}
