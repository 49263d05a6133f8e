/**
 * PKCS#12 (`.p12`/`.pfx`) export for RSA *and* ECDSA certificates.
 *
 * node-forge's `toPkcs12Asn1` parses the certificate and key itself, and
 * forge 1.4 understands RSA only ("OID is not RSA" for the P-256 keys ACME
 * issues by default). So we let each library do what it can:
 * - node:crypto encrypts the private key natively (PKCS#8
 *   EncryptedPrivateKeyInfo, PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC),
 *   whatever its algorithm;
 * - certificates go in as DER, never parsed;
 * - forge only assembles the ASN.1 container and computes the integrity MAC
 *   (PKCS#12 key derivation + HMAC-SHA-256), which are algorithm-agnostic.
 * OpenSSL 3 and Node's `tls.createSecureContext({ pfx })` read the result.
 */
import { createHash, createPrivateKey } from 'node:crypto';
import forge from 'node-forge';
import { pemToDer, splitPemChain } from '../pem.js';
import type { CertificateBundle } from '../types.js';

const { asn1, pki } = forge;
const MAC_ITERATIONS = 2048;

/** Options of {@link toPkcs12}. */
export interface Pkcs12Options {
  /** Protects the key and the file's integrity. Required: an unprotected key file is a leak waiting to happen. */
  password: string;
  /** Label shown by key stores (default: none). */
  friendlyName?: string;
}

/** Build a PKCS#12 file holding the certificate chain and its private key. */
export function toPkcs12(bundle: CertificateBundle, options: Pkcs12Options): Buffer {
  if (!options.password) throw new Error('PKCS#12 export needs a password');
  const chain = splitPemChain(bundle.certificatePem).map(pemToDer);
  if (chain.length === 0) throw new Error('no certificate in the bundle');
  const encryptedKey = createPrivateKey(bundle.privateKeyPem).export({
    type: 'pkcs8',
    format: 'der',
    cipher: 'aes-256-cbc',
    passphrase: options.password,
  });

  // Pairs the key with the leaf, as every PKCS#12 tool does: SHA-1 of the leaf's DER.
  const localKeyId = createHash('sha1').update(chain[0]!).digest().toString('binary');
  const attributes = bagAttributes(localKeyId, options.friendlyName);

  const certBags = chain.map((der, i) =>
    seq([
      oid(pki.oids.certBag!),
      explicit0([seq([oid(pki.oids.x509Certificate!), explicit0([octets(der.toString('binary'))])])]),
      ...(i === 0 ? [attributes] : []),
    ]),
  );
  const keyBag = seq([oid(pki.oids.pkcs8ShroudedKeyBag!), explicit0([asn1.fromDer(encryptedKey.toString('binary'))]), attributes]);

  const authenticatedSafe = seq([dataContentInfo(seq(certBags)), dataContentInfo(seq([keyBag]))]);
  const safeDer = asn1.toDer(authenticatedSafe).getBytes();

  const salt = forge.random.getBytesSync(16);
  const macKey = forge.pkcs12.generateKey(options.password, forge.util.createBuffer(salt), 3, MAC_ITERATIONS, 32, forge.md.sha256.create());
  const hmac = forge.hmac.create();
  hmac.start('sha256', macKey.getBytes());
  hmac.update(safeDer);
  const macData = seq([
    seq([seq([oid(pki.oids.sha256!), asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, '')]), octets(hmac.digest().getBytes())]),
    octets(salt),
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, asn1.integerToDer(MAC_ITERATIONS).getBytes()),
  ]);

  const pfx = seq([
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, asn1.integerToDer(3).getBytes()),
    seq([oid(pki.oids.data!), explicit0([octets(safeDer)])]),
    macData,
  ]);
  return Buffer.from(asn1.toDer(pfx).getBytes(), 'binary');
}

function bagAttributes(localKeyId: string, friendlyName: string | undefined): forge.asn1.Asn1 {
  const attrs = [seq([oid(pki.oids.localKeyId!), set([octets(localKeyId)])])];
  if (friendlyName !== undefined) {
    attrs.push(seq([oid(pki.oids.friendlyName!), set([asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BMPSTRING, false, friendlyName)])]));
  }
  return set(attrs);
}

/** A PKCS#7 ContentInfo of type `data` wrapping a DER-encoded value. */
function dataContentInfo(value: forge.asn1.Asn1): forge.asn1.Asn1 {
  return seq([oid(pki.oids.data!), explicit0([octets(asn1.toDer(value).getBytes())])]);
}

function seq(items: forge.asn1.Asn1[]) {
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, items);
}
function set(items: forge.asn1.Asn1[]) {
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SET, true, items);
}
function oid(value: string) {
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(value).getBytes());
}
function octets(binary: string) {
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OCTETSTRING, false, binary);
}
function explicit0(items: forge.asn1.Asn1[]) {
  return asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, items);
}


