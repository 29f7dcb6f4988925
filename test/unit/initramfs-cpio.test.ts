/**
 * The newc writer: its exact bytes, and what Debian's cpio (package cpio)
 * reads back from them with -t and -i. Fails, naming the package, when cpio
 * is not installed.
 */
import { execa } from 'execa';
import { existsSync, lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeNewc, type CpioEntry } from '../../src/initramfs/cpio.js';

const dirs: string[] = [];

// At collection, not in beforeAll: the file fails with this message and no
// test of it is counted as skipped.
if (!['/usr/bin/cpio', '/bin/cpio'].some((p) => existsSync(p))) {
  throw new Error('these tests read archives back with GNU cpio: apt-get install cpio');
}

afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const SAMPLE: CpioEntry[] = [
  { path: 'sbin/modprobe', type: 'symlink', target: '/bin/busybox' },
  { path: 'bin', type: 'dir', mode: 0o755 },
  { path: 'init', type: 'file', mode: 0o755, data: Buffer.from('#!/bin/sh\necho hi\n') },
  { path: 'dev/console', type: 'chardev', mode: 0o600, major: 5, minor: 1 },
  { path: 'dev', type: 'dir', mode: 0o755 },
  { path: 'sbin', type: 'dir', mode: 0o755 },
  { path: 'bin/empty', type: 'file', mode: 0o644, data: Buffer.alloc(0) },
  { path: 'bin/three', type: 'file', mode: 0o600, data: Buffer.from('abc') },
];

/** The 13 header fields of each entry, parsed independently of the writer. */
function headers(archive: Buffer): { name: string; fields: number[]; data: Buffer; offset: number }[] {
  const out = [];
  let o = 0;
  for (;;) {
    expect(archive.subarray(o, o + 6).toString()).toBe('070701');
    const fields = Array.from({ length: 13 }, (_, i) => parseInt(archive.subarray(o + 6 + i * 8, o + 14 + i * 8).toString(), 16));
    const namesize = fields[11]!;
    const name = archive.subarray(o + 110, o + 110 + namesize - 1).toString();
    expect(archive[o + 110 + namesize - 1]).toBe(0);
    const dataStart = Math.ceil((o + 110 + namesize) / 4) * 4;
    const data = archive.subarray(dataStart, dataStart + fields[6]!);
    out.push({ name, fields, data, offset: o });
    o = Math.ceil((dataStart + fields[6]!) / 4) * 4;
    if (name === 'TRAILER!!!') break;
  }
  expect(o).toBe(archive.length);
  return out;
}

