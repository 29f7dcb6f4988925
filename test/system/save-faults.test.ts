import { execa } from 'execa';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { mkdir, open, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cairn, catFromImage, listDir, requireSystem, Scratch } from '../helpers/system.js';

const session = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();

/** A fingerprint of the data partition: names, inodes and sizes of what is there. */
const fingerprint = (dir: string) =>
  readdirSync(dir)
    .filter((n) => n !== 'lost+found')
    .sort()
    .map((n) => `${n}:${statSync(join(dir, n)).ino}:${statSync(join(dir, n)).size}`);

describe('bad input: a clear error and nothing written', () => {
  const s = new Scratch();
  let data: string;
  let upper: string;
  beforeAll(async () => {
    requireSystem();
    data = await s.dataPartition();
    upper = s.path('upper');
    await mkdir(upper);
    await writeFile(join(upper, 'file'), 'x');
  });
  afterAll(() => s.cleanup());

  it.each([
    ['the upper dir is missing', () => ['--upper', s.path('nope'), '--data', data], /upper layer directory does not exist/],
    ['the upper dir is a file', () => ['--upper', join(upper, 'file'), '--data', data], /upper layer is not a directory/],
    ['the data dir is missing', () => ['--upper', upper, '--data', s.path('nope')], /data partition directory does not exist/],
    ['the data dir is inside the upper dir', () => ['--upper', s.dir, '--data', data], /inside the upper layer/],
  ])('%s', async (_, args, message) => {
    const before = fingerprint(data);
    const r = await cairn(['save', ...args()]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(message);
    expect(fingerprint(data)).toEqual(before);
  });

  it('the data partition is read-only', async () => {
    await execa('mount', ['-o', 'remount,ro', data]);
    try {
      const r = await cairn(['save', '--upper', upper, '--data', data]);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toMatch(/data partition is not writable/);
    } finally {
      await execa('mount', ['-o', 'remount,rw', data]);
    }
    expect(fingerprint(data)).toEqual([]);
  });

  it('--upper without --data, and no flags outside a booted system, are usage errors', async () => {
    const half = await cairn(['save', '--upper', upper]);
    expect(half.exitCode).toBe(2);
    expect(half.stderr).toMatch(/--upper and --data go together/);
    if (existsSync('/run/cairn/boot')) throw new Error('this machine has /run/cairn/boot: the test needs a non-cairn host');
    const none = await cairn(['save']);
    expect(none.exitCode).toBe(2);
    expect(none.stderr).toMatch(/not a booted cairn system/);
  });

  it('--retries takes a number of tries from 0 to 9, and nothing is written otherwise', async () => {
    for (const bad of ['-1', 'two', '10', '']) {
      const r = await cairn(['save', '--upper', upper, '--data', data, '--retries', bad]);
      expect(r.exitCode, bad).toBe(2);
      expect(r.stderr).toContain(`--retries "${bad}" is not a number from 0 to 9`);
    }
    expect(fingerprint(data)).toEqual([]);
  });

  it('an unknown config setting names the file and line', async () => {
    const conf = s.path('bad.conf');
    await writeFile(conf, '# comment\ncompresion=zstd\n');
    const r = await cairn(['--config', conf, 'save', '--upper', upper, '--data', data]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`${conf}:2: unknown setting "compresion"`);
  });
});

describe('faults during a save leave the previous states untouched', () => {
  const s = new Scratch();
  let upper: string;
  afterAll(() => s.cleanup());
  beforeAll(async () => {
    requireSystem();
    upper = s.path('upper');
    await mkdir(upper);
  });
  afterEach(async () => {
    await rm(join(upper, 'big'), { force: true });
  });

  /** A data partition holding two good states, "old" (backup) and "new" (newest). */
  const withTwoStates = async (name: string, sizeMiB = 64) => {
    const data = await s.dataPartition(name, sizeMiB);
    for (const m of ['old', 'new']) {
      await writeFile(join(upper, 'marker'), m);
      const r = await cairn(['save', '--upper', upper, '--data', data]);
      expect(r.exitCode, r.stderr).toBe(0);
    }
    return data;
  };
  const expectUntouched = async (data: string, before: string[]) => {
    expect(fingerprint(data)).toEqual(before);
    expect(listDir(data)).not.toContain('upperfs.squashfs.tmp');
    expect(await catFromImage(join(data, 'upperfs.squashfs'), 'marker')).toBe('new');
    expect(await catFromImage(join(data, 'upperfs-backup.squashfs'), 'marker')).toBe('old');
  };

  it('running out of space while squashing: the temp image is removed and the message says how much is needed', async () => {
    const data = await withTwoStates('small', 16);
    const before = fingerprint(data);
    // Random bytes do not compress: 40 MiB cannot fit in what is left of 16 MiB.
    await execa('dd', ['if=/dev/urandom', `of=${join(upper, 'big')}`, 'bs=1M', 'count=40', 'status=none']);
    const r = await cairn(['save', '--upper', upper, '--data', data]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/not enough space on .*small: [\d.]+ MiB is free and the new state needs more \(the upper layer holds 40\.0 MiB/);
    expect(r.stderr).toMatch(/hint: free up to/);
    await expectUntouched(data, before);
  });

  it('an upper layer far larger than the free space fails before squashing', async () => {
    const data = await withTwoStates('tiny', 16);
    const before = fingerprint(data);
    await execa('fallocate', ['-l', '2G', join(upper, 'big')]);
    const r = await cairn(['save', '--upper', upper, '--data', data]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/not enough space .* upper layer holds 2\.0 GiB/);
    await expectUntouched(data, before);
  });

  it('mksquashfs missing: the error says to install squashfs-tools', async () => {
    const data = await withTwoStates('nomksquashfs');
    const before = fingerprint(data);
    const bin = s.path('bin-without-mksquashfs');
    await mkdir(bin, { recursive: true });
    for (const tool of ['losetup', 'mount', 'umount', 'getfattr', 'unsquashfs']) {
      const { stdout } = await execa('sh', ['-c', `command -v ${tool}`]);
      await symlink(stdout.trim(), join(bin, tool)).catch(() => undefined);
    }
    const r = await cairn(['save', '--upper', upper, '--data', data], { PATH: bin });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/mksquashfs was not found/);
    expect(r.stderr).toMatch(/hint: install squashfs-tools/);
    await expectUntouched(data, before);
  });

  it('mksquashfs failing: its own message and a hint', async () => {
    const data = await withTwoStates('mksquashfsfails');
    const before = fingerprint(data);
    const conf = s.path('tiny-mem.conf');
    await writeFile(conf, 'mksquashfs_mem=1M\n');
    const r = await cairn(['--config', conf, 'save', '--upper', upper, '--data', data]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/mksquashfs .*exited with status 1: .*-mem should be/);
    expect(r.stderr).toMatch(/hint: .*squashfs-tools/);
    await expectUntouched(data, before);
  });

  it('a file that changes while the save runs fails verification by name, and nothing rotates', async () => {
    const data = await withTwoStates('live', 256);
    const before = fingerprint(data);
    await execa('dd', ['if=/dev/urandom', `of=${join(upper, 'big')}`, 'bs=1M', 'count=64', 'status=none']);
    // Rewritten in place, never truncated: its size stays, its bytes change.
    const busy = join(upper, 'busy');
    await writeFile(busy, Buffer.alloc(4096));
    const writer = execa('sh', ['-c', `while :; do head -c 4096 /dev/urandom | dd of=${busy} conv=notrunc status=none; done`]);
    try {
      const r = await cairn(['save', '--upper', upper, '--data', data, '--json']);
      expect(r.exitCode, r.stdout).toBe(1);
      expect(r.stderr).toMatch(/does not match the upper layer/);
      expect(r.stderr).toMatch(/\/busy: contents in the image is different from byte \d+ on/);
      expect(r.stderr).toMatch(/changed while the save ran/);
    } finally {
      writer.kill('SIGKILL');
      await writer.catch(() => undefined);
      await rm(join(upper, 'busy'), { force: true });
    }
    await expectUntouched(data, before);
  });

  it('a file that keeps growing while the save reads it (a download, a log): the save stops within seconds, names it, and nothing rotates', async () => {
    const data = await withTwoStates('growing');
    const before = fingerprint(data);
    const file = join(upper, 'growing\nlog');
    await execa('sh', ['-c', 'head -c 20000000 /dev/urandom >"$1"', 'sh', file]);
    // mksquashfs on its own reads such a file again for as long as it grows.
    const writer = execa('sh', ['-c', 'while :; do head -c 65536 /dev/urandom >>"$1"; done', 'sh', file], { reject: false });
    try {
      const started = Date.now();
      const r = await cairn(['save', '--upper', upper, '--data', data]);
      expect(r.exitCode, r.stdout).toBe(1);
      expect(r.stderr).toContain('/growing\nlog kept changing while it was read');
      expect(r.stderr).toMatch(/the saved states are as they were/);
      expect(Date.now() - started).toBeLessThan(60_000);
    } finally {
      writer.kill('SIGKILL');
      await writer;
      await rm(file, { force: true });
    }
    await expectUntouched(data, before);
  });

  it('a corrupt newest state: verify and status say so, and the next default boot uses the backup', async () => {
    const data = await withTwoStates('corrupt');
    const newest = join(data, 'upperfs.squashfs');
    const fh = await open(newest, 'r+');
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, 1000);
    b[0] = b[0]! ^ 0x01;
    await fh.write(b, 0, 1, 1000);
    await fh.close();
    const v = await cairn(['verify', newest]);
    expect(v.exitCode).toBe(1);
    // Sealed by this cairn: the whole file's cksum is checked first (docs/state-format.md).
    expect(v.stderr).toMatch(/cksum mismatch: the image or its seal is corrupt/);
    const st = await cairn(['status', '--data', data]);
    expect(st.stdout).toMatch(/default\s+upperfs\.squashfs.*DAMAGED: cksum mismatch/);
    expect(st.stdout).toMatch(/next default boot: backup/);

    const backup = join(data, 'upperfs-backup.squashfs');
    await execa('truncate', ['-s', `-${1}`, backup]);
    const vb = await cairn(['verify', backup]);
    expect(vb.exitCode).toBe(1);
    expect(vb.stderr).toMatch(/truncated/);
    const st2 = JSON.parse((await cairn(['status', '--data', data, '--json'])).stdout);
    expect(st2.nextDefaultBoot).toBe('clean');
  });

  it('verify of a file that is not a state image says so', async () => {
    const junk = s.path('junk.squashfs');
    await writeFile(junk, Buffer.alloc(10000, 1));
    const r = await cairn(['verify', junk]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/no cairn seal/);
    const missing = await cairn(['verify', s.path('missing.squashfs')]);
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr).toMatch(/missing\.squashfs: no such file/);
  });
});

