/**
 * Which engine the benches measure: `src/engine/engine.ts` by default, or a
 * private copy named by `CERTSTATE_BENCH_ENGINE` (a path relative to the
 * repository root, e.g. `bench/tmp/exp/engine.ts`). That is how an engine
 * change is measured before and after with the very same bench, without
 * touching src/. Child processes and workers inherit the variable.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO_DIR } from './paths.js';

type EngineModule = typeof import('../../src/engine/engine.js');

/** An issuer that must never be called: every name a bench serves has a valid certificate. */
export function refusingIssuer(bench: string): import('../../src/types.js').Issuer {
  return {
    id: 'bench:none',
    async issue() {
      throw new Error(`bench: no issuance expected in the ${bench} bench`);
    },
  };
}

/**
 * An ARI-capable issuer with the id of the dataset's certificates: the engine
 * asks it about every name (spread over the recheck interval, through the one
 * wake heap); it suggests a window at 60–66 % of the certificate's lifetime,
 * calling `onRequest` for each request. It never issues.
 */
export function ariBenchIssuer(bench: string, onRequest: () => void): import('../../src/types.js').Issuer {
  return {
    ...refusingIssuer(bench),
    id: 'local-ca:default',
    async renewalInfo(meta) {
      onRequest();
      const life = meta.notAfter - meta.notBefore;
      return { start: meta.notBefore + 0.6 * life, end: meta.notBefore + 0.66 * life };
    },
  };
}

let loaded: Promise<EngineModule> | undefined;

export function engineModulePath(): string {
  const chosen = process.env.CERTSTATE_BENCH_ENGINE;
  return chosen ? path.resolve(REPO_DIR, chosen) : path.join(REPO_DIR, 'src', 'engine', 'engine.ts');
}

type FileStorageModule = typeof import('../../src/adapters/storage/file.js');
let storageLoaded: Promise<FileStorageModule> | undefined;

/**
 * File storage from the same source tree as the engine under test (a copy's
 * `src/adapters/storage/file.ts` beside its `src/engine/engine.ts`): a change
 * to the storage is measured before and after as the engine is.
 */
export function fileStorageModule(): Promise<FileStorageModule> {
  storageLoaded ??= import(pathToFileURL(path.join(path.dirname(engineModulePath()), '..', 'adapters', 'storage', 'file.ts')).href) as Promise<FileStorageModule>;
  return storageLoaded;
}

/** The engine module under test (loaded once). */
export function engineModule(): Promise<EngineModule> {
  loaded ??= import(pathToFileURL(engineModulePath()).href) as Promise<EngineModule>;
  return loaded;
}
