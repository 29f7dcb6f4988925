import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { lstat, mkdir, readFile, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cairn, requireSystem, Scratch } from '../helpers/system.js';

/**
 * The save lock as a user meets it on a real data partition: after a power
 * cut on a machine whose clock was hours off, with a live save beside it,
 * and with something that is not cairn's where the lock goes.
 */

const session = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
const FIVE_HOURS = 5 * 3600_000;

/** Names, inodes and sizes on the data partition. */
const fingerprint = (dir: string) =>
  readdirSync(dir)
    .filter((n) => n !== 'lost+found')
    .sort()
    .map((n) => `${n}:${statSync(join(dir, n)).ino}:${statSync(join(dir, n)).size}`);

describe('the save lock after a crash, and where it is not a lock', () => {
  const s = new Scratch();
  let data: string;
  let upper: string;
  const lock = () => join(data, '.cairn-save.lock');
  const save = (wait = '0') => cairn(['save', '--wait', wait, '--upper', upper, '--data', data]);

  beforeAll(async () => {
    requireSystem();
    data = await s.dataPartition('lockdata', 128);
    upper = s.path('upper');
    await mkdir(upper);
    await writeFile(join(upper, 'notes'), 'the session\n');
  });
  afterAll(() => s.cleanup());
  afterEach(() => rm(lock(), { recursive: true, force: true }));

  /** A lock directory as a crash left it (its files), its times set by a clock `offset` ms off. */
  async function leftLock(files: Record<string, string>, offset: number): Promise<void> {
    await mkdir(lock());
    const t = new Date(Date.now() + offset);
    for (const [name, text] of Object.entries(files)) {
      await writeFile(join(lock(), name), text);
      await utimes(join(lock(), name), t, t);
    }
    await utimes(lock(), t, t);
  }

  it.each([
    ['an empty owner token of an earlier boot, made by a clock 5 hours ahead (a power cut)', { 'owner.an-earlier-boot.1.0.0123456789abcdef': '' }],
    ['no owner at all, made by a clock 5 hours ahead (a stick that lost its cache)', {}],
    ['only an empty owner record, made by a clock 5 hours ahead', { owner: '' }],
  ])('a lock left with %s does not stop the next save', async (_, files) => {
    await leftLock(files, FIVE_HOURS);
    // --wait 0: a lock judged live would fail the save with status 75.
    const r = await save();
    expect(r.exitCode, r.stderr).toBe(0);
    expect(existsSync(lock())).toBe(false);
    expect(existsSync(join(data, 'upperfs.squashfs'))).toBe(true);
  });

  it('a lock of a live process of this boot stops the save, whatever its mtime, and is kept', async () => {
    const child = spawn('sleep', ['60']);
    try {
      const token = `owner.${session}.${child.pid}.0.0123456789abcdef`;
      await leftLock({ [token]: '' }, -FIVE_HOURS);
      const before = fingerprint(data);
      const r = await save();
      expect(r.exitCode).toBe(75);
      expect(r.stderr).toMatch(new RegExp(`another save is running \\(pid ${child.pid}\\)`));
      expect(fingerprint(data)).toEqual(before);
      expect(readdirSync(lock())).toEqual([token]);
    } finally {
      child.kill();
    }
  });

  it.each([
    ['a symbolic link to a directory', /\.cairn-save\.lock is a symbolic link where cairn's lock expects a directory/, (t: string) => symlink(t, lock())],
    ['a file', /\.cairn-save\.lock is a file where cairn's lock expects a directory/, () => writeFile(lock(), 'x')],
    ['a directory whose owner token is a symbolic link', /\.cairn-save\.lock\/owner\.an-earlier-boot\.1\.0\.0123456789abcdef is a symbolic link where cairn's lock expects a file/, async (t: string) => {
      await mkdir(lock());
      await symlink(join(t, 'keep'), join(lock(), 'owner.an-earlier-boot.1.0.0123456789abcdef'));
    }],
  ])('a lock path that is %s: status 73, a clear message, states and the link target untouched', async (_, message, make) => {
    if (!existsSync(join(data, 'upperfs.squashfs'))) expect((await save()).exitCode).toBe(0);
    const target = s.path('elsewhere');
    await mkdir(target, { recursive: true });
    await writeFile(join(target, 'keep'), 'not the lock\n');
    await make(target);
    const before = fingerprint(data);
    const ino = (await lstat(lock())).ino;
    const r = await save('5');
    expect(r.exitCode, r.stderr).toBe(73);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).toMatch(/^hint: /m);
    expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
    expect(fingerprint(data)).toEqual(before);
    expect((await lstat(lock())).ino).toBe(ino);
    expect(readdirSync(target)).toEqual(['keep']);
    expect(await readFile(join(target, 'keep'), 'utf8')).toBe('not the lock\n');
  });
});
