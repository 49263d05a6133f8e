/**
 * The one place that says where things live in storage. Names reaching here
 * are already normalised (see names.ts): lower-case LDH labels, or `*.` for a
 * wildcard, which is spelled `_wildcard_` in keys so that no key segment holds `*`.
 */

/** Key segment for a (normalised) name. */
export function nameSegment(name: string): string {
  return name.startsWith('*.') ? `_wildcard_.${name.slice(2)}` : name;
}

/** The name a key under `dir/` (`<dir>/<name segment>.json`) belongs to, or undefined for any other key. */
function nameFromKey(dir: string, key: string): string | undefined {
  if (!key.startsWith(`${dir}/`) || !key.endsWith('.json')) return undefined;
  const segment = key.slice(dir.length + 1, -'.json'.length);
  if (segment.length === 0 || segment.includes('/')) return undefined;
  return segment.startsWith('_wildcard_.') ? `*.${segment.slice('_wildcard_.'.length)}` : segment;
}

/** The name a certificate key belongs to, or undefined for any other key. */
export function nameFromCertificateKey(key: string): string | undefined {
  return nameFromKey('certificates', key);
}

/** The name a failure-record key belongs to, or undefined for any other key. */
export function nameFromFailureKey(key: string): string | undefined {
  return nameFromKey('failures', key);
}

export const keys = {
  /** The certificate unit: certificate, key and metadata in one atomic value. */
  certificate: (name: string) => `certificates/${nameSegment(name)}.json`,
  certificatesPrefix: 'certificates/',
  /** The failure record (attempts, last error, next attempt time) of a name. */
  failure: (name: string) => `failures/${nameSegment(name)}.json`,
  failuresPrefix: 'failures/',
  /** The lock held while issuing for a name. */
  issueLock: (name: string) => `locks/issue/${nameSegment(name)}`,
  /** ACME account of an issuer (key + URL), keyed by a digest of its directory and email. */
  account: (accountId: string) => `accounts/${accountId}.json`,
  /** Lock taken while registering an account. */
  accountLock: (accountId: string) => `locks/account/${accountId}`,
  /** HTTP-01 key authorization by token. */
  http01: (token: string) => `challenges/http-01/${token}`,
  /** TLS-ALPN-01 key authorization by name. */
  tlsAlpn01: (name: string) => `challenges/tls-alpn-01/${nameSegment(name)}`,
  /** The local development CA (certificate + key). */
  localCa: (id: string) => `local-ca/${id}.json`,
  /** The cluster's TLS session-ticket keys (secrets, like private keys). */
  sessionTicketKeys: 'session-tickets/keys.json',
  /** Lock taken by the process that adds the next session-ticket key. */
  sessionTicketLock: 'locks/session-tickets',
  /** When the storage cleaner last ran, for the whole cluster. */
  storageCleanerRecord: 'maintenance/storage-cleaner.json',
  /** Lock held by the process running the storage cleaner. */
  storageCleanerLock: 'locks/storage-cleaner',
  challengesPrefix: 'challenges/',
} as const;