describe('writeNewc', () => {
  it('writes each entry as a 110-byte header, the name and its NUL, the data, each padded to 4 bytes', () => {
    const archive = writeNewc([{ path: '/init', type: 'file', mode: 0o755, data: Buffer.from('abcde') }]);
    const header =
      '070701' +
      '00000001' + // ino
      '000081ed' + // mode: regular file 0755
      '00000000' + '00000000' + // uid gid
      '00000001' + // nlink
      '00000000' + // mtime
      '00000005' + // filesize
      '00000000' + '00000000' + '00000000' + '00000000' + // dev, rdev
      '00000005' + // namesize: "init" and its NUL
      '00000000'; // check
    // 110 + 5 = 115: padded to 116; 5 bytes of data padded to 8.
    const expected = Buffer.concat([Buffer.from(header), Buffer.from('init\0'), Buffer.alloc(1), Buffer.from('abcde'), Buffer.alloc(3)]);
    expect(archive.subarray(0, expected.length).equals(expected)).toBe(true);
    const trailer = archive.subarray(expected.length);
    expect(trailer.subarray(0, 6).toString()).toBe('070701');
    expect(trailer.subarray(110, 121).toString()).toBe('TRAILER!!!\0');
    expect(trailer.length % 4).toBe(0);
    expect(archive.length % 4).toBe(0);
  });

  it('sorts entries by path, numbers inodes in that order and fixes owners and mtimes', () => {
    const parsed = headers(writeNewc(SAMPLE));
    expect(parsed.map((h) => h.name)).toEqual([
      'bin', 'bin/empty', 'bin/three', 'dev', 'dev/console', 'init', 'sbin', 'sbin/modprobe', 'TRAILER!!!',
    ]);
    expect(parsed.slice(0, -1).map((h) => h.fields[0])).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    for (const h of parsed) {
      expect(h.fields[2]).toBe(0);
      expect(h.fields[3]).toBe(0);
      expect(h.fields[5]).toBe(0);
    }
    const byName = new Map(parsed.map((h) => [h.name, h]));
    expect(byName.get('bin')!.fields[1]).toBe(0o040755);
    expect(byName.get('bin')!.fields[4]).toBe(2);
    expect(byName.get('sbin/modprobe')!.fields[1]).toBe(0o120777);
    expect(byName.get('sbin/modprobe')!.data.toString()).toBe('/bin/busybox');
    expect(byName.get('dev/console')!.fields[1]).toBe(0o020600);
    expect(byName.get('dev/console')!.fields.slice(9, 11)).toEqual([5, 1]);
    expect(byName.get('bin/three')!.data.toString()).toBe('abc');
  });

  it('gives the same bytes for the same entries in any order', () => {
    const a = writeNewc(SAMPLE);
    const b = writeNewc([...SAMPLE].reverse());
    expect(a.equals(b)).toBe(true);
  });

  it('refuses a path twice, a path without its parent directory, and ".." in a path', () => {
    expect(() => writeNewc([{ path: 'a', type: 'dir', mode: 0o755 }, { path: '/a/', type: 'dir', mode: 0o755 }])).toThrow(/twice/);
    expect(() => writeNewc([{ path: 'a/b', type: 'file', mode: 0o644, data: Buffer.alloc(0) }])).toThrow(/no parent directory entry "a"/);
    expect(() => writeNewc([{ path: 'a/../b', type: 'dir', mode: 0o755 }])).toThrow(/bad path/);
  });

  it('is listed by cpio -t with every type, mode, device number and link target', async () => {
    const r = await execa('cpio', ['-t', '-v', '--quiet', '--numeric-uid-gid'], { input: writeNewc(SAMPLE), env: { TZ: 'UTC' } });
    const lines = r.stdout.split('\n');
    expect(lines.map((l) => l.replace(/^.* 1970 /, ''))).toEqual([
      'bin', 'bin/empty', 'bin/three', 'dev', 'dev/console', 'init', 'sbin', 'sbin/modprobe -> /bin/busybox',
    ]);
    expect(lines[0]).toMatch(/^drwxr-xr-x\s+2 0\s+0\s+0 /);
    expect(lines[2]).toMatch(/^-rw-------\s+1 0\s+0\s+3 /);
    expect(lines[4]).toMatch(/^crw-------\s+1 0\s+0\s+5,\s+1 /);
    expect(lines[5]).toMatch(/^-rwxr-xr-x\s+1 0\s+0\s+18 Jan\s+1\s+1970 init$/);
  });

  it('is unpacked by cpio -i to the same files, modes and links', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cairn-cpio-'));
    dirs.push(dir);
    const noDevices = SAMPLE.filter((e) => e.type !== 'chardev');
    await execa('cpio', ['-i', '-d', '--quiet', '--no-absolute-filenames'], { input: writeNewc(noDevices), cwd: dir });
    expect(readFileSync(join(dir, 'init'), 'utf8')).toBe('#!/bin/sh\necho hi\n');
    expect(lstatSync(join(dir, 'init')).mode & 0o7777).toBe(0o755);
    expect(readFileSync(join(dir, 'bin/three'), 'utf8')).toBe('abc');
    expect(lstatSync(join(dir, 'bin/three')).mode & 0o7777).toBe(0o600);
    expect(lstatSync(join(dir, 'bin/empty')).size).toBe(0);
    expect(readlinkSync(join(dir, 'sbin/modprobe'))).toBe('/bin/busybox');
  });
});
