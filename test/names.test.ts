import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { InvalidNameError, escapeForLog, isIpLiteral, normalizeName, type InvalidNameReason } from '../src/names.js';

const HOSTNAME = /^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.){1,9}[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const REASONS = new Set<InvalidNameReason>([
  'empty', 'too-long', 'label-too-long', 'too-many-labels', 'empty-label', 'bad-character', 'wildcard', 'ip-literal',
  'numeric-tld', 'bad-punycode', 'bad-idn', 'reserved-label', 'hyphen', 'single-label', 'recursive-labels',
]);

function reasonOf(input: string, options?: Parameters<typeof normalizeName>[1]): InvalidNameReason {
  try {
    const out = normalizeName(input, options);
    assert.fail(`accepted ${escapeForLog(input)} as ${escapeForLog(out)}`);
  } catch (error) {
    assert.ok(error instanceof InvalidNameError, `not an InvalidNameError: ${String(error)}`);
    return error.reason;
  }
}

describe('normalizeName: hostile corpus', () => {
  const rejected: Array<[string, InvalidNameReason]> = [
    ['a/../../x', 'bad-character'],
    ['../../etc/passwd', 'bad-character'],
    ['a\\..\\x.com', 'bad-character'],
    ['..', 'empty-label'],
    ['.', 'empty'],
    ['', 'empty'],
    ['a\0b.com', 'bad-character'],
    ['example.com\0.evil.com', 'bad-character'],
    ['a%00b.com', 'bad-character'],
    ['a%2fb.com', 'bad-character'],
    [`${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(63)}.com`, 'too-long'],
    ['a'.repeat(5000), 'too-long'],
    [`${'a'.repeat(64)}.com`, 'label-too-long'],
    ['a.b.c.d.e.f.g.h.i.j.com', 'too-many-labels'],
    ['xn--zz.com', 'bad-punycode'],
    ['xn--a.com', 'bad-punycode'],
    ['xn--.com', 'bad-punycode'],
    ['xn--abc-.com', 'bad-punycode'], // decodes to plain "abc": not a valid A-label
    ['ab--c.com', 'reserved-label'],
    ['127.0.0.1', 'ip-literal'],
    ['::1', 'ip-literal'],
    ['[::1]', 'ip-literal'],
    ['fe80::1%eth0', 'ip-literal'],
    ['127.1', 'ip-literal'], // WHATWG would turn it into 127.0.0.1
    ['0x7f.0.0.1', 'ip-literal'],
    ['example.123', 'numeric-tld'],
    ['1.2.3.999', 'numeric-tld'],
    ['*', 'wildcard'],
    ['*.example.com', 'wildcard'],
    ['＊.example.com', 'wildcard'], // fullwidth asterisk maps to *
    ['a*.example.com', 'wildcard'],
    ['a b.com', 'bad-character'],
    [' example.com', 'bad-character'],
    ['example.com\r\nX-Injected: 1', 'bad-character'],
    ['example.com\t', 'bad-character'],
    ['a\u00a0b.com', 'bad-idn'], // NBSP
    ['a\u202eb.com', 'bad-idn'], // bidi override
    ['a\u200db.com', 'bad-idn'], // zero-width joiner in the wrong place
    ['a／b.com', 'bad-idn'], // fullwidth solidus: mapped to /, refused (not cut to "a")
    ['a..b', 'empty-label'],
    ['example.com..', 'empty-label'],
    ['.example.com', 'empty-label'],
    ['-a.com', 'hyphen'],
    ['a-.com', 'hyphen'],
    ['a_b.com', 'bad-character'],
    ['a＿b.com', 'bad-character'], // fullwidth low line maps to _
    ['a:443', 'bad-character'],
    ['user@example.com', 'bad-character'],
    ['example.com?x', 'bad-character'],
    ['intranet', 'single-label'],
    ['com.', 'single-label'],
    ['x.x.x.example.com', 'recursive-labels'],
    ['asdf.asdf.asdf.asdf.example.com', 'recursive-labels'],
  ];
  for (const [input, reason] of rejected) {
    it(`rejects ${escapeForLog(input, 40)} (${reason})`, () => {
      assert.equal(reasonOf(input), reason);
    });
  }

  const accepted: Array<[string, string]> = [
    ['Example.COM.', 'example.com'],
    ['аpple.com', 'xn--pple-43d.com'], // Cyrillic а: a valid IDN, normalised to its A-label
    ['XN--80AK6AA92E.com', 'xn--80ak6aa92e.com'],
    ['ß.de', 'xn--zca.de'],
    ['💩.la', 'xn--ls8h.la'],
    ['ｅｘａｍｐｌｅ．ｃｏｍ', 'example.com'],
    ['example。com', 'example.com'],
    ['localhost', 'localhost'],
    ['LOCALHOST.', 'localhost'],
    ['app.localhost', 'app.localhost'],
    ['x.x.example.com', 'x.x.example.com'],
    ['www.www.example.com', 'www.www.example.com'],
    ['a.b.c.d.e.f.g.h.i.com', 'a.b.c.d.e.f.g.h.i.com'],
    [`${'a'.repeat(63)}.com`, `${'a'.repeat(63)}.com`],
    ['a-b.com', 'a-b.com'],
    ['1.example.com', '1.example.com'],
  ];
  for (const [input, expected] of accepted) {
    it(`accepts ${escapeForLog(input, 40)} as ${expected}`, () => {
      assert.equal(normalizeName(input), expected);
      assert.equal(normalizeName(expected), expected);
    });
  }

  it('accepts IP literals in canonical form only with allowIp', () => {
    assert.equal(normalizeName('127.0.0.1', { allowIp: true }), '127.0.0.1');
    assert.equal(normalizeName('::1', { allowIp: true }), '::1');
    assert.equal(normalizeName('[::1]', { allowIp: true }), '::1');
    assert.equal(normalizeName('[2001:DB8:0:0:0::1]', { allowIp: true }), '2001:db8::1');
    assert.equal(reasonOf('127.1', { allowIp: true }), 'ip-literal');
    assert.equal(reasonOf('fe80::1%eth0', { allowIp: true }), 'ip-literal');
    assert.equal(reasonOf('[127.0.0.1]', { allowIp: true }), 'bad-character'); // brackets are for IPv6
  });

  it('accepts a wildcard only as the whole first label with allowWildcard', () => {
    assert.equal(normalizeName('*.Example.com', { allowWildcard: true }), '*.example.com');
    assert.equal(normalizeName('＊.example.com', { allowWildcard: true }), '*.example.com');
    assert.equal(reasonOf('*', { allowWildcard: true }), 'single-label');
    assert.equal(reasonOf('a.*.example.com', { allowWildcard: true }), 'wildcard');
    assert.equal(reasonOf('*.*.example.com', { allowWildcard: true }), 'wildcard');
    assert.equal(reasonOf('*a.example.com', { allowWildcard: true }), 'wildcard');
  });

  it('rejects non-strings as empty', () => {
    assert.equal(reasonOf(undefined as unknown as string), 'empty');
    assert.equal(reasonOf(42 as unknown as string), 'empty');
  });

  it('puts the input in messages escaped and truncated', () => {
    const error = new InvalidNameError(`evil\r\n{"level":60,"msg":"forged"}\u2028\u202e${'x'.repeat(500)}`, 'bad-character');
    assert.equal(error.code, 'ERR_INVALID_NAME');
    assert.equal(error.name, 'InvalidNameError');
    assert.match(error.message, /^[\x20-\x7e…]+$/);
    assert.ok(error.message.length < 200, error.message);
    assert.ok(error.message.includes('\\r\\n'));
    assert.ok(error.message.includes('\\u2028') && error.message.includes('\\u202e'));
  });

  it('isIpLiteral', () => {
    assert.equal(isIpLiteral('10.0.0.1'), true);
    assert.equal(isIpLiteral('[::1]'), true);
    assert.equal(isIpLiteral('example.com'), false);
    assert.equal(isIpLiteral('127.1'), false);
  });
});

describe('normalizeName: properties', () => {
  // Inputs near the valid space (label by label), so the accepting paths are exercised too.
  const label = fc.oneof(
    { weight: 6, arbitrary: fc.string({ minLength: 1, maxLength: 8, unit: fc.constantFrom('a', 'q', 'Z', '3') }) },
    { weight: 4, arbitrary: fc.string({ minLength: 1, maxLength: 66, unit: fc.constantFrom('a', 'B', 'z', '0', '7', '-') }) },
    { weight: 3, arbitrary: fc.constantFrom('www', 'xn--zca', 'xn--ls8h', 'XN--80AK6AA92E', 'xn--a', 'xn--abc-', 'ab--c', '*', '', '123', '0x1f') },
    { weight: 2, arbitrary: fc.constantFrom('ß', 'аpple', '💩', 'ö', 'Straße', '日本', '\u00ad', 'a\u200db', '\ufe0f') },
    { weight: 1, arbitrary: fc.constantFrom('\0', '/', '..', '\\', ' ', '%00', '_', '[', ']', ':', '\r\n', '\u202e', '＊') },
  );
  const hostnameish = fc
    .tuple(
      fc.array(label, { minLength: 1, maxLength: 12 }),
      fc.constantFrom('.', '.', '.', '。', '．'),
      fc.constantFrom('', '', '.', '..'),
    )
    .map(([labels, dot, end]) => labels.join(dot) + end);
  const inputs = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 300 }),
    fc.string({ unit: 'grapheme', maxLength: 100 }),
    fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes).toString('latin1')),
    hostnameish,
  );

  function checkOutcome(input: string, options: Parameters<typeof normalizeName>[1], valid: (out: string) => boolean) {
    let out: string;
    try {
      out = normalizeName(input, options);
    } catch (error) {
      assert.ok(error instanceof InvalidNameError, `threw ${String(error)} for ${escapeForLog(input)}`);
      assert.ok(REASONS.has(error.reason), error.reason);
      assert.match(error.message, /^[\x20-\x7e…]+$/, 'message must be printable ASCII');
      return;
    }
    assert.ok(valid(out), `accepted ${escapeForLog(input)} as ${escapeForLog(out)}`);
    assert.ok(out.length <= 253);
    assert.equal(normalizeName(out, options), out, 'idempotent');
  }

  it('SNI: every input is a plain hostname or an InvalidNameError; idempotent', () => {
    fc.assert(
      fc.property(inputs, (input) => checkOutcome(input, {}, (out) => out === 'localhost' || HOSTNAME.test(out))),
      { numRuns: 3000 },
    );
  });

  it('with IPs and wildcards: hostname, *.hostname or canonical IP', () => {
    const withIps = fc.oneof(inputs, fc.ipV4(), fc.ipV6(), fc.ipV6().map((ip) => `[${ip.toUpperCase()}]`));
    fc.assert(
      fc.property(withIps, (input) =>
        checkOutcome(input, { allowIp: true, allowWildcard: true }, (out) => {
          if (isIP(out) !== 0) return true;
          const rest = out.startsWith('*.') ? out.slice(2) : out;
          return rest === 'localhost' || HOSTNAME.test(rest) || (out.startsWith('*.') && /^[a-z0-9-]+$/.test(rest));
        }),
      ),
      { numRuns: 2000 },
    );
  });

  it('the hostname-ish generator does reach accepted names', () => {
    let ok = 0;
    fc.assert(
      fc.property(hostnameish, (input) => {
        try {
          normalizeName(input);
          ok++;
        } catch {
          /* counted below */
        }
      }),
      { numRuns: 2000 },
    );
    assert.ok(ok > 100, `only ${ok} accepted`);
  });
});
