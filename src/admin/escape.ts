/**
 * Escaping for every context the admin surface writes untrusted text into
 * (names come from SNI and configuration, error messages and problem details
 * from CAs): HTML/XML text and attributes, JSON inside `<script>`, and
 * Prometheus label values.
 */

const HTML: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Escape text for an HTML text node or a quoted attribute value. */
export function escapeHtml(text: string): string {
  return String(text).replace(/[&<>"']/g, (c) => HTML[c]!);
}

/** Escape text for XML (SVG) text or a quoted attribute; also drops characters XML 1.0 forbids. */
export function escapeXml(text: string): string {
  // eslint-disable-next-line no-control-regex
  return escapeHtml(String(text).replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, '\ufffd'));
}

/**
 * JSON safe to place inside an HTML `<script>` element: `<`, `>` and `&`
 * are written as `\u` escapes (so `</script>` and `<!--` cannot end or
 * comment out the element) and U+2028/U+2029 too (line terminators in old JS).
 */
export function jsonForHtml(value: unknown): string {
  return JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
