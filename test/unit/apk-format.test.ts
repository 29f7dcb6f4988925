import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createHash, generateKeyPairSync, verify, type KeyObject } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { crc32, gzipMember, splitGzipMembers } from '../../src/apk/gzip.js';
import { decodeTar, encodeTar, paxValue, SHA1_RECORD, type TarEntry } from '../../src/apk/tar.js';
import { formatPkgInfo, parsePkgInfo, setPkgInfoField, withDatahash } from '../../src/apk/pkginfo.js';
import { installedSize, writeApk, type ControlFile, type WriteApkOptions } from '../../src/apk/write.js';
import { dataHashOf, packageIdentity, readApk } from '../../src/apk/read.js';
import { parseSignatureEntryName, prependSignature, signatureMember, type SignatureType } from '../../src/apk/sign.js';
import { verifyApk } from '../../src/apk/verify.js';
import { repackApk } from '../../src/apk/repack.js';
import { indexEntry, writeLocalRepo } from '../../src/apk/repo.js';
import { kernelReleasesIn } from '../../src/apk/classify.js';
import {
  ApkBadSignatureError,
  ApkDatahashError,
  ApkFormatError,
  ApkUnsignedError,
  ApkUntrustedError,
} from '../../src/apk/errors.js';

// ------------------------------------------------------------------ fixtures

const MTIME = 1_700_000_000;
const KVER = '6.6.52-0-lts';

interface Keys {
  privateKey: KeyObject;
  publicPem: string;
}

function rsaKeys(): Keys {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { privateKey, publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() };
}

const dir = (name: string, mode = 0o755): TarEntry => ({ name, type: 'directory', mode, uid: 0, gid: 0, mtime: MTIME });
const file = (name: string, content: string | Buffer, mode = 0o644): TarEntry => ({
  name,
  type: 'file',
  mode,
  uid: 0,
  gid: 0,
  mtime: MTIME,
  content: Buffer.isBuffer(content) ? content : Buffer.from(content),
});
const symlink = (name: string, target: string): TarEntry => ({
  name,
  type: 'symlink',
  mode: 0o777,
  uid: 0,
  gid: 0,
  mtime: MTIME,
  linkTarget: target,
});

function pkginfo(name: string, version: string, extra: [string, string][] = [], data: TarEntry[] = []): string {
  return formatPkgInfo([
    { key: 'pkgname', value: name },
    { key: 'pkgver', value: version },
    { key: 'pkgdesc', value: `${name} made by a cairn test` },
    { key: 'url', value: 'https://example.org' },
    { key: 'builddate', value: String(MTIME) },
    { key: 'packager', value: 'cairn tests' },
    { key: 'size', value: String(Math.max(1, installedSize(data))) },
    { key: 'arch', value: 'x86_64' },
    { key: 'origin', value: name },
    { key: 'license', value: 'MIT' },
    ...extra.map(([key, value]) => ({ key, value })),
  ]);
}

/** An ordinary package: a binary, a config file, a symlink. */
function ordinaryData(): TarEntry[] {
  return [
    dir('usr'),
    dir('usr/bin'),
    file('usr/bin/hello', '#!/bin/sh\necho hello\n', 0o755),
    symlink('usr/bin/hi', 'hello'),
    dir('etc'),
    file('etc/hello.conf', 'greeting=hello\n'),
    file('etc/empty', ''),
  ];
}

/** A kernel-like package: vmlinuz, modules under /lib/modules/<kver>, a path longer than 100 bytes. */
function kernelData(): TarEntry[] {
  const deep = `lib/modules/${KVER}/kernel/drivers/net/ethernet/mellanox/mlx5/core/steering/hws`;
  const parts = deep.split('/');
  const dirs = parts.map((_, i) => dir(parts.slice(0, i + 1).join('/')));
  return [
    dir('boot'),
    file('boot/vmlinuz-lts', Buffer.alloc(3000, 0xa5)),
    file('boot/config-lts', 'CONFIG_MODULES=y\n'),
    ...dirs,
    dir(`lib/modules/${KVER}/kernel/fs`),
    dir(`lib/modules/${KVER}/kernel/fs/squashfs`),
    file(`lib/modules/${KVER}/kernel/fs/squashfs/squashfs.ko.gz`, Buffer.from('not really a module')),
    file(`${deep}/mlx5_core_hws_with_a_name_long_enough_to_need_pax.ko.gz`, Buffer.alloc(700, 1)),
    file(`lib/modules/${KVER}/modules.dep`, 'kernel/fs/squashfs/squashfs.ko.gz:\n'),
    dir('usr'),
    dir('usr/share'),
    dir('usr/share/kernel'),
    dir('usr/share/kernel/lts'),
    file('usr/share/kernel/lts/kernel.release', `${KVER}\n`),
  ];
}

const KERNEL_SCRIPTS: ControlFile[] = [
  { name: '.post-install', content: '#!/bin/sh\necho installed kernel\n' },
  { name: '.trigger', content: '#!/bin/sh\nfor d in "$@"; do echo "triggered $d"; done\n' },
];

