/**
 * `serveAdmin`: the admin handler on its own HTTP server, with the one rule
 * that keeps it from being an open door: beyond loopback, a token is required.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConfigError } from '../errors.js';
import { assertValidToken, isLoopbackHost, MIN_TOKEN_LENGTH } from './access.js';
import { createAdminHandler, type AdminEngine, type AdminHandler, type AdminHandlerOptions } from './handler.js';

/** Options of {@link serveAdmin}. */
export interface ServeAdminOptions extends AdminHandlerOptions {
  /** Address to bind (default `127.0.0.1`). Anything but loopback requires `token`. */
  host?: string;
  /** Port (default 0: any free port; see `AdminServer.port`). */
  port?: number;
}

/** A running admin server. */
export interface AdminServer {
  /** Base URL, e.g. `http://127.0.0.1:9090/` (without the token). */
  readonly url: string;
  readonly port: number;
  readonly server: http.Server;
  readonly handler: AdminHandler;
  /** Stop listening, end live streams and open connections. */
  close(): Promise<void>;
}

export { MIN_TOKEN_LENGTH };

/**
 * Serve the admin handler. Rejects with `ConfigError` (before binding) when
 * `host` is not a loopback address and no `token` is set, or the token is
 * empty, shorter than {@link MIN_TOKEN_LENGTH} or not printable ASCII.
 *
 * @example const admin = await serveAdmin(engine, { port: 9090 }); console.log(admin.url)
 */
export async function serveAdmin(engine: AdminEngine, options: ServeAdminOptions = {}): Promise<AdminServer> {
  const host = options.host ?? '127.0.0.1';
  if (options.token !== undefined) assertValidToken(options.token, 'serveAdmin');
  if (options.token === undefined && !isLoopbackBind(host)) {
    throw new ConfigError(`refusing to serve the admin page on ${host} without a token: bind 127.0.0.1, or set a token`);
  }
  const handler = createAdminHandler(engine, options);
  const server = http.createServer(handler);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 0, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (error) {
    handler.close();
    throw error;
  }
  const { port } = server.address() as AddressInfo;
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${shownHost}:${port}${normalizePrefix(options.basePath)}/`,
    port,
    server,
    handler,
    close: () =>
      new Promise<void>((resolve) => {
        handler.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Loopback *bind* addresses: a wildcard (`0.0.0.0`, `::`) or a host name other than localhost is not. */
function isLoopbackBind(host: string): boolean {
  return host !== '' && isLoopbackHost(host) && !host.toLowerCase().endsWith('.localhost');
}

function normalizePrefix(basePath: string | undefined): string {
  return !basePath || basePath === '/' ? '' : `/${basePath.replace(/^\/+|\/+$/g, '')}`;
}
