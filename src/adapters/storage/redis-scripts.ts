/**
 * The Lua scripts of Redis storage and how they are run. Every write reads
 * `TIME` on the server (one clock for the cluster) and checks a fence in the
 * same atomic step as the write; taking a lock draws its fencing token in the
 * same step as the `SET NX PX`.
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { CertstateError, StorageError } from '../../errors.js';

/**
 * `redis.replicate_commands()` lets a script that read `TIME` write afterwards
 * on Redis 3.2–4 (effects replication); it is the default, and a no-op, on 5+.
 */
const REPLICATE = `if redis.replicate_commands then pcall(redis.replicate_commands) end\n`;

/** Server time in ms as an exact decimal string (Lua 5.1 would print a double as 1.7e+12). */
const NOW_MS = `local t = redis.call('TIME')\nlocal now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))\n`;

/**
 * The fence check shared by fenced writes and deletes: KEYS[2] the fence
 * counter, `token` the presented one. 0 (never locked, or the counter was
 * lost) matches no token.
 */
const FENCE_CHECK = `
  local current = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  if current == 0 or current ~= tonumber(token) then return {0, current} end`;

/**
 * KEYS[1] data hash, KEYS[2] (optional) fence counter; ARGV[1] value,
 * ARGV[2] change channel, ARGV[3] change payload, ARGV[4] token (when fenced).
 * Returns {1, now} when written, {0, current} when the fence is stale. The
 * change is published by the write itself, so watchers hear of every write
 * and of no refused one.
 */
const STORE = `${REPLICATE}
if KEYS[2] then
  local token = ARGV[4]${FENCE_CHECK}
end
${NOW_MS}
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'm', now)
redis.call('PUBLISH', ARGV[2], ARGV[3])
return {1, now}`;

/**
 * KEYS[1] data hash, KEYS[2] (optional) fence counter; ARGV[1] change channel,
 * ARGV[2] change payload, ARGV[3] token (when fenced). Publishes only if
 * something was deleted. Returns {1, deleted} or {0, current} when fenced out.
 */
const DELETE = `
if KEYS[2] then
  local token = ARGV[3]${FENCE_CHECK}
end
local deleted = redis.call('DEL', KEYS[1])
if deleted > 0 then redis.call('PUBLISH', ARGV[1], ARGV[2]) end
return {1, deleted}`;

/**
 * KEYS[1] lock, KEYS[2] fence counter; ARGV[1] holder id, ARGV[2] ttl ms.
 * Taking the lock and drawing the fencing token happen in one atomic step: were
 * they two commands, a holder paused between them could draw a token *newer*
 * than the one of the process that took the lock over meanwhile.
 *
 * The token is `max(previous + 1, server time in µs)`, not a bare counter: a
 * counter lost with the data (restart without persistence, FLUSHALL, failover
 * to a lagging replica, a deleted key) restarts at the server's time, above
 * every token drawn before, so a paused holder's old token can never match
 * again. Tokens stay below 2^53 (exact in Lua's doubles and in JavaScript): a
 * counter at that bound (or unreadable) starts again from the server time,
 * which is above every token drawn before the jump.
 * Returns {1, token} or {0, pttl of the current holder}.
 */
const ACQUIRE = `${REPLICATE}
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  local token = last + 1
  if token < now or token > 9007199254740990 then token = now end
  redis.call('SET', KEYS[2], string.format('%.0f', token))
  return {1, token}
end
return {0, redis.call('PTTL', KEYS[1])}`;

/** The server's clock in ms (every process compares shared times on it). */
const TIME = `local t = redis.call('TIME')
return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

/** KEYS[1] lock; ARGV[1] holder id, ARGV[2] ttl ms. 1 when extended, 0 when not ours any more. */
const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;

/** KEYS[1] lock; ARGV[1] holder id. Deletes only our own lock (a lost lease may be someone else's now). */
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

/** A script's source and the SHA1 that `EVALSHA` runs it by. */
export interface Script {
  readonly source: string;
  readonly sha: string;
}

function script(source: string): Script {
  return { source, sha: createHash('sha1').update(source).digest('hex') };
}

export const SCRIPTS = {
  store: script(STORE),
  delete: script(DELETE),
  acquire: script(ACQUIRE),
  renew: script(RENEW),
  release: script(RELEASE),
  time: script(TIME),
};

/**
 * Run a script by SHA, loading it with EVAL on `NOSCRIPT` (first use, or after
 * a server restart or `SCRIPT FLUSH`). We do not use ioredis' `defineCommand`,
 * which would add methods to a client the caller owns.
 */
export async function runScript(client: Redis, s: Script, keys: string[], args: (string | number)[]): Promise<unknown> {
  try {
    return await client.evalsha(s.sha, keys.length, ...keys, ...args);
  } catch (error) {
    if (error instanceof Error && error.message.startsWith('NOSCRIPT')) {
      return await client.eval(s.source, keys.length, ...keys, ...args);
    }
    throw error;
  }
}

/** Any failure as a typed error: certstate's own errors pass through, the rest become `StorageError`. */
export function toStorageError(error: unknown, what: string): CertstateError {
  if (error instanceof CertstateError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new StorageError(`${what} failed: ${message}`, { cause: error });
}

/** A script's two-number reply (`{ok, value}`), checked. */
export function pair(reply: unknown): [number, number] {
  if (!Array.isArray(reply) || reply.length !== 2) throw new StorageError(`unexpected Redis script reply ${JSON.stringify(reply)}`);
  return [Number(reply[0]), Number(reply[1])];
}