function firmwareData(): TarEntry[] {
  return [
    dir('lib'),
    dir('lib/firmware'),
    dir('lib/firmware/intel'),
    file('lib/firmware/intel/ibt-0040-0041.sfi.zst', Buffer.alloc(5000, 7)),
    file('lib/firmware/regulatory.db', Buffer.alloc(1000, 3)),
  ];
}

let work: string;
let trusted: Keys;
let other: Keys;
let keysDir: string;
const KEY_NAME = 'cairn-test-5f3a9c21.rsa.pub';

function build(over: Partial<WriteApkOptions> & Pick<WriteApkOptions, 'pkginfo' | 'data'>) {
  return writeApk({ scripts: [], signingKey: trusted.privateKey, keyName: KEY_NAME, ...over });
}

const ordinary = () => build({ pkginfo: pkginfo('hello', '1.0-r0', [], ordinaryData()), data: ordinaryData() });
const kernel = () =>
  build({
    pkginfo: pkginfo('linux-lts', '6.6.52-r0', [
      ['depend', 'initramfs-generator'],
      ['depend', 'linux-firmware-any'],
      ['triggers', `/lib/modules/* /usr/share/kernel/*`],
    ], kernelData()),
    data: kernelData(),
    scripts: KERNEL_SCRIPTS,
  });
const firmware = () =>
  build({
    pkginfo: pkginfo('linux-firmware-intel', '20240811-r0', [['provides', 'linux-firmware-any']], firmwareData()),
    data: firmwareData(),
  });