describe('the save lock', () => {
  const s = new Scratch();
  let data: string;
  let upper: string;
  beforeAll(async () => {
    requireSystem();
    data = await s.dataPartition('lockdata', 512);
    upper = s.path('upper');
    await mkdir(upper);
    // Base64 of random bytes: xz works hard on it (seconds), unlike on repeated text.
    await execa('sh', ['-c', `head -c 48M /dev/urandom | base64 > ${join(upper, 'big')}`]);
  });
  afterAll(() => s.cleanup());

  it('a second save fails clearly while one runs, or waits for it with --wait', async () => {
    // xz makes the first save take seconds, so the others surely meet its lock.
    const slow = s.path('slow.conf');
    await writeFile(slow, 'compression=xz\n');
    const first = execa(process.execPath, ['dist/cairn.mjs', '--config', slow, 'save', '--upper', upper, '--data', data], { reject: false });
    // Wait until the first save holds the lock.
    // The lock appears whole, its owner's token in it (src/lib/lock.ts).
    for (let i = 0; i < 400 && !existsSync(join(data, '.cairn-save.lock')); i++) await new Promise((r) => setTimeout(r, 25));
    const [second, third] = await Promise.all([
      cairn(['save', '--wait', '0', '--upper', upper, '--data', data]),
      cairn(['save', '--wait', '300', '--upper', upper, '--data', data]),
    ]);
    expect(second.exitCode).toBe(75);
    expect(second.stderr).toMatch(/another save is running \(pid \d+/);
    expect(third.exitCode, third.stderr).toBe(0);
    expect(third.stderr).toMatch(/waiting for another save to finish/);
    expect((await first).exitCode).toBe(0);
  });

  it.each([
    ['a dead process of this boot', () => `${session}.999999`],
    ['a process of an earlier boot', () => `an-earlier-boot.${process.pid}`],
  ])('a lock left by %s is recovered at once', async (_, owner) => {
    await mkdir(join(data, '.cairn-save.lock'));
    // The owner's token: owner.<boot id>.<pid>.<pid start time, 0 unknown>.<random>.
    await writeFile(join(data, `.cairn-save.lock/owner.${owner()}.0.0123456789abcdef`), '');
    const r = await cairn(['save', '--wait', '0', '--upper', upper, '--data', data]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(existsSync(join(data, '.cairn-save.lock'))).toBe(false);
  });

  it('a lock with no owner record is recovered at once', async () => {
    await mkdir(join(data, '.cairn-save.lock'));
    const old = new Date(Date.now() - 120_000);
    await utimes(join(data, '.cairn-save.lock'), old, old);
    const r = await cairn(['save', '--wait', '0', '--upper', upper, '--data', data]);
    expect(r.exitCode, r.stderr).toBe(0);
  });
});
