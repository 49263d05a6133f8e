/**
 * Call depth while handshakes are answered. A recursion bug (answering a
 * waiter starts the next attempt, whose failure answers the next waiter…)
 * shows as a stack that deepens with every waiter. `promiseResolve` hooks run
 * synchronously where a promise is resolved, i.e. exactly where a waiter is
 * answered, so the stack depth there is the depth of the engine's answer.
 *
 * Capturing a full stack costs ~10 µs, so this runs in its own pass, never
 * inside a timed window.
 */
import { createHook } from 'node:async_hooks';

export interface DepthReport {
  /** Promise resolutions observed while the probe ran. */
  samples: number;
  minDepth: number;
  maxDepth: number;
  /** Depth at the first and the last resolution: equal when nothing recurses. */
  firstDepth: number;
  lastDepth: number;
}

function depthHere(): number {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = Infinity;
  const depth = (new Error().stack ?? '').split('\n').length - 1;
  Error.stackTraceLimit = limit;
  return depth;
}

/** Start watching; `stop()` returns what was seen. */
export function depthProbe(): { stop(): DepthReport } {
  const report: DepthReport = { samples: 0, minDepth: Infinity, maxDepth: 0, firstDepth: 0, lastDepth: 0 };
  let inside = false;
  const hook = createHook({
    promiseResolve() {
      if (inside) return; // our own work must not measure itself
      inside = true;
      const depth = depthHere();
      inside = false;
      if (report.samples === 0) report.firstDepth = depth;
      report.samples++;
      report.lastDepth = depth;
      if (depth < report.minDepth) report.minDepth = depth;
      if (depth > report.maxDepth) report.maxDepth = depth;
    },
  });
  hook.enable();
  return {
    stop() {
      hook.disable();
      if (report.samples === 0) report.minDepth = 0;
      return report;
    },
  };
}
