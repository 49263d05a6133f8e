/** Storage backends shipped with certstate, and the key rules every backend enforces. */
export { assertValidKey, assertValidPrefix, isValidKey, MAX_KEY_LENGTH, MAX_SEGMENT_LENGTH } from './key.js';
export { memoryStorage, type MemoryStorageOptions } from './memory.js';
export { DEFAULT_DATA_DIR, fileStorage, type FileStorageOptions } from './file.js';
export { abortReason, acquireWithRetry, assertValidTtl, LockWaiters, type Attempt } from './lock-wait.js';
