/**
 * acme-client, imported at the first ACME request rather than at
 * `import 'certstate'`: with axios, asn1 and x509 it costs ~400 ms of
 * start-up, paid by every process even when only the local CA is used.
 */
import type * as AcmeClient from 'acme-client';
import { importOnce } from '../../import-once.js';

/** The acme-client module (imported once; a failed import is tried again next time). */
export const loadAcmeClient: () => Promise<typeof AcmeClient> = importOnce(() => import('acme-client'));
