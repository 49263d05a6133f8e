/**
 * PEM, the one module for it: the certificates of a chain, one block's DER
 * (strictly base64), a single block's label (what kind of key), and DER back
 * to PEM. Used by certificate parsing, the local CA, the ACME issuer (CSR,
 * revocation) and the CLI's PKCS#12 export.
 */
import { InvalidCertificateError } from './errors.js';

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]*-----END CERTIFICATE-----/g;
const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([^-]*)-----END \1-----/;

/**
 * Split a PEM chain into its certificates, in order, each normalised to LF
 * line endings and one trailing newline. Other PEM blocks (keys) and text
 * between blocks are ignored. An unterminated block is not returned.
 */
export function splitPemChain(pem: string): string[] {
  const blocks = pem.match(PEM_CERTIFICATE);
  if (blocks === null) return [];
  return blocks.map((block) => `${block.replace(/\r\n?/g, '\n')}\n`);
}

/**
 * The DER inside one PEM block (the first one in `pem`). Only base64 and
 * whitespace are allowed between its lines.
 *
 * @throws InvalidCertificateError when there is no block or its body is not base64
 */
export function pemToDer(pem: string): Buffer {
  const block = PEM_BLOCK.exec(pem);
  if (block === null) throw new InvalidCertificateError('no PEM block');
  return base64Strict(block[2]!);
}

/** The label and DER of the first PEM block (`RSA PRIVATE KEY`, `PRIVATE KEY`, `CERTIFICATE`…), undefined when there is none or it is not base64. */
export function pemBlock(pem: string): { label: string; der: Buffer } | undefined {
  const block = PEM_BLOCK.exec(pem);
  if (block === null) return undefined;
  try {
    return { label: block[1]!, der: base64Strict(block[2]!) };
  } catch {
    return undefined;
  }
}

/** `pemBlock`, when `pem` is that one block and nothing else but whitespace. */
export function onlyPemBlock(pem: string): { label: string; der: Buffer } | undefined {
  const block = PEM_BLOCK.exec(pem);
  if (block === null || pem.slice(0, block.index).trim() !== '' || pem.slice(block.index + block[0].length).trim() !== '') return undefined;
  return pemBlock(block[0]);
}

/** DER as a PEM block with `label`, in 64-character lines. */
export function derToPem(der: Uint8Array, label = 'CERTIFICATE'): string {
  const body = Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n');
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;
}

function base64Strict(text: string): Buffer {
  const body = text.replace(/[\t\n\v\f\r ]+/g, '');
  const der = Buffer.from(body, 'base64');
  // Node's decoder skips characters outside the alphabet (and '=' before the end), so any such
  // character shows as missing bytes; it would take base64url's '_', hence the extra test.
  const padding = body.endsWith('==') ? 2 : body.endsWith('=') ? 1 : 0;
  if (body.length % 4 !== 0 || der.length !== (body.length / 4) * 3 - padding || body.includes('_')) {
    throw new InvalidCertificateError('PEM body is not base64');
  }
  return der;
}
