import { execa } from 'execa';
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { appendFileSync, mkdtempSync, unlinkSync } from 'node:fs';
import { appendFile, chmod, chown, mkdir, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../src/config.js';
import { VerifyMismatchError } from '../../src/lib/errors.js';
import { RUNTIME } from '../../src/names.js';
import { againWhileChanging } from '../../src/save/again.js';
import { runSave, type SaveOptions } from '../../src/save/pipeline.js';
import { mksquashfsArgs } from '../../src/save/squash.js';
import { encodeSeal, sha256Of } from '../../src/state/seal.js';
import { readXattrs } from '../../src/save/xattrs.js';
import { snapshot } from '../helpers/states.js';
import { cairn, catFromImage, listDir, requireSystem, Scratch } from '../helpers/system.js';

/** Runs a shell script as uid 1000, as any local user could. */
const asUser = (script: string, ...args: string[]) =>
  execa('setpriv', ['--reuid', '1000', '--regid', '1000', '--clear-groups', 'sh', '-c', script, 'sh', ...args]);

/**
 * Paths longer than PATH_MAX (4096 bytes), made by a user in their home with
 * nothing but mkdir and cd. mksquashfs reaches files by full path and skips
 * these; the boot's unsquashfs gives up on the whole state at the first path
 * it cannot create below /run/cairn/rw/upper. So a state keeps every path the
 * boot can unpack, and names the others as not saved.
 */
describe('a tree deeper than PATH_MAX', () => {
  const s = new Scratch();
  let upper: string;
  let bootLike: string;
  const level = 'd'.repeat(255);
  const levels = 15;
  // Paths relative to the upper dir, each with its length in bytes.
  const dirRel = `home/user/${Array(levels).fill(level).join('/')}`;
  const longest = 4095 - (RUNTIME.upperDir.length + 1);
  const atLength = (n: number) => `${dirRel}/${'f'.repeat(n - dirRel.length - 1)}`;
  const lengths = Array.from({ length: 14 }, (_, k) => longest - 5 + k);
  let data: string;

  beforeAll(async () => {
    requireSystem();
    // A short upper path, shorter than the running system's: the state must
    // still hold no path the boot could not create under /run/cairn/rw/upper.
    upper = mkdtempSync('/tmp/u');
    // Where the boot unpacks has a path exactly as long.
    bootLike = mkdtempSync(`/tmp/${'b'.repeat(RUNTIME.upperDir.length - '/tmp/'.length - 6)}`);
    expect(bootLike.length).toBe(RUNTIME.upperDir.length);
    await mkdir(join(upper, 'home/user'), { recursive: true });
    await chown(join(upper, 'home/user'), 1000, 1000);
    await chmod(upper, 0o755);
    await writeFile(join(upper, 'home/user/plain'), 'everything else\n');
    // Fifteen levels of 255-byte names, a file of every length around the
    // limit in the last, and a directory past it holding more.
    const names = lengths.map((n) => atLength(n).slice(dirRel.length + 1));
    await asUser(
      `cd "$1" || exit 1; shift; i=0; while [ $i -lt ${levels} ]; do mkdir ${level} && cd -P ${level} || exit 1; i=$((i+1)); done
       for n; do echo "$n" > "$n"; done
       setfattr -n user.deep -v kept "$1"
       mkdir ${level} && cd -P ${level} && mkdir sub && echo lost > sub/file`,
      join(upper, 'home/user'),
      ...names,
    );
    data = await s.dataPartition();
  });
  afterAll(async () => {
    await s.cleanup();
    // GNU rm walks with openat; Node's rm reaches files by full path.
    await execa('rm', ['-rf', ...[upper, bootLike].filter(Boolean)]);
  });

  it('saves everything else and names what it left out, before and after', async () => {
    const r = await cairn(['save', '--upper', upper, '--data', data, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const report: { warnings: string[] } = JSON.parse(r.stdout);
    const notSaved = report.warnings.filter((w) => w.startsWith('not saved: '));
    // Each file past the limit, and the directory past it (with all it holds).
    expect(notSaved).toHaveLength(lengths.filter((n) => n > longest).length + 1);
    for (const w of notSaved) {
      expect(w).toMatch(/^not saved: \/home\/user\/d{100}.*: its path is \d+ bytes long, more than the \d+ a saved state can hold \(PATH_MAX\)$/);
    }
    // Said during the save too, before the squash.
    expect(r.stderr).toContain('not saved: /home/user/ddd');
  });

  it('keeps every path up to the limit, with its contents and xattrs', async () => {
    const image = join(data, 'upperfs.squashfs');
    expect(await catFromImage(image, 'home/user/plain')).toBe('everything else');
    for (const n of lengths) {
      const rel = atLength(n);
      const name = rel.slice(dirRel.length + 1);
      if (n <= longest) expect(await catFromImage(image, rel)).toBe(name);
      else expect(await catFromImage(image, rel)).toMatch(/^<unreadable/);
    }
    const listing = await execa('unsquashfs', ['-lln', image]);
    expect(listing.stdout).not.toContain('sub/file');
  });

  it('unpacks where the boot unpacks, paths and xattrs intact', async () => {
    const r = await execa('unsquashfs', ['-f', '-no-progress', '-d', bootLike, join(data, 'upperfs.squashfs')], { reject: false });
    expect(r.exitCode, r.stderr).toBe(0);
    const first = atLength(lengths[0]!);
    // cd one level at a time: the full path is too long for a single call.
    const read = await execa('sh', [
      '-c',
      `cd "$1" || exit 1; shift; i=0; while [ $i -lt ${levels} ]; do cd -P ${level} || exit 1; i=$((i+1)); done; cat "$1"; getfattr --only-values -n user.deep "$1"`,
      'sh',
      join(bootLike, 'home/user'),
      first.slice(dirRel.length + 1),
    ]);
    expect(read.stdout).toBe(`${first.slice(dirRel.length + 1)}\nkept`);
  });

  it('cairn verify reads the deep files back', async () => {
    const v = await cairn(['verify', join(data, 'upperfs.squashfs')]);
    expect(v.exitCode, v.stderr).toBe(0);
    expect(v.stdout).toMatch(/intact/);
  });
});

/**
 * About 1,100 files with a 60,000-byte user xattr each: 66 MB of values, 132
 * MB as getfattr prints them. The save reads them as they stream by and keeps
 * a digest of each, so it neither runs out of the command runner's buffer nor
 * holds them all in memory. tmpfs takes values that large, ext4 does not.
 */
describe('a thousand files with a 60,000-byte xattr each', () => {
  const s = new Scratch();
  const files = 1100;
  let upper: string;
  let data: string;
  const values = new Map<number, Buffer>();

  beforeAll(async () => {
    requireSystem();
    await chmod(s.dir, 0o711);
    upper = s.path('upper');
    await mkdir(upper);
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=512M,mode=0755', 'tmpfs', upper]);
    const home = join(upper, 'home/user');
    await mkdir(home, { recursive: true });
    await chown(home, 1000, 1000);
    // One setfattr for all of them, as the user: a dump of every file's value.
    const dump = s.path('dump');
    const fh = await open(dump, 'w');
    for (let i = 0; i < files; i++) {
      const value = randomBytes(60_000);
      if (i === 7 || i === files - 1) values.set(i, value);
      await fh.write(`# file: ${join(home, `f${i}`)}\nuser.big=0x${value.toString('hex')}\n\n`);
    }
    await fh.close();
    await chmod(dump, 0o644);
    await asUser(`cd "$1" && i=0; while [ $i -lt ${files} ]; do echo $i > f$i; i=$((i+1)); done && setfattr --restore="$2"`, home, dump);
    data = await s.dataPartition('data', 512);
  });
  afterAll(async () => {
    await execa('umount', [upper], { reject: false });
    await s.cleanup();
  });

  it('saves, and the values come back exactly', async () => {
    const r = await cairn(['save', '--upper', upper, '--data', data, '--json']);
    expect(r.exitCode, r.stderr.slice(0, 2000)).toBe(0);
    const report = JSON.parse(r.stdout);
    console.log(`big xattrs: saved in ${report.seconds} s, cairn's peak RSS ${Math.round(report.maxRssKiB / 1024)} MiB`);
    const mnt = s.path('mnt');
    await mkdir(mnt);
    await execa('mount', ['-o', 'loop,ro', '-t', 'squashfs', join(data, 'upperfs.squashfs'), mnt]);
    try {
      for (const [i, value] of values) {
        const got = await execa('getfattr', ['--absolute-names', '-n', 'user.big', '-e', 'hex', join(mnt, `home/user/f${i}`)]);
        expect(got.stdout.split('\n')[1]).toBe(`user.big=0x${value.toString('hex')}`);
      }
    } finally {
      await execa('umount', [mnt]);
    }
  });

  it('the comparison still tells two large values apart by one byte', async () => {
    const [a, b] = [s.path('upper', 'a'), s.path('upper', 'b')];
    const value = randomBytes(60_000);
    for (const dir of [a, b]) {
      await mkdir(dir);
      await writeFile(join(dir, 'f'), '');
    }
    await execa('setfattr', ['-n', 'user.big', '-v', `0x${value.toString('hex')}`, join(a, 'f')]);
    value[30_000] = value[30_000]! ^ 1;
    await execa('setfattr', ['-n', 'user.big', '-v', `0x${value.toString('hex')}`, join(b, 'f')]);
    const [xa, xb] = await Promise.all([readXattrs(a), readXattrs(b)]);
    expect(xa.get('f')?.get('user.big')).toMatch(/^\(60000 bytes, sha256 [0-9a-f]{64}\)$/);
    expect(xa.get('f')?.get('user.big')).not.toBe(xb.get('f')?.get('user.big'));
  });
});

/**
 * A state image made the way a save makes it (mksquashfs with the save's
 * options, then the seal), without the save's own verification, which
 * would read the whole sparse file once more.
 */
async function sealedState(tree: string, image: string, damage?: (image: Buffer) => void): Promise<void> {
  await execa('mksquashfs', [tree, image, ...mksquashfsArgs(DEFAULTS)]);
  if (damage) {
    const raw = await readFile(image);
    damage(raw);
    await writeFile(image, raw);
  }
  const size = (await stat(image)).size;
  const seal = encodeSeal({
    size,
    sha256: await sha256Of(image, size),
    id: randomUUID(),
    parent: '',
    session: '',
    created: Math.floor(Date.now() / 1000),
    files: 0,
    space: 0,
  });
  await appendFile(image, seal);
}

/** cairn verify's time follows the bytes a state stores, not its files' apparent sizes. */
describe('cairn verify of a state holding a 16 GiB sparse file', () => {
  const s = new Scratch();
  let tree: string;

  beforeAll(async () => {
    requireSystem();
    tree = s.path('tree');
    await mkdir(tree);
    // tmpfs: mksquashfs reads the holes (16 GiB of zeros) three times as fast as from disk.
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=256M', 'tmpfs', tree]);
    await execa('truncate', ['-s', '16G', join(tree, 'disk.img')]);
    // Compressible data at 1 GiB, random data at 5000 MiB.
    const fh = await open(join(tree, 'disk.img'), 'r+');
    await fh.write(Buffer.from('compressible text, over and over\n'.repeat(8192)), 0, undefined, 1 << 30);
    await fh.write(randomBytes(4 << 20), 0, undefined, 5000 * (1 << 20));
    await fh.close();
    for (let i = 0; i < 200; i++) await writeFile(join(tree, `small-${i}`), `small file ${i}\n`.repeat(100));
  });
  afterAll(async () => {
    await execa('umount', [tree], { reject: false });
    await s.cleanup();
  });

  it('verifies in seconds', async () => {
    const image = s.path('upperfs.squashfs');
    await sealedState(tree, image);
    const t0 = Date.now();
    const v = await cairn(['verify', '--json', image]);
    const seconds = (Date.now() - t0) / 1000;
    console.log(`cairn verify of a 16 GiB sparse file with 4.3 MiB of data and 200 small files: ${seconds} s`);
    expect(v.exitCode, v.stderr).toBe(0);
    const r = JSON.parse(v.stdout);
    expect(r.files).toBe(202);
    // The data it holds, not 16 GiB.
    expect(r.bytesRead).toBeLessThan(8 << 20);
    expect(seconds).toBeLessThan(20);
  });

  it('still finds data in the sparse file that does not decompress', async () => {
    const image = s.path('damaged.squashfs');
    // The first compressed block is the text in disk.img (data comes before
    // the tables, files in name order); its zstd frame magic is spoilt
    // before the seal is made, so the checksum matches.
    await sealedState(tree, image, (raw) => {
      const at = raw.indexOf(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]));
      expect(at).toBeGreaterThan(0);
      raw[at] = 0;
    });
    const v = await cairn(['verify', image]);
    expect(v.exitCode).toBe(1);
    expect(v.stderr).toMatch(/the checksum matches but a file does not read back: .*disk\.img/s);
  });
});

/** What a save meets that it cannot prevent: files that go away, a tool that lies. */
describe('a file removed during the comparison, and a mksquashfs that writes nothing', () => {
  const s = new Scratch();
  let upper: string;
  beforeAll(async () => {
    requireSystem();
    upper = s.path('upper');
    await mkdir(upper);
  });
  afterAll(() => s.cleanup());

  const save = (data: string, onProgress?: SaveOptions['onProgress']) =>
    runSave({
      upperDir: upper,
      dataDir: data,
      bootRecord: undefined,
      session: 'test',
      config: { ...DEFAULTS, excludes: [...DEFAULTS.excludes] },
      confirmCleanSave: async () => false,
      onProgress,
    });
  /** A data partition holding "old" (backup) and "new" (newest). */
  const withTwoStates = async (name: string) => {
    const data = await s.dataPartition(name, 128);
    for (const m of ['old', 'new']) {
      await writeFile(join(upper, 'marker'), m);
      await save(data);
    }
    await writeFile(join(upper, 'marker'), 'next');
    return data;
  };
  const expectUntouched = async (data: string) => {
    expect(await snapshot(data)).toEqual({ newest: 'new', backup: 'old', generations: [], stray: expect.any(Array) });
    expect(listDir(data)).not.toContain('upperfs.squashfs.tmp');
  };

  it('a file removed while contents are compared: a mismatch naming it as changed during the save', async () => {
    const data = await withTwoStates('gone');
    // Compared in name order, a few batches of files opened ahead of the
    // comparison (compare.ts): the a-big files first, whose progress removes
    // b-gone after the walk found it and before its turn comes.
    for (let i = 0; i < 6; i++) await writeFile(join(upper, `a-big${i}`), randomBytes(8 << 20));
    await writeFile(join(upper, 'b-gone'), 'here when the walk passed\n');
    let removed = false;
    const error = await save(data, (phase) => {
      if (phase !== 'verifying' || removed) return;
      removed = true;
      unlinkSync(join(upper, 'b-gone'));
    }).catch((e: unknown) => e);
    expect(removed).toBe(true);
    expect(error).toBeInstanceOf(VerifyMismatchError);
    const mismatch = error as VerifyMismatchError;
    expect(mismatch.exitCode).toBe(1);
    expect(mismatch.message).toMatch(/\/b-gone: presence in the image is present, in the upper layer removed or replaced while the save compared it/);
    expect(mismatch.hint).toMatch(/changed while the save ran; save again/);
    await expectUntouched(data);
    for (let i = 0; i < 6; i++) await rm(join(upper, `a-big${i}`));
  });

  it('a file swapped for a FIFO while contents are compared: no wait for a writer, a mismatch naming it', async () => {
    const data = await withTwoStates('fifo');
    for (let i = 0; i < 6; i++) await writeFile(join(upper, `a-big${i}`), randomBytes(8 << 20));
    await writeFile(join(upper, 'b-fifo'), 'a file when the walk passed\n');
    let swapped = false;
    const started = Date.now();
    const error = await save(data, (phase) => {
      if (phase !== 'verifying' || swapped) return;
      swapped = true;
      unlinkSync(join(upper, 'b-fifo'));
      execFileSync('mkfifo', [join(upper, 'b-fifo')]);
    }).catch((e: unknown) => e);
    expect(swapped).toBe(true);
    expect(Date.now() - started).toBeLessThan(60_000);
    expect(error).toBeInstanceOf(VerifyMismatchError);
    const mismatch = error as VerifyMismatchError;
    expect(mismatch.message).toMatch(/\/b-fifo: presence in the image is present, in the upper layer removed or replaced while the save compared it/);
    expect(mismatch.hint).toMatch(/changed while the save ran; save again/);
    await expectUntouched(data);
    await rm(join(upper, 'b-fifo'));
    for (let i = 0; i < 6; i++) await rm(join(upper, `a-big${i}`));
  }, 90_000);

  it('a file changed while the save ran, tried again as the shutdown save does: the second try stores it as it is then', async () => {
    const data = await withTwoStates('again');
    // Compared in name order: the a-big files' progress comes before c-log's turn.
    for (let i = 0; i < 6; i++) await writeFile(join(upper, `a-big${i}`), randomBytes(8 << 20));
    await writeFile(join(upper, 'c-log'), 'line 1\n');
    let appended = false;
    const retried: string[] = [];
    await againWhileChanging(
      () =>
        save(data, (phase) => {
          if (phase !== 'verifying' || appended) return;
          appended = true;
          appendFileSync(join(upper, 'c-log'), 'line 2\n');
        }),
      2,
      (e, next) => retried.push(`${next}: ${e.differences.map((d) => d.path).join(' ')}`),
    );
    expect(appended).toBe(true);
    expect(retried).toEqual(['1: /c-log']);
    expect(await snapshot(data)).toMatchObject({ newest: 'next', backup: 'new' });
    expect(await catFromImage(join(data, 'upperfs.squashfs'), 'c-log')).toBe('line 1\nline 2');
    expect(listDir(data)).not.toContain('upperfs.squashfs.tmp');
    await rm(join(upper, 'c-log'));
    for (let i = 0; i < 6; i++) await rm(join(upper, `a-big${i}`));
  });

  it('a mksquashfs that exits 0 without writing the image: a clear error, states and stick as they were', async () => {
    const data = await withTwoStates('liar');
    // A stand-in for mksquashfs, found first on PATH: a real one that
    // fails this way (a full disk it does not notice, a broken build)
    // cannot be made to on purpose.
    const bin = s.path('bin');
    await mkdir(bin);
    await writeFile(join(bin, 'mksquashfs'), '#!/bin/sh\n# stand-in: says nothing, writes nothing, succeeds\nexit 0\n', { mode: 0o755 });
    const r = await cairn(['save', '--upper', upper, '--data', data], { PATH: `${bin}:${process.env.PATH}` });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/cairn: mksquashfs exited with status 0: but wrote no image: .*upperfs\.squashfs\.tmp holds 0 bytes and no squashfs superblock/);
    expect(r.stderr).toMatch(/hint: .*squashfs-tools/);
    expect(r.stderr).not.toMatch(/internal error/);
    await expectUntouched(data);
  });
});
