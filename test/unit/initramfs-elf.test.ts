/**
 * Finding what a program needs in the initramfs: the ELF interpreter from
 * the program headers, and the loader's list of libraries.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { elfInterpreter, parseLoaderList } from '../../src/initramfs/elf.js';

/** A minimal 64-bit little-endian ELF with one PT_INTERP program header. */
function elfWithInterp(interp: string | undefined): Buffer {
  const ehdr = Buffer.alloc(64);
  ehdr.writeUInt32BE(0x7f454c46, 0);
  ehdr[4] = 2; // 64-bit
  ehdr[5] = 1; // little-endian
  ehdr.writeBigUInt64LE(64n, 0x20); // e_phoff
  ehdr.writeUInt16LE(56, 0x36); // e_phentsize
  ehdr.writeUInt16LE(interp === undefined ? 0 : 2, 0x38); // e_phnum
  const load = Buffer.alloc(56);
  load.writeUInt32LE(1, 0); // PT_LOAD
  const ph = Buffer.alloc(56);
  const text = Buffer.from(`${interp ?? ''}\0`);
  ph.writeUInt32LE(3, 0); // PT_INTERP
  ph.writeBigUInt64LE(BigInt(64 + 56 * 2), 0x08); // p_offset
  ph.writeBigUInt64LE(BigInt(text.length), 0x20); // p_filesz
  return interp === undefined ? ehdr : Buffer.concat([ehdr, load, ph, text]);
}

describe('elfInterpreter', () => {
  it('reads PT_INTERP, and finds none in a static program', () => {
    expect(elfInterpreter(elfWithInterp('/lib/ld-musl-x86_64.so.1'))).toBe('/lib/ld-musl-x86_64.so.1');
    expect(elfInterpreter(elfWithInterp(undefined))).toBeUndefined();
  });

  it("reads this machine's programs: a dynamic one and the static busybox", () => {
    expect(elfInterpreter(readFileSync('/bin/ls'))).toMatch(/^\/lib(64)?\/ld-/);
    expect(elfInterpreter(readFileSync('/usr/bin/busybox'))).toBeUndefined();
  });

  it('refuses what is not ELF, naming it', () => {
    expect(() => elfInterpreter(Buffer.from('#!/bin/sh\necho not elf, but long enough to have a header..\n'), '/init')).toThrow(
      '/init is not an ELF program',
    );
  });
});

describe('parseLoaderList', () => {
  it("reads glibc's list: libraries, the loader, no vdso", () => {
    const text = [
      '\tlinux-vdso.so.1 (0x00007ffd6b5f2000)',
      '\tlibcryptsetup.so.12 => /lib/x86_64-linux-gnu/libcryptsetup.so.12 (0x00007f0f5a1c0000)',
      '\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0f59fdf000)',
      '\t/lib64/ld-linux-x86-64.so.2 (0x00007f0f5a2b4000)',
    ].join('\n');
    expect(parseLoaderList(text)).toEqual({
      paths: ['/lib/x86_64-linux-gnu/libcryptsetup.so.12', '/lib/x86_64-linux-gnu/libc.so.6', '/lib64/ld-linux-x86-64.so.2'],
      missing: [],
    });
  });

  it("reads musl's list and names what the loader could not find", () => {
    const text = '\t/lib/ld-musl-x86_64.so.1 (0x7f1e1c6b5000)\n\tlibz.so.1 => /lib/libz.so.1 (0x7f1e1c69b000)\n\tlibargon2.so.1 => not found\n';
    expect(parseLoaderList(text)).toEqual({ paths: ['/lib/ld-musl-x86_64.so.1', '/lib/libz.so.1'], missing: ['libargon2.so.1'] });
  });
});
