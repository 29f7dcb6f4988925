/**
 * The encrypted data partition of a built image (`cairn image build
 * --encrypt`), checked from the host as a user would, without device-mapper:
 * cryptsetup reads the header and, given the passphrase, the volume key; the
 * payload is decrypted with node:crypto (test/helpers/luks-read.ts, written
 * independently of cairn's writer) and the ext4 inside read with debugfs. And the CLI's answers to a missing or empty passphrase.
 */
import { execa } from 'execa';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDisk, writeDataPartition } from '../../src/image/disk.js';
import type { Layout } from '../../src/image/layout.js';
import { STICK_KDF } from '../../src/image/luks.js';
import { cairn, CLI, Scratch } from '../helpers/system.js';
import { decryptPayload, extractHeader, volumeKey } from '../helpers/luks-read.js';
import { requireHostTools } from '../helpers/vm-fixtures.js';

const PASSPHRASE = 'a stick for the road';
let scratch: Scratch;
let image: string;
let layout: Layout;
let header: string;

/** cryptsetup on the header alone: it holds everything but the payload. */
function cryptsetup(args: string[], input?: string) {
  return execa('cryptsetup', [...args, header], { reject: false, input, stdin: input === undefined ? 'ignore' : 'pipe' });
}

function leftoverKeyDirs(): string[] {
  return readdirSync(tmpdir()).filter((n) => n.startsWith('.cairn-luks-'));
}

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('these tests need root (the staged files belong to root and to the user): run them as root');
  requireHostTools('these tests', ['cryptsetup', 'mkfs.ext4']);
  if (!existsSync('/usr/sbin/debugfs') && !existsSync('/sbin/debugfs')) throw new Error('these tests need debugfs: apt-get install e2fsprogs');
  scratch = new Scratch();
  const stage = scratch.path('stage');
  await mkdir(join(stage, 'user'), { recursive: true });
  await writeFile(join(stage, 'rootfs.squashfs'), 'stand-in for the base image\n');
  await writeFile(join(stage, 'user', 'notes.txt'), 'kept on the stick\n');
  image = scratch.path('stick.img');
  layout = await createDisk(image, 96 << 20, 8);
  await writeDataPartition(image, layout, stage, { workDir: scratch.dir, luks: { passphrase: PASSPHRASE, kdf: STICK_KDF } });
  header = scratch.path('header');
  await extractHeader(image, layout.data.startSector * 512, header);
}, 300_000);

afterAll(async () => {
  await scratch?.cleanup();
});

describe('an encrypted data partition', () => {
  it('is LUKS2 labelled cairn-data, aes-xts-plain64, argon2id with at most 256 MiB', async () => {
    const dump = await cryptsetup(['luksDump']);
    expect(dump.exitCode, dump.stderr).toBe(0);
    expect(dump.stdout).toMatch(/^Version:\s+2$/m);
    expect(dump.stdout).toMatch(/^Label:\s+cairn-data$/m);
    expect(dump.stdout).toMatch(/offset: 16777216 \[bytes\]\s+length: \(whole device\)\s+cipher: aes-xts-plain64\s+sector: 512 \[bytes\]/);
    expect(dump.stdout).toMatch(/PBKDF:\s+argon2id/);
    expect(Number(/Memory:\s+(\d+)/.exec(dump.stdout)?.[1])).toBeLessThanOrEqual(262144);
    // The only things left beside the image: no volume key, no plain ext4.
    expect(leftoverKeyDirs()).toEqual([]);
    expect(existsSync(join(scratch.dir, 'data.ext4'))).toBe(false);
  });

  it('opens with the passphrase and holds the staged files in an ext4 labelled cairn-data', async () => {
    const key = await volumeKey(header, PASSPHRASE);
    const ext4 = scratch.path('decrypted.ext4');
    await decryptPayload(image, layout.data.startSector * 512, layout.data.sectors * 512, key, ext4);

    const label = await execa('e2label', [ext4]);
    expect(label.stdout.trim()).toBe('cairn-data');
    const root = await execa('debugfs', ['-R', 'ls -l /', ext4]);
    expect(root.stdout).toMatch(/rootfs\.squashfs/);
    expect(root.stdout).toMatch(/ user\s*$/m);
    const notes = await execa('debugfs', ['-R', 'cat /user/notes.txt', ext4]);
    expect(notes.stdout).toBe('kept on the stick');
    // Only root lists the partition's root (others pass through to user/).
    expect((await execa('debugfs', ['-R', 'stat /', ext4])).stdout).toMatch(/Type: directory\s+Mode:\s+0711/);
    const fsck = await execa('e2fsck', ['-fn', ext4], { reject: false });
    expect(fsck.exitCode, fsck.stdout).toBe(0);
  });

  it('refuses a wrong passphrase', async () => {
    const dump = await cryptsetup(['luksDump', '--dump-volume-key', '--batch-mode', '--key-file', '-'], 'not the passphrase');
    expect(dump.exitCode).not.toBe(0);
    expect(dump.stderr).toMatch(/No key available with this passphrase/);
    expect(dump.stdout).not.toMatch(/MK dump/);
  });

  it('leaves no volume key behind when cryptsetup fails', async () => {
    const stage = scratch.path('stage-2');
    await mkdir(stage);
    const other = scratch.path('failing.img');
    const l = await createDisk(other, 64 << 20, 8);
    // argon2 needs at least 32 KiB: cryptsetup refuses this one.
    const failing = writeDataPartition(other, l, stage, { workDir: scratch.dir, luks: { passphrase: PASSPHRASE, kdf: { ...STICK_KDF, memoryKiB: 1 } } });
    await expect(failing).rejects.toThrow(/cryptsetup/);
    expect(leftoverKeyDirs()).toEqual([]);
    expect(existsSync(join(scratch.dir, 'data.ext4'))).toBe(false);
  });
});