beforeAll(async () => {
  trusted = rsaKeys();
  other = rsaKeys();
  work = await mkdtemp(join(tmpdir(), 'cairn-apk-'));
  keysDir = join(work, 'keys');
  await mkdir(keysDir);
  await writeFile(join(keysDir, KEY_NAME), trusted.publicPem);
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

// Independent readers of the format, so the tests do not only check the code against itself.

function isZeroBlock(b: Buffer): boolean {
  return b.every((x) => x === 0);
}

/** Walks a tar by hand: [offset, typeflag, name, size] of each header, and the trailing zero block count. */
function walkTar(tar: Buffer): { headers: { at: number; type: string; name: string; size: number; block: Buffer }[]; zeros: number } {
  const headers = [];
  let at = 0;
  while (at < tar.length && !isZeroBlock(tar.subarray(at, at + 512))) {
    const block = tar.subarray(at, at + 512);
    const size = parseInt(block.toString('latin1', 124, 135), 8);
    headers.push({ at, type: String.fromCharCode(block[156]!), name: block.toString('utf8', 0, 100).replace(/\0.*$/s, ''), size, block });
    at += 512 + Math.ceil(size / 512) * 512;
  }
  let zeros = 0;
  for (; at < tar.length; at += 512) {
    expect(isZeroBlock(tar.subarray(at, at + 512))).toBe(true);
    zeros++;
  }
  return { headers, zeros };
}

function headerChecksumHolds(block: Buffer): boolean {
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : block[i]!;
  return parseInt(block.toString('latin1', 148, 154), 8) === sum && block.toString('latin1', 154, 156) === '\0 ';
}

// ------------------------------------------------------------------ gzip members

describe('gzip members', () => {
  it('an ordinary package is exactly three members: signature, control, data', () => {
    const apk = ordinary();
    const members = splitGzipMembers(apk.bytes);
    expect(members.map((m) => [m.start, m.end])).toEqual([
      [apk.signature.start, apk.signature.end],
      [apk.control.start, apk.control.end],
      [apk.data.start, apk.data.end],
    ]);
    expect(apk.signature.start).toBe(0);
    expect(apk.signature.end).toBe(apk.control.start);
    expect(apk.control.end).toBe(apk.data.start);
    expect(apk.data.end).toBe(apk.bytes.length);
  });

  it('each member stands alone for zlib, and zlib reads the whole file as their concatenation', () => {
    const apk = kernel();
    const members = splitGzipMembers(apk.bytes);
    for (const m of members) {
      // Exactly one member: zlib inflates it alone, and not one byte less.
      expect(gunzipSync(m.compressed)).toEqual(m.inflated);
      expect(() => gunzipSync(m.compressed.subarray(0, -1))).toThrow();
      // Trailer: CRC-32 and length of what it inflates to.
      expect(m.compressed.readUInt32LE(m.compressed.length - 8)).toBe(crc32(m.inflated));
      expect(m.compressed.readUInt32LE(m.compressed.length - 4)).toBe(m.inflated.length);
    }
    expect(gunzipSync(apk.bytes)).toEqual(Buffer.concat(members.map((m) => m.inflated)));
  });

  it('every member boundary starts with a gzip header like gzip -n makes (no name, no mtime)', () => {
    const apk = firmware();
    const starts = [apk.signature.start, apk.control.start, apk.data.start];
    // Scan: every gzip magic in the file that opens a member decodable up to the next boundary.
    const found: number[] = [];
    for (let i = apk.bytes.indexOf(Buffer.from([0x1f, 0x8b, 0x08])); i >= 0; i = apk.bytes.indexOf(Buffer.from([0x1f, 0x8b, 0x08]), i + 1)) {
      found.push(i);
    }
    for (const s of starts) expect(found).toContain(s);
    for (const s of starts) {
      expect(apk.bytes[s + 3]).toBe(0); // FLG: no FNAME, no FEXTRA
      expect(apk.bytes.readUInt32LE(s + 4)).toBe(0); // MTIME 0
    }
  });

  it('refuses trailing bytes that are not a gzip member', () => {
    const apk = ordinary();
    expect(() => readApk(Buffer.concat([apk.bytes, Buffer.from('junk')]), 'junk.apk')).toThrow(ApkFormatError);
  });
});

// ------------------------------------------------------------------ tar segments

describe('tar segments', () => {
  it('the signature tar is one .SIGN.RSA256 entry, cut: no end-of-archive blocks', () => {
    const apk = ordinary();
    const tar = gunzipSync(apk.bytes.subarray(apk.signature.start, apk.signature.end));
    const { headers, zeros } = walkTar(tar);
    expect(zeros).toBe(0);
    expect(headers).toHaveLength(1);
    const h = headers[0]!;
    expect(h.name).toBe(`.SIGN.RSA256.${KEY_NAME}`);
    expect(h.type).toBe('0');
    expect(h.size).toBe(256); // a 2048-bit RSA signature
    expect(tar.length).toBe(512 + 512);
    expect(h.block.toString('latin1', 257, 265)).toBe('ustar\u000000');
    expect(headerChecksumHolds(h.block)).toBe(true);
  });

  it('the control tar is .PKGINFO then the scripts, cut, scripts mode 0755', () => {
    const apk = kernel();
    const tar = gunzipSync(apk.bytes.subarray(apk.control.start, apk.control.end));
    const { headers, zeros } = walkTar(tar);
    expect(zeros).toBe(0);
    expect(headers.map((h) => h.name)).toEqual(['.PKGINFO', '.post-install', '.trigger']);
    expect(headers.map((h) => h.type)).toEqual(['0', '0', '0']);
    expect(headers.map((h) => h.block.toString('latin1', 100, 108))).toEqual(['0000644\0', '0000755\0', '0000755\0']);
    for (const h of headers) expect(headerChecksumHolds(h.block)).toBe(true);
    const last = headers.at(-1)!;
    expect(tar.length).toBe(last.at + 512 + Math.ceil(last.size / 512) * 512);
  });

  it('the data tar ends with two zero blocks; every file and symlink has its PAX SHA1 record', () => {
    const apk = ordinary();
    const tar = gunzipSync(apk.bytes.subarray(apk.data.start, apk.data.end));
    const { headers, zeros } = walkTar(tar);
    expect(zeros).toBe(2);
    for (const h of headers) expect(headerChecksumHolds(h.block)).toBe(true);
    // Sorted as `find | LC_ALL=C sort` sorts; directories carry a trailing slash.
    expect(headers.filter((h) => h.type !== 'x').map((h) => h.name)).toEqual([
      'etc/',
      'etc/empty',
      'etc/hello.conf',
      'usr/',
      'usr/bin/',
      'usr/bin/hello',
      'usr/bin/hi',
    ]);
    for (let i = 0; i < headers.length; i++) {
      const h = headers[i]!;
      if (h.type !== '0' && h.type !== '2') continue;
      const pax = headers[i - 1]!;
      expect(pax.type).toBe('x');
      expect(pax.name).toBe(`${h.name.slice(0, h.name.lastIndexOf('/'))}/PaxHeaders/${h.name.slice(h.name.lastIndexOf('/') + 1)}`);
      const record = tar.toString('latin1', pax.at + 512, pax.at + 512 + pax.size);
      const entry = ordinaryData().find((e) => e.name === h.name)!;
      const sha1 = createHash('sha1')
        .update(h.type === '0' ? entry.content! : Buffer.from(entry.linkTarget!))
        .digest('hex');
      // "%u %s=%s\n", the length counting itself: 2 + 1 + 23 + 1 + 40 + 1 = 68.
      expect(record).toBe(`68 APK-TOOLS.checksum.SHA1=${sha1}\n`);
    }
    // Directories need no PAX header.
    for (let i = 1; i < headers.length; i++) if (headers[i]!.type === '5') expect(headers[i - 1]!.type).not.toBe('x');
  });

  it("every data file's APK-TOOLS.checksum.SHA1 is the sha1 of its content (kernel, firmware)", () => {
    for (const apk of [kernel(), firmware()]) {
      const pkg = readApk(apk.bytes);
      const files = pkg.dataEntries.filter((e) => e.type === 'file');
      expect(files.length).toBeGreaterThan(0);
      for (const e of files) {
        expect(paxValue(e, SHA1_RECORD)).toBe(createHash('sha1').update(e.content!).digest('hex'));
      }
    }
  });

  it('a path over 100 bytes goes into a PAX path record and reads back whole', () => {
    const pkg = readApk(kernel().bytes);
    const long = pkg.dataEntries.find((e) => e.name.endsWith('need_pax.ko.gz'))!;
    expect(Buffer.byteLength(long.name)).toBeGreaterThan(100);
    expect(paxValue(long, 'path')).toBe(long.name);
    expect(long.pax!.map((r) => r.key)).toEqual(['path', SHA1_RECORD]);
  });

  it('GNU tar lists the data member with the same entries', () => {
    const apk = kernel();
    const tar = gunzipSync(apk.bytes.subarray(apk.data.start, apk.data.end));
    const r = spawnSync('tar', ['--list', '--file=-'], { input: tar });
    if (r.error) throw new Error(`GNU tar is needed for this check: ${r.error.message}`);
    expect(r.status).toBe(0);
    const listed = r.stdout.toString().trim().split('\n').map((n) => n.replace(/\/$/, ''));
    expect(listed).toEqual(readApk(apk.bytes).dataEntries.map((e) => e.name));
  });

  it("reads GNU tar's POSIX output as abuild's apk_tar makes it (PAX atime/ctime, 10240-byte records)", async () => {
    const root = join(work, 'gnutar');
    await mkdir(join(root, 'usr/bin'), { recursive: true });
    await writeFile(join(root, 'usr/bin/x'), 'content\n');
    const r = spawnSync(
      'tar',
      [
        '--format=posix',
        '--pax-option=exthdr.name=%d/PaxHeaders/%f,atime:=0,ctime:=0',
        '--no-recursion',
        '--mtime=@1700000000',
        '--owner=0',
        '--group=0',
        '--numeric-owner',
        '-C',
        root,
        '-cf',
        '-',
        'usr',
        'usr/bin',
        'usr/bin/x',
      ],
      { maxBuffer: 1 << 20 },
    );
    if (r.error) throw new Error(`GNU tar is needed for this check: ${r.error.message}`);
    expect(r.status).toBe(0);
    const { entries, zeroBlocks } = decodeTar(r.stdout);
    expect(r.stdout.length % 10240).toBe(0);
    expect(zeroBlocks).toBeGreaterThanOrEqual(2);
    expect(entries.map((e) => [e.name, e.type, e.mtime])).toEqual([
      ['usr', 'directory', MTIME],
      ['usr/bin', 'directory', MTIME],
      ['usr/bin/x', 'file', MTIME],
    ]);
    expect(entries[2]!.content!.toString()).toBe('content\n');
    expect(entries[2]!.pax!.map((p) => `${p.key}=${p.value.toString()}`)).toEqual(['ctime=0', 'atime=0']);
  });

  it('refuses a header whose checksum fails, or that is not ustar', () => {
    const tar = encodeTar([file('f', 'x')], { cut: false, checksums: false });
    const badSum = Buffer.from(tar);
    badSum[0] = 0x67; // the name changes, the checksum does not
    expect(() => decodeTar(badSum)).toThrow(/checksum/);
    const notUstar = Buffer.from(tar);
    notUstar.write('gnutar', 257, 'latin1');
    expect(() => decodeTar(notUstar)).toThrow(/not ustar/);
  });

  it('decodeTar reads what encodeTar wrote, hard links and devices included', () => {
    const entries: TarEntry[] = [
      dir('a'),
      file('a/f', 'x'),
      { name: 'a/h', type: 'hardlink', mode: 0o644, uid: 0, gid: 0, mtime: MTIME, linkTarget: 'a/f' },
      { name: 'a/c', type: 'char', mode: 0o600, uid: 0, gid: 0, mtime: MTIME, devmajor: 1, devminor: 3 },
      { ...file('a/owned', 'y'), uid: 1000, gid: 1000, uname: 'user', gname: 'user' },
    ];
    const { entries: back, zeroBlocks } = decodeTar(encodeTar(entries, { cut: false, checksums: true }));
    expect(zeroBlocks).toBe(2);
    expect(back.map((e) => [e.name, e.type, e.mode, e.uid, e.uname, e.linkTarget, e.devmajor, e.devminor])).toEqual([
      ['a', 'directory', 0o755, 0, 'root', undefined, undefined, undefined],
      ['a/f', 'file', 0o644, 0, 'root', undefined, undefined, undefined],
      ['a/h', 'hardlink', 0o644, 0, 'root', 'a/f', undefined, undefined],
      ['a/c', 'char', 0o600, 0, 'root', undefined, 1, 3],
      ['a/owned', 'file', 0o644, 1000, 'user', undefined, undefined, undefined],
    ]);
  });
});

// ------------------------------------------------------------------ .PKGINFO and datahash

describe('.PKGINFO', () => {
  it('parses key = value lines with repeated keys', () => {
    const info = parsePkgInfo(
      '# Generated by abuild 3.13.0\n# using fakeroot version 1.32.1\npkgname = linux-lts\npkgver = 6.6.52-r0\n' +
        'depend = initramfs-generator\ndepend = linux-firmware-any\nprovides = linux-lts-any=6.6.52-r0\n' +
        'triggers = /lib/modules/* /usr/share/kernel/*\nsize = 123\nodd line without separator\n' +
        'pkgdesc = a = b\ndatahash = ' + 'A'.repeat(64) + '\n',
    );
    expect(info.pkgname).toBe('linux-lts');
    expect(info.depends).toEqual(['initramfs-generator', 'linux-firmware-any']);
    expect(info.provides).toEqual(['linux-lts-any=6.6.52-r0']);
    expect(info.triggers).toEqual(['/lib/modules/*', '/usr/share/kernel/*']);
    expect(info.size).toBe(123);
    expect(info.fields.find((f) => f.key === 'pkgdesc')?.value).toBe('a = b');
    expect(info.datahash).toBe('a'.repeat(64));
  });

  it('withDatahash replaces any datahash and puts it last, like create_apks appends it', () => {
    const text = 'pkgname = x\ndatahash = old\npkgver = 1-r0\n# comment\n';
    expect(withDatahash(text, 'f'.repeat(64))).toBe(`pkgname = x\npkgver = 1-r0\n# comment\ndatahash = ${'f'.repeat(64)}\n`);
    expect(setPkgInfoField('a = 1\nb = 2\nb = 3\n', 'b', '4')).toBe('a = 1\nb = 4\n');
  });

  it("datahash in .PKGINFO is the sha256 of the data member's compressed bytes", () => {
    for (const apk of [ordinary(), kernel(), firmware()]) {
      const expected = createHash('sha256').update(apk.bytes.subarray(apk.data.start, apk.data.end)).digest('hex');
      expect(apk.datahash).toBe(expected);
      const pkg = readApk(apk.bytes);
      expect(pkg.pkginfo.datahash).toBe(expected);
      expect(dataHashOf(pkg)).toBe(expected);
      expect(pkg.pkginfoText.endsWith(`datahash = ${expected}\n`)).toBe(true);
    }
  });

  it("the identity is Q1 + base64 of the control member's sha1", () => {
    const apk = ordinary();
    const sha1 = createHash('sha1').update(apk.bytes.subarray(apk.control.start, apk.control.end)).digest('base64');
    expect(apk.identity).toBe(`Q1${sha1}`);
    expect(packageIdentity(readApk(apk.bytes).control.compressed)).toBe(apk.identity);
  });
});

// ------------------------------------------------------------------ signatures

describe('signatures', () => {
  it('the signature verifies over the control member with the public key, and not after one byte changes', () => {
    const apk = kernel();
    const pkg = readApk(apk.bytes);
    const control = Buffer.from(apk.bytes.subarray(apk.control.start, apk.control.end));
    const sig = pkg.signatures[0]!;
    expect(sig.type).toBe('RSA256');
    expect(sig.keyName).toBe(KEY_NAME);
    expect(verify('sha256', control, trusted.publicPem, sig.signature)).toBe(true);
    for (const at of [0, 20, control.length - 1]) {
      const flipped = Buffer.from(control);
      flipped[at]! ^= 0x01;
      expect(verify('sha256', flipped, trusted.publicPem, sig.signature)).toBe(false);
    }
    expect(verify('sha256', control, other.publicPem, sig.signature)).toBe(false);
  });

  it.each<[SignatureType, string]>([
    ['RSA', 'sha1'],
    ['RSA256', 'sha256'],
    ['RSA512', 'sha512'],
  ])('.SIGN.%s. signs with %s', async (type, digest) => {
    const apk = build({ pkginfo: pkginfo('hello', '1.0-r0'), data: ordinaryData(), signatureType: type });
    const pkg = readApk(apk.bytes);
    expect(pkg.signatures[0]!.entryName).toBe(`.SIGN.${type}.${KEY_NAME}`);
    expect(verify(digest, pkg.control.compressed, trusted.publicPem, pkg.signatures[0]!.signature)).toBe(true);
    const v = await verifyApk(apk.bytes, { trustedKeysDir: keysDir });
    expect(v.signatureType).toBe(type);
  });

  it('reads signature names the way apk does', () => {
    expect(parseSignatureEntryName('.SIGN.RSA.alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub')).toEqual({
      type: 'RSA',
      keyName: 'alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub',
    });
    expect(parseSignatureEntryName('.SIGN.RSA256.k.pub')).toEqual({ type: 'RSA256', keyName: 'k.pub' });
    expect(parseSignatureEntryName('.SIGN.RSA512.k.pub')).toEqual({ type: 'RSA512', keyName: 'k.pub' });
    expect(parseSignatureEntryName('.SIGN.DSA.k.pub')).toBeUndefined();
    expect(parseSignatureEntryName('.SIGN.RSA..')).toBeUndefined();
    expect(parseSignatureEntryName('.SIGN.RSA')).toBeUndefined();
  });

  it('prependSignature signs an index the way abuild-sign does', () => {
    const index = gzipMember(encodeTar([file('APKINDEX', 'C:Q1...\nP:x\n\n')], { cut: false, checksums: false }));
    const signed = prependSignature(index, { privateKey: trusted.privateKey, keyName: KEY_NAME, type: 'RSA', mtime: MTIME });
    const members = splitGzipMembers(signed);
    expect(members).toHaveLength(2);
    expect(members[1]!.compressed).toEqual(index);
    const sig = decodeTar(members[0]!.inflated);
    expect(sig.zeroBlocks).toBe(0);
    expect(verify('sha1', index, trusted.publicPem, sig.entries[0]!.content!)).toBe(true);
  });
});

// ------------------------------------------------------------------ verification

/** Re-signs nothing: swaps one member of a package for another. */
function swapMember(bytes: Buffer, index: number, replacement: Buffer): Buffer {
  const members = splitGzipMembers(bytes);
  return Buffer.concat(members.map((m, i) => (i === index ? replacement : m.compressed)));
}

describe('verifyApk', () => {
  it('accepts packages signed by a trusted key', async () => {
    for (const apk of [ordinary(), kernel(), firmware()]) {
      const v = await verifyApk(apk.bytes, { trustedKeysDir: keysDir });
      expect(v.keyName).toBe(KEY_NAME);
      expect(v.covers).toBe('control');
    }
  });

  it('refuses an unsigned package', async () => {
    const apk = ordinary();
    await expect(verifyApk(apk.bytes.subarray(apk.control.start), { trustedKeysDir: keysDir })).rejects.toThrow(ApkUnsignedError);
  });

  it('refuses a package signed by a key that is not trusted', async () => {
    const apk = build({ pkginfo: pkginfo('hello', '1.0-r0'), data: ordinaryData(), signingKey: other.privateKey, keyName: 'someone-else.rsa.pub' });
    const err = await verifyApk(apk.bytes, { trustedKeysDir: keysDir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApkUntrustedError);
    expect((err as ApkUntrustedError).keyNames).toEqual(['someone-else.rsa.pub']);
  });

  it("refuses a signature made by another key under the trusted key's name", async () => {
    const apk = build({ pkginfo: pkginfo('hello', '1.0-r0'), data: ordinaryData(), signingKey: other.privateKey });
    await expect(verifyApk(apk.bytes, { trustedKeysDir: keysDir })).rejects.toThrow(ApkBadSignatureError);
  });

  it('refuses a signature with one byte flipped', async () => {
    const apk = ordinary();
    const sigTar = decodeTar(gunzipSync(apk.bytes.subarray(apk.signature.start, apk.signature.end)));
    const entry = sigTar.entries[0]!;
    const content = Buffer.from(entry.content!);
    content[100]! ^= 0x01;
    const forged = gzipMember(encodeTar([{ ...entry, content }], { cut: true, checksums: false }));
    await expect(verifyApk(swapMember(apk.bytes, 0, forged), { trustedKeysDir: keysDir })).rejects.toThrow(ApkBadSignatureError);
  });

  it('refuses a control member changed after signing (one byte of .PKGINFO)', async () => {
    const apk = ordinary();
    const control = decodeTar(gunzipSync(apk.bytes.subarray(apk.control.start, apk.control.end)));
    const entries = control.entries.map((e) =>
      e.name === '.PKGINFO' ? { ...e, content: Buffer.from(e.content!.toString().replace('pkgver = 1.0-r0', 'pkgver = 1.1-r0')) } : e,
    );
    const changed = gzipMember(encodeTar(entries, { cut: true, checksums: false }));
    await expect(verifyApk(swapMember(apk.bytes, 1, changed), { trustedKeysDir: keysDir })).rejects.toThrow(ApkBadSignatureError);
  });

  it('refuses a data member that does not match the datahash', async () => {
    const apk = ordinary();
    const data = ordinaryData().map((e) => (e.name === 'etc/hello.conf' ? { ...e, content: Buffer.from('greeting=pwned\n') } : e));
    const otherData = gzipMember(encodeTar(data, { cut: false, checksums: true }));
    const err = await verifyApk(swapMember(apk.bytes, 2, otherData), { trustedKeysDir: keysDir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApkDatahashError);
    expect((err as ApkDatahashError).expected).toBe(apk.datahash);
  });

  it('refuses a byte flipped inside a compressed member (gzip CRC or deflate fails first)', async () => {
    const apk = ordinary();
    const bad = Buffer.from(apk.bytes);
    bad[apk.data.start + 30]! ^= 0x10;
    await expect(verifyApk(bad, { trustedKeysDir: keysDir })).rejects.toThrow(/not a valid apk|datahash/);
  });

  it('uses the first signature whose key is trusted, as apk does', async () => {
    const apk = ordinary();
    const control = apk.bytes.subarray(apk.control.start, apk.control.end);
    const foreign = signatureMember(control, { privateKey: other.privateKey, keyName: 'foreign.rsa.pub', type: 'RSA', mtime: MTIME });
    const v = await verifyApk(Buffer.concat([foreign, apk.bytes]), { trustedKeysDir: keysDir });
    expect(v.keyName).toBe(KEY_NAME);
    expect(readApk(Buffer.concat([foreign, apk.bytes])).signatures.map((s) => s.keyName)).toEqual(['foreign.rsa.pub', KEY_NAME]);
  });

  it('refuses an old-style package without datahash, signed over control and data, as apk 3 does', async () => {
    // apk-tools 2.14 took it; apk-tools 3.0.6 `apk verify` says "v2 package format error", as
    // does every applet that reads it (extract_v2.c apk_extract_v2_entry).
    const controlGz = gzipMember(encodeTar([file('.PKGINFO', pkginfo('old', '1-r0'))], { cut: true, checksums: false }));
    const dataGz = gzipMember(encodeTar(ordinaryData(), { cut: false, checksums: true }));
    const signed = Buffer.concat([controlGz, dataGz]);
    const bytes = prependSignature(signed, { privateKey: trusted.privateKey, keyName: KEY_NAME, type: 'RSA', mtime: MTIME });
    await expect(verifyApk(bytes, { trustedKeysDir: keysDir })).rejects.toThrow(/no datahash in \.PKGINFO/);
    await expect(verifyApk(bytes, { trustedKeysDir: keysDir })).rejects.toThrow(ApkFormatError);
  });

  it('refuses end-of-archive blocks in the control member (apk would stop reading there)', () => {
    const apk = ordinary();
    const control = decodeTar(gunzipSync(apk.bytes.subarray(apk.control.start, apk.control.end)));
    const uncut = gzipMember(encodeTar(control.entries, { cut: false, checksums: false }));
    expect(() => readApk(swapMember(apk.bytes, 1, uncut))).toThrow(/end-of-archive/);
  });
});

// ------------------------------------------------------------------ writer checks

describe('writeApk', () => {
  it('refuses files without a directory entry, hidden top-level names and unknown scripts', () => {
    expect(() => build({ pkginfo: pkginfo('x', '1-r0'), data: [file('usr/bin/x', 'x')] })).toThrow(/no dirent/);
    expect(() => build({ pkginfo: pkginfo('x', '1-r0'), data: [file('.hidden', 'x')] })).toThrow(/not a path/);
    expect(() => build({ pkginfo: pkginfo('x', '1-r0'), data: [dir('a'), file('a/../b', 'x')] })).toThrow(/not a path/);
    expect(() =>
      build({ pkginfo: pkginfo('x', '1-r0'), data: [], scripts: [{ name: '.postinstall', content: '' }] }),
    ).toThrow(/not a control file/);
  });

  it('is deterministic: the same input gives the same bytes', () => {
    expect(kernel().bytes.equals(kernel().bytes)).toBe(true);
  });

  it('a metapackage with no files still has a data member (an empty tar)', async () => {
    const apk = build({ pkginfo: pkginfo('meta', '1-r0', [['depend', 'hello']]), data: [] });
    const pkg = readApk(apk.bytes);
    expect(pkg.dataEntries).toEqual([]);
    expect(pkg.dataZeroBlocks).toBe(2);
    await verifyApk(apk.bytes, { trustedKeysDir: keysDir });
  });
});

// ------------------------------------------------------------------ repack

describe('repackApk', () => {
  let localDir: string;
  let local: Keys;
  const LOCAL_NAME = 'cairn-local-0a1b2c3d.rsa.pub';

  beforeAll(async () => {
    local = rsaKeys();
    localDir = join(work, 'local-keys');
    await mkdir(localDir);
    await writeFile(join(localDir, LOCAL_NAME), local.publicPem);
  });

  const repack = (input: Buffer, more: Partial<Parameters<typeof repackApk>[0]> = {}) =>
    repackApk({ input, trustedKeysDir: keysDir, signingKey: local.privateKey, keyName: LOCAL_NAME, ...more });

  it('round-trips: same files, checksums and scripts, signed by the local key', async () => {
    const upstream = kernel();
    const out = await repack(upstream.bytes, { source: 'linux-lts-6.6.52-r0.apk' });
    expect(out.upstream.keyName).toBe(KEY_NAME);
    const v = await verifyApk(out.bytes, { trustedKeysDir: localDir });
    expect(v.keyName).toBe(LOCAL_NAME);
    await expect(verifyApk(out.bytes, { trustedKeysDir: keysDir })).rejects.toThrow(ApkUntrustedError);

    const before = readApk(upstream.bytes);
    const after = v.pkg;
    const strip = (es: typeof before.dataEntries) => es.map(({ offset: _o, end: _e, ...rest }) => rest);
    expect(strip(after.dataEntries)).toEqual(strip(before.dataEntries));
    expect(after.controlEntries.map((e) => [e.name, e.mode, e.content!.toString()])).toEqual(
      before.controlEntries.map((e) => [e.name, e.mode, e.content!.toString()]),
    );
    // Nothing changed but the signature: the control and data members are the same bytes.
    expect(after.pkginfoText).toBe(before.pkginfoText);
    expect(after.data.compressed.equals(before.data.compressed)).toBe(true);
    expect(after.control.compressed.equals(before.control.compressed)).toBe(true);
  });

  it('applies data and control transforms and writes a new datahash', async () => {
    const out = await repack(kernel().bytes, {
      transformData: (entries) => entries.filter((e) => !e.name.startsWith('lib/modules/') || e.type === 'directory'),
      transformControl: (c) => ({
        pkginfo: setPkgInfoField(c.pkginfo, 'pkgdesc', 'linux-lts, modules moved to modules.squashfs by cairn'),
        scripts: c.scripts.filter((s) => s.name !== '.trigger'),
      }),
    });
    const pkg = (await verifyApk(out.bytes, { trustedKeysDir: localDir })).pkg;
    expect(kernelReleasesIn(pkg.dataEntries)).toEqual([]);
    expect(kernelReleasesIn(readApk(kernel().bytes).dataEntries)).toEqual([KVER]);
    expect(pkg.dataEntries.some((e) => e.name === 'boot/vmlinuz-lts')).toBe(true);
    expect(pkg.pkginfo.fields.find((f) => f.key === 'pkgdesc')?.value).toMatch(/cairn/);
    expect(pkg.pkginfo.datahash).toBe(dataHashOf(pkg));
    expect(pkg.pkginfo.datahash).not.toBe(readApk(kernel().bytes).pkginfo.datahash);
    expect(pkg.controlEntries.map((e) => e.name)).toEqual(['.PKGINFO', '.post-install']);
  });

  it('refuses to repack unsigned, untrusted, badly signed or datahash-mismatched input', async () => {
    const apk = ordinary();
    await expect(repack(apk.bytes.subarray(apk.control.start))).rejects.toThrow(ApkUnsignedError);
    const foreign = build({ pkginfo: pkginfo('hello', '1.0-r0'), data: ordinaryData(), signingKey: other.privateKey, keyName: 'x.rsa.pub' });
    await expect(repack(foreign.bytes)).rejects.toThrow(ApkUntrustedError);
    const forged = build({ pkginfo: pkginfo('hello', '1.0-r0'), data: ordinaryData(), signingKey: other.privateKey });
    await expect(repack(forged.bytes)).rejects.toThrow(ApkBadSignatureError);
    const swapped = swapMember(apk.bytes, 2, gzipMember(encodeTar([dir('evil')], { cut: false, checksums: true })));
    await expect(repack(swapped)).rejects.toThrow(ApkDatahashError);
    let called = false;
    await expect(
      repack(swapped, {
        transformData: (e) => {
          called = true;
          return e;
        },
      }),
    ).rejects.toThrow(ApkDatahashError);
    expect(called).toBe(false);
  });
});

// ------------------------------------------------------------------ local repository

describe('the local repository index (repo.ts)', () => {
  // The shape below is what apk-tools 2.14.4's `apk index --rewrite-arch x86_64`
  // printed for the same package when this was checked against the real apk.
  it("names the repository's architecture for a noarch package, as apk index --rewrite-arch does, so apk finds its file", async () => {
    const data = firmwareData();
    const info = setPkgInfoField(pkginfo('linux-firmware-intel', '20240811-r0', [['provides', 'linux-firmware-any']], data), 'arch', 'noarch');
    const apk = build({ pkginfo: info, data });
    const entry = indexEntry({ bytes: apk.bytes, pkginfo: apk.pkginfo, identity: apk.identity }, 'x86_64');
    expect(entry).toBe(
      [
        `C:${apk.identity}`,
        'P:linux-firmware-intel',
        'V:20240811-r0',
        'A:x86_64',
        `S:${apk.bytes.length}`,
        `I:${installedSize(data)}`,
        'T:linux-firmware-intel made by a cairn test',
        'U:https://example.org',
        'L:MIT',
        'o:linux-firmware-intel',
        `t:${MTIME}`,
        'p:linux-firmware-any',
        '',
        '',
      ].join('\n'),
    );
    // apk 2.14 looks for the file in <repository>/<A:>/ (apk_repo_format_real_url): that is where it is.
    const repo = await writeLocalRepo({
      dir: join(work, 'repo-noarch'),
      arch: 'x86_64',
      packages: [{ bytes: apk.bytes, pkginfo: apk.pkginfo, identity: apk.identity }],
      signingKey: trusted.privateKey,
      keyName: KEY_NAME,
    });
    expect(repo.files).toEqual([join(work, 'repo-noarch', 'x86_64', 'linux-firmware-intel-20240811-r0.apk')]);
    const index = splitGzipMembers(await readFile(repo.indexPath));
    const text = decodeTar(index[1]!.inflated).entries.find((e) => e.name === 'APKINDEX')!.content!.toString();
    expect(text).toBe(entry);
  });
});
