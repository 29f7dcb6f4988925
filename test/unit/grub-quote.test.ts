import { describe, expect, it } from 'vitest';
import { grubQuote, grubWord, kernelSafe } from '../../src/grub/quote.js';
import { HOSTILE, readWords } from '../helpers/grub-words.js';

describe('grubWord', () => {
  it.each(['/vmlinuz-lts', 'cairn.boot=gen-12', 'cairn.data=LABEL=cairn-data', 'console=ttyS0,115200', 'CAIRN-ESP', '1234-ABCD', '50%'])(
    'leaves %s bare',
    (v) => {
      expect(grubWord(v)).toBe(v);
    },
  );

  it.each(HOSTILE)('reads back %j exactly, as one word', (v) => {
    const w = grubWord(v);
    expect(readWords(`cmd ${w} after`)).toEqual(['cmd', v, 'after']);
  });

  it('quotes the empty string, so that it stays a word', () => {
    expect(grubWord('')).toBe("''");
  });

  it('refuses a NUL byte, which no GRUB file can hold', () => {
    expect(() => grubWord('a\0b')).toThrow(/NUL/);
    expect(() => grubQuote('\0')).toThrow(/NUL/);
  });
});

describe('grubQuote', () => {
  it('always single-quotes, and writes a quote as close, escaped quote, reopen', () => {
    expect(grubQuote('abc')).toBe("'abc'");
    expect(grubQuote("it's")).toBe("'it'\\''s'");
  });

  it.each(HOSTILE)('reads back %j exactly', (v) => {
    expect(readWords(grubQuote(v))).toEqual([v]);
  });
});

describe('kernelSafe', () => {
  it.each(['LABEL=cairn-data', 'UUID=0b7c3f7e-2d5e-4a51-9c59-3d1d2f1d9a10', '/dev/sda2', 'LABEL=ünï', 'LABEL=a$b;c'])('accepts %j', (v) => {
    expect(kernelSafe(v)).toBe(true);
  });

  // GRUB would escape these with backslashes or wrap them in double quotes,
  // and neither the kernel nor the initramfs undoes that.
  it.each(['', 'LABEL=my data', 'LABEL=a\tb', 'LABEL=a\nb', "LABEL=it's", 'LABEL="x"', 'LABEL=a\\b', 'LABEL=\x7f', 'LABEL=\x1b[A'])(
    'refuses %j',
    (v) => {
      expect(kernelSafe(v)).toBe(false);
    },
  );
});