describe('cairn image build --encrypt, bad input (nothing is built)', () => {
  const build = (args: string[], input?: string) =>
    execa(process.execPath, [CLI, 'image', 'build', '--output', scratch.path('never.img'), '--cache', scratch.path('cache'), ...args], {
      reject: false,
      input: input ?? '',
    });

  it('asks for a passphrase source', async () => {
    const r = await build(['--encrypt']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/--encrypt needs a passphrase/);
    expect(r.stderr).toMatch(/--passphrase-file FILE/);
  });

  it('refuses an empty passphrase, from a file or from standard input', async () => {
    const empty = scratch.path('empty-pass');
    await writeFile(empty, '\n');
    const fromFile = await build(['--encrypt', '--passphrase-file', empty]);
    expect(fromFile.exitCode).toBe(2);
    expect(fromFile.stderr).toMatch(/the passphrase from .*empty-pass is empty/);
    const fromStdin = await build(['--encrypt', '--passphrase-file', '-'], '');
    expect(fromStdin.exitCode).toBe(2);
    expect(fromStdin.stderr).toMatch(/the passphrase from standard input is empty/);
  });

  it('refuses a passphrase file that is missing, or of two lines', async () => {
    const missing = await build(['--encrypt', '--passphrase-file', scratch.path('no-such-file')]);
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr).toMatch(/cannot read the passphrase from .*no-such-file/);
    const two = await build(['--encrypt', '--passphrase-file', '-'], 'one\ntwo\n');
    expect(two.exitCode).toBe(2);
    expect(two.stderr).toMatch(/more than one line/);
  });

  it('refuses a passphrase without --encrypt', async () => {
    const r = await cairn(['image', 'build', '--output', scratch.path('never.img'), '--passphrase-file', '/dev/null']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/--passphrase-file is for an encrypted image: add --encrypt/);
    expect(existsSync(scratch.path('never.img'))).toBe(false);
    expect(existsSync(scratch.path('cache'))).toBe(false);
  });
});

describe('build-image.sh --encrypt, unattended', () => {
  const script = (args: string[]) =>
    execa('sh', ['build-image.sh', '--output', scratch.path('never-sh.img'), '--cache', scratch.path('cache-sh'), ...args], {
      reject: false,
      stdin: 'ignore',
    });

  it('stops before installing or building anything when no passphrase file is given', async () => {
    const r = await script(['--encrypt']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/--encrypt without a terminal to ask on needs --passphrase-file FILE \(nothing was built\)/);
    expect(r.stderr).not.toMatch(/Installing|Building/);
    expect(existsSync(scratch.path('never-sh.img'))).toBe(false);
    expect(existsSync(scratch.path('cache-sh'))).toBe(false);
  });

  it('refuses a passphrase file without --encrypt, and one it cannot read', async () => {
    const plain = await script(['--passphrase-file', '/dev/null']);
    expect(plain.exitCode).toBe(1);
    expect(plain.stderr).toMatch(/--passphrase-file is for an encrypted image: add --encrypt/);
    const unreadable = await script(['--encrypt', '--passphrase-file', scratch.path('no-such-file')]);
    expect(unreadable.exitCode).toBe(1);
    expect(unreadable.stderr).toMatch(/cannot read the passphrase file/);
  });
});
