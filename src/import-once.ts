/**
 * A module imported at its first use instead of at `import 'certstate'`
 * (a heavy dependency, or an optional peer that may not be installed).
 */

/** `load()` on the first call, its promise shared by every later call; a failure is not kept (the next call tries again). */
export function importOnce<T>(load: () => Promise<T>): () => Promise<T> {
  let loading: Promise<T> | undefined;
  return () => {
    loading ??= load().catch((error: unknown) => {
      loading = undefined;
      throw error;
    });
    return loading;
  };
}
