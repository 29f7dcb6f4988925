/**
 * Programs of an image's root, found as that root sees them: an absolute
 * link inside it (Debian's /lib64/ld-linux-x86-64.so.2) leads into the root,
 * never to this machine's file of the same name.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cksumFor, findProgram, realpathIn } from '../../src/initramfs/programs.js';
import { AppletMissingError } from '../../src/lib/errors.js';

const root = mkdtempSync(join(tmpdir(), 'cairn-root-'));
mkdirSync(join(root, 'usr/lib/x86_64-linux-gnu'), { recursive: true });
mkdirSync(join(root, 'usr/sbin'), { recursive: true });
symlinkSync('usr/lib', join(root, 'lib'));
symlinkSync('usr/sbin', join(root, 'sbin'));
mkdirSync(join(root, 'lib64'));
writeFileSync(join(root, 'usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2'), 'loader');
symlinkSync('/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', join(root, 'lib64/ld-linux-x86-64.so.2'));
writeFileSync(join(root, 'usr/sbin/cryptsetup'), '#!/bin/sh\n', { mode: 0o755 });
symlinkSync('/nowhere/at/all', join(root, 'usr/sbin/dangling'));

afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('realpathIn', () => {
  it('follows absolute and relative links inside the root', () => {
    expect(realpathIn(root, '/lib64/ld-linux-x86-64.so.2')).toBe(join(root, 'usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2'));
    expect(realpathIn(root, '/sbin/../lib/x86_64-linux-gnu')).toBe(join(root, 'usr/lib/x86_64-linux-gnu'));
  });

  it('gives a path that is not there for a missing or dangling one, without failing', () => {
    expect(realpathIn(root, '/usr/local/sbin/busybox')).toBe(join(root, 'usr/local/sbin/busybox'));
    expect(realpathIn(root, '/usr/sbin/dangling')).toBe(join(root, 'nowhere/at/all'));
  });
});

describe('findProgram in a root', () => {
  it("finds the root's program by its path in the root, and not this machine's", () => {
    expect(findProgram('cryptsetup', '/usr/bin', root)).toBe('/usr/sbin/cryptsetup');
    expect(findProgram('ls', '/usr/bin', root)).toBeUndefined();
  });
});

describe('cksumFor: the cksum the boot checks states with', () => {
  const bbRoot = mkdtempSync(join(tmpdir(), 'cairn-root-cksum-'));
  mkdirSync(join(bbRoot, 'bin'), { recursive: true });
  mkdirSync(join(bbRoot, 'usr/bin'), { recursive: true });
  writeFileSync(join(bbRoot, 'bin/busybox'), '#!/bin/sh\n', { mode: 0o755 });
  afterAll(() => rmSync(bbRoot, { recursive: true, force: true }));

  it("carries nothing where the root's cksum is busybox's applet (Alpine), and fails where busybox has none and coreutils is missing", () => {
    symlinkSync('/bin/busybox', join(bbRoot, 'usr/bin/cksum'));
    expect(cksumFor(bbRoot, '/bin/busybox', ['bin/sh', 'usr/bin/cksum'])).toBeUndefined();
    expect(() => cksumFor(bbRoot, '/bin/busybox', ['bin/sh'])).toThrow(AppletMissingError);
    expect(() => cksumFor(bbRoot, '/bin/busybox', ['bin/sh'])).toThrow(/cksum/);
  });

  it("carries coreutils' cksum where the root has it (Debian), whatever busybox has", () => {
    rmSync(join(bbRoot, 'usr/bin/cksum'));
    writeFileSync(join(bbRoot, 'usr/bin/cksum'), '\x7fELF', { mode: 0o755 });
    expect(cksumFor(bbRoot, '/bin/busybox', ['bin/sh'])).toBe('/usr/bin/cksum');
  });
});
