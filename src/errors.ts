/**
 * Typed errors. Every error certstate raises is a `CertstateError` with a
 * stable `name` (its class) and `code`, so callers can branch without parsing
 * messages. A `code` is certstate's own constant: the class's, or one of the
 * few more specific codes documented on the class; never text a CA or a
 * peer sent (a CA's problem type is kept in `AcmeError.problemType`).
 * Messages never contain key material.
 *
 * One module per family under errors/, all re-exported here: import from
 * this module.
 */
export * from './errors/base.js';
export * from './errors/storage.js';
export * from './errors/issuance.js';
export * from './errors/engine.js';
export * from './errors/info.js';
export * from './errors/names.js';
export * from './errors/acme.js';
export * from './errors/dns.js';
